"""Processes warmbench starts die with it: a parent killed with SIGTERM or SIGKILL leaves no child, no grandchild
and no temporary folder behind, even when the child ignores SIGTERM (as `transformers serve` did)."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from warmbench.core import children
from conftest import REPO

PREAMBLE = f"import sys; sys.path[:0] = [{str(REPO / 'workflow')!r}]\n"

# A stubborn child: ignores SIGTERM, starts a grandchild in its process group, and reports both pids.
STUBBORN = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    grandchild = subprocess.Popen(["sleep", "600"])
    with open(sys.argv[1], "w") as handle:
        handle.write(f"{os.getpid()} {grandchild.pid}")
    time.sleep(600)
    """)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has already died
    except FileNotFoundError:
        return False


def wait_gone(pids, timeout_s=30) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def wait_file(path, timeout_s=60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not (path.exists() and path.read_text()):
        time.sleep(0.05)
    return path.read_text()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_killed_parent_leaves_no_child_grandchild_or_temporary_folder(tmp_path, sig):
    pids, scratch = tmp_path / "pids", tmp_path / "scratch"
    scratch.mkdir()
    parent = subprocess.Popen([sys.executable, "-c", PREAMBLE + textwrap.dedent(f"""
        import sys, time
        from warmbench.core import children
        guardian = children.start([sys.executable, "-c", {STUBBORN!r}, {str(pids)!r}], grace_s=1.0,
                                  remove=({str(scratch)!r},))
        open({str(tmp_path / "guardian")!r}, "w").write(str(guardian.pid))
        time.sleep(600)  # a benchmark or job at work, with Python's default SIGTERM handling
        """)])
    child, grandchild = map(int, wait_file(pids).split())
    guardian = int(wait_file(tmp_path / "guardian"))
    os.kill(parent.pid, sig)
    parent.wait()
    assert wait_gone([guardian, child, grandchild]) == []
    assert not scratch.exists()  # the parent could not remove it; the guardian did


def test_stop_escalates_to_sigkill_and_run_stops_the_child_when_interrupted(tmp_path):
    pids = tmp_path / "pids"
    guardian = children.start([sys.executable, "-c", STUBBORN, str(pids)], grace_s=0.5)
    child, grandchild = map(int, wait_file(pids).split())
    started = time.monotonic()
    assert children.stop(guardian) == 128 + signal.SIGTERM and time.monotonic() - started < 10
    assert wait_gone([child, grandchild], timeout_s=5) == []
    # a parent told to stop while it waits (SIGTERM turned into SystemExit) takes its child down with it
    pids.unlink()
    code = PREAMBLE + textwrap.dedent(f"""
        import sys
        from warmbench.core import children
        children.exit_on_signals()
        children.run([sys.executable, "-c", {STUBBORN!r}, {str(pids)!r}], grace_s=0.5)
        """)
    parent = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    child, grandchild = map(int, wait_file(pids).split())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 128 + signal.SIGTERM
    assert wait_gone([child, grandchild], timeout_s=5) == []


def test_run_reports_the_childs_own_failure():
    with pytest.raises(subprocess.CalledProcessError) as failed:
        children.run([sys.executable, "-c", "import sys; sys.exit(3)"], check=True)
    assert failed.value.returncode == 3 and failed.value.cmd[0] == sys.executable
    done = children.run([sys.executable, "-c", "print('out')"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "out\n"


def serving(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
        return True
    except OSError:
        return False


def server_pids(argument) -> list[int]:
    """Pids of `transformers serve` processes with `argument` (a port, a model folder) on their command line."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            args = open(f"/proc/{entry}/cmdline", "rb").read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
            continue
        if b"serve" in args and str(argument).encode() in args:
            found.append(int(entry))
    return found


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_transformers_serve_dies_with_the_process_that_started_it(tiny_model_dir, tmp_path, sig):
    """The issue's case: `transformers serve` started by warmbench outlived its parent (seen under `warmbench bench
    judge` stopped by a timeout)."""
    from warmbench.core.local_server import free_port

    port, scratch = free_port(), tmp_path / "scratch"
    scratch.mkdir()
    parent = subprocess.Popen([sys.executable, "-c", PREAMBLE + textwrap.dedent(f"""
        import time
        from warmbench.core.local_server import LocalServer
        server = LocalServer({str(tiny_model_dir)!r}, {port}, {str(scratch / "server.log")!r}, remove=({str(scratch)!r},))
        open({str(tmp_path / "up")!r}, "w").write("up")
        time.sleep(600)
        """)])
    wait_file(tmp_path / "up", timeout_s=300)
    servers = server_pids(port)
    assert servers and serving(port)
    os.kill(parent.pid, sig)
    parent.wait()
    assert wait_gone(servers, timeout_s=30) == [] and not serving(port) and not scratch.exists()


@pytest.mark.slow
def test_bench_judge_stopped_by_sigterm_leaves_no_server_and_no_temporary_folder(tiny_model_dir, tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(REPO / "workflow")}
    bench = subprocess.Popen([sys.executable, "-m", "warmbench.tools.cli", "bench", "judge", "--model", str(tiny_model_dir),
                              "--items", "4"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, servers = time.monotonic() + 300, []
    while time.monotonic() < deadline and not servers:
        servers = [pid for pid in server_pids(tiny_model_dir) if alive(pid)]
        time.sleep(0.5)
    assert servers, "the benchmark never started its server"
    time.sleep(2)
    bench.send_signal(signal.SIGTERM)  # a timeout, a SLURM cancel
    bench.wait(timeout=120)
    assert wait_gone(servers, timeout_s=30) == []
    assert list(scratch.iterdir()) == []

