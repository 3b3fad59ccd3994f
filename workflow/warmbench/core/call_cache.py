"""The LLM call cache: completed calls by content hash, safe for many jobs on many cluster nodes at once.

A cache is a directory (the workflow's is results/cache/llm_calls/) of append-only JSONL shards. Each process
writes to a shard of its own (`<host>-<pid>-<time>-<random>.jsonl`, created at its first call) and reads every
shard. No file is ever written by two processes, rewritten or locked, so the cache needs none of the file locking
that network filesystems do not reliably give (SQLite documents that its WAL mode does not work over NFS).

- Crash safety: a record is one line `{"key", "response", "meta", "created"}`, written, flushed and fsync'ed
  before the call counts as done; `kill -9` loses at most the call in flight. A torn last line (a write cut off)
  has no newline and is skipped by every reader.
- Damage is never fatal: each record carries the checksum of its own content (`sha256`; older records have none
  and are read as they are). A damaged record (bad bytes, bad JSON, a torn tail, content that does not match its
  checksum) is skipped with a warning naming its shard and line, so its call is simply made again.
- A bad reply is never kept: an empty or null response is not stored (`put` refuses it), so a rerun asks again.
- Each record names the rule of the job that made the call (`rule`, from the environment variable RULE_ENV that
  stage.run_job sets), so the cost ledger can say what each stage spent.
- The same key written twice resolves to the earliest record, identically for every reader.
- Two jobs asking the same question at once pay once: an API call is made under a lock file of its key
  (`.locks/<key>.lock`, locks.py's lock files and staleness rules). A second asker of that key waits for the
  lock, then reads the first's answer from the first's shard (only the lines appended since it last read:
  cheap), or asks itself if there is none (the first got an empty reply, failed, or died: its lock is stale).
  The only file locks are these, short-lived and created with O_EXCL, which NFS honours.
- The single SQLite file of earlier warmbench versions (`<cache>.sqlite`, e.g. results/cache/llm_calls.sqlite)
  is copied into a shard of this directory on first open, so no paid call is lost; the file itself is left as is.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable

from . import locks
from .files import fsync_dir, stable_hash

log = logging.getLogger(__name__)

SHARD_SUFFIX = ".jsonl"
RULE_ENV = "WARMBENCH_RULE"  # the rule of the running job (set by stage.run_job), recorded with each call
_KEY_PREFIX = b'{"key": "'  # every record starts with its key: lines for other keys are skipped unparsed
_KEY_LENGTH = 64  # sha256 hex
CHECKSUM = "sha256"  # a record's checksum of its own content (records written before it have none)
TORN_AFTER_S = 60.0  # a line without its newline this old is a cut-off write, not one being written
KEY_LOCKS = ".locks"  # per-key lock files of calls in flight, under the cache directory


def key_lock_path(root: str | os.PathLike, key: str) -> Path:
    return Path(root) / KEY_LOCKS / f"{key}.lock"


def is_answer(text: str | None) -> bool:
    """Whether a reply is worth keeping: an empty or null reply is a failure, never an answer."""
    return bool(text and text.strip())


class CallCache:
    """Completed LLM calls by content hash, in a directory of per-process append-only shards."""

    def __init__(self, path: str | os.PathLike):
        path = Path(path)
        legacy = path.with_suffix(".sqlite")
        if path.is_file():  # given the old single-file cache itself: its directory sits beside it
            legacy, path = path, path.with_suffix("")
        self.root = path
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._handle = None
        self._owner_pid = None
        self._read_to: dict[Path, int] = {}  # per shard: the bytes of whole lines already read
        self._watched: set[str] = set()  # keys being asked: their records are kept when the tail is read
        self._recent: dict[str, dict] = {}
        if legacy.is_file() and legacy != path:
            migrate_sqlite(legacy, self.root)

    @staticmethod
    def key(backend_id: dict, messages, sampling, response_format: dict | None = None) -> str:
        request = {"backend": backend_id, "messages": messages, "sampling": sampling.as_dict()}
        if response_format is not None:  # a structured-output request is another request (plain keys unchanged)
            request["response_format"] = response_format
        return stable_hash(request)

    # --- reading -----------------------------------------------------------------------------------------------
    def shards(self) -> list[Path]:
        return sorted(p for p in self.root.glob(f"*{SHARD_SUFFIX}") if not p.name.startswith("."))

    def _records(self, wanted: set[str] | None = None, valid: Callable[[str], bool] | None = None) -> Iterable[dict]:
        """Every intact record (of the `wanted` keys), shard by shard. A damaged one (bad bytes, bad JSON, a
        checksum that does not match, a response `valid` rejects, a torn tail no writer is still at) is skipped
        with a warning naming its shard and line, so its call is made again."""
        for shard in self.shards():
            try:
                handle = open(shard, "rb")
            except FileNotFoundError:
                continue
            with handle:
                read = 0
                for number, line in enumerate(handle, start=1):
                    if not line.endswith(b"\n"):
                        _warn_torn_tail(shard, number)
                        continue
                    read += len(line)
                    if wanted is not None and line.startswith(_KEY_PREFIX):
                        if line[len(_KEY_PREFIX): len(_KEY_PREFIX) + _KEY_LENGTH].decode("ascii", "replace") not in wanted:
                            continue
                    record, damage = _parse(line, valid)
                    if damage:
                        log.warning("%s:%d: damaged cache record (%s), skipped: its call is made again",
                                    shard, number, damage)
                    elif is_answer(record.get("response")) and (wanted is None or record["key"] in wanted):
                        yield record
            self._read_to[shard] = max(read, self._read_to.get(shard, 0))

    def get_many(self, keys: Iterable[str], valid: Callable[[str], bool] | None = None) -> dict[str, tuple[str, dict]]:
        """(response, meta) of every given key that is cached, read in one pass over the shards; a response that
        `valid` rejects counts as damaged (skipped with a warning)."""
        wanted = set(keys)
        best: dict[str, dict] = {}
        if not wanted:
            return {}
        for record in self._records(wanted, valid):
            held = best.get(record["key"])
            if held is None or record.get("created", 0) < held.get("created", 0):
                best[record["key"]] = record
        return {k: (r["response"], r.get("meta") or {}) for k, r in best.items()}

    def get_with_meta(self, key: str) -> tuple[str, dict] | None:
        return self.get_many([key]).get(key)

    def get(self, key: str) -> str | None:
        hit = self.get_with_meta(key)
        return hit[0] if hit else None

    def __len__(self) -> int:
        return len({record["key"] for record in self._records()})

    # --- asking once -------------------------------------------------------------------------------------------
    def watch(self, keys: Iterable[str]) -> None:
        """Keys about to be asked: another asker's answer to any of them is kept when fresh() reads the tails."""
        with self._lock:
            self._watched.update(keys)

    def fresh(self, key: str) -> tuple[str, dict] | None:
        """A watched key's answer if one was appended to any shard since this cache last read that shard (get_many,
        or fresh itself): reads only the new whole lines, so a check before each call stays cheap."""
        with self._lock:
            for shard in self.shards():
                self._read_tail(shard)
            hit = self._recent.get(key)
        return (hit["response"], hit.get("meta") or {}) if hit else None

    def _read_tail(self, shard: Path) -> None:
        start = self._read_to.get(shard, 0)
        try:
            handle = open(shard, "rb")
        except FileNotFoundError:
            return
        with handle:
            handle.seek(start)
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # being written, or torn: read again next time
                start += len(line)
                record, _ = _parse(line, None)  # damage is reported by the full read
                if record and record["key"] in self._watched and is_answer(record.get("response")):
                    held = self._recent.get(record["key"])
                    if held is None or record.get("created", 0) < held.get("created", 0):
                        self._recent[record["key"]] = record
        self._read_to[shard] = start

    @contextmanager
    def asking(self, key: str, stale_after_s: float = locks.STALE_AFTER_S, poll_s: float = 0.05):
        """Hold `key`'s lock while asking it. Yields the (response, meta) another asker stored meanwhile (then ask
        nothing), or None: ask, and put the answer before the block ends, so an asker waiting on the lock reads it."""
        path, owner = key_lock_path(self.root, key), locks.owner_record(key=key)
        while True:
            hit = self.fresh(key)
            if hit is not None:
                yield hit
                return
            try:
                locks.acquire(path, owner, stale_after_s)
                break
            except locks.JobRunning:  # another asker is at it: wait for its answer (or for it to fail or die)
                locks.wait_released(path, stale_after_s, poll_s)
        try:
            yield self.fresh(key)  # answered between the check and the lock
        finally:
            locks.release(path, owner)

    # --- writing -----------------------------------------------------------------------------------------------
    def put(self, key: str, response: str | None, meta: dict) -> bool:
        """Store one completed call (durably: fsync'ed before returning). An empty or null reply is refused
        (returns False), so a rerun asks for it again."""
        return self.put_many([(key, response, meta)]) == 1

    def put_many(self, records: Iterable[tuple[str, str | None, dict]]) -> int:
        """Store calls that completed together (a batch of a local model) with one fsync; returns how many were
        stored (empty or null replies are refused, as by put)."""
        now, rule = time.time(), os.environ.get(RULE_ENV)
        lines = [_line({"key": key, "response": response, "meta": meta, "created": now, "rule": rule})
                 for key, response, meta in records if is_answer(response)]
        if lines:
            with self._lock:
                handle = self._shard()
                handle.write(b"".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
        return len(lines)

    def _shard(self):
        if self._handle is None or self._owner_pid != os.getpid():  # a forked child never shares its parent's shard
            host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"
            name = f"{host}-{os.getpid()}-{time.time_ns()}-{secrets.token_hex(4)}{SHARD_SUFFIX}"
            fd = os.open(self.root / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            self._handle, self._owner_pid = os.fdopen(fd, "ab"), os.getpid()
            fsync_dir(self.root)  # the new shard's name survives a crash too
        return self._handle

    def close(self) -> None:
        with self._lock:
            if self._handle is not None and self._owner_pid == os.getpid():
                self._handle.close()
            self._handle = None


def _line(record: dict) -> bytes:
    """A record as one line, with the checksum of its content (of the JSON as read back, so any reader agrees)."""
    record = json.loads(json.dumps(record, ensure_ascii=False, default=str))  # key first: readers skip by its prefix
    return (json.dumps({**record, CHECKSUM: stable_hash(record)}, ensure_ascii=False) + "\n").encode("utf-8")


def _parse(line: bytes, valid: Callable[[str], bool] | None) -> tuple[dict | None, str | None]:
    """(record, None) for an intact line, else (None, what is wrong with it). A record without a checksum (written
    before there was one) is taken as it is."""
    try:
        record = json.loads(line)
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except ValueError:
        return None, "not JSON"
    if not isinstance(record, dict) or not isinstance(record.get("key"), str):
        return None, "not a cache record"
    checksum = record.pop(CHECKSUM, None)
    if checksum is not None and checksum != stable_hash(record):
        return None, "its content does not match its checksum"
    if valid is not None and is_answer(record.get("response")) and not valid(record["response"]):
        return None, "not a valid response"
    return record, None


def _warn_torn_tail(shard: Path, number: int) -> None:
    """A line without its newline is a write cut off by a crash, or one still being written: only a tail older than
    TORN_AFTER_S is reported (as damaged); both are skipped."""
    try:
        age = time.time() - shard.stat().st_mtime
    except FileNotFoundError:
        return
    if age > TORN_AFTER_S:
        log.warning("%s:%d: damaged cache record (a torn tail, its write cut off), skipped: its call is made again",
                    shard, number)


def migrate_sqlite(legacy: Path, root: Path) -> int:
    """Copy the calls of an old single-file SQLite cache into one shard of `root` (once per version of the file:
    the shard's name records its size and mtime). Several jobs opening the cache at once each write the same
    shard and rename it into place, so the result is one complete copy. Empty replies are left behind."""
    import sqlite3

    stat = legacy.stat()
    target = root / f"migrated-{legacy.stem}-{stat.st_size}-{stat.st_mtime_ns}{SHARD_SUFFIX}"
    if target.exists():
        return 0
    tmp = root / f".{target.name}.{os.getpid()}.tmp"
    connection = sqlite3.connect(str(legacy), timeout=60)  # not read-only: SQLite may need to replay its WAL
    count = 0
    try:
        with open(tmp, "wb") as handle:
            for key, response, meta, created in connection.execute("SELECT key, response, meta, created FROM calls"):
                if not is_answer(response):
                    continue
                handle.write(_line({"key": key, "response": response, "meta": json.loads(meta), "created": created}))
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
    finally:
        connection.close()
    os.replace(tmp, target)
    fsync_dir(root)
    log.info("migrated %d cached calls from %s into %s", count, legacy, target)
    return count
