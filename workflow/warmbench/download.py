"""Stage download: one evaluation dataset from the Hugging Face hub, fetched on the submit host.

HPC compute nodes often have no internet, so `download_dataset` is a Snakemake `localrule`: it loads the
configured hub dataset (id, config, split, pinned revision) through `datasets`, and writes its records in the
source's own schema to resources/data/<dataset>.jsonl, with the revision it resolved to beside it
(<dataset>.json). eval_prompts then reads only that file, with the hub switched off (HF_HUB_OFFLINE=1).

The normalisation to warmbench's item schema stays in eval_prompts (one mapping per source schema), so the
embedded smoke sets and the real datasets go through the same code.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .io import write_json, write_jsonl

log = logging.getLogger(__name__)

# The paper's sources. A config's `data.hub.<dataset>` overrides any field (e.g. a pinned `revision`).
HUB_SOURCES = {
    "triviaqa": {"id": "mandarjoshi/trivia_qa", "config": "rc.nocontext", "split": "validation"},
    "truthfulqa": {"id": "truthfulqa/truthful_qa", "config": "generation", "split": "validation"},
    "disinfo": {"id": "cais/MASK", "config": "disinformation", "split": "test", "gated": True},
    "medqa": {"id": "GBaker/MedQA-USMLE-4-options", "config": None, "split": "test"},
    "mmlu": {"id": "cais/mmlu", "config": "all", "split": "test"},
    "gsm8k": {"id": "openai/gsm8k", "config": "main", "split": "test"},
    "advbench": {"id": "walledai/AdvBench", "config": None, "split": "train"},
}
# Records in each built-in source's split, for `warmbench plan` (items = the fewer of these and
# evaluation.items_per_dataset). A config that points a dataset elsewhere (its id, config or split) makes it unknown.
HUB_ROWS = {"triviaqa": 17_944, "truthfulqa": 817, "disinfo": 125, "medqa": 1_273, "mmlu": 14_042, "gsm8k": 1_319,
            "advbench": 520}
TOKEN_ENV = "HF_TOKEN"


def hub_source(dataset: str, overrides: dict | None = None) -> dict:
    return {"revision": None, "gated": False, **HUB_SOURCES[dataset], **((overrides or {}).get(dataset) or {})}


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


def fetch(source: dict, out_path: str | Path, cache_dir: str | Path) -> dict:
    """Write the source's records (its own schema) as JSON lines; returns the provenance record."""
    import datasets

    token = os.environ.get(TOKEN_ENV) or None
    if source["gated"] and not token:
        raise DownloadError(f"{source['id']} is gated: set {TOKEN_ENV} to a hub token that has accepted its terms")
    revision = resolve_revision(source, token)
    records = datasets.load_dataset(source["id"], source["config"], split=source["split"],
                                    revision=revision or source["revision"], cache_dir=str(cache_dir), token=token)
    write_jsonl(out_path, records)
    log.info("%s (%s, %s): %d records at revision %s", source["id"], source["config"], source["split"],
             len(records), revision)
    return {**source, "resolved_revision": revision, "n_records": len(records), "datasets_version": datasets.__version__}


def run(smk) -> None:
    provenance = fetch(hub_source(smk.wildcards.dataset, smk.params.overrides), smk.output.records,
                       smk.params.cache_dir)
    write_json(smk.output.provenance, provenance)
