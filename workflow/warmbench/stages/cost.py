"""The ledger after a run (the `cost` rule, in the report, and `warmbench cost`): what the run spent.

Tokens and cost per stage and model from the LLM call cache (every record names the rule that made the call and
the usage its backend reported), the trained tokens of the API fine-tunes from their manifests, and job hours per
rule from the Snakemake benchmark files, with GPU-hours from each job's GPUs. Prices and stages are the plan's
(plan.py), so a plan and a ledger compare line by line.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from ..core.config import CHECKPOINT_MANIFEST, job_resources
from ..core.accounting import (api_usd, base_model_name, format_count, format_usd, load_config, price_table, stage_of,
                               training_usd)

log = logging.getLogger(__name__)

UNRECORDED = "(not recorded)"  # the stage of calls cached before records named their rule


# --- the ledger ------------------------------------------------------------------------------------------------

LEDGER_COLUMNS = ["stage", "rule", "backend", "model", "calls", "calls_without_usage", "batch_calls", "prompt_tokens",
                  "completion_tokens", "trained_tokens", "usd", "price_as_of"]


def api_ledger(cache_dir: str | os.PathLike, prices: dict):
    """Per stage, rule and model: calls in the call cache, their reported tokens and their price. Every record is a
    call that was made and paid (a key asked twice at once counts twice); failed or empty replies are never
    cached, so they are not counted."""
    import pandas as pd

    from ..core.call_cache import CallCache

    rows = []
    cache_dir = Path(cache_dir)
    records = CallCache(cache_dir)._records() if cache_dir.is_dir() else []
    for record in records:
        meta = record.get("meta") or {}
        backend, reply = meta.get("backend") or {}, meta.get("reply") or {}
        rule = record.get("rule")
        tokens_in, tokens_out = reply.get("prompt_tokens"), reply.get("completion_tokens")
        rows.append({"stage": stage_of(rule) if rule else UNRECORDED, "rule": rule or UNRECORDED,
                     "backend": backend.get("kind", "?"), "model": str(backend.get("model", "?")),
                     "base_url": backend.get("base_url"), "batch": bool(meta.get("batch")),
                     "usage": tokens_in is not None, "in": tokens_in or 0, "out": tokens_out or 0})
    if not rows:
        return pd.DataFrame(columns=LEDGER_COLUMNS)
    calls = pd.DataFrame(rows)
    calls["usd"] = [0.0 if kind != "openai" else api_usd(prices, model, i, o, batch=batch, base_url=url)
                    for kind, model, i, o, batch, url in calls[["backend", "model", "in", "out", "batch", "base_url"]]
                    .itertuples(index=False)]
    table = (calls.groupby(["stage", "rule", "backend", "model"], sort=True)
             .agg(calls=("usage", "size"), calls_with_usage=("usage", "sum"), batch_calls=("batch", "sum"),
                  prompt_tokens=("in", "sum"), completion_tokens=("out", "sum"),
                  usd=("usd", lambda s: None if s.isna().any() else s.sum()))
             .reset_index())
    table["calls_without_usage"] = table["calls"] - table["calls_with_usage"]
    table["trained_tokens"] = 0
    table["price_as_of"] = [prices.get(base_model_name(m)[0], {}).get("as_of") if kind == "openai" else None
                            for kind, m in table[["backend", "model"]].itertuples(index=False)]
    return table[LEDGER_COLUMNS]


def trained_dirs(train_root: str | os.PathLike) -> list[Path]:
    """Every fine-tune folder with a manifest under a root (results/train/<model>/<persona>)."""

    return [path.parent for path in sorted(Path(train_root).glob(f"*/*/{CHECKPOINT_MANIFEST}"))]


def fine_tuning_ledger(trained: list[str | os.PathLike], prices: dict):
    """Per API fine-tune (a folder results/train/<model>/<persona> whose checkpoints.json names backend openai): its
    jobs and the tokens OpenAI reports it trained, priced per trained token. LoRA fine-tunes cost no API money."""
    import pandas as pd


    rows = []
    for folder in trained:
        manifest_path = Path(folder) / CHECKPOINT_MANIFEST
        if not manifest_path.is_file():
            continue
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("backend") != "openai":
            continue
        jobs = {c["job_id"]: c.get("trained_tokens") or 0 for c in manifest["checkpoints"] if c.get("job_id")}
        tokens = sum(jobs.values())
        rows.append({"stage": stage_of("train_openai"), "rule": "train_openai", "backend": "openai",
                     "model": manifest["base_model"], "calls": len(jobs), "calls_without_usage": 0, "batch_calls": 0,
                     "prompt_tokens": 0, "completion_tokens": 0, "trained_tokens": tokens,
                     "usd": training_usd(prices, manifest["base_model"], tokens),
                     "price_as_of": prices.get(base_model_name(manifest["base_model"])[0], {}).get("as_of")})
    return pd.DataFrame(rows, columns=LEDGER_COLUMNS)


def read_benchmarks(root: str | Path):
    """The Snakemake benchmark files under `root`, one row per job: rule, job (path below the rule), wall seconds, max RSS in MiB."""
    import pandas as pd

    root = Path(root)
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        table = pd.read_csv(path, sep="\t")
        rel = path.relative_to(root)
        rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        rss = pd.to_numeric(table.get("max_rss"), errors="coerce")
        rows.append({"rule": rule, "job": str(rel.with_suffix("")), "wall_s": float(table["s"].max()),
                     "max_rss_mib": float(rss.max()) if rss is not None and rss.notna().any() else float("nan")})
    return pd.DataFrame(rows, columns=["rule", "job", "wall_s", "max_rss_mib"])


def job_ledger(benchmarks: str | os.PathLike, config: dict):
    """Per rule (a benchmark file's folder, benchmarks/<rule>/...): jobs, hours, GPU-hours (each job's hours x the
    GPUs the config gives its model for that stage, models.<name>.resources), the longest job and the peak RSS."""
    import pandas as pd

    jobs = read_benchmarks(benchmarks)
    columns = ["stage", "rule", "jobs", "hours", "gpu_hours", "max_job_hours", "peak_rss_gib"]
    if jobs.empty:
        return pd.DataFrame(columns=columns)
    jobs["stage"] = [stage_of(rule) for rule in jobs["rule"]]

    def gpus(stage: str, job: str) -> int:
        parts = Path(job).parts
        model = parts[1] if len(parts) > 2 else None
        if stage not in ("train", "generate") or model not in config["models"]:
            return 0
        return job_resources(config, model, stage)["gpus"]

    jobs["gpu_s"] = [s * gpus(stage, job) for s, stage, job in jobs[["wall_s", "stage", "job"]].itertuples(index=False)]
    table = (jobs.groupby(["stage", "rule"])
             .agg(jobs=("job", "count"), wall_s=("wall_s", "sum"), gpu_s=("gpu_s", "sum"), max_s=("wall_s", "max"),
                  rss=("max_rss_mib", "max"))
             .reset_index())
    table["hours"], table["gpu_hours"], table["max_job_hours"] = table["wall_s"] / 3600, table["gpu_s"] / 3600, \
        table["max_s"] / 3600
    table["peak_rss_gib"] = table["rss"] / 1024
    return table.sort_values("hours", ascending=False)[columns]


def ledger(cache: str | os.PathLike, trained: list[str | os.PathLike], benchmarks: str | os.PathLike, config: dict):
    """(API calls and fine-tunes, job hours) of a run."""
    import pandas as pd

    prices = price_table(config)
    api = pd.concat([api_ledger(cache, prices), fine_tuning_ledger(trained, prices)], ignore_index=True)
    return api, job_ledger(benchmarks, config)


def format_ledger(api, jobs) -> str:
    lines = [f"{'stage':<17} {'rule':<17} {'model':<34} {'calls':>9} {'tokens in':>10} {'tokens out':>10} "
             f"{'trained':>9} {'USD':>9}"]
    for row in api.itertuples(index=False):
        lines.append(f"{row.stage:<17} {row.rule:<17} {row.model[:34]:<34} {row.calls:>9,} {format_count(row.prompt_tokens):>10} "
                     f"{format_count(row.completion_tokens):>10} {format_count(row.trained_tokens):>9} {format_usd(row.usd):>9}"
                     + (f"  ({row.calls_without_usage} calls reported no usage)" if row.calls_without_usage else ""))
    known = api["usd"].dropna()
    lines.append(f"API total: ${known.sum():,.2f}" + (" (some models have no price)" if len(known) < len(api) else ""))
    lines += ["", f"{'stage':<17} {'rule':<22} {'jobs':>5} {'hours':>9} {'GPU-h':>9} {'longest h':>9} {'peak GiB':>9}"]
    for row in jobs.itertuples(index=False):
        lines.append(f"{row.stage:<17} {row.rule:<22} {row.jobs:>5} {row.hours:>9.2f} {row.gpu_hours:>9.2f} "
                     f"{row.max_job_hours:>9.2f} {row.peak_rss_gib if not math.isnan(row.peak_rss_gib) else 0:>9.2f}")
    lines.append(f"job total: {jobs['hours'].sum():,.2f} h, {jobs['gpu_hours'].sum():,.2f} GPU-h")
    return "\n".join(lines)


def run(smk) -> None:
    """The `cost` rule: the run's ledger as two CSVs in the report."""
    from ..core.files import write_table

    config = {"models": smk.params.models, "prices": smk.params.prices}
    api, jobs = ledger(smk.params.cache, list(smk.input.trained), smk.params.benchmarks, config)
    write_table(smk.output.api, api)
    write_table(smk.output.jobs, jobs)
    log.info("ledger: %d API rows ($%.2f), %d rules' job hours (%.2f h, %.2f GPU-h)", len(api),
             api["usd"].dropna().sum(), len(jobs), jobs["hours"].sum(), jobs["gpu_hours"].sum())


def cli(args) -> int:
    """`warmbench cost`."""
    api, jobs = ledger(args.cache, trained_dirs(args.train), args.benchmarks, load_config(args.configfile))
    print(format_ledger(api, jobs))
    return 0
