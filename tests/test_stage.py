"""Which code each rule runs: named in the rule (params.stage), hashed so that editing it reruns that rule only;
and a job's log holds everything the job and its child processes print, progress bars with rates included."""
import importlib
import logging
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest

from conftest import REPO
from warmbench.core import stage
from warmbench.core.call_cache import RULE_ENV

RULE_BLOCK = re.compile(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", re.M | re.S)
LOOP_RULE_BLOCK = re.compile(r"^    rule:\n(.*?)(?=^\S|^    \S|\Z)", re.M | re.S)  # rules made in a loop, one per group


def rule_blocks():
    """(name, body) of every rule; a rule made in a loop (generation, warmth: one per group of models) is named by
    its file, its body dedented to a plain rule's."""
    for path in sorted((REPO / "workflow/rules").glob("*.smk")):
        text = path.read_text()
        yield from RULE_BLOCK.findall(text)
        yield from ((path.stem, re.sub(r"^    ", "", body, flags=re.M)) for body in LOOP_RULE_BLOCK.findall(text))


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of the warmbench package whose files a test may edit."""
    shutil.copytree(REPO / "workflow/warmbench", tmp_path / "warmbench", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(stage, "PACKAGE_ROOT", tmp_path)
    stage.code_hash.cache_clear()
    yield tmp_path / "warmbench"
    stage.code_hash.cache_clear()


def edit(path, text="\n_EDITED = True\n"):
    # code by default: a comment or a docstring changes no hash (see the test below)
    path.write_text(path.read_text() + text)
    stage.code_hash.cache_clear()


def test_the_code_hash_follows_what_a_stage_imports_and_nothing_else(package):
    before = {m: stage.code_hash(m) for m in ("judge", "eval_prompts", "generate", "analysis")}
    # a helper of judge: judge reruns; analysis reruns only through judge's outputs, as no stage imports another
    edit(package / "stages/llm_judge.py")
    after = {m: stage.code_hash(m) for m in before}
    assert after["judge"] != before["judge"] and after["analysis"] == before["analysis"]
    assert after["eval_prompts"] == before["eval_prompts"] and after["generate"] == before["generate"]
    edit(package / "core/text.py")  # answer normalisation: the reference judge's and the wrong-answer check's
    again = {m: stage.code_hash(m) for m in before}
    assert again["judge"] != after["judge"] and again["eval_prompts"] != after["eval_prompts"]
    assert again["generate"] == after["generate"]


def test_comments_docstrings_and_layout_change_no_stage_hash(package):
    # sft_data imports refusal, and most stages download: a comment there must rerun no fine-tune
    stages = ("sft_data", "train", "download", "judge", "analysis", "warmth")
    before = {m: stage.code_hash(m) for m in stages}
    edit(package / "core/refusal.py", "\n# a comment\n")
    source = (package / "stages/download.py").read_text()
    (package / "stages/download.py").write_text(source.replace('"""', '"""Reworded. ', 1).replace("\n\n", "\n\n\n", 1))
    stage.code_hash.cache_clear()
    assert {m: stage.code_hash(m) for m in stages} == before
    edit(package / "core/refusal.py")  # code, though: sft_data and what imports it change
    after = {m: stage.code_hash(m) for m in stages}
    assert after["sft_data"] != before["sft_data"] and after["warmth"] == before["warmth"]


@pytest.mark.parametrize("module, its_stages", [
    ("stages/download.py", {"download"}),  # fetching: config and plan read the sources from hub_sources
    # converting: the other stages read local_models (and the ledger reads its benchmark files without bench.py)
    ("stages/base_model.py", {"base_model"}),
    ("core/model_store.py", {"base_model"}),
])
def test_code_that_one_stage_runs_changes_that_stages_hash_only(package, module, its_stages):
    # config imported download, and llm base_model: an edit of either changed every stage's hash (so every fine-tune)
    stages = sorted({m for m in re.findall(r'stage\("(\w+)"', "".join(
        p.read_text() for p in (REPO / "workflow/rules").glob("*.smk")))})
    before = {m: stage.code_hash(m) for m in stages}
    edit(package / module)
    after = {m: stage.code_hash(m) for m in stages}
    assert {m for m in stages if after[m] != before[m]} == its_stages


def test_every_rule_names_the_function_it_runs_and_its_environment():
    rules = dict(rule_blocks())
    assert {"judge", "generate", "analysis", "download_scorer", "select_checkpoint"} <= set(rules)
    for name, body in rules.items():
        if "script:" not in body:
            continue
        found = re.search(r"stage=stage\(\"(\w+)\"(?:, \"(\w+)\")?\)", body)
        assert found, f"rule {name} has no params.stage"
        module, function = found.group(1), found.group(2) or "run"
        assert callable(getattr(importlib.import_module(f"warmbench.stages.{module}"), function)), name
        assert "conda:\n        ENV" in body, f"rule {name} names no environment"


def test_a_job_without_a_stage_param_fails_naming_its_rule():
    class Job:
        rule, params = "mystery", object()

    with pytest.raises(RuntimeError, match=r"rule mystery has no params\.stage"):
        stage.entrypoint(Job())


def test_an_unknown_stage_module_is_refused_when_the_workflow_is_parsed():
    with pytest.raises(ValueError, match=r"no stage module warmbench\.stages\.nosuch"):
        stage.stage("nosuch")


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
