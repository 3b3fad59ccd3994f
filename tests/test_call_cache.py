"""The LLM call cache on a cluster: several real writer processes at once, a writer killed mid-write, a torn
last line, the old SQLite cache, and empty replies that must never be kept."""
import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from warmbench.core.files import stable_hash
from warmbench.core.call_cache import CallCache
from warmbench.core.llm import OpenAIChat, Sampling, cached_chat
from conftest import REPO, kill_python_once

PREAMBLE = f"import sys; sys.path[:0] = [{str(REPO / 'workflow')!r}]\n"


def key_of(name) -> str:
    return stable_hash(name)


def run_python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", PREAMBLE + textwrap.dedent(code)], stderr=subprocess.PIPE, text=True)


def test_several_processes_write_and_read_one_cache_at_once(tmp_path):
    """Four real processes write 60 calls each into one cache (10 of them the same keys, as when two jobs ask the
    same question), reading it all the while: every call survives whole, every reader agrees."""
    root = tmp_path / "llm_calls"
    writers = [run_python(f"""
        from warmbench.core.llm import CallCache
        from warmbench.core.files import stable_hash
        cache = CallCache({str(root)!r})
        for i in range(60):
            name = ("shared", i) if i < 10 else ({w}, i)
            assert cache.put(stable_hash(name), f"answer {{name}} from writer {w} " + "x" * 2000, {{"writer": {w}}})
            if i % 10 == 0:
                seen = cache.get_many([stable_hash(("shared", j)) for j in range(10)])
                assert all(text.startswith("answer") for text, _ in seen.values())
        """) for w in range(4)]
    for proc in writers:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
    cache = CallCache(root)
    assert len(cache.shards()) == 4  # one shard per writer, written by that writer alone
    assert len(cache) == 10 + 4 * 50
    for w in range(4):
        for i in range(10, 60):
            text, meta = cache.get_with_meta(key_of((w, i)))
            assert text.startswith(f"answer ({w}, {i}) from writer {w} ") and meta == {"writer": w}
    # a key written by several processes resolves to the same (earliest) record for every reader
    shared = cache.get_many([key_of(("shared", j)) for j in range(10)])
    assert shared == CallCache(root).get_many([key_of(("shared", j)) for j in range(10)]) and len(shared) == 10
    for shard in cache.shards():
        assert shard.read_bytes().endswith(b"\n")


def test_writer_killed_mid_write_loses_at_most_the_call_in_flight(tmp_path):
    """kill -9 while a writer streams large records: every call whose put() returned is there, intact; the torn
    last line is skipped; the cache stays writable."""
    root, done = tmp_path / "llm_calls", tmp_path / "done.txt"
    kill_python_once(PREAMBLE + textwrap.dedent(f"""
        import os
        from warmbench.core.llm import CallCache
        from warmbench.core.files import stable_hash
        cache = CallCache({str(root)!r})
        progress = os.open({str(done)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        for i in range(10_000):
            cache.put(stable_hash(i), str(i) * 400_000, {{"i": i}})  # a few MB a record: kills land mid-write
            os.write(progress, f"{{i}}\\n".encode())  # put() returned: this call must survive
            os.fsync(progress)
        """), ready=lambda: done.exists() and len(done.read_text().split()) >= 5)
    completed = [int(i) for i in done.read_text().split()]
    cache = CallCache(root)
    stored = cache.get_many([key_of(i) for i in range(completed[-1] + 2)])
    assert set(range(len(completed))) <= {meta["i"] for _, meta in stored.values()}
    assert len(stored) <= len(completed) + 1  # at most the call in flight besides (written, not yet reported)
    for text, meta in stored.values():
        assert text == str(meta["i"]) * 400_000  # whole, never a torn prefix
    assert len(cache) == len(stored)
    assert cache.put(key_of("after"), "written after the crash", {}) and CallCache(root).get(key_of("after"))


def test_a_torn_last_line_is_skipped(tmp_path):
    cache = CallCache(tmp_path / "llm_calls")
    cache.put(key_of("a"), "complete", {})
    shard = cache.shards()[0]
    with open(shard, "ab") as handle:  # what a writer killed mid-record leaves behind
        handle.write(b'{"key": "' + key_of("b").encode() + b'", "response": "cut off he')
    reader = CallCache(tmp_path / "llm_calls")
    assert reader.get(key_of("a")) == "complete" and reader.get(key_of("b")) is None and len(reader) == 1


def test_empty_or_null_replies_are_never_cached(tmp_path):
    cache = CallCache(tmp_path / "llm_calls")
    assert not cache.put(key_of("x"), "", {}) and not cache.put(key_of("x"), "  \n", {})
    assert not cache.put(key_of("x"), None, {})
    assert cache.get(key_of("x")) is None and len(cache) == 0 and cache.shards() == []


def test_a_server_answering_empty_replies_is_asked_again_once_fixed(tmp_path, monkeypatch):
    """Through the real openai SDK against a loopback server: empty replies come back as "", are not cached, and
    the rerun after the server is fixed asks for exactly those again."""
    from openai_stand_in import OpenAIStandIn

    monkeypatch.setenv("WARMBENCH_TEST_KEY", "loopback")
    stand_in = OpenAIStandIn()
    try:
        chat = OpenAIChat("gpt-4o-2024-08-06", base_url=stand_in.base_url, api_key_env="WARMBENCH_TEST_KEY",
                          max_retries=0)
        asks = [[{"role": "user", "content": f"question {i}"}] for i in range(6)]
        stand_in.chat_handler = lambda request: None if request["messages"][0]["content"] in ("question 1",
                                                                                            "question 4") else ""
        first = cached_chat(chat, CallCache(tmp_path / "llm_calls"), asks, Sampling())
        assert first.texts == [""] * 6 and first.empty == 6 and len(CallCache(tmp_path / "llm_calls")) == 0
        stand_in.chat_handler = lambda request: "fixed: " + request["messages"][0]["content"]
        second = cached_chat(chat, CallCache(tmp_path / "llm_calls"), asks, Sampling())
        assert second.calls == 6 and stand_in.chat_requests == 12 and second.empty == 0
        assert second.texts == [f"fixed: question {i}" for i in range(6)]
        usage = second.replies[0]
        assert usage["prompt_tokens"] == 7 and usage["completion_tokens"] == 3  # kept for a cost ledger
        record = json.loads(CallCache(tmp_path / "llm_calls").shards()[0].read_text().splitlines()[0])
        assert record["meta"]["reply"]["prompt_tokens"] == 7
    finally:
        stand_in.close()


def old_sqlite_cache(path, rows):
    """A cache as warmbench wrote it before the shards: one SQLite file in WAL mode."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, response TEXT NOT NULL, "
               "meta TEXT NOT NULL, created REAL NOT NULL)")
    db.executemany("INSERT INTO calls VALUES (?, ?, ?, ?)", rows)
    db.commit()
    db.close()


def test_an_old_sqlite_cache_is_migrated_and_its_calls_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("WARMBENCH_TEST_KEY", "k")
    chat = OpenAIChat("gpt-4o-2024-08-06", base_url="http://127.0.0.1:9/v1", api_key_env="WARMBENCH_TEST_KEY")
    asks = [[{"role": "user", "content": q}] for q in ("paid for once", "paid for twice", "came back empty")]
    keys = [CallCache.key(chat.identity, a, Sampling()) for a in asks]
    old_identity = {"kind": "openai", "model": "gpt-4o-2024-08-06", "base_url": "http://127.0.0.1:9/v1"}
    assert keys == [stable_hash({"backend": old_identity, "messages": a, "sampling": Sampling().as_dict()})
                    for a in asks]  # API calls keep the keys the old cache stored them under
    old_sqlite_cache(tmp_path / "llm_calls.sqlite", [
        (keys[0], "answer one", json.dumps({"reply": {"model": "gpt-4o-2024-08-06"}}), 1.0),
        (keys[1], "answer two", json.dumps({}), 2.0),
        (keys[2], "", json.dumps({}), 3.0)])
    cache = CallCache(tmp_path / "llm_calls")  # the new location, beside the old file
    assert cache.get_with_meta(keys[0]) == ("answer one", {"reply": {"model": "gpt-4o-2024-08-06"}})
    assert cache.get(keys[1]) == "answer two" and cache.get(keys[2]) is None  # an empty reply is not carried over
    assert len(CallCache(tmp_path / "llm_calls").shards()) == 1  # migrated once, not on every open
    assert CallCache(tmp_path / "llm_calls.sqlite").get(keys[1]) == "answer two"  # the old path still works
    # no call is made for what the old cache held: cached_chat answers both without the (unreachable) server
    result = cached_chat(chat, cache, asks[:2], Sampling())
    assert result.calls == 0 and result.texts == ["answer one", "answer two"]


@pytest.mark.parametrize("torn", [b"{not json\n"])
def test_a_corrupt_line_is_skipped_not_fatal(tmp_path, torn):
    cache = CallCache(tmp_path / "llm_calls")
    cache.put(key_of("a"), "fine", {})
    with open(cache.shards()[0], "ab") as handle:
        handle.write(torn)
    cache.put(key_of("b"), "also fine", {})
    assert CallCache(tmp_path / "llm_calls").get_many([key_of("a"), key_of("b")]).keys() == {key_of("a"), key_of("b")}


def damage(shard, transform) -> None:
    """Rewrite a shard's first line through `transform` (bytes -> bytes), as a bad disk or a hand edit would."""
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(transform(lines[0]) + b"".join(lines[1:]))


@pytest.mark.parametrize("how", ["bad_bytes", "bad_json", "edited_reply"])
def test_a_damaged_record_is_skipped_with_a_warning_naming_shard_and_line_and_asked_again(tmp_path, monkeypatch,
                                                                                          caplog, how):
    """One damaged record (a non-UTF-8 byte, broken JSON, or a reply edited so it no longer matches its checksum)
    is skipped with one warning naming its shard and line, and its call is made again; the others are reused."""
    from openai_stand_in import OpenAIStandIn

    monkeypatch.setenv("WARMBENCH_TEST_KEY", "loopback")
    stand_in = OpenAIStandIn()
    try:
        chat = OpenAIChat("gpt-4o-2024-08-06", base_url=stand_in.base_url, api_key_env="WARMBENCH_TEST_KEY",
                          max_retries=0, max_concurrency=1)
        stand_in.chat_handler = lambda request: "answer to " + request["messages"][0]["content"]
        asks = [[{"role": "user", "content": f"question {i}"}] for i in range(4)]
        assert cached_chat(chat, CallCache(tmp_path / "llm_calls"), asks, Sampling()).calls == 4
        shard = CallCache(tmp_path / "llm_calls").shards()[0]
        damage(shard, {"bad_bytes": lambda line: line.replace(b"answer to", b"answer \xff\xfe to"),
                       "bad_json": lambda line: line[:90] + b"}" + line[90:],
                       "edited_reply": lambda line: line.replace(b"answer to", b"an edited answer to")}[how])
        caplog.set_level("WARNING", logger="warmbench.core.call_cache")
        again = cached_chat(chat, CallCache(tmp_path / "llm_calls"), asks, Sampling())
        assert again.calls == 1 and stand_in.chat_requests == 5
        assert again.texts == [f"answer to question {i}" for i in range(4)]
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and f"{shard}:1:" in warnings[0]
    finally:
        stand_in.close()


def test_records_without_a_checksum_stay_readable(tmp_path):
    """Records written before the checksum existed are read as before."""
    root = tmp_path / "llm_calls"
    root.mkdir()
    record = {"key": key_of("old"), "response": "an old answer", "meta": {"reply": {}}, "created": 1.0, "rule": None}
    (root / "old-shard.jsonl").write_text(json.dumps(record) + "\n")
    assert CallCache(root).get_with_meta(key_of("old")) == ("an old answer", {"reply": {}})


def test_the_cost_ledger_skips_a_damaged_record_naming_its_shard(tmp_path, caplog):
    from warmbench.stages.cost import api_ledger

    cache = CallCache(tmp_path / "llm_calls")
    meta = {"backend": {"kind": "openai", "model": "gpt-4o-2024-08-06"}, "reply": {"prompt_tokens": 5,
                                                                                   "completion_tokens": 2}}
    for name in ("a", "b"):
        cache.put(key_of(name), f"reply {name}", meta)
    cache.close()
    damage(cache.shards()[0], lambda line: line.replace(b"reply a", b"reply \xff"))
    caplog.set_level("WARNING", logger="warmbench.core.call_cache")
    table = api_ledger(tmp_path / "llm_calls", {})
    assert table["calls"].sum() == 1 and table["prompt_tokens"].sum() == 5
    assert any(f"{cache.shards()[0]}:1:" in r.getMessage() for r in caplog.records)


def test_an_old_torn_tail_is_warned_about(tmp_path, caplog):
    import os

    cache = CallCache(tmp_path / "llm_calls")
    cache.put(key_of("a"), "complete", {})
    cache.close()
    shard = cache.shards()[0]
    with open(shard, "ab") as handle:
        handle.write(b'{"key": "' + key_of("b").encode() + b'", "response": "cut off he')
    os.utime(shard, (1, 1))  # long ago: no writer is still at it
    caplog.set_level("WARNING", logger="warmbench.core.call_cache")
    assert CallCache(tmp_path / "llm_calls").get_many([key_of("a"), key_of("b")]).keys() == {key_of("a")}
    assert any(f"{shard}:2:" in r.getMessage() and "torn" in r.getMessage() for r in caplog.records)


def ask_at_once(root, stand_in, askers=2):
    """`askers` jobs (threads, each with a cache object of its own on one directory, as two processes have) ask the
    same question at the same moment; their (texts, calls made)."""
    import threading

    chat = OpenAIChat("gpt-4o-2024-08-06", base_url=stand_in.base_url, api_key_env="WARMBENCH_TEST_KEY", max_retries=0)
    start, results = threading.Barrier(askers), [None] * askers

    def job(i):
        cache = CallCache(root)
        start.wait()
        result = cached_chat(chat, cache, [[{"role": "user", "content": "Is the sky green?"}]], Sampling())
        results[i] = (result.texts[0], result.calls)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(askers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_two_jobs_asking_the_same_question_at_once_pay_once(tmp_path, monkeypatch):
    import time

    from openai_stand_in import OpenAIStandIn

    monkeypatch.setenv("WARMBENCH_TEST_KEY", "loopback")
    stand_in = OpenAIStandIn()
    stand_in.chat_handler = lambda body: time.sleep(1.0) or "No."  # in flight long enough for the second asker
    try:
        results = ask_at_once(tmp_path / "llm_calls", stand_in)
        assert stand_in.chat_requests == 1
        assert sorted(results) == [("No.", 0), ("No.", 1)]  # the second read the first's answer: no call of its own
    finally:
        stand_in.close()
    assert not list((tmp_path / "llm_calls").rglob("*.lock"))  # every key lock released


def test_when_the_first_asker_gets_no_answer_the_second_asks_itself(tmp_path, monkeypatch):
    import itertools
    import time

    from openai_stand_in import OpenAIStandIn

    monkeypatch.setenv("WARMBENCH_TEST_KEY", "loopback")
    stand_in = OpenAIStandIn()
    replies = itertools.chain([""], itertools.repeat("No."))  # the first call comes back empty: never cached
    stand_in.chat_handler = lambda body: time.sleep(0.5) or next(replies)
    try:
        results = ask_at_once(tmp_path / "llm_calls", stand_in)
        assert stand_in.chat_requests == 2 and sorted(results) == [("", 1), ("No.", 1)]
    finally:
        stand_in.close()


def test_a_key_lock_left_by_a_dead_asker_is_taken_over(tmp_path, monkeypatch):
    from openai_stand_in import OpenAIStandIn
    from warmbench.core.call_cache import key_lock_path

    root = tmp_path / "llm_calls"
    monkeypatch.setenv("WARMBENCH_TEST_KEY", "loopback")
    stand_in = OpenAIStandIn()
    stand_in.chat_handler = lambda body: "No."
    chat = OpenAIChat("gpt-4o-2024-08-06", base_url=stand_in.base_url, api_key_env="WARMBENCH_TEST_KEY", max_retries=0)
    key = CallCache.key(chat.identity, [{"role": "user", "content": "Is the sky green?"}], Sampling())
    # an asker killed mid-call: its lock names a pid that has exited
    dead = run_python(f"""
        import os
        from pathlib import Path
        from warmbench.core import locks
        locks.acquire(Path({str(key_lock_path(root, key))!r}), locks.owner_record(key={key!r}))
        os._exit(0)
    """)
    assert dead.wait(60) == 0, dead.stderr.read()
    assert key_lock_path(root, key).exists()
    try:
        result = cached_chat(chat, CallCache(root), [[{"role": "user", "content": "Is the sky green?"}]], Sampling())
        assert result.texts == ["No."] and result.calls == 1 and stand_in.chat_requests == 1
    finally:
        stand_in.close()
    assert not key_lock_path(root, key).exists()
