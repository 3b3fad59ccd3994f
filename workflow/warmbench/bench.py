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
