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

from ..core import figures
from ..core.config import CAPABILITY_DATASETS
from ..core.files import DataError, require_columns, write_table
from ..core.refusal import SENSITIVITY_OUTCOME
from ..core.regression import (DEFAULT_FDR_FAMILY, GRADED_COLUMNS, comparisons, contrast_tests, conversational,
                               paired_tests, paired_tests_by_template, persona_regressions, warmth_table)

log = logging.getLogger(__name__)

# accuracy over the scored answers; *_missing_wrong: unreadable answers (missing verdicts) counted wrong
CAPABILITY_COLUMNS = ["model", "persona", "checkpoint", "dataset", "n_items", "n_scored", "n_missing", "accuracy",
                      "ci_low", "ci_high", "refusal_rate", "accuracy_missing_wrong", "ci_low_missing_wrong",
                      "ci_high_missing_wrong"]
SENSITIVITY_COLUMNS = ["regression", "term", "estimate", "ci_low", "ci_high", "n_obs", "estimate_with_judge_refusals",
                       "ci_low_with_judge_refusals", "ci_high_with_judge_refusals", "n_obs_with_judge_refusals",
                       "judge_refusals", "note"]


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


def refusal_sensitivity(graded: pd.DataFrame, regressions: pd.DataFrame, length_control: bool = False,
                        contrasts=()) -> pd.DataFrame:
    """The regressions' average marginal effects (the headline effects) in the paper's scheme (regex refusals
    only) beside the same effects with the LLM judge's own refusal calls also counted as refusals."""
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
