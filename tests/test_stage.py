"""A job's log holds everything the job and its child processes print, progress bars with rates included."""
import logging
import subprocess
import sys
from types import SimpleNamespace

import pytest

from warmbench import stage
from warmbench.call_cache import RULE_ENV


class Wildcards(dict):
    pass


@pytest.fixture
def job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # job locks go to .warmbench/locks here
    monkeypatch.setattr(stage, "exit_on_signals", lambda: None)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield SimpleNamespace(log=[str(tmp_path / "job.log")], rule="generate", wildcards=Wildcards(model="m"),
                          threads=1, output=[str(tmp_path / "out.txt")])
    root.handlers[:], root.level = handlers, level  # configure_logging replaced them


def test_child_processes_and_progress_bars_write_to_the_jobs_log(job, monkeypatch, capfd):
    """vLLM's worker and `accelerate launch` are child processes: their progress (tqdm on their stderr) must reach
    the job's log, not the terminal of the snakemake that started the job."""
    seen = {}

    def entry(smk):
        from tqdm import tqdm

        for _ in tqdm(range(3), desc="generate", unit="prompt", mininterval=0):
            pass
        subprocess.run([sys.executable, "-c", "import sys; print('child says hello'); "
                        "sys.stderr.write('child progress 3/3 [00:01<00:00, 2.50prompt/s]\\n')"], check=True)
        seen["rule"] = __import__("os").environ.get(RULE_ENV)

    monkeypatch.setattr(stage, "entrypoint", lambda rule: entry)
    stage.run_job(job)
    text = open(job.log[0]).read()
    assert "child says hello" in text and "child progress 3/3" in text
    assert "generate: 100%" in text and "prompt/s]" in text  # the job's own tqdm, with its rate
    assert "done in" in text
    assert seen["rule"] == "generate"  # LLM calls cached by this job name its rule
    terminal = capfd.readouterr()
    assert "child says hello" not in terminal.out + terminal.err
    print("after the job")  # the process's own output is back where it was
    assert "after the job" in capfd.readouterr().out
