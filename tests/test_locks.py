"""One copy of a job at a time: the job lock between real processes, stale locks, and the workflow's check before
any job starts (the issue's case: snakemake killed alone, --unlock, restart while the old job runs on)."""
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from warmbench.core import locks
from conftest import LOOPBACK_KEY_ENV, REPO, kill_python_once, scratch_workflow

OUTPUTS = ["results/judged/m/original/base/triviaqa.parquet"]
PREAMBLE = f"import sys; sys.path[:0] = [{str(REPO / 'workflow')!r}]\n"


def hold_lock(lock_dir, ready, seconds=120, outputs=OUTPUTS):
    return PREAMBLE + textwrap.dedent(f"""
        import pathlib, time
        from warmbench.core.locks import job_lock
        with job_lock("judge", {outputs!r}, lock_dir={str(lock_dir)!r}, heartbeat_s=0.2):
            pathlib.Path({str(ready)!r}).touch()
            time.sleep({seconds})
        """)


def try_lock(lock_dir):
    code = PREAMBLE + textwrap.dedent(f"""
        from warmbench.core.locks import job_lock
        with job_lock("judge", {OUTPUTS!r}, lock_dir={str(lock_dir)!r}):
            print("ran")
        """)
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return result, time.monotonic() - started


def wait_for(path, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists()


def test_a_second_copy_stops_at_once_naming_the_first(tmp_path):
    lock_dir, ready = tmp_path / "locks", tmp_path / "ready"
    first = subprocess.Popen([sys.executable, "-c", hold_lock(lock_dir, ready)])
    try:
        wait_for(ready)
        second, seconds = try_lock(lock_dir)
        assert second.returncode != 0 and "ran" not in second.stdout and seconds < 15
        message = second.stderr
        assert "JobRunning: another copy of this job is running" in message
        assert f"pid {first.pid} on host {socket.gethostname()}" in message and "this copy stops" in message
    finally:
        first.kill()
        first.wait()


def test_the_lock_of_a_killed_job_is_taken_over_and_a_finished_job_leaves_none(tmp_path):
    lock_dir, ready = tmp_path / "locks", tmp_path / "ready"
    kill_python_once(hold_lock(lock_dir, ready), ready=ready.exists)  # kill -9: no chance to release
    assert list(lock_dir.glob("*.lock"))
    again, _ = try_lock(lock_dir)
    assert again.returncode == 0 and "ran" in again.stdout, again.stderr
    assert "took over a stale job lock" in again.stderr and "is no longer running on this host" in again.stderr
    assert not list(lock_dir.glob("*"))  # released at the end


def planted_lock(lock_dir, **holder):
    path = locks.lock_path("judge", OUTPUTS, lock_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": socket.gethostname(), "boot_id": locks._boot_id(), "pid": os.getpid(),
                                "start": locks.process_start(os.getpid()), "started": "then", "token": "t",
                                **holder}))
    return path


def test_a_reused_pid_or_a_reboot_makes_a_lock_stale(tmp_path):
    path = planted_lock(tmp_path, start="1")  # this pid, but a process that started at another time
    assert "no longer running" in locks.stale_reason(json.loads(path.read_text()), path)
    path = planted_lock(tmp_path, boot_id="another-boot")
    assert "rebooted" in locks.stale_reason(json.loads(path.read_text()), path)
    path = planted_lock(tmp_path)  # this very process: alive
    assert locks.stale_reason(json.loads(path.read_text()), path) is None


def test_another_hosts_lock_holds_until_its_heartbeat_stops(tmp_path):
    path = planted_lock(tmp_path, host="node-elsewhere", pid=1)
    with pytest.raises(locks.JobRunning, match="pid 1 on host node-elsewhere.*expires 600 s after its last heartbeat"):
        with locks.job_lock("judge", OUTPUTS, lock_dir=tmp_path):
            pass
    assert locks.running_copies([("judge", OUTPUTS)], lock_dir=tmp_path)
    old = time.time() - 700
    os.utime(path, (old, old))  # its heartbeat stopped 700 s ago: that node is gone
    assert locks.running_copies([("judge", OUTPUTS)], lock_dir=tmp_path) == []
    with locks.job_lock("judge", OUTPUTS, lock_dir=tmp_path) as held:
        assert json.loads(held.read_text())["pid"] == os.getpid()


def test_the_heartbeat_keeps_a_lock_fresh_and_release_spares_a_lock_taken_over(tmp_path):
    with locks.job_lock("judge", OUTPUTS, lock_dir=tmp_path, heartbeat_s=0.05) as path:
        old = time.time() - 700
        os.utime(path, (old, old))
        time.sleep(0.5)
        assert time.time() - path.stat().st_mtime < 5
        path.write_text(json.dumps({"token": "someone else's"}))  # taken over meanwhile
    assert path.exists()  # not ours any more: left alone


def test_the_workflow_stops_before_any_job_when_one_of_its_jobs_is_still_running(tmp_path):
    """A job of the DAG holds its lock (a copy left running by a killed snakemake): a real run stops before it
    starts anything, naming it, because snakemake would first delete that job's outputs and log."""
    work = scratch_workflow(tmp_path / "work")
    target = "results/sft_data/train.jsonl"
    outputs = [target, "results/sft_data/validation.jsonl", "results/prompts/validation.parquet",
               "results/sft_data/summary.csv"]
    ready = tmp_path / "ready"
    holder = subprocess.Popen([sys.executable, "-c", hold_lock(work / locks.LOCK_DIR, ready, outputs=outputs)
                               .replace('"judge"', '"sft_data"')], cwd=work)
    try:
        wait_for(ready)
        result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile",
                                 "tests/config/config.yaml", "--", target], cwd=work, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode != 0
        assert "These jobs are still running from an earlier run" in result.stderr
        assert f"sft_data (results/prompts/validation.parquet): pid {holder.pid}" in result.stderr
        assert not (work / "logs").exists()  # no job started
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_snakemake_killed_alone_then_unlocked_never_runs_a_job_twice(tmp_path, monkeypatch):
    """The issue's case: snakemake is killed, its persona_rewrite job runs on (waiting on a slow endpoint); after
    `--unlock` a restart stops at once naming that job, and no request is sent twice."""
    import threading

    from openai_stand_in import OpenAIStandIn

    monkeypatch.setenv(LOOPBACK_KEY_ENV, "loopback-test-key")
    stand_in, release = OpenAIStandIn(), threading.Event()
    stand_in.chat_handler = lambda request: release.wait(300) and "Warmly: " + request["messages"][0]["content"][-9:]
    try:
        work = scratch_workflow(tmp_path / "work")
        cfg = yaml.safe_load((REPO / "tests/config/config.yaml").read_text())
        cfg["persona_rewrite"]["backend"] = {"kind": "openai", "model": "gpt-4o-2024-08-06", "max_retries": 0,
                                             "base_url": stand_in.base_url, "api_key_env": LOOPBACK_KEY_ENV}
        (work / "api.yaml").write_text(yaml.safe_dump(cfg))
        command = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "api.yaml", "--",
                   "results/persona_rewrite/warm.jsonl"]
        first = subprocess.Popen(command, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)
        deadline = time.monotonic() + 300
        while not list((work / locks.LOCK_DIR).glob("persona_rewrite-*.lock")) and time.monotonic() < deadline:
            time.sleep(0.2)
        lock = next((work / locks.LOCK_DIR).glob("persona_rewrite-*.lock"))
        job_pid = json.loads(lock.read_text())["pid"]
        os.kill(first.pid, signal.SIGKILL)  # snakemake alone: its job runs on
        first.wait()
        os.kill(job_pid, 0)
        unlock = subprocess.run(command[:-2] + ["--unlock"], cwd=work, capture_output=True, text=True, timeout=300)
        assert unlock.returncode == 0, unlock.stderr[-2000:]
        asked = stand_in.chat_requests
        again = subprocess.run(command, cwd=work, capture_output=True, text=True, timeout=300)
        assert again.returncode != 0 and "These jobs are still running from an earlier run" in again.stderr
        assert f"pid {job_pid}" in again.stderr and stand_in.chat_requests == asked  # nothing asked twice
        release.set()  # the endpoint answers: the first copy finishes its work alone
        deadline = time.monotonic() + 300
        while lock.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not lock.exists() and (work / "results/persona_rewrite/warm.jsonl").exists()
    finally:
        release.set()
        stand_in.close()
