"""One copy of a job at a time: an exclusive lock on a job's outputs that works on a network filesystem.

Snakemake's own lock (.snakemake/locks) guards one snakemake process, not its jobs: kill snakemake alone and its
jobs run on; `snakemake --unlock` and a restart then start the same jobs again beside them (the same paid calls
twice, two writers on one output). So every job takes a lock of its own before it starts:

- The lock is a file, `.warmbench/locks/<rule>-<hash of its outputs>.lock`, created with O_CREAT|O_EXCL, which
  is atomic on local disks and on NFS (v3 and later); no `flock`/`fcntl` locking, which NFS may not honour. It
  holds the owner's host, boot id, pid, process start time, rule and outputs; its owner touches it every
  HEARTBEAT_S seconds while the job runs and deletes it at the end (also on an exception or SIGTERM).
- A second copy finds the file and stops at once, naming the owner, unless the owner is provably gone:
  on the same host, its pid is not running (or is another process now: the start time differs, or the host
  rebooted); on another host, which cannot be asked, its heartbeat stopped more than STALE_AFTER_S ago. A stale
  lock is taken over (under a short-lived breaker file, so two contenders never both take it).
- Before it starts any job, the workflow (common.smk, `onstart`) stops with the same message if any job it would
  run holds a live lock: snakemake deletes a job's old outputs and log before starting it, which must not happen
  under a copy that is still running.
- Across hosts, therefore: a job whose node died holds its lock until STALE_AFTER_S after its last heartbeat; a
  rerun before that stops with a message saying so and naming the file, which may be deleted by hand once that
  job is known to be dead. A job frozen for longer than STALE_AFTER_S (e.g. SIGSTOP) would lose its lock.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .files import fsync_dir, stable_hash

log = logging.getLogger(__name__)

LOCK_DIR = ".warmbench/locks"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # ten missed heartbeats
BREAKER_STALE_S = 60.0  # a breaker file left by a contender that died while taking over


class JobRunning(RuntimeError):
    """Another copy of this job holds its lock."""


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """When a process started (clock ticks since boot, from /proc), to tell it from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _running(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    now = process_start(pid)
    return start is None or now is None or now == start


def lock_path(rule: str, outputs, lock_dir: str | os.PathLike = LOCK_DIR) -> Path:
    return Path(lock_dir) / f"{rule}-{stable_hash(sorted(map(str, outputs)))[:16]}.lock"


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _age_s(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def stale_reason(holder: dict | None, path: Path, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why the lock's owner is gone, or None while it may be running."""
    if holder is None:  # unreadable: being written this instant, or left half written by a crash
        return f"unreadable for {_age_s(path):.0f} s" if _age_s(path) > BREAKER_STALE_S else None
    if holder.get("host") == socket.gethostname():
        if holder.get("boot_id") and holder["boot_id"] != _boot_id():
            return "its host has rebooted since"
        if not _running(int(holder["pid"]), holder.get("start")):
            return f"pid {holder['pid']} is no longer running on this host"
        return None
    age = _age_s(path)
    return f"no heartbeat from host {holder.get('host')} for {age:.0f} s" if age > stale_after_s else None


def _describe(holder: dict | None, path: Path) -> str:
    if holder is None:
        return f"a lock file being written ({path})"
    return (f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}, "
            f"last heartbeat {_age_s(path):.0f} s ago (lock {path})")


def _take_over(path: Path, holder: dict | None, reason: str) -> None:
    """Delete a stale lock, unless another contender is at it or the lock changed hands meanwhile."""
    breaker = path.with_name(path.name + ".break")
    try:
        os.close(os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        if _age_s(breaker) > BREAKER_STALE_S:
            breaker.unlink(missing_ok=True)  # its contender died mid-way; the next attempt retries
        return
    try:
        now = _read(path)
        if (now or {}).get("token") == (holder or {}).get("token"):
            path.unlink(missing_ok=True)
            log.warning("took over a stale job lock %s: %s", path, reason)
    finally:
        breaker.unlink(missing_ok=True)


def acquire(path: Path, owner: dict, stale_after_s: float = STALE_AFTER_S) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read(path)
            try:
                reason = stale_reason(holder, path, stale_after_s)
            except FileNotFoundError:
                continue  # released this instant: try again
            if reason is None:
                raise JobRunning(
                    f"another copy of this job is running: {_describe(holder, path)}. Two copies would pay for the "
                    f"same calls twice and write the same outputs, so this copy stops. If that job is dead (its "
                    f"node crashed), its lock expires {stale_after_s:.0f} s after its last heartbeat, or delete "
                    f"{path}.") from None
            _take_over(path, holder, reason)
            time.sleep(0.05)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(owner))
            handle.flush()
            os.fsync(handle.fileno())
        fsync_dir(path.parent)
        return
    raise JobRunning(f"could not take the job lock {path}: other processes keep taking it")


def running_copies(jobs, lock_dir: str | os.PathLike = LOCK_DIR, stale_after_s: float = STALE_AFTER_S) -> list[str]:
    """Of these (rule, outputs) jobs, those another process is running now (held, not stale), described. Run by
    snakemake before it starts any job: it deletes a job's old outputs and logs before starting it, so a copy
    still running must be found before that, not only by the job's own lock."""
    found = []
    for rule, outputs in jobs:
        path = lock_path(rule, outputs, lock_dir)
        holder = _read(path)
        try:
            if holder is not None and stale_reason(holder, path, stale_after_s) is None:
                found.append(f"{rule} ({sorted(map(str, outputs))[0]}): {_describe(holder, path)}")
        except FileNotFoundError:
            continue
    return found


def owner_record(**fields) -> dict:
    """Who holds a lock: enough to tell, from any host, whether it is still running (see stale_reason)."""
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(),
            "start": process_start(os.getpid()), "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), **fields,
            "token": secrets.token_hex(8)}


def held(path: Path, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether a live owner holds the lock (not released, not stale)."""
    try:
        return path.exists() and stale_reason(_read(path), path, stale_after_s) is None
    except FileNotFoundError:
        return False  # released this instant


def wait_released(path: Path, stale_after_s: float = STALE_AFTER_S, poll_s: float = 0.05) -> None:
    """Until the lock is released or its owner is gone (stale: the next acquire takes it over)."""
    while held(path, stale_after_s):
        time.sleep(poll_s)


def release(path: Path, owner: dict) -> None:
    if (_read(path) or {}).get("token") == owner["token"]:  # never a lock taken over from us meanwhile
        path.unlink(missing_ok=True)


@contextmanager
def job_lock(rule: str, outputs, lock_dir: str | os.PathLike = LOCK_DIR, heartbeat_s: float = HEARTBEAT_S,
             stale_after_s: float = STALE_AFTER_S):
    """Hold the exclusive lock of the job that writes `outputs` (see the module docstring) for the `with` block;
    raise JobRunning at once if another live copy holds it."""
    path = lock_path(rule, outputs, lock_dir)
    owner = owner_record(rule=rule, outputs=sorted(map(str, outputs)))
    acquire(path, owner, stale_after_s)
    stopped = threading.Event()

    def heartbeat() -> None:
        while not stopped.wait(heartbeat_s):
            try:
                os.utime(path)
            except OSError as err:
                log.warning("job lock %s: heartbeat failed (%s)", path, err)

    threading.Thread(target=heartbeat, name="job-lock-heartbeat", daemon=True).start()
    try:
        yield path
    finally:
        stopped.set()
        release(path, owner)
