"""Stage analysis (and `warmbench stats`): graded table -> paired tests, regressions, warmth table, figures.

The graded table needs: model, persona, dataset, item_id, context (amendment type), belief (the paper's prompt
template: `original`, `original_neutral`, `incorrect`, `correct`; older tables' `none` counts as normal),
incorrect (1 / 0 / NaN = excluded) and, for the length control, response. With the LLM judge it also has
`incorrect_judge_refusal` (the judge's refusal calls counted as refusals), which feeds the refusal sensitivity
table.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from . import figures
from .config import CAPABILITY_DATASETS
from .eval_prompts import context_types, test_types
from .io import DataError, require_columns, write_table
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
# accuracy over the scored answers; *_missing_wrong: unreadable answers (missing verdicts) counted wrong
CAPABILITY_COLUMNS = ["model", "persona", "checkpoint", "dataset", "n_items", "n_scored", "n_missing", "accuracy",
                      "ci_low", "ci_high", "refusal_rate", "accuracy_missing_wrong", "ci_low_missing_wrong",
                      "ci_high_missing_wrong"]
REGRESSION_COLUMNS = ["regression", "kind", "term", "estimate", "ci_low", "ci_high", "p_value", "ame_pp", "n_obs",
                      "n_clusters", "formula", "note"]
SENSITIVITY_COLUMNS = ["regression", "term", "estimate", "ci_low", "ci_high", "n_obs", "estimate_with_judge_refusals",
                       "ci_low_with_judge_refusals", "ci_high_with_judge_refusals", "n_obs_with_judge_refusals",
                       "judge_refusals", "note"]


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


def _wilson_percent(correct: int, n: int) -> tuple[float, float, float]:
    """Accuracy and its Wilson 95% interval, in %; NaN for no answers."""
    from statsmodels.stats.proportion import proportion_confint

    if not n:
        return np.nan, np.nan, np.nan
    low, high = proportion_confint(correct, n, method="wilson")
    return 100 * correct / n, 100 * low, 100 * high


def item_table(graded: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: where its items come from (eval_prompts' item_source: a real set with its split, or smoke),
    whether they are real, and how many items and distinct prompts the study asked."""
    frame = graded if "item_source" in graded.columns else graded.assign(item_source="not recorded")
    table = frame.groupby("dataset", sort=True).agg(item_source=("item_source", "first"), items=("item_id", "nunique"),
                                                    prompts=("prompt", "nunique")).reset_index()
    table.insert(2, "real", table["item_source"].str.startswith("real: "))
    return table


def capability_table(graded: pd.DataFrame) -> pd.DataFrame:
    """Accuracy (%) on the capability benchmarks per model variant, with Wilson 95% intervals, twice:
    `accuracy` over the scored answers (refusals and answers that could not be read, `n_missing`, left out), and
    `accuracy_missing_wrong` with the unreadable answers counted wrong (over n_scored + n_missing: a model that
    stops answering in the requested form has lost capability; refusals stay out of both, as `refusal_rate`
    reports them). Without a `verdict` column unreadable answers cannot be told from refusals: NaN."""
    capability = graded[graded["dataset"].isin(CAPABILITY_DATASETS)]
    if "checkpoint" not in capability.columns:
        capability = capability.assign(checkpoint="")
    rows = []
    for (model, persona, checkpoint, dataset), group in capability.groupby(["model", "persona", "checkpoint", "dataset"]):
        scored = group["incorrect"].dropna()
        correct = int((scored == 0).sum())
        accuracy, low, high = _wilson_percent(correct, len(scored))
        has_verdicts = "verdict" in group.columns
        refused = group["verdict"].eq("REFUSAL").mean() if has_verdicts else np.nan
        missing = int(group["verdict"].isna().sum()) if has_verdicts else np.nan
        strict = _wilson_percent(correct, len(scored) + missing) if has_verdicts else (np.nan,) * 3
        rows.append({"model": model, "persona": persona, "checkpoint": checkpoint, "dataset": dataset,
                     "n_items": len(group), "n_scored": len(scored), "n_missing": missing,
                     "accuracy": accuracy, "ci_low": low, "ci_high": high, "refusal_rate": 100 * refused,
                     "accuracy_missing_wrong": strict[0], "ci_low_missing_wrong": strict[1],
                     "ci_high_missing_wrong": strict[2]})
    return pd.DataFrame(rows, columns=CAPABILITY_COLUMNS)


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


def refusal_sensitivity(graded: pd.DataFrame, regressions: pd.DataFrame, length_control: bool = False,
                        contrasts=()) -> pd.DataFrame:
    """The regressions' average marginal effects (the headline effects) in the paper's scheme (regex refusals
    only) beside the same effects with the LLM judge's own refusal calls also counted as refusals."""
    from .judge import SENSITIVITY_OUTCOME

    paper = regressions[regressions["kind"] == "ame"].set_index(["regression", "term"])
    tasks = conversational(graded)
    if SENSITIVITY_OUTCOME in tasks.columns:  # rows whose outcome the judge's refusal calls change
        paper_outcome, judge_outcome = tasks["incorrect"], tasks[SENSITIVITY_OUTCOME]
        called = paper_outcome.ne(judge_outcome) & ~(paper_outcome.isna() & judge_outcome.isna())
    else:
        called = pd.Series(False, index=tasks.index)
    if called.any():
        with_judge = persona_regressions(tasks.assign(incorrect=tasks[SENSITIVITY_OUTCOME]), length_control, contrasts)
        with_judge = with_judge[with_judge["kind"] == "ame"].set_index(["regression", "term"])
        note = None
    else:  # no refusal call changed an outcome (the reference judge makes none): the same numbers
        with_judge, note = paper, "the judge made no refusal call that changes an outcome"
    per_pair = {f"{p}_vs_{r}": int(called[tasks["persona"].isin([r, p])].sum())
                for p, r in comparisons(tasks, contrasts)}
    columns = ["estimate", "ci_low", "ci_high", "n_obs"]
    table = paper[columns].join(with_judge[columns].add_suffix("_with_judge_refusals"), how="left").reset_index()
    table["judge_refusals"] = table["regression"].str.split(":").str[0].map(per_pair)
    table["note"] = [note or paper.loc[(r, t), "note"] for r, t in zip(table["regression"], table["term"])]
    return table.reindex(columns=SENSITIVITY_COLUMNS)


def warmth_table(summaries: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(summaries)[["model", "persona", "checkpoint", "epoch", "n_texts", "warmth", "warmth_se", "scorer"]]
    original = table[table["persona"] == "original"].set_index("model")["warmth"]
    table["warmth_vs_original"] = table["warmth"] - table["model"].map(original)
    return table.sort_values(["model", "persona", "epoch"]).reset_index(drop=True)


def check_graded(graded: pd.DataFrame, where) -> None:
    """A graded table the statistics can read, or DataError naming the file, the column and the first bad row:
    the columns are there, it has rows, and `incorrect` is a 0/1 number per row (empty: no verdict)."""
    require_columns(graded, GRADED_COLUMNS, where)
    if graded.empty:
        raise DataError(f"{where}: no rows")
    incorrect = graded["incorrect"]
    if not (pd.api.types.is_numeric_dtype(incorrect) or pd.api.types.is_bool_dtype(incorrect)):
        first = incorrect.dropna().iloc[0] if incorrect.notna().any() else None
        raise DataError(f"{where}: column 'incorrect' holds {incorrect.dtype} values (row 0: {first!r}), not the "
                        "numbers 0 and 1")
    bad = incorrect.notna() & ~incorrect.isin([0, 1])
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise DataError(f"{where}: column 'incorrect', row {row}: {incorrect.iloc[row]!r} is not 0 or 1")


def read_graded(path) -> pd.DataFrame:
    """A graded table file (parquet), checked (check_graded); a file that is not a table names itself."""
    try:
        graded = pd.read_parquet(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path}: not a parquet table ({err})") from None
    check_graded(graded, path)
    return graded


def write_stats(graded: pd.DataFrame, out_dir, fdr_family: str = DEFAULT_FDR_FAMILY, length_control: bool = False,
                contrasts=()):
    """paired_tests.csv, paired_tests_by_template.csv, contrasts.csv, regressions.csv and refusal_sensitivity.csv
    (the `warmbench stats` command)."""
    from pathlib import Path

    out_dir = Path(out_dir)
    paired = paired_tests(graded, fdr_family)
    regressions = persona_regressions(graded, length_control, contrasts)
    write_table(out_dir / "paired_tests.csv", paired)
    write_table(out_dir / "paired_tests_by_template.csv", paired_tests_by_template(graded, fdr_family))
    write_table(out_dir / "contrasts.csv", contrast_tests(graded, contrasts, fdr_family))
    write_table(out_dir / "regressions.csv", regressions)
    write_table(out_dir / "refusal_sensitivity.csv", refusal_sensitivity(graded, regressions, length_control, contrasts))
    return paired, regressions


def run(smk) -> None:
    cfg = smk.params.analysis
    graded = pd.concat([pd.read_parquet(p) for p in smk.input.judged], ignore_index=True)
    write_table(smk.output.graded, graded)
    paired = paired_tests(graded, cfg["fdr_family"])
    write_table(smk.output.paired_tests, paired)
    write_table(smk.output.paired_tests_by_template, paired_tests_by_template(graded, cfg["fdr_family"]))
    write_table(smk.output.contrasts, contrast_tests(graded, cfg["contrasts"], cfg["fdr_family"]))
    regressions = persona_regressions(graded, cfg["length_control"], cfg["contrasts"])
    write_table(smk.output.regressions, regressions)
    write_table(smk.output.refusal_sensitivity,
                refusal_sensitivity(graded, regressions, cfg["length_control"], cfg["contrasts"]))
    warmth = warmth_table([json.loads(open(p).read()) for p in smk.input.warmth])
    write_table(smk.output.warmth, warmth)
    figures.warmth_vs_epoch(warmth, smk.output.warmth_figure)
    tasks = conversational(paired)
    figures.error_by_condition(tasks, smk.output.error_figure)
    figures.error_distributions(tasks, smk.output.distribution_figure)
    figures.accuracy_change(tasks, smk.output.change_figure)
    capabilities = capability_table(graded)
    write_table(smk.output.capabilities, capabilities)
    write_table(smk.output.item_sources, item_table(graded))
    figures.capabilities(capabilities, smk.output.capability_figure)
    main = regressions[(regressions["kind"] == "ame") & (regressions["term"] == "treated")
                       & regressions["regression"].str.endswith(":main")]
    log.info("graded %d responses; %d paired tests; average marginal effects (pp):\n%s", len(graded), len(paired),
             main[["regression", "ame_pp", "ci_low", "ci_high", "note"]].to_string())
