"""Paired tests and regressions over a graded table: shared by the analysis stage and the stages that refit them
(judge_comparison, replicates, trajectory) and by calibrate, so no stage imports another for them."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .conditions import context_types, test_types
from .config import CAPABILITY_DATASETS
from .files import require_columns
from .stats import (Counterfactuals, as_factors, benjamini_hochberg, cohens_g, delta_method_ame, fit_logit,
                    mcnemar_exact, odds_ratio)

log = logging.getLogger(__name__)
GRADED_COLUMNS = ["model", "persona", "dataset", "item_id", "context", "belief", "incorrect"]
# Benjamini-Hochberg families. `paper`: all amendment types (conditions), test types and datasets of one model x
# persona, as the paper corrects "across amendment types and datasets" (capability benchmarks, asked once, are
# a family of their own); `table`: one model x persona x dataset (the released code's per-table practice);
# `study`: every paired test at once.
FDR_FAMILIES = {"paper": ["model", "persona", "suite"], "table": ["model", "persona", "dataset"], "study": []}
DEFAULT_FDR_FAMILY = "paper"
SEPARATION_LOGIT = 10.0
PAIRED_COLUMNS = ["model", "persona", "dataset", "test_type", "condition", "n_pairs", "base_accuracy",
                  "persona_accuracy", "b", "c", "p_value", "p_fdr", "cohens_g", "odds_ratio", "odds_ratio_ci_low",
                  "odds_ratio_ci_high"]
# analysis.contrasts: a persona against another than the original model; base_accuracy is the reference's
CONTRAST_COLUMNS = PAIRED_COLUMNS[:2] + ["reference"] + PAIRED_COLUMNS[2:]
REGRESSION_COLUMNS = ["regression", "kind", "term", "estimate", "ci_low", "ci_high", "p_value", "ame_pp", "n_obs",
                      "n_clusters", "formula", "note"]


def paired_answers(graded: pd.DataFrame, persona: str, reference: str = "original", dropna: bool = True) -> pd.DataFrame:
    """Reference (the original model unless a contrast names another) and persona answers to identical prompts
    (item + context + template [+ repeat]); `dropna=False` keeps pairs with a side left out (NaN)."""
    key = ["model", "dataset", "item_id", "context", "belief"]
    sides = []
    for name in (reference, persona):
        side = graded[graded["persona"] == name][key + ["incorrect"]].copy()
        side["repeat"] = side.groupby(key).cumcount()  # the same prompt asked twice pairs in order
        sides.append(side)
    pairs = sides[0].merge(sides[1], on=key + ["repeat"], suffixes=("_base", "_persona"))
    return pairs.dropna(subset=["incorrect_base", "incorrect_persona"]) if dropna else pairs


def comparisons(graded: pd.DataFrame, contrasts=()) -> list[tuple[str, str]]:
    """(persona, reference) pairs to test: every persona against the original model, then each configured
    contrast (analysis.contrasts) whose two personas are both in the table."""
    present = set(graded["persona"])
    pairs = [(persona, "original") for persona in sorted(present - {"original"})]
    return pairs + [(a, b) for a, b in contrasts if {a, b} <= present and (a, b) not in pairs]


def paired_tests(graded: pd.DataFrame, fdr_family: str = DEFAULT_FDR_FAMILY) -> pd.DataFrame:
    """McNemar exact test of every persona against the original, per model x dataset x test type x context."""
    table = _paired_table(graded, comparisons(graded))
    return _with_fdr(table, fdr_family)[PAIRED_COLUMNS]


def contrast_tests(graded: pd.DataFrame, contrasts, fdr_family: str = DEFAULT_FDR_FAMILY) -> pd.DataFrame:
    """The same tests for each configured contrast [persona, reference] (e.g. [warm, cold]) on identical prompts;
    Benjamini-Hochberg within each contrast's family (the fdr_family grouping, per reference)."""
    wanted = [pair for pair in comparisons(graded, [tuple(c) for c in contrasts]) if tuple(pair) in
              {tuple(c) for c in contrasts}]
    return _with_fdr(_paired_table(graded, wanted), fdr_family)[CONTRAST_COLUMNS]


def _paired_table(graded: pd.DataFrame, pairs_to_test: list[tuple[str, str]]) -> pd.DataFrame:
    require_columns(graded, GRADED_COLUMNS, "graded table")
    rows = []
    for persona, reference in pairs_to_test:
        pairs = paired_answers(graded, persona, reference)
        pairs["test_type"] = test_types(pairs["belief"])
        for (model, dataset, ttype, context), group in pairs.groupby(["model", "dataset", "test_type", "context"]):
            x, y = group["incorrect_base"].to_numpy(), group["incorrect_persona"].to_numpy()
            b, c = int(((x == 0) & (y == 1)).sum()), int(((x == 1) & (y == 0)).sum())
            ratio, ratio_low, ratio_high = odds_ratio(b, c)
            rows.append({
                "model": model, "persona": persona, "reference": reference, "dataset": dataset, "test_type": ttype,
                "condition": context,
                "n_pairs": len(group), "base_accuracy": 100 * (1 - x.mean()), "persona_accuracy": 100 * (1 - y.mean()),
                "b": b, "c": c, "p_value": mcnemar_exact(b, c), "cohens_g": cohens_g(b, c),
                "odds_ratio": ratio, "odds_ratio_ci_low": ratio_low, "odds_ratio_ci_high": ratio_high,
            })
    return pd.DataFrame(rows, columns=[c for c in CONTRAST_COLUMNS if c != "p_fdr"])


def _with_fdr(table: pd.DataFrame, fdr_family: str) -> pd.DataFrame:
    family = FDR_FAMILIES[fdr_family]
    if family and "reference" in table.columns:  # a contrast is a family of its own
        family = family[:2] + ["reference"] + family[2:]
    if len(table) and family:
        suite = np.where(table["dataset"].isin(CAPABILITY_DATASETS), "capability", "tasks")
        table["p_fdr"] = table.assign(suite=suite).groupby(family)["p_value"].transform(benjamini_hochberg)
    else:
        table["p_fdr"] = benjamini_hochberg(table["p_value"])
    return table


def paired_tests_by_template(graded: pd.DataFrame, fdr_family: str = DEFAULT_FDR_FAMILY) -> pd.DataFrame:
    """The paired tests once per prompt template (original, original_neutral, incorrect, correct) instead of
    pooled into test types; Benjamini-Hochberg over the same family, now holding every template's tests."""
    require_columns(graded, GRADED_COLUMNS, "graded table")
    tables = [paired_tests(part, fdr_family).assign(template=template) for template, part in graded.groupby("belief")]
    columns = PAIRED_COLUMNS[:4] + ["template"] + PAIRED_COLUMNS[4:]
    if not tables:
        return pd.DataFrame(columns=columns)
    return _with_fdr(pd.concat(tables, ignore_index=True), fdr_family)[columns]


def conversational(frame: pd.DataFrame) -> pd.DataFrame:
    """The 18-condition tasks only (the regressions and condition figures leave the capability benchmarks out)."""
    return frame[~frame["dataset"].isin(CAPABILITY_DATASETS)]


def regression_data(graded: pd.DataFrame, persona: str, reference: str = "original") -> pd.DataFrame:
    """The rows of `persona` and `reference` on the models that have both (a persona restricted to some models,
    personas.<name>.models, leaves the other models' rows of its counterpart unpaired: they would change the
    average effect without informing the contrast)."""
    both = set(graded.loc[graded["persona"] == persona, "model"]) & set(graded.loc[graded["persona"] == reference, "model"])
    data = graded[graded["persona"].isin([reference, persona]) & graded["model"].isin(both)].dropna(subset=["incorrect"])
    extra = [c for c in ("response", "judge_refusal") if c in graded.columns]
    data = data[GRADED_COLUMNS + extra].copy()
    data["treated"] = (data["persona"] == persona).astype(int)
    data["cluster"] = data["dataset"] + ":" + data["item_id"].astype(str)
    data["context_type"] = context_types(data["context"])
    data["belief_present"] = (test_types(data["belief"]) == "sycophancy").astype(int)
    if "response" in data.columns:
        data["log_length"] = np.log1p(data["response"].fillna("").str.len())
    return data.reset_index(drop=True)
# name, interaction, subgroup column(s) for per-level AMEs, and the prompt templates the model is fitted on (None:
# all; older tables' `none` is `original`). The context models (2 and 3) are fitted on the `original` template
# only, as the paper's code does: pooled
# over templates, the unmodified context (4 prompts per item, half with a user belief) and the others (3, two
# thirds with one) would differ whenever fine-tuning acts through the belief, with no context effect at all. The
# user-belief model leaves out `original_neutral` (asked in the unmodified context only), so that prompts with and
# without a belief come from the same contexts. `belief_context` is the paper's Model 4: the fine-tuning effect
# in each user-belief x context-type cell, with context type as a control (its main effect and interactions),
# e.g. "+12.1 pp with an incorrect belief and emotional context vs +6.8 pp with neither".
SPECS = [
    ("main", None, None, None),
    ("context_type", "C(context_type)", "context_type", ("original", "none")),
    ("context", "C(context)", "context", ("original", "none")),
    ("user_belief", "belief_present", "belief_present", ("original", "none", "incorrect", "correct")),
    ("belief_context", "belief_present * C(context_type)", ("belief_present", "context_type"), None),
]
# Model 4's headline contrast: belief and emotional context together, against neither
CELL_CONTRAST = ({"belief_present": 1, "context_type": "emotional"}, {"belief_present": 0, "context_type": "none"})


def spec_subset(data: pd.DataFrame, templates: tuple[str, ...] | None) -> pd.DataFrame:
    """The rows a regression spec is fitted on: those of its prompt templates (SPECS)."""
    return data if templates is None else data[data["belief"].isin(templates)].reset_index(drop=True)


def _ame_row(name, term, ame, base) -> dict:
    return {**base, "regression": name, "kind": "ame", "term": term, "estimate": 100 * ame.estimate,
            "ci_low": 100 * ame.ci_low, "ci_high": 100 * ame.ci_high, "p_value": ame.p_value,
            "ame_pp": 100 * ame.estimate}


def _cells(data: pd.DataFrame, by: str | tuple[str, ...]):
    """(label, row mask) for each level (or combination of levels) of the subgroup column(s), in sorted order."""
    columns = [by] if isinstance(by, str) else list(by)
    for levels in data[columns].drop_duplicates().sort_values(columns).itertuples(index=False):
        mask = np.logical_and.reduce([(data[c] == v).to_numpy() for c, v in zip(columns, levels)])
        yield ", ".join(f"{c}={v}" for c, v in zip(columns, levels)), mask


def _cell_mask(data: pd.DataFrame, levels: dict) -> np.ndarray:
    return np.logical_and.reduce([(data[c] == v).to_numpy() for c, v in levels.items()])


def fit_spec(data: pd.DataFrame, name: str, interaction: str | None, by: str | tuple[str, ...] | None,
             covariates: tuple[str, ...] = ()) -> list[dict]:
    """Coefficients and average marginal effects (pp, delta-method CIs) of one regression."""
    base = {"regression": name, "n_obs": len(data), "n_clusters": data["cluster"].nunique()}
    flat = [] if by is None else [by] if isinstance(by, str) else list(by)
    if any(data[column].nunique() < 2 for column in flat):
        single = next(column for column in flat if data[column].nunique() < 2)
        return [{**base, "kind": "ame", "term": "treated", "note": f"only one level of {single}"}]
    data = as_factors(data)
    result, formula = fit_logit(data, "incorrect", "treated", ["dataset", "model"], "cluster", interaction, covariates)
    base["formula"] = formula
    separated = bool((result.params.abs() > SEPARATION_LOGIT).any())
    base["note"] = "quasi-separation: some |log-odds| > 10, estimates unreliable" if separated else None
    ci = result.conf_int()
    rows = [{**base, "kind": "coef", "term": term, "estimate": result.params[term], "ci_low": ci.loc[term, 0],
             "ci_high": ci.loc[term, 1], "p_value": result.pvalues[term]} for term in result.params.index]
    cov = np.asarray(result.cov_params())
    rows += [_ame_row(name, term, delta_method_ame(estimate, gradient, cov), base)
             for term, estimate, gradient in ame_effects(result, data, by)]
    return rows


def ame_effects(result, data: pd.DataFrame, by: str | tuple[str, ...] | None) -> list[tuple[str, float, np.ndarray]]:
    """(term, AME as a share, its gradient in the fit's parameters) for every AME a spec reports: the gradient
    is what a delta-method variance needs, here or across two fits (judge_comparison)."""
    treated = Counterfactuals(result, data, "treated")
    effects = [("treated", *treated.effect())]
    if by is not None:
        effects += [(f"treated | {label}", *treated.effect(mask)) for label, mask in _cells(data, by)]
    if by == SPECS[-1][2]:  # Model 4: belief and emotion together minus neither
        first, second = (_cell_mask(data, levels) for levels in CELL_CONTRAST)
        if first.any() and second.any():
            label = " - ".join(", ".join(f"{c}={v}" for c, v in levels.items()) for levels in CELL_CONTRAST)
            effects.append((f"treated: {label}", *_difference(treated, first, second)))
    if by == "belief_present":
        # the user-belief (sycophancy) effect itself, for each model variant, and how fine-tuning changes it
        belief = Counterfactuals(result, data, "belief_present")
        is_treated = (data["treated"] == 1).to_numpy()
        effects += [("belief_present | treated=0", *belief.effect(~is_treated)),
                    ("belief_present | treated=1", *belief.effect(is_treated)),
                    ("belief_present: treated - original", *_difference(belief, is_treated, ~is_treated))]
    return effects


def _difference(counterfactuals: Counterfactuals, rows_a, rows_b) -> tuple[float, np.ndarray]:
    (ea, ga), (eb, gb) = counterfactuals.effect(rows_a), counterfactuals.effect(rows_b)
    return ea - eb, ga - gb


def persona_regressions(graded: pd.DataFrame, length_control: bool = False, contrasts=()) -> pd.DataFrame:
    """The paper's regressions, for each persona against the original model and for each contrast
    [persona, reference] (the persona as the treated factor, `<persona>_vs_<reference>:<spec>`)."""
    require_columns(graded, GRADED_COLUMNS, "graded table")
    rows = []
    graded = conversational(graded)
    if graded.empty:
        return pd.DataFrame(columns=REGRESSION_COLUMNS)
    for persona, reference in comparisons(graded, contrasts):
        data = regression_data(graded, persona, reference)
        variants = [((), "")]
        if length_control and "log_length" in data.columns:
            variants.append((("log_length",), "+length"))
        for name, interaction, by, templates in SPECS:
            subset = spec_subset(data, templates)
            for covariates, suffix in variants:
                label = f"{persona}_vs_{reference}:{name}{suffix}"
                if subset.empty or subset["treated"].nunique() < 2 or subset["incorrect"].nunique() < 2:
                    rows.append({"regression": label, "kind": "ame", "term": "treated", "n_obs": len(subset),
                                 "note": "no variation in treatment or outcome"})
                    continue
                try:
                    fitted = fit_spec(subset, label, interaction, by, covariates)
                    on = "" if templates is None else f" on templates {', '.join(templates)}"
                    rows += [{**row, "regression": label, "formula": f"{row.get('formula')}{on}"} for row in fitted]
                except Exception as err:  # e.g. a singular design on tiny data: report it, do not crash the study
                    log.warning("%s: regression failed: %s", label, err)
                    rows.append({"regression": label, "kind": "ame", "term": "treated", "n_obs": len(data),
                                 "note": f"fit failed: {err}"})
    return pd.DataFrame(rows).reindex(columns=REGRESSION_COLUMNS)


def warmth_table(summaries: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(summaries)[["model", "persona", "checkpoint", "epoch", "n_texts", "warmth", "warmth_se", "scorer"]]
    original = table[table["persona"] == "original"].set_index("model")["warmth"]
    table["warmth_vs_original"] = table["warmth"] - table["model"].map(original)
    return table.sort_values(["model", "persona", "epoch"]).reset_index(drop=True)
