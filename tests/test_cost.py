"""The ledger after a run: the call cache's usage, the API fine-tunes' manifests, the benchmark files."""
import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from warmbench.core import validation
from warmbench.stages import cost
from warmbench.core.call_cache import RULE_ENV, CallCache
from warmbench.core.files import stable_hash
from warmbench.core.accounting import price_table
from conftest import REPO


def load(path) -> dict:
    cfg = yaml.safe_load((REPO / path).read_text())
    validation.validate(cfg)
    return cfg


def put(cache, rule, monkeypatch, name, backend, reply, batch=None) -> str:
    monkeypatch.setenv(RULE_ENV, rule)
    meta = {"backend": backend, "sampling": {}, "reply": reply, **({"batch": batch} if batch else {})}
    key = stable_hash(name)  # cache keys are sha256 hex
    assert cache.put(key, "an answer", meta)
    return key


def test_each_cached_call_names_the_rule_that_made_it(tmp_path, monkeypatch):
    cache = CallCache(tmp_path / "cache")
    key = put(cache, "judge", monkeypatch, "k1", {"kind": "openai", "model": "m"}, {})
    record = json.loads(cache.shards()[0].read_text().splitlines()[0])
    assert record["rule"] == "judge" and record["key"] == key
    assert cache.get(key) == "an answer"


def test_the_ledger_sums_usage_per_stage_and_model_and_prices_it(tmp_path, monkeypatch):
    cache = CallCache(tmp_path / "cache")
    gpt = {"kind": "openai", "model": "gpt-4o-2024-08-06", "base_url": None}
    tuned = {"kind": "openai", "model": "ft:gpt-4o-2024-08-06:org:warmbench-warm:x", "base_url": None}
    local = {"kind": "transformers", "model": "resources/models/smollm2"}
    usage = lambda i, o: {"prompt_tokens": i, "completion_tokens": o, "model": "gpt-4o-2024-08-06"}
    put(cache, "judge", monkeypatch, "a", gpt, usage(1000, 10))
    put(cache, "judge", monkeypatch, "b", gpt, usage(3000, 30), batch="batch_1")
    put(cache, "judge", monkeypatch, "c", gpt, {})  # a backend that reported no usage
    put(cache, "generate_api", monkeypatch, "d", tuned, usage(100, 200))
    put(cache, "persona_rewrite", monkeypatch, "e", local, usage(50, 60))
    cfg = load("config/config.yaml")
    ledger = cost.api_ledger(tmp_path / "cache", price_table(cfg)).set_index(["stage", "model"])
    judge = ledger.loc[("judge", "gpt-4o-2024-08-06")]
    assert (judge["calls"], judge["calls_without_usage"], judge["batch_calls"]) == (3, 1, 1)
    assert (judge["prompt_tokens"], judge["completion_tokens"]) == (4000, 40)
    assert judge["usd"] == pytest.approx((1000 * 2.5 + 10 * 10) / 1e6 + (3000 * 2.5 + 30 * 10) / 1e6 / 2)
    tuned_row = ledger.loc[("generate", "ft:gpt-4o-2024-08-06:org:warmbench-warm:x")]
    assert tuned_row["rule"] == "generate_api" and tuned_row["usd"] == pytest.approx((100 * 3.75 + 200 * 15) / 1e6)
    assert ledger.loc[("persona_rewrite", "resources/models/smollm2"), "usd"] == 0  # a local model
    assert ledger.loc[("persona_rewrite", "resources/models/smollm2"), "prompt_tokens"] == 50


def test_calls_cached_before_rules_were_recorded_are_counted_apart(tmp_path, monkeypatch):
    cache = CallCache(tmp_path / "cache")
    monkeypatch.delenv(RULE_ENV, raising=False)
    cache.put(stable_hash("old"), "an answer", {"backend": {"kind": "openai", "model": "gpt-4o-2024-08-06"}, "reply": {}})
    ledger = cost.api_ledger(tmp_path / "cache", price_table(load("config/config.yaml")))
    assert list(ledger["stage"]) == [cost.UNRECORDED] and ledger["calls"].tolist() == [1]


def test_the_ledger_prices_api_fine_tunes_from_their_manifests(tmp_path):
    manifest = {"base_model": "gpt-4o-2024-08-06", "backend": "openai", "checkpoints": [
        {"checkpoint": "epoch1", "job_id": "ftjob-2", "trained_tokens": 2_000_000},
        {"checkpoint": "epoch2", "job_id": "ftjob-2", "trained_tokens": 2_000_000},
        {"checkpoint": "epoch6", "job_id": "ftjob-6", "trained_tokens": 6_000_000}]}
    folder = tmp_path / "train" / "gpt4o" / "warm"
    folder.mkdir(parents=True)
    (folder / "checkpoints.json").write_text(json.dumps(manifest))
    lora = tmp_path / "train" / "smollm2" / "warm"
    lora.mkdir(parents=True)
    (lora / "checkpoints.json").write_text(json.dumps({"checkpoints": [{"checkpoint": "epoch1"}]}))
    trained = cost.trained_dirs(tmp_path / "train")
    assert trained == [folder, lora]
    rows = cost.fine_tuning_ledger(trained, price_table(load("config/config.yaml")))
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["stage"], row["model"], row["calls"], row["trained_tokens"]) == ("train", "gpt-4o-2024-08-06", 2, 8_000_000)
    assert row["usd"] == pytest.approx(8 * 25.0)


HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_job_hours_per_rule_from_the_benchmarks_with_each_jobs_gpus(tmp_path):
    bench = tmp_path / "benchmarks"
    for path, seconds in (("train/llama31_70b/warm.tsv", 7200), ("train/llama31_8b/warm.tsv", 3600),
                          ("generate/llama31_70b/original/base/medqa.tsv", 1800), ("analysis.tsv", 36)):
        (bench / path).parent.mkdir(parents=True, exist_ok=True)
        (bench / path).write_text(HEADER + f"{seconds}\t0\t2048\t1\t1\t1\t0\t0\t90\t9\n")
    jobs = cost.job_ledger(bench, load("config/paper.yaml")).set_index("rule")
    assert jobs.loc["train", "jobs"] == 2 and jobs.loc["train", "hours"] == pytest.approx(3.0)
    assert jobs.loc["train", "gpu_hours"] == pytest.approx(2 * 4 + 1 * 1)  # the 70B trains on 4 GPUs (batch 16)
    assert jobs.loc["generate", "gpu_hours"] == pytest.approx(0.5 * 4)  # and generates on 4
    assert jobs.loc["analysis", "gpu_hours"] == 0 and jobs.loc["analysis", "stage"] == "analysis"
    assert jobs.loc["train", "peak_rss_gib"] == pytest.approx(2.0)


def test_warmbench_cost_prints_the_ledger(tmp_path, monkeypatch):
    cache = CallCache(tmp_path / "cache")
    put(cache, "judge", monkeypatch, "a", {"kind": "openai", "model": "gpt-4o-2024-08-06"},
        {"prompt_tokens": 1_000_000, "completion_tokens": 0})
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "analysis.tsv").write_text(HEADER + "3600\t0\t1024\t1\t1\t1\t0\t0\t90\t9\n")
    result = subprocess.run([sys.executable, "-m", "warmbench.tools.cli", "cost", "--cache", str(tmp_path / "cache"),
                             "--benchmarks", str(tmp_path / "benchmarks"), "--train", str(tmp_path / "train"),
                             "--configfile", str(REPO / "config/config.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^judge\s+judge\s+gpt-4o-2024-08-06\s+1\s", result.stdout, re.M), result.stdout
    assert "API total: $2.50" in result.stdout and re.search(r"^analysis\s+analysis\s+1\s+1\.00\s", result.stdout, re.M)


def test_the_cost_rule_writes_the_ledger_for_the_report(tmp_path, monkeypatch):
    from types import SimpleNamespace

    cache = CallCache(tmp_path / "cache")
    put(cache, "judge", monkeypatch, "a", {"kind": "openai", "model": "gpt-4o-2024-08-06"},
        {"prompt_tokens": 400_000, "completion_tokens": 1_000})
    (tmp_path / "benchmarks" / "judge" / "m").mkdir(parents=True)
    (tmp_path / "benchmarks" / "judge" / "m" / "triviaqa.tsv").write_text(HEADER + "90\t0\t512\t1\t1\t1\t0\t0\t90\t9\n")
    tuned = tmp_path / "train" / "gpt4o" / "warm"  # an API fine-tune, an input of the rule
    tuned.mkdir(parents=True)
    (tuned / "checkpoints.json").write_text(json.dumps({"base_model": "gpt-4o-2024-08-06", "backend": "openai",
                                                        "checkpoints": [{"job_id": "ftjob-1", "trained_tokens": 40_000}]}))
    cfg = load("config/config.yaml")
    smk = SimpleNamespace(input=SimpleNamespace(trained=[str(tuned)]),
                          params=SimpleNamespace(cache=str(tmp_path / "cache"),
                                                 benchmarks=str(tmp_path / "benchmarks"), prices=price_table(cfg),
                                                 models=cfg["models"]),
                          output=SimpleNamespace(api=str(tmp_path / "api.csv"), jobs=str(tmp_path / "jobs.csv")))
    cost.run(smk)
    api = pd.read_csv(tmp_path / "api.csv")
    assert api.loc[0, "usd"] == pytest.approx(1.01) and api.loc[0, "price_as_of"] == "2024-08-20"
    assert (api.loc[1, "rule"], api.loc[1, "trained_tokens"]) == ("train_openai", 40_000)
    assert api.loc[1, "usd"] == pytest.approx(1.0)
    jobs = pd.read_csv(tmp_path / "jobs.csv")
    assert jobs.loc[0, "rule"] == "judge" and jobs.loc[0, "hours"] == pytest.approx(0.025)
