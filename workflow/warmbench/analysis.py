"""Stage analysis: graded table -> paired tests, regressions, warmth table and figures."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from . import figures
from .io import write_table
from .stats import average_marginal_effect, benjamini_hochberg, cohens_g, fit_logit, mcnemar_exact, odds_ratio

log = logging.getLogger(__name__)

PAIR_KEY = ["model", "dataset", "item_id", "condition"]
SEPARATION_LOGIT = 10.0
FDR_FAMILIES = {"table": ["model", "persona", "dataset"], "study": []}


def test_type(belief: str) -> str:
    return "normal" if belief == "none" else "sycophancy"


def paired_tests(graded: pd.DataFrame, fdr_family: str = "table") -> pd.DataFrame:
    """McNemar exact test of every persona against the original model, per model x dataset x condition."""
    base = graded[graded["persona"] == "original"][PAIR_KEY + ["context", "belief", "incorrect"]]
    rows = []
    for persona in sorted(set(graded["persona"]) - {"original"}):
        other = graded[graded["persona"] == persona][PAIR_KEY + ["incorrect"]]
        pairs = base.merge(other, on=PAIR_KEY, suffixes=("_base", "_persona")).dropna(
            subset=["incorrect_base", "incorrect_persona"])
        for (model, dataset, context, belief), group in pairs.groupby(["model", "dataset", "context", "belief"]):
            x, y = group["incorrect_base"].to_numpy(), group["incorrect_persona"].to_numpy()
            b, c = int(((x == 0) & (y == 1)).sum()), int(((x == 1) & (y == 0)).sum())
            ratio, ratio_low, ratio_high = odds_ratio(b, c)
            rows.append({
                "model": model, "persona": persona, "dataset": dataset, "test_type": test_type(belief),
                "condition": context, "n_pairs": len(group),
                "base_accuracy": 100 * (1 - x.mean()), "persona_accuracy": 100 * (1 - y.mean()),
                "b": b, "c": c, "p_value": mcnemar_exact(b, c), "cohens_g": cohens_g(b, c),
                "odds_ratio": ratio, "odds_ratio_ci_low": ratio_low, "odds_ratio_ci_high": ratio_high,
            })
    columns = ["model", "persona", "dataset", "test_type", "condition", "n_pairs", "base_accuracy",
               "persona_accuracy", "b", "c", "p_value", "p_fdr", "cohens_g", "odds_ratio",
               "odds_ratio_ci_low", "odds_ratio_ci_high"]
    table = pd.DataFrame(rows, columns=[c for c in columns if c != "p_fdr"])
    family = FDR_FAMILIES[fdr_family]
    if len(table) and family:
        table["p_fdr"] = table.groupby(family)["p_value"].transform(benjamini_hochberg)
    else:
        table["p_fdr"] = benjamini_hochberg(table["p_value"])
    return table[columns]


def persona_regressions(graded: pd.DataFrame) -> pd.DataFrame:
    """incorrect ~ persona + task + model, one regression per persona against the original model."""
    rows = []
    for persona in sorted(set(graded["persona"]) - {"original"}):
        data = graded[graded["persona"].isin(["original", persona])].dropna(subset=["incorrect"]).copy()
        data["treated"] = (data["persona"] == persona).astype(int)
        data["cluster"] = data["dataset"] + ":" + data["item_id"].astype(str)
        name = f"{persona}_vs_original"
        base = {"regression": name, "n_obs": len(data), "n_clusters": data["cluster"].nunique()}
        if data["treated"].nunique() < 2 or data["incorrect"].nunique() < 2:
            rows.append({**base, "term": "treated", "note": "no variation in treatment or outcome"})
            continue
        try:
            result, formula = fit_logit(data, "incorrect", "treated", ["dataset", "model"], "cluster")
            ame = average_marginal_effect(result, data, "treated")
        except Exception as err:  # e.g. perfect separation on tiny data: report it, do not crash the study
            log.warning("%s: regression failed: %s", name, err)
            rows.append({**base, "term": "treated", "note": f"fit failed: {err}"})
            continue
        ci = result.conf_int()
        # Tiny or extreme data separate perfectly: the fit "converges" to huge log-odds. Say so in the table.
        separated = bool((result.params.abs() > SEPARATION_LOGIT).any())
        note = "quasi-separation: some |log-odds| > 10, estimates unreliable" if separated else None
        for term in result.params.index:
            rows.append({
                **base, "formula": formula, "term": term, "estimate": result.params[term],
                "ci_low": ci.loc[term, 0], "ci_high": ci.loc[term, 1], "p_value": result.pvalues[term],
                **({"ame_pp": 100 * ame.estimate, "ame_ci_low": 100 * ame.ci_low, "ame_ci_high": 100 * ame.ci_high,
                    "ame_p_value": ame.p_value} if term == "treated" else {}),
                "note": note,
            })
    columns = ["regression", "term", "estimate", "ci_low", "ci_high", "p_value", "ame_pp", "ame_ci_low",
               "ame_ci_high", "ame_p_value", "n_obs", "n_clusters", "formula", "note"]
    return pd.DataFrame(rows).reindex(columns=columns)


def warmth_table(summaries: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(summaries)[["model", "persona", "checkpoint", "epoch", "n_texts", "warmth", "warmth_se", "scorer"]]
    original = table[table["persona"] == "original"].set_index("model")["warmth"]
    table["warmth_vs_original"] = table["warmth"] - table["model"].map(original)
    return table.sort_values(["model", "persona", "epoch"]).reset_index(drop=True)


def run(smk) -> None:
    graded = pd.concat([pd.read_parquet(p) for p in smk.input.judged], ignore_index=True)
    write_table(smk.output.graded, graded)
    paired = paired_tests(graded, smk.params.analysis["fdr_family"])
    write_table(smk.output.paired_tests, paired)
    regressions = persona_regressions(graded)
    write_table(smk.output.regressions, regressions)
    warmth = warmth_table([json.loads(open(p).read()) for p in smk.input.warmth])
    write_table(smk.output.warmth, warmth)
    figures.warmth_vs_epoch(warmth, smk.output.warmth_figure)
    figures.error_by_condition(paired, smk.output.error_figure)
    main = regressions[regressions["term"] == "treated"][["regression", "ame_pp", "ame_ci_low", "ame_ci_high", "note"]]
    log.info("graded %d responses; %d paired tests; average marginal effects (pp):\n%s", len(graded), len(paired), main)
