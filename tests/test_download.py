"""The hub loaders, offline: each dataset is laid out as a hub dataset repository (README configs + parquet
files, in the source's exact schema) in a temporary folder, and loaded through `datasets` as the download
rule would load it from the hub."""
import json

import pandas as pd
import pytest

from warmbench import eval_prompts as ep
from warmbench.download import HUB_SOURCES, DownloadError, fetch, hub_source
from warmbench.io import read_jsonl
from conftest import REPO


def hub_repo(root, config_name, split, records):
    """A dataset repository as the hub serves it: a README declaring the config, parquet data files."""
    name = config_name or "default"
    (root / name).mkdir(parents=True)
    pd.DataFrame(records).to_parquet(root / name / f"{split}-00000-of-00001.parquet", index=False)
    (root / "README.md").write_text(
        f"---\nconfigs:\n- config_name: {name}\n  data_files:\n  - split: {split}\n    path: {name}/{split}-*.parquet\n---\n")
    return root


def source_records(dataset):
    records = list(read_jsonl(ep.smoke_path(dataset)))
    if dataset == "triviaqa":  # the real TriviaQA has no wrong answers
        records = [{k: v for k, v in r.items() if k != "incorrect_answer"} for r in records]
    return records


@pytest.mark.parametrize("dataset", sorted(HUB_SOURCES))
def test_each_source_round_trips_through_datasets(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test")  # MASK is gated: the loader insists on a token
    source = HUB_SOURCES[dataset]
    repo = hub_repo(tmp_path / "repo", source["config"], source["split"], source_records(dataset))
    out = tmp_path / "data" / f"{dataset}.jsonl"
    provenance = fetch(hub_source(dataset, {dataset: {"id": str(repo)}}), out, tmp_path / "cache")
    loaded = list(read_jsonl(out))
    assert provenance["n_records"] == len(loaded) == len(source_records(dataset))
    assert provenance["split"] == source["split"] and provenance["config"] == source["config"]
    if dataset != "triviaqa":  # every other source normalises straight from what was downloaded
        items = ep.load_items(dataset, out, 3, seed=0)
        assert len(items) == 3 and all(i["dataset"] == dataset for i in items)


def test_gated_dataset_without_token_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(DownloadError, match="cais/MASK is gated: set HF_TOKEN"):
        fetch(hub_source("disinfo"), tmp_path / "disinfo.jsonl", tmp_path / "cache")
    assert not (tmp_path / "disinfo.jsonl").exists()


def test_pinned_revision_overrides_the_registry():
    source = hub_source("gsm8k", {"gsm8k": {"revision": "abc123"}})
    assert source == {**HUB_SOURCES["gsm8k"], "revision": "abc123", "gated": False}


def test_triviaqa_wrong_answers_are_written_once_by_the_llm(tiny_model_dir, tmp_path):
    from warmbench.llm import CallCache, Sampling, TransformersChat

    path = tmp_path / "triviaqa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in source_records("triviaqa")))
    template = (REPO / "config" / "prompts" / "wrong_answer_triviaqa.txt").read_text()
    chat, cache = TransformersChat(tiny_model_dir, threads=2), CallCache(tmp_path / "calls.sqlite")
    calls = []

    def wrong_answers(records):
        answers = ep.plausible_wrong_answers(records, template, chat, cache, Sampling(0.0, 1.0, 12))
        calls.append(len(cache))
        return answers

    items = ep.load_items("triviaqa", path, 4, seed=0, wrong_answers=wrong_answers)
    again = ep.load_items("triviaqa", path, 4, seed=0, wrong_answers=wrong_answers)
    assert items == again and calls[0] == calls[1] == 4  # the rerun read the cache
    for item in items:
        refs = json.loads(item["references"])
        assert item["incorrect_answer"] and item["incorrect_answer"] not in refs["correct"]


@pytest.mark.parametrize("reply, usable", [
    ("Jupiter", "Jupiter"),
    ("Venus.\nIt is often confused with Mars.", "Venus"),  # first line only, trailing period dropped
    ("the Red Planet", None),  # names a gold alias
    ("MARS", None),
    ("", None),
])
def test_wrong_answer_reply_is_checked_against_the_gold_aliases(reply, usable):
    record = {"question": "Red planet?", "answer": {"value": "Mars", "aliases": ["Mars", "The Red Planet"]}}
    assert ep.usable_wrong_answer(reply, record) == usable
