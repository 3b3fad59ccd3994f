"""Files between stages: JSONL for chats, parquet for tables. Errors name the file and line."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator


class UserInputError(ValueError):
    """Bad input a user can fix (a config, a file, a table): the `warmbench` command prints its one-line message
    and exits 2, without a traceback."""


class DataError(UserInputError):
    """A malformed input file; the message names the file and, where it applies, the line."""


def stable_hash(obj: Any) -> str:
    """SHA-256 of a canonical JSON rendering: the same content always gives the same key."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def numbered_json_lines(path: str | os.PathLike) -> Iterator[tuple[int, object]]:
    """(line number, parsed value) of each non-blank line of a JSON-lines file, gzipped when it ends in .gz; a line
    that is not JSON is a DataError naming the file and line."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    for lineno, record in numbered_json_lines(path):
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield record


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or a new file in `path` durable (the directory entry itself is data on disk)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # not supported here (e.g. Windows): the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory
    finally:
        os.close(fd)


def _temporary(path: Path) -> Path:
    # one temporary name per process: two writers never share (and truncate) one temporary file
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _publish(tmp: Path, path: Path) -> None:
    """fsync the finished temporary file, rename it over `path`, fsync the folder: after a crash, `path` is
    either the old file or the whole new one, never empty or half written (rename alone does not promise that:
    the data may not have reached the disk when the rename did)."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(temporary_path)`, then publish the temporary file as `path` (see _publish)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        write(tmp)
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write atomically (temp file, fsync, rename) so a killed job never leaves a half file behind."""
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with open(tmp, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                count += 1

    atomic_write(path, write)
    return count


def write_json(path: str | os.PathLike, obj: Any) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_table(path: str | os.PathLike, frame) -> None:
    """Parquet or CSV by suffix, written atomically."""
    if Path(path).suffix == ".parquet":
        atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def require_columns(frame, columns: Iterable[str], path: str | os.PathLike) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")


def _strict_loader():
    """A yaml SafeLoader that refuses a key written twice in one mapping (PyYAML keeps the last one silently,
    so a second `seed:` would change the study unseen), naming the line and column of both."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                mark = key_node.start_mark
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {seen[key].line + 1}, column "
                        f"{seen[key].column + 1})", mark)
                seen[key] = mark
            return super().construct_mapping(node, deep)

    return StrictLoader


def read_yaml(path: str | os.PathLike):
    """A YAML (or JSON) file's contents, refusing duplicate keys; UserInputError names the file, line and column
    of a syntax error, a tab or a duplicate key."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserInputError(f"{path}: cannot be read ({err})") from None
    try:
        return yaml.load(text, Loader=_strict_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = err.problem or err.context or "not valid YAML"
        hint = "; indent with spaces, not tabs" if r"\t" in problem else ""
        raise UserInputError(f"{where}: {problem}{hint}") from None
    except yaml.YAMLError as err:
        raise UserInputError(f"{path}: not valid YAML ({err})") from None


def read_mapping(path: str | os.PathLike, what: str = "config") -> dict:
    """read_yaml, for a file that must hold a mapping of keys (a config, the amendments)."""
    content = read_yaml(path)
    if content is None:
        raise UserInputError(f"{path}: the {what} file is empty")
    if not isinstance(content, dict):
        raise UserInputError(f"{path}:1:1: the {what} file holds a {type(content).__name__}, not a mapping of keys")
    return content


class State:
    """A small JSON record of what has been paid for (uploaded files, fine-tuning jobs, batches), saved
    atomically after every change so a killed job finds it intact."""

    def __init__(self, path: str | Path, empty: dict | None = None):
        self.path = Path(path)
        self.data = json.loads(self.path.read_text()) if self.path.exists() else json.loads(json.dumps(empty or {}))

    def save(self) -> None:
        text = json.dumps(self.data, indent=2, sort_keys=True)
        atomic_write(self.path, lambda tmp: tmp.write_text(text))
