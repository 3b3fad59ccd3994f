"""Stage replicates (train.seeds): is a persona's effect larger than the noise between training runs?

Each seed's run is a persona of its own (grid.with_replicates), tested against the original model by the
analysis stage like any other. Here the runs of one persona are read together: per seed, the paired error change
and its McNemar test; pooled over seeds, the mean error change with a test and interval that keep their level
both when the seeds share the original model's answers (they always do) and when training runs differ at random.

The pooled test takes the item as the unit and the seed as a random effect: d[i, s], seed s's error change on
item i averaged over the item's prompts, follows d = mu + item_i + seed_s + e (items and seeds crossed, every
seed answering every item). The balanced two-way ANOVA gives the variance of the grand mean,
(MS_item + max(MS_seed - MS_error, 0)) / (n_items x n_seeds), whose item part carries the original model's answers
that every seed shares, and whose seed part carries the run-to-run variance (reported as seed_sd_between_pp); the
t reference has Satterthwaite's degrees of freedom, near n_seeds - 1 when training noise dominates. (Summing
discordant pairs over seeds, a stratified McNemar test, treats the shared original answers as new evidence for
each seed and rejects about three times too often under the null: `warmbench calibrate`.)

The logistic regression with a seed term (fixed effects for seed, dataset and model; SEs clustered by item)
pools the seeds' AME; its variance is given the same seed part, so run-to-run noise enters the pooled p-value; the
per-seed AMEs and a Wald test of whether the effect differs between seeds come from treated x C(seed).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core import figures
from ..core.conditions import test_types
from ..core.files import write_table
from ..core.regression import conversational, paired_answers, regression_data
from ..core.stats import Counterfactuals, as_factors, fit_logit, mcnemar_exact

log = logging.getLogger(__name__)

REPLICATE_COLUMNS = ["model", "persona", "dataset", "test_type", "seed", "run", "n_pairs", "b", "c",
                     "error_change_pp", "p_value", "seed_sd_pp", "seed_min_pp", "seed_max_pp", "ci_low", "ci_high",
                     "df", "n_items", "seed_sd_between_pp", "method"]
REGRESSION_COLUMNS = ["model", "persona", "term", "ame_pp", "ci_low", "ci_high", "p_value", "n_obs", "n_clusters",
                      "n_seeds", "seed_heterogeneity_p", "formula", "se_within_pp", "seed_sd_between_pp", "df"]
POOLING = "items x seeds crossed random effects (ANOVA), Satterthwaite t"
POOLED = "pooled"
ALL_TESTS = "all"


def _counts(pairs: pd.DataFrame) -> dict:
    x, y = pairs["incorrect_base"].to_numpy(), pairs["incorrect_persona"].to_numpy()
    b, c = int(((x == 0) & (y == 1)).sum()), int(((x == 1) & (y == 0)).sum())
    n = len(pairs)
    return {"n_pairs": n, "b": b, "c": c, "error_change_pp": 100 * (b - c) / n if n else np.nan,
            "p_value": mcnemar_exact(b, c) if n else np.nan}


def replicate_table(graded: pd.DataFrame, groups: dict[str, dict[int, str]]) -> pd.DataFrame:
    """Per model, replicated persona, dataset and test type (normal, sycophancy, all): a row per seed, then the
    pooled row (summed discordant pairs for reference; the mean error change with the crossed item x seed test and
    interval of `seed_anova`; the per-seed changes' SD, min and max). A seed with no scored pair on a dataset (every
    answer unscored) keeps its row, with n_pairs 0, and that dataset's pooled row is empty: the crossed design
    needs every seed, and one seed's change is not a pooled one."""
    rows = []
    for persona, runs in groups.items():
        per_seed, per_item = [], []
        for seed, run in sorted(runs.items()):
            pairs = paired_answers(graded, run, dropna=False)  # unscored pairs still say which rows a seed has
            pairs["test_type"] = test_types(pairs["belief"])
            for keys, part in _by_test(pairs):
                part = part.dropna(subset=["incorrect_base", "incorrect_persona"])  # the scored pairs
                per_seed.append({**keys, "persona": persona, "seed": str(seed), "run": run, **_counts(part)})
                change = (part["incorrect_persona"] - part["incorrect_base"]).groupby(part["item_id"]).mean()
                per_item.append(pd.DataFrame({**keys, "seed": str(seed), "item_id": change.index, "d": change.values}))
        if not per_seed:
            continue
        seeds, items = pd.DataFrame(per_seed), pd.concat(per_item, ignore_index=True)
        rows.extend(per_seed)
        for (model, dataset, ttype), part in seeds.groupby(["model", "dataset", "test_type"], sort=False):
            mine = items[(items["model"] == model) & (items["dataset"] == dataset) & (items["test_type"] == ttype)]
            pooled = seed_anova(mine.pivot(index="item_id", columns="seed", values="d").reindex(columns=part["seed"]))
            change = part["error_change_pp"]
            rows.append({"model": model, "persona": persona, "dataset": dataset, "test_type": ttype, "seed": POOLED,
                         "run": ",".join(part["run"]), "n_pairs": int(part["n_pairs"].sum()),
                         "b": int(part["b"].sum()), "c": int(part["c"].sum()),
                         "error_change_pp": 100 * pooled.estimate, "p_value": pooled.p_value,
                         "ci_low": 100 * pooled.ci_low, "ci_high": 100 * pooled.ci_high, "df": pooled.df,
                         "n_items": pooled.n_items, "seed_sd_between_pp": 100 * pooled.seed_sd, "method": POOLING,
                         "seed_sd_pp": change.std(ddof=1), "seed_min_pp": change.min(), "seed_max_pp": change.max()})
    return pd.DataFrame(rows).reindex(columns=REPLICATE_COLUMNS)


@dataclass
class Pooled:
    estimate: float
    se: float
    df: float
    p_value: float
    ci_low: float
    ci_high: float
    n_items: int
    seed_sd: float  # the run-to-run SD of the effect, from the ANOVA (0 when the seeds vary no more than chance)
    seed_var_of_mean: float  # its share of the grand mean's variance: seed variance / n_seeds


def seed_anova(d: pd.DataFrame) -> Pooled:
    """The grand mean of an items x seeds table of error changes, items and seeds as crossed random effects.

    Items missing a seed are left out (the balanced design's formulas need every cell). One seed: the paired
    t-test of the item means."""
    d = d.dropna()
    n, k = d.shape
    values = d.to_numpy(dtype=float)
    grand = float(values.mean()) if values.size else float("nan")
    if n < 2:
        return Pooled(grand, float("nan"), float("nan"), float("nan"), float("nan"), float("nan"), n, float("nan"),
                      float("nan"))
    item_means, seed_means = values.mean(axis=1), values.mean(axis=0)
    ms_item = k * item_means.var(ddof=1)
    if k < 2:
        return _t_result(grand, ms_item / n, n - 1, n, float("nan"), 0.0)
    ms_seed = n * seed_means.var(ddof=1)
    residual = values - item_means[:, None] - seed_means[None, :] + grand
    ms_error = float((residual ** 2).sum()) / ((n - 1) * (k - 1))
    seed_part = max(ms_seed - ms_error, 0.0)
    variance = (ms_item + seed_part) / (n * k)
    if seed_part > 0:  # Satterthwaite: the mean squares' combination, each with its own degrees of freedom
        df = (ms_item + seed_part) ** 2 / (ms_item ** 2 / (n - 1) + ms_seed ** 2 / (k - 1)
                                           + ms_error ** 2 / ((n - 1) * (k - 1)))
    else:
        df = n - 1
    return _t_result(grand, variance, df, n, float(np.sqrt(seed_part / n)), seed_part / (n * k))


def _t_result(estimate: float, variance: float, df: float, n_items: int, seed_sd: float, seed_var: float) -> Pooled:
    from scipy import stats as sps

    se = float(np.sqrt(variance))
    if not se > 0:
        return Pooled(estimate, se, df, float("nan"), estimate, estimate, n_items, seed_sd, seed_var)
    half = sps.t.ppf(0.975, df) * se
    p_value = float(2 * sps.t.sf(abs(estimate) / se, df))
    return Pooled(estimate, se, df, p_value, estimate - half, estimate + half, n_items, seed_sd, seed_var)


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
            data = as_factors(data)
            pooled, formula = fit_logit(data, "incorrect", "treated", ["seed", "dataset", "model"], "cluster")
            per_seed, _ = fit_logit(data, "incorrect", "treated", ["seed", "dataset", "model"], "cluster",
                                    interaction="C(seed)")
            interaction = [k for k, name in enumerate(per_seed.params.index) if name.startswith("treated:C(seed)")]
            heterogeneity = np.nan
            if interaction:
                constraints = np.zeros((len(interaction), len(per_seed.params)))
                constraints[np.arange(len(interaction)), interaction] = 1
                heterogeneity = float(per_seed.wald_test(constraints, scalar=True).pvalue)
            within = Counterfactuals(pooled, data, "treated").ame()
            rows.append({**base, **_with_seed_noise(within, data), "formula": formula,
                         "seed_heterogeneity_p": heterogeneity})
            effects = Counterfactuals(per_seed, data, "treated")
            for seed in sorted(data["seed"].unique(), key=int):
                rows.append({**base, **_ame(f"treated | seed={seed}", effects.ame((data["seed"] == seed).to_numpy()))})
    return pd.DataFrame(rows).reindex(columns=REGRESSION_COLUMNS)


def _with_seed_noise(within, data: pd.DataFrame) -> dict:
    """The pooled AME with the run-to-run variance added to its item-clustered variance: the seed part of the
    items x seeds ANOVA of the error changes (seed_anova), t with Satterthwaite's degrees of freedom."""
    from scipy import stats as sps

    means = data.groupby(["cluster", "seed", "treated"], observed=True)["incorrect"].mean().unstack("treated")
    anova = seed_anova((means[1] - means[0]).unstack("seed"))
    n_items, n_seeds = anova.n_items, data["seed"].nunique()
    within_var = within.se ** 2
    seed_var = anova.seed_var_of_mean if anova.seed_var_of_mean == anova.seed_var_of_mean else 0.0
    variance = within_var + seed_var
    df = (n_items - 1 if seed_var == 0 else
          variance ** 2 / (within_var ** 2 / max(n_items - 1, 1) + seed_var ** 2 / max(n_seeds - 1, 1)))
    se = float(np.sqrt(variance))
    if not se > 0:
        return {**_ame("treated", within), "se_within_pp": 100 * within.se, "seed_sd_between_pp": 100 * anova.seed_sd}
    half = sps.t.ppf(0.975, df) * se
    return {"term": "treated", "ame_pp": 100 * within.estimate, "ci_low": 100 * (within.estimate - half),
            "ci_high": 100 * (within.estimate + half), "p_value": float(2 * sps.t.sf(abs(within.estimate) / se, df)),
            "se_within_pp": 100 * within.se, "seed_sd_between_pp": 100 * anova.seed_sd, "df": df}


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
