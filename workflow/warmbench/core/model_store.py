"""Converted and downloaded models kept by content key (resources/model_store/<key>/), where a failed job cannot
delete them. Snakemake removes `resources/models/<model>` before a base_model job runs: with a misspelt source the
job fails and the conversion is gone. Kept here, it is linked back in seconds once the source is right again, and
every later job finds its work in its own cache (the fine-tunes, the rows and calls are keyed by content too)."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

MODEL_STORE = "resources/model_store"


def store_key(parts: dict) -> str:
    """The key of what `parts` (JSON: the source block, what was fetched, the converting code's hash) determine."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def linked_from_store(key: str, make: Callable[[Path], object], out_dir: str | os.PathLike,
                      store: str | os.PathLike) -> str:
    """`out_dir` as a folder of links to the kept folder `key`, which make(folder) writes first if it is not kept
    yet: whole or not at all (a temporary folder renamed into place, so a kept folder is a finished one). Returns
    "made" or "reused"."""
    kept, out_dir = Path(store) / key, Path(out_dir)
    made = not kept.is_dir()
    if made:
        kept.parent.mkdir(parents=True, exist_ok=True)
        tmp = kept.parent / f".{key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            make(tmp)
            os.rename(tmp, kept)
        except OSError:
            if not kept.is_dir():
                raise
            log.info("%s was kept meanwhile by another job of the same key", kept)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for item in kept.iterdir():
        (out_dir / item.name).symlink_to(item.resolve())
    log.info("%s, linked from %s", "made" if made else "reused: the same key was kept", kept)
    return "made" if made else "reused"
