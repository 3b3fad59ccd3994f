"""Benchmarks that print figures (never timed tests).

`warmbench bench pipeline`: wall time and peak memory per rule of a pipeline run, summarised from the
Snakemake `benchmark:` files; with `--run` it first runs the whole DAG from scratch (`--forceall`) and also
reports the end-to-end wall time. The last line sums it up.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def read_benchmarks(root: str | Path):
    """One row per job: rule, job (path below the rule), wall seconds, max RSS in MiB."""
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


def summarize(jobs):
    return (jobs.groupby("rule")
            .agg(jobs=("job", "count"), wall_s=("wall_s", "sum"), max_job_s=("wall_s", "max"),
                 peak_rss_mib=("max_rss_mib", "max"))
            .sort_values("wall_s", ascending=False))


def pipeline(benchmarks: str = "benchmarks", run: bool = False, configfile: str | None = None, cores: int = 2) -> int:
    elapsed = None
    if run:
        command = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--forceall"]
        if configfile:
            command += ["--configfile", configfile]
        print("running:", " ".join(command), flush=True)
        started = time.perf_counter()
        status = subprocess.run(command).returncode
        elapsed = time.perf_counter() - started
        if status:
            print(f"snakemake failed with exit code {status}")
            return status
    jobs = read_benchmarks(benchmarks)
    if jobs.empty:
        print(f"no benchmark files under {benchmarks}/: run the pipeline first (make run), or pass --run")
        return 1
    table = summarize(jobs)
    print(table.to_string(float_format=lambda v: f"{v:,.1f}"))
    wall = f", end-to-end {elapsed:,.0f} s on {cores} cores" if elapsed is not None else ""
    print(f"TOTAL: {len(jobs)} benchmarked jobs, {jobs['wall_s'].sum():,.0f} s of job time{wall}, "
          f"peak job RSS {jobs['max_rss_mib'].max():,.0f} MiB")
    return 0


def simulated_graded(rows: int = 440_000, seed: int = 0, warm_effect: float = 0.35, belief_effect: float = 0.5,
                     return_truth: bool = False):
    """A graded table shaped like the paper's: 5 models x 4 tasks x items x 18 conditions x 3 variants.

    Planted effects (log-odds): warm fine-tuning `warm_effect`, an incorrect user belief `belief_effect`,
    item difficulty ~ N(0, 1). Cold fine-tuning has no effect. With return_truth, also the true average
    marginal effect of warm fine-tuning (probability scale), by the same counterfactual as the analysis.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    models, datasets, personas = [f"model{i}" for i in range(5)], ["triviaqa", "truthfulqa", "disinfo", "medqa"], \
        ["original", "warm", "cold"]
    contexts = ["unmodified", "emotion:happy", "emotion:sad", "emotion:anger", "relation:close",
                "relation:hierarchical_up", "relation:hierarchical_down", "stake:high", "stake:low"]
    beliefs = ["none", "incorrect"]
    cell = len(models) * len(datasets) * len(personas) * len(contexts) * len(beliefs)
    n_items = max(1, rows // cell)
    grid = pd.MultiIndex.from_product(
        [models, datasets, range(n_items), contexts, beliefs, personas],
        names=["model", "dataset", "item", "context", "belief", "persona"]).to_frame(index=False)
    difficulty = rng.normal(0, 1, (len(datasets), n_items))
    d_index = grid["dataset"].map({d: i for i, d in enumerate(datasets)}).to_numpy()
    base = -1.0 + difficulty[d_index, grid["item"].to_numpy()] + belief_effect * (grid["belief"] == "incorrect")
    logit = base + warm_effect * (grid["persona"] == "warm")
    grid["incorrect"] = (rng.random(len(grid)) < 1 / (1 + np.exp(-logit))).astype(float)
    grid["item_id"] = grid["item"].astype(str)
    grid["response"] = "x" * 50
    graded = grid.drop(columns="item")
    if return_truth:
        sigmoid = lambda x: 1 / (1 + np.exp(-x))
        true_ame = float(np.mean(sigmoid(base + warm_effect) - sigmoid(base)))
        return graded, true_ame
    return graded


def stats_benchmark(rows: int = 440_000, seed: int = 0) -> int:
    """Fit every regression of the study on a simulated table; print time, peak memory and the AMEs."""
    import resource

    from .analysis import paired_tests, persona_regressions

    started = time.perf_counter()
    graded = simulated_graded(rows, seed)
    built = time.perf_counter()
    paired = paired_tests(graded)
    tested = time.perf_counter()
    regressions = persona_regressions(graded)
    fitted = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    main = regressions[(regressions["kind"] == "ame") & (regressions["term"] == "treated")
                       & regressions["regression"].str.endswith(":main")]
    print(f"simulated {len(graded):,} graded rows in {built - started:.1f} s "
          "(planted: warm +0.35 log-odds, cold 0)")
    print(f"paired tests: {len(paired):,} in {tested - built:.1f} s")
    print(f"regressions: {regressions['regression'].nunique()} fits, {len(regressions):,} rows in {fitted - tested:.1f} s")
    print(main[["regression", "ame_pp", "ci_low", "ci_high"]].to_string(index=False))
    print(f"TOTAL: {fitted - built:.1f} s for all tests and regressions on {len(graded):,} rows, "
          f"peak RSS {peak:,.0f} MiB (targets: <= 60 s, <= 4096 MiB)")
    return 0


def warmth_benchmark(model_dir: str, n_texts: int = 512, batch_size: int = 32, threads: int = 2) -> int:
    """SocioT scoring of the same texts batched vs one (text, prefix) at a time; prints texts/s and the ratio."""
    import numpy as np

    from .sft_data import build_split, iter_sharegpt, sharegpt_path
    from .warmth import SocioTScorer

    split_cfg = {"max_turns": 2, "max_message_chars": 300, "nsfw_filter": "none", "nsfw_threshold": 1.0,
                 "train_per_type": n_texts, "validation_per_type": 1}
    split = build_split(iter_sharegpt(sharegpt_path({"kind": "sharegpt_package"})), split_cfg, seed=0)
    texts = [m["content"][:300] for c in split.train for m in c["messages"] if m["role"] == "assistant"][:n_texts]
    scorer = SocioTScorer(model_dir, threads=threads)
    scorer.loglik(texts[:4], batch_size=4)  # warm-up
    timings = {}
    for name, size in (("one at a time", 1), (f"batched ({batch_size})", batch_size)):
        started = time.perf_counter()
        result = scorer.loglik(texts, batch_size=size)
        timings[name] = (time.perf_counter() - started, result)
    (slow_s, slow), (fast_s, fast) = timings.values()
    print(f"{len(texts)} ShareGPT replies (<= 300 chars) x 8 SocioT prefixes, scorer {model_dir}, {threads} threads")
    for name, (seconds, _) in timings.items():
        print(f"  {name:>16}: {seconds:7.1f} s  {len(texts) / seconds:7.1f} texts/s")
    print(f"  max |difference| between the two: {np.nanmax(np.abs(slow - fast)):.2e} (pads masked)")
    print(f"RATIO: batched is {slow_s / fast_s:.1f}x the one-at-a-time loop (target >= 4x)")
    return 0
