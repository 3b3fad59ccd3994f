"""Stage judge_comparison: do the study's conclusions survive a change of judge?

With several judges (`judge.judges`), every judge grades the same cached generations. This stage reports:
- agreement per dataset and judge pair on the two-way verdict (the responses the refusal regexes left to the
  judges, where both gave one): raw agreement, Cohen's kappa with its 95% interval (statsmodels, asymptotic
  standard error) and label prevalence (each judge's share of CORRECT), and each judge's final verdict against
  the human annotations where they exist;
- the paired tests and the regressions' average marginal effects under every judge, side by side;
- the flips: every paired test whose Benjamini-Hochberg significance (p_fdr < 0.05) or sign (of the accuracy
  change) differs between the primary judge and another, and every marginal effect whose significance
  (p < 0.05) or sign differs; a test that exists under one judge only is listed too;
- a figure of the headline effect (the fine-tuning AME of each persona) under each judge, with intervals.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from . import figures
from .analysis import paired_tests, persona_regressions
from .io import DataError, write_table
from .judge_validation import annotation_ids, kappa_with_ci, read_annotations

log = logging.getLogger(__name__)

ALPHA = 0.05  # significance level of the flips table (after BH for the paired tests)
PAIRED_KEY = ["model", "persona", "dataset", "test_type", "condition"]
AME_KEY = ["regression", "term"]
PAIRED_FIELDS = ["n_pairs", "b", "c", "effect_pp", "p_value", "p_fdr"]
AME_FIELDS = ["estimate", "ci_low", "ci_high", "p_value", "n_obs", "note"]
AGREEMENT_COLUMNS = ["dataset", "first", "second", "n", "agreement", "kappa", "kappa_ci_low", "kappa_ci_high",
                     "correct_share_first", "correct_share_second", "missing_first", "missing_second"]
FLIP_COLUMNS = ["kind", "test", "primary", "judge", "estimate_primary", "estimate_judge", "p_primary", "p_judge",
                "significant_primary", "significant_judge", "change"]
HUMAN = "human"
VERDICT = "verdict:"  # column prefix of each judge's verdict in the aligned table
ID_COLUMNS = ["model", "persona", "checkpoint", "dataset", "item_id", "condition", "response", "refusal"]


def aligned_verdicts(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per response, one column per judge's final verdict, from judged tables of the same generations
    (in the same order; checked, so tables from different generations never pair up)."""
    names = list(tables)
    first = tables[names[0]].reset_index(drop=True)
    frame = first[[c for c in ID_COLUMNS if c in first.columns]].copy()
    for name in names:
        table = tables[name].reset_index(drop=True)
        if len(table) != len(first) or not table["response"].fillna("").equals(first["response"].fillna("")):
            raise DataError(f"the judged tables of {names[0]!r} and {name!r} are not of the same generations "
                            "(different rows); rerun the judges")
        frame[VERDICT + name] = table["verdict"].astype(object).where(table["verdict"].notna(), None)
    return frame


def _agreement_row(dataset, first: str, second: str, a: pd.Series, b: pd.Series) -> dict:
    both = a.notna() & b.notna()
    x, y = a[both].astype(str), b[both].astype(str)
    kappa, low, high = kappa_with_ci(x, y)
    return {"dataset": dataset, "first": first, "second": second, "n": int(both.sum()),
            "agreement": float((x == y).mean()) if both.any() else float("nan"),
            "kappa": kappa, "kappa_ci_low": low, "kappa_ci_high": high,
            "correct_share_first": float((x == "CORRECT").mean()) if both.any() else float("nan"),
            "correct_share_second": float((y == "CORRECT").mean()) if both.any() else float("nan"),
            "missing_first": int(a.isna().sum()), "missing_second": int(b.isna().sum())}


def agreement_table(verdicts: pd.DataFrame, judges: list[str], annotations: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per dataset (and `all`) and judge pair: agreement on the two-way verdict where the regexes left the
    response to the judges; then each judge's final verdict (REFUSAL for a regex refusal) against humans."""
    rows = []
    judged = verdicts[~verdicts["refusal"].astype(bool)]
    for i, first in enumerate(judges):
        for second in judges[i + 1:]:
            for dataset, group in [*judged.groupby("dataset"), ("all", judged)]:
                rows.append(_agreement_row(dataset, first, second, group[VERDICT + first], group[VERDICT + second]))
    if annotations is not None and len(annotations):
        human = annotation_ids(verdicts).map(annotations.set_index("annotation_id")["human_verdict"])
        annotated = verdicts.assign(**{VERDICT + HUMAN: human})[human.notna()]
        for name in judges:
            for dataset, group in [*annotated.groupby("dataset"), ("all", annotated)]:
                rows.append(_agreement_row(dataset, name, HUMAN, group[VERDICT + name], group[VERDICT + HUMAN]))
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def side_by_side(tables: dict[str, pd.DataFrame], key: list[str], fields: list[str]) -> pd.DataFrame:
    """One row per test (the union over judges), the fields of each judge as `<judge>:<field>` columns."""
    parts = [table.set_index(key)[fields].add_prefix(f"{name}:") for name, table in tables.items()]
    wide = pd.concat(parts, axis=1, join="outer") if parts else pd.DataFrame()
    return wide.sort_index().reset_index()


def _with_effect(paired: pd.DataFrame) -> pd.DataFrame:
    return paired.assign(effect_pp=paired["persona_accuracy"] - paired["base_accuracy"])


def _change(est_a, est_b, sig_a, sig_b) -> str | None:
    if pd.isna(est_a) or pd.isna(est_b):
        return "tested under one judge only"
    changes = []
    if sig_a != sig_b:
        changes.append("significance")
    if np.sign(est_a) * np.sign(est_b) < 0:  # opposite directions; a zero effect flips nothing
        changes.append("sign")
    return " and ".join(changes) or None


def flips(wide: pd.DataFrame, kind: str, key: list[str], primary: str, others: list[str], estimate: str,
          p_column: str) -> pd.DataFrame:
    """Every test whose significance (`p_column` < ALPHA) or sign of `estimate` differs between the primary
    judge and another judge."""
    rows = []
    for record in wide.to_dict("records"):
        test = ", ".join(f"{k}={record[k]}" for k in key)
        est_a, p_a = record[f"{primary}:{estimate}"], record[f"{primary}:{p_column}"]
        for other in others:
            est_b, p_b = record[f"{other}:{estimate}"], record[f"{other}:{p_column}"]
            sig_a, sig_b = bool(p_a < ALPHA), bool(p_b < ALPHA)  # NaN p (no test) is not significant
            change = _change(est_a, est_b, sig_a, sig_b)
            if change:
                rows.append({"kind": kind, "test": test, "primary": primary, "judge": other,
                             "estimate_primary": est_a, "estimate_judge": est_b, "p_primary": p_a, "p_judge": p_b,
                             "significant_primary": sig_a, "significant_judge": sig_b, "change": change})
    return pd.DataFrame(rows, columns=FLIP_COLUMNS)


def compare(graded: dict[str, pd.DataFrame], primary: str, paired: dict[str, pd.DataFrame] | None = None,
            regressions: dict[str, pd.DataFrame] | None = None, fdr_family: str = "paper",
            length_control: bool = False, annotations: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """The comparison tables from each judge's graded table (primary first). Paired tests and regressions
    already computed for a judge (the primary's, by the analysis stage) are reused, the others computed here."""
    judges = [primary] + [name for name in graded if name != primary]
    paired, regressions = dict(paired or {}), dict(regressions or {})
    for name in judges:
        if name not in paired:
            paired[name] = paired_tests(graded[name], fdr_family)
        if name not in regressions:
            regressions[name] = persona_regressions(graded[name], length_control)
    paired = {name: _with_effect(paired[name]) for name in judges}
    ames = {name: regressions[name][regressions[name]["kind"] == "ame"] for name in judges}
    paired_wide = side_by_side(paired, PAIRED_KEY, PAIRED_FIELDS)
    ames_wide = side_by_side(ames, AME_KEY, AME_FIELDS)
    others = judges[1:]
    flipped = pd.concat([flips(paired_wide, "paired_test", PAIRED_KEY, primary, others, "effect_pp", "p_fdr"),
                         flips(ames_wide, "ame", AME_KEY, primary, others, "estimate", "p_value")],
                        ignore_index=True)
    verdicts = aligned_verdicts({name: graded[name] for name in judges})
    return {"agreement": agreement_table(verdicts, judges, annotations), "paired_tests": paired_wide,
            "ames": ames_wide, "flips": flipped}


def headline_effects(ames_wide: pd.DataFrame, judges: list[str]) -> pd.DataFrame:
    """The fine-tuning AME of each persona (the `main` regression's `treated`) under each judge, long form."""
    main = ames_wide[ames_wide["regression"].str.endswith(":main") & (ames_wide["term"] == "treated")]
    rows = [{"regression": r["regression"], "judge": name, "estimate": r[f"{name}:estimate"],
             "ci_low": r[f"{name}:ci_low"], "ci_high": r[f"{name}:ci_high"]}
            for r in main.to_dict("records") for name in judges]
    return pd.DataFrame(rows, columns=["regression", "judge", "estimate", "ci_low", "ci_high"])


def run(smk) -> None:
    primary, others = smk.params.primary, list(smk.params.others)
    cfg = smk.params.analysis
    graded = {primary: pd.read_parquet(smk.input.graded)}
    paths = list(smk.input.others)
    per_judge = len(paths) // max(len(others), 1)
    for k, name in enumerate(others):  # the inputs are each judge's cells in the primary's cell order
        graded[name] = pd.concat([pd.read_parquet(p) for p in paths[k * per_judge:(k + 1) * per_judge]],
                                 ignore_index=True)
    annotations = read_annotations(smk.input.annotations[0]) if smk.input.annotations else None
    tables = compare(graded, primary, {primary: pd.read_csv(smk.input.paired_tests)},
                     {primary: pd.read_csv(smk.input.regressions)}, cfg["fdr_family"], cfg["length_control"],
                     annotations)
    for name, table in tables.items():
        write_table(getattr(smk.output, name), table)
    figures.effect_by_judge(headline_effects(tables["ames"], [primary, *others]), smk.output.figure)
    log.info("judges %s (primary %s): %d flips; agreement:\n%s", [primary, *others], primary, len(tables["flips"]),
             tables["agreement"].to_string())
