"""Processes warmbench starts (servers, vLLM workers, `accelerate launch`, benchmark runs) die with it, however
it ends: a normal exit, an exception, SIGTERM (a timeout, a SLURM cancel), or SIGKILL.

Each child runs under a small guardian process (this file, run as a script; standard library only):

    python children.py GRACE_S PARENT_PID [--remove DIR]... -- CMD...

- The kernel sends the guardian SIGTERM the moment its parent dies, even by SIGKILL (Linux PR_SET_PDEATHSIG;
  elsewhere the guardian notices within 0.2 s that its parent changed).
- The guardian starts CMD in a process group of its own. Told to stop (SIGTERM, SIGINT, SIGHUP, or its parent's
  death), it sends the whole group SIGTERM, then SIGKILL after GRACE_S seconds: a server that ignores SIGTERM
  (as `transformers serve` can, mid-request) and any grandchildren (vLLM's engine, accelerate's per-GPU
  processes) die too. SIGUSR1 kills the group at once (a test's "crash").
- If its parent died, it then removes the `--remove` folders (the temporary files the parent could no longer
  delete) and exits. When CMD ends by itself, what is left of its group is stopped the same way and the guardian
  exits with CMD's status.

PR_SET_PDEATHSIG fires when the *thread* that started the guardian ends: start children from a thread that
outlives them (warmbench starts them from the thread that waits for them).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding `warmbench/` (this is warmbench/core/)


def child_env() -> dict:
    """This process's environment for a `python -m warmbench.<module>` child (vLLM's own venv, or each process
    of `accelerate launch`): the same, with warmbench importable."""
    paths = [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}


GUARDIAN = str(Path(__file__).resolve())
DEFAULT_GRACE_S = 10.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send this process `sig` when its parent dies (Linux only; returns whether it could)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def start(cmd: list[str], *, grace_s: float = DEFAULT_GRACE_S, remove: tuple = (), **popen) -> subprocess.Popen:
    """Start `cmd` under a guardian (see the module docstring); returns the guardian's Popen, whose stdin, stdout,
    stderr, env and cwd `cmd` inherits. Stop it with `stop`. `remove`: folders the guardian deletes should this
    process die before the child."""
    if popen.get("start_new_session") or popen.get("process_group") is not None:
        raise ValueError("the guardian makes the child's process group itself")
    # -I: the guardian imports nothing from this environment (nor warmbench's io.py in place of the standard one)
    guard = [sys.executable, "-I", GUARDIAN, str(grace_s), str(os.getpid())]
    for folder in remove:
        guard += ["--remove", str(folder)]
    return subprocess.Popen(guard + ["--", *map(str, cmd)], **popen)


def stop(proc: subprocess.Popen, at_once: bool = False, timeout_s: float | None = None) -> int:
    """Stop a child started by `start` and wait for it: its group gets SIGTERM, then SIGKILL after the grace time
    (`at_once`: SIGKILL straight away). Returns the guardian's exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGUSR1 if at_once else signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()  # the guardian is stuck: its child still gets its own parent-death signal
        return proc.wait()


def run(cmd: list[str], *, check: bool = False, grace_s: float = DEFAULT_GRACE_S, remove: tuple = (),
        **popen) -> subprocess.CompletedProcess:
    """subprocess.run for a guarded child: if this process is interrupted or told to stop while it waits (an
    exception, SystemExit from a SIGTERM handler), the child is stopped before the exception goes on."""
    if popen.pop("capture_output", False):
        popen["stdout"] = popen["stderr"] = subprocess.PIPE
    proc = start(cmd, grace_s=grace_s, remove=remove, **popen)
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        stop(proc)
        raise
    if check and proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd, stdout, stderr)
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def exit_on_signals(signals=(signal.SIGTERM, signal.SIGHUP)) -> None:
    """Turn a stop signal into SystemExit in the main thread, so `with` blocks and `finally` clauses run: children
    are stopped, locks released, temporary folders removed (Python's default for SIGTERM skips all of that)."""
    import threading

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
        for sig in signals:
            signal.signal(sig, handler)


# --- the guardian ------------------------------------------------------------------------------------------------
def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _stop_group(child: subprocess.Popen, grace_s: float) -> None:
    pgid = child.pid  # the child leads its own group (start_new_session)
    try:
        if grace_s > 0:
            os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        child.poll()  # reap the leader, so a dead leader does not count as alive
        if not _group_alive(pgid):
            break
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def _guard(argv: list[str]) -> int:
    grace_s, parent = float(argv[0]), int(argv[1])
    rest = argv[2:]
    split = rest.index("--")
    options, cmd = rest[:split], rest[split + 1:]
    remove = [options[i + 1] for i, option in enumerate(options) if option == "--remove"]
    stopping: list[int] = []
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    signal.signal(signal.SIGUSR1, lambda signum, frame: stopping.append(signum))
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the line above took effect
        stopping.append(signal.SIGTERM)
    # the child dies with the guardian too, should the guardian itself be killed
    child = subprocess.Popen(cmd, start_new_session=True, preexec_fn=lambda: die_with_parent(signal.SIGKILL))
    status, orphaned = None, False
    while status is None:
        orphaned = os.getppid() != parent
        if stopping or orphaned:
            _stop_group(child, 0 if signal.SIGUSR1 in stopping else grace_s)
            status = 128 + (stopping[0] if stopping else signal.SIGTERM)
            break
        try:
            status = child.wait(timeout=0.2)
        except subprocess.TimeoutExpired:
            continue
        if _group_alive(child.pid):  # CMD ended but left processes behind
            _stop_group(child, grace_s)
        status = status if status >= 0 else 128 - status
    if orphaned or os.getppid() != parent:
        for folder in remove:
            shutil.rmtree(folder, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(_guard(sys.argv[1:]))
