"""Stage replicates (train.seeds): is a persona's effect larger than the noise between training runs?

Each seed's run is a persona of its own (config.with_replicates), tested against the original model by the
analysis stage like any other. Here the runs of one persona are read together: per seed and pooled over seeds,
the paired error change and McNemar test (pooled: the discordant pairs summed over seeds, seed as a stratum, i.e.
the Mantel-Haenszel test for matched pairs), the spread of the per-seed changes, and a logistic regression with
a seed term (fixed effects for seed, dataset and model; SEs clustered by item) whose treated AME pools the seeds,
with a Wald test of whether the effect differs between seeds. Every seed's pairs share the original model's
answers, so the pooled McNemar test treats the seeds as independent strata when they are not quite: the
regression's item-clustered SEs account for that sharing.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from . import figures
from .analysis import conversational, paired_answers, regression_data
from .eval_prompts import test_type
from .io import write_table
from .stats import Counterfactuals, fit_logit, mcnemar_exact

log = logging.getLogger(__name__)

REPLICATE_COLUMNS = ["model", "persona", "dataset", "test_type", "seed", "run", "n_pairs", "b", "c",
                     "error_change_pp", "p_value", "seed_sd_pp", "seed_min_pp", "seed_max_pp"]
REGRESSION_COLUMNS = ["model", "persona", "term", "ame_pp", "ci_low", "ci_high", "p_value", "n_obs", "n_clusters",
                      "n_seeds", "seed_heterogeneity_p", "formula"]
POOLED = "pooled"
ALL_TESTS = "all"


def _counts(pairs: pd.DataFrame) -> dict:
    x, y = pairs["incorrect_base"].to_numpy(), pairs["incorrect_persona"].to_numpy()
    b, c = int(((x == 0) & (y == 1)).sum()), int(((x == 1) & (y == 0)).sum())
    n = len(pairs)
    return {"n_pairs": n, "b": b, "c": c, "error_change_pp": 100 * (b - c) / n if n else np.nan,
            "p_value": mcnemar_exact(b, c)}


def replicate_table(graded: pd.DataFrame, groups: dict[str, dict[int, str]]) -> pd.DataFrame:
    """Per model, replicated persona, dataset and test type (normal, sycophancy, all): a row per seed, then the
    pooled row (summed discordant pairs, their McNemar test, and the per-seed changes' SD, min and max)."""
    rows = []
    for persona, runs in groups.items():
        per_seed = []
        for seed, run in sorted(runs.items()):
            pairs = paired_answers(graded, run)
            pairs["test_type"] = pairs["belief"].map(test_type)
            for keys, part in _by_test(pairs):
                per_seed.append({**keys, "persona": persona, "seed": str(seed), "run": run, **_counts(part)})
        if not per_seed:
            continue
        seeds = pd.DataFrame(per_seed)
        rows.extend(per_seed)
        for (model, dataset, ttype), part in seeds.groupby(["model", "dataset", "test_type"], sort=False):
            b, c, n = int(part["b"].sum()), int(part["c"].sum()), int(part["n_pairs"].sum())
            change = part["error_change_pp"]
            rows.append({"model": model, "persona": persona, "dataset": dataset, "test_type": ttype, "seed": POOLED,
                         "run": ",".join(part["run"]), "n_pairs": n, "b": b, "c": c,
                         "error_change_pp": 100 * (b - c) / n if n else np.nan, "p_value": mcnemar_exact(b, c),
                         "seed_sd_pp": change.std(ddof=1), "seed_min_pp": change.min(), "seed_max_pp": change.max()})
    return pd.DataFrame(rows).reindex(columns=REPLICATE_COLUMNS)


def _by_test(pairs: pd.DataFrame):
    for (model, dataset), part in pairs.groupby(["model", "dataset"]):
        yield {"model": model, "dataset": dataset, "test_type": ALL_TESTS}, part
        for ttype, of_type in part.groupby("test_type"):
            yield {"model": model, "dataset": dataset, "test_type": ttype}, of_type


def replicate_regressions(graded: pd.DataFrame, groups: dict[str, dict[int, str]]) -> pd.DataFrame:
    """Per model and replicated persona, on the conversational datasets: incorrect ~ treated + C(seed) + C(dataset)
    + C(model) (each seed's runs against the original model, stacked; SEs clustered by item): the pooled AME, then
    treated * C(seed): each seed's AME and the Wald test that they are equal."""
    rows = []
    tasks = conversational(graded)
    for persona, runs in groups.items():
        stacked = pd.concat([regression_data(tasks, run).assign(seed=str(seed)) for seed, run in sorted(runs.items())],
                            ignore_index=True)
        for model, data in stacked.groupby("model"):
            data = data.reset_index(drop=True)
            base = {"model": model, "persona": persona, "n_obs": len(data), "n_clusters": data["cluster"].nunique(),
                    "n_seeds": data["seed"].nunique()}
            if data.empty or data["treated"].nunique() < 2:
                continue
            pooled, formula = fit_logit(data, "incorrect", "treated", ["seed", "dataset", "model"], "cluster")
            per_seed, _ = fit_logit(data, "incorrect", "treated", ["seed", "dataset", "model"], "cluster",
                                    interaction="C(seed)")
            interaction = [k for k, name in enumerate(per_seed.params.index) if name.startswith("treated:C(seed)")]
            heterogeneity = np.nan
            if interaction:
                constraints = np.zeros((len(interaction), len(per_seed.params)))
                constraints[np.arange(len(interaction)), interaction] = 1
                heterogeneity = float(per_seed.wald_test(constraints, scalar=True).pvalue)
            rows.append({**base, **_ame("treated", Counterfactuals(pooled, data, "treated").ame()), "formula": formula,
                         "seed_heterogeneity_p": heterogeneity})
            effects = Counterfactuals(per_seed, data, "treated")
            for seed in sorted(data["seed"].unique(), key=int):
                rows.append({**base, **_ame(f"treated | seed={seed}", effects.ame((data["seed"] == seed).to_numpy()))})
    return pd.DataFrame(rows).reindex(columns=REGRESSION_COLUMNS)


def _ame(term: str, ame) -> dict:
    return {"term": term, "ame_pp": 100 * ame.estimate, "ci_low": 100 * ame.ci_low, "ci_high": 100 * ame.ci_high,
            "p_value": ame.p_value}


def run(smk) -> None:
    groups = {persona: {int(seed): run for seed, run in runs.items()} for persona, runs in smk.params.groups.items()}
    graded = pd.read_parquet(smk.input.graded)
    table = replicate_table(graded, groups)
    write_table(smk.output.table, table)
    regressions = replicate_regressions(graded, groups)
    write_table(smk.output.regressions, regressions)
    figures.seed_spread(table, smk.output.figure)
    log.info("replicates of %s; pooled effects (pp):\n%s", ", ".join(groups),
             regressions[regressions["term"] == "treated"].to_string())
