"""Atomic writes: the new content reaches the disk (fsync) before it replaces the old file (rename), so a crash
or power loss leaves the old file or the whole new one, never an empty or half-written one."""
import os

import pandas as pd
import pytest

from warmbench.core import files


@pytest.fixture
def syscalls(monkeypatch):
    """Record, in order, which files are fsync'ed and which renames happen (the real calls still run)."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.abspath(src), os.path.abspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.parametrize("write, name", [
    (lambda p: files.write_json(p, {"a": 1}), "out.json"),
    (lambda p: files.write_jsonl(p, [{"a": 1}, {"b": 2}]), "out.jsonl"),
    (lambda p: files.write_table(p, pd.DataFrame({"a": [1, 2]})), "out.parquet"),
    (lambda p: files.write_table(p, pd.DataFrame({"a": [1, 2]})), "out.csv"),
    (lambda p: (lambda s: (s.data.update(batch="b1"), s.save()))(files.State(p)), "state.json"),
])
def test_every_atomic_write_fsyncs_before_the_rename(tmp_path, syscalls, write, name):
    target = tmp_path / name
    target.write_text("{}")  # the old version
    write(target)
    renames = [e for e in syscalls if e[0] == "replace"]
    assert len(renames) == 1 and renames[0][2] == str(target)
    tmp = renames[0][1]
    position = syscalls.index(renames[0])
    assert ("fsync", tmp) in syscalls[:position], f"{tmp} was renamed over {target} before it was fsync'ed"
    assert ("fsync", str(tmp_path)) in syscalls[position:], "the folder holding the rename was not fsync'ed"
    assert target.read_bytes() != b"{}" and [p.name for p in tmp_path.iterdir()] == [name]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text('{"old": true}\n')

    def records():
        yield {"a": 1}
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        files.write_jsonl(target, records())
    assert target.read_text() == '{"old": true}\n' and [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
