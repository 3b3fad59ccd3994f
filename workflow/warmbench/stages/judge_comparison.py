"""Stage judge_comparison: do the study's conclusions survive a change of judge?

With several judges (`judge.judges`), every judge grades the same cached generations. This stage reports:
- agreement per dataset and judge pair on the two-way verdict (the responses the refusal regexes left to the
  judges, where both gave one): raw agreement, Cohen's kappa with its 95% interval (statsmodels, asymptotic
  standard error) and label prevalence (each judge's share of CORRECT), and each judge's final verdict against
  the human annotations where they exist; `all` pools the judged datasets only (`judged`: MMLU and GSM8K are
  scored by the same regular expressions under every judge, and would inflate kappa);
- the paired tests and the regressions' average marginal effects under every judge (contrasts included), side
  by side;
- the difference of every effect between the primary judge and each other, paired on the same answers, with its
  95% interval (effect_differences: an item-clustered sandwich variance, no resampling);
- the flips: every test whose difference is significant or whose effect is significant in opposite directions
  (`flip`), beside the older threshold rule (significant under one judge only: `threshold_crossing`) and raw
  sign changes; a test that exists under one judge only is listed too;
- a figure of the headline effect (the fine-tuning AME of each persona) under each judge, with intervals.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from scipy import stats as sps

from ..core import figures
from ..core.annotations import annotation_ids, kappa_with_ci, read_annotations
from ..core.conditions import test_types
from ..core.config import REGEX_SCORED_DATASETS
from ..core.files import DataError, require_columns, write_table
from ..core.regression import (GRADED_COLUMNS, SPECS, _with_fdr, ame_effects, comparisons, conversational,
                               paired_answers, paired_tests, persona_regressions, regression_data, spec_subset)
from ..core.stats import as_factors, fit_logit

log = logging.getLogger(__name__)

ALPHA = 0.05  # significance level of the flips table (after BH for the paired tests)
PAIRED_KEY = ["model", "persona", "dataset", "test_type", "condition"]
AME_KEY = ["regression", "term"]
PAIRED_FIELDS = ["n_pairs", "b", "c", "effect_pp", "p_value", "p_fdr"]
AME_FIELDS = ["estimate", "ci_low", "ci_high", "p_value", "n_obs", "note"]
AGREEMENT_COLUMNS = ["dataset", "first", "second", "n", "agreement", "kappa", "kappa_ci_low", "kappa_ci_high",
                     "correct_share_first", "correct_share_second", "missing_first", "missing_second", "judged"]
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


def _per_dataset_and_overall(frame: pd.DataFrame):
    """(dataset, rows, judged) per dataset, then (`all`, the judged datasets' rows, True): MMLU and GSM8K are
    scored by the same regular expressions under every judge, so pooling them would inflate the agreement."""
    judged = ~frame["dataset"].isin(REGEX_SCORED_DATASETS)
    parts = [(dataset, group, dataset not in REGEX_SCORED_DATASETS) for dataset, group in frame.groupby("dataset")]
    return [*parts, ("all", frame[judged], True)]


def agreement_table(verdicts: pd.DataFrame, judges: list[str], annotations: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per dataset (and `all`) and judge pair: agreement on the two-way verdict where the regexes left the
    response to the judges; then each judge's final verdict (REFUSAL for a regex refusal) against humans.
    `judged` is False for the regex-scored datasets (MMLU, GSM8K), which `all` leaves out."""
    rows = []
    judged = verdicts[~verdicts["refusal"].astype(bool)]
    for i, first in enumerate(judges):
        for second in judges[i + 1:]:
            for dataset, group, by_judge in _per_dataset_and_overall(judged):
                rows.append({**_agreement_row(dataset, first, second, group[VERDICT + first], group[VERDICT + second]),
                             "judged": by_judge})
    if annotations is not None and len(annotations):
        human = annotation_ids(verdicts).map(annotations.set_index("annotation_id")["human_verdict"])
        annotated = verdicts.assign(**{VERDICT + HUMAN: human})[human.notna()]
        for name in judges:
            for dataset, group, by_judge in _per_dataset_and_overall(annotated):
                rows.append({**_agreement_row(dataset, name, HUMAN, group[VERDICT + name], group[VERDICT + HUMAN]),
                             "judged": by_judge})
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


# --- Differences of each effect between two judges, paired on the same answers -------------------------------
# Both judges grade the same responses, so their effects are strongly correlated: the difference is estimated
# with a variance over items (the clusters) that keeps that correlation (see effect_differences).
DIFFERENCE_COLUMNS = ["kind", "test", *PAIRED_KEY, *AME_KEY, "estimate_a", "estimate_b", "difference", "se", "ci_low",
                      "ci_high", "p_value", "p_fdr", "n_a", "n_b", "n_clusters", "p_a", "p_b", "significant_a",
                      "significant_b", "threshold_crossing", "sign_change", "reversal", "flip"]
CELL = ["model", "dataset", "test_type", "condition"]


def _test_label(record: dict, key: list[str]) -> str:
    return ", ".join(f"{k}={record[k]}" for k in key)


def _pair_changes(graded_a: pd.DataFrame, graded_b: pd.DataFrame, persona: str, reference: str) -> pd.DataFrame:
    """Every answer pair (reference, persona to one prompt) with its error change (persona minus reference, NaN
    where a judge left a side out) under each judge."""
    key = ["model", "dataset", "item_id", "context", "belief", "repeat"]
    sides = []
    for graded in (graded_a, graded_b):
        pairs = paired_answers(graded, persona, reference, dropna=False)
        sides.append(pairs[key].assign(change=pairs["incorrect_persona"] - pairs["incorrect_base"]))
    pairs = sides[0].merge(sides[1], on=key, suffixes=("_a", "_b"), validate="one_to_one")
    pairs = pairs.rename(columns={"context": "condition"}).assign(persona=persona)
    return pairs.assign(test_type=test_types(pairs["belief"]))


def _paired_cell_differences(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per paired-test cell: each judge's accuracy change (pp, persona minus reference) and their difference,
    with a cluster-robust (items) linearization variance of the difference of the two ratio estimators."""
    cell = ["model", "persona", "dataset", "test_type", "condition"]
    items = pairs.assign(
        s_a=pairs["change_a"].fillna(0), n_a=pairs["change_a"].notna(), s_b=pairs["change_b"].fillna(0),
        n_b=pairs["change_b"].notna()).groupby([*cell, "item_id"])[["s_a", "n_a", "s_b", "n_b"]].sum()
    totals = items.groupby(level=cell).transform("sum")
    rate_a, rate_b = totals["s_a"] / totals["n_a"], totals["s_b"] / totals["n_b"]
    # influence of each item on effect_a - effect_b (effect = -100 x mean error change)
    influence = -100 * ((items["s_a"] - rate_a * items["n_a"]) / totals["n_a"]
                        - (items["s_b"] - rate_b * items["n_b"]) / totals["n_b"])
    grouped = items.assign(influence_sq=influence ** 2).groupby(level=cell)
    table = grouped[["s_a", "n_a", "s_b", "n_b"]].sum()
    m = grouped.size()
    table["n_clusters"] = m
    table["estimate_a"] = -100 * table["s_a"] / table["n_a"]
    table["estimate_b"] = -100 * table["s_b"] / table["n_b"]
    table["difference"] = table["estimate_a"] - table["estimate_b"]
    table["se"] = np.sqrt(grouped["influence_sq"].sum() * m / (m - 1).where(m > 1))
    return table.reset_index()


def _with_interval(table: pd.DataFrame, df=None) -> pd.DataFrame:
    """ci_low, ci_high and a two-sided p-value of `difference` from `se` (Student t with `df` degrees of freedom,
    the normal when None). A zero standard error is a difference without sampling noise: p 1 if it is 0, else 0."""
    quantile = sps.norm.ppf(1 - ALPHA / 2) if df is None else sps.t.ppf(1 - ALPHA / 2, df)
    z = table["difference"].abs() / table["se"]
    sf = sps.norm.sf(z) if df is None else sps.t.sf(z, df)
    p = pd.Series(2 * np.asarray(sf, dtype=float), index=table.index)
    no_noise = table["se"].eq(0)
    p[no_noise] = np.where(table.loc[no_noise, "difference"].eq(0), 1.0, 0.0)
    return table.assign(ci_low=table["difference"] - quantile * table["se"],
                        ci_high=table["difference"] + quantile * table["se"], p_value=p)


def _calls(table: pd.DataFrame, p_column: str) -> pd.DataFrame:
    """The flip call from the difference (`p_column` < ALPHA) or a reversal (both effects significant under
    their own judge, in opposite directions), beside the old rule's threshold crossing and the raw sign change."""
    significant_a, significant_b = table["p_a"] < ALPHA, table["p_b"] < ALPHA  # NaN p (no test): not significant
    sign_change = np.sign(table["estimate_a"]) * np.sign(table["estimate_b"]) < 0
    reversal = sign_change & significant_a & significant_b
    return table.assign(significant_a=significant_a, significant_b=significant_b,
                        threshold_crossing=significant_a != significant_b, sign_change=sign_change,
                        reversal=reversal, flip=(table[p_column] < ALPHA) | reversal)


def paired_differences(graded_a: pd.DataFrame, graded_b: pd.DataFrame, fdr_family: str = "paper") -> pd.DataFrame:
    """Per paired-test cell (every persona against the original model): the accuracy change (pp) under judge a
    and under judge b, from two graded tables of the same answers, and their difference with its 95% interval.

    The variance is a cluster-robust linearization (sandwich) over items, not a bootstrap: each judge's effect is
    a ratio (summed error changes over valid pairs), so the difference has the influence function
    u_i = d(effect_a - effect_b) of item i, and Var = m/(m-1) sum u_i^2 over the cell's m items. Summing within
    items keeps the dependence of the two judges' verdicts on the same responses (and of an item's templates and
    repeats on each other); pairs one judge left out count only for the other judge's effect. It is exact
    arithmetic, no resampling, so it costs nothing next to the tests; the interval uses Student's t with m - 1
    degrees of freedom (a small-cluster guard). p_fdr: Benjamini-Hochberg over the paired tests' family
    (analysis.fdr_family), on which the flip call rests; p_a / p_b are each judge's own McNemar p_fdr."""
    require_columns(graded_a, GRADED_COLUMNS, "graded table a")
    require_columns(graded_b, GRADED_COLUMNS, "graded table b")
    parts = [_pair_changes(graded_a, graded_b, persona, reference) for persona, reference in comparisons(graded_a)]
    if not parts:
        return pd.DataFrame(columns=DIFFERENCE_COLUMNS)
    table = _paired_cell_differences(pd.concat(parts, ignore_index=True))
    table = _with_interval(table, df=(table["n_clusters"] - 1).where(table["n_clusters"] > 1))
    table = _with_fdr(table, fdr_family)
    own = {name: paired_tests(graded, fdr_family).set_index(PAIRED_KEY)["p_fdr"]
           for name, graded in (("p_a", graded_a), ("p_b", graded_b))}
    table = table.join(pd.DataFrame(own), on=PAIRED_KEY)
    table = table.assign(kind="paired_test", test=[_test_label(r, PAIRED_KEY) for r in table.to_dict("records")])
    return _calls(table, "p_fdr").reindex(columns=DIFFERENCE_COLUMNS)


def _fit_for_difference(data: pd.DataFrame, interaction, by, covariates) -> dict | None:
    """One judge's fit of a spec: its AMEs with their gradients, and each item's influence on the parameters
    (the cluster's score times the inverse Hessian), which is what statsmodels' clustered covariance sums."""
    flat = [] if by is None else [by] if isinstance(by, str) else list(by)
    if data["treated"].nunique() < 2 or data["incorrect"].nunique() < 2 or any(data[c].nunique() < 2 for c in flat):
        return None  # the analysis reports no AME here either
    data = as_factors(data)
    try:
        result, _ = fit_logit(data, "incorrect", "treated", ["dataset", "model"], "cluster", interaction, covariates)
    except Exception as err:  # e.g. a singular design on tiny data: the analysis notes it, no difference here
        log.warning("regression for the judges' difference failed: %s", err)
        return None
    exog, mu = np.asarray(result.model.exog), np.asarray(result.mu)
    scores = exog * (np.asarray(result.model.endog) - mu)[:, None]
    clusters = data.loc[result.model.data.row_labels, "cluster"].to_numpy()
    hessian = exog.T @ (exog * (mu * (1 - mu))[:, None])
    influence = pd.DataFrame(scores).groupby(clusters).sum() @ np.linalg.pinv(hessian)
    n, k, g = len(exog), exog.shape[1], len(influence)
    return {"effects": {term: (estimate, gradient) for term, estimate, gradient in ame_effects(result, data, by)},
            "influence": influence, "correction": g / (g - 1) * (n - 1) / (n - k), "n": n}


def _ame_difference_row(label: str, term: str, fit_a: dict, fit_b: dict) -> dict:
    """One AME under both judges and their difference: the stacked (seemingly unrelated) fits' item-clustered
    covariance, each judge's part as statsmodels computes it (same small-sample correction)."""
    (est_a, grad_a), (est_b, grad_b) = fit_a["effects"][term], fit_b["effects"][term]
    infl_a, infl_b = (fit["influence"] @ grad for fit, grad in ((fit_a, grad_a), (fit_b, grad_b)))
    infl_a, infl_b = infl_a.align(infl_b, fill_value=0.0)
    c_a, c_b = fit_a["correction"], fit_b["correction"]
    var_a, var_b = c_a * (infl_a ** 2).sum(), c_b * (infl_b ** 2).sum()
    var = var_a + var_b - 2 * np.sqrt(c_a * c_b) * (infl_a * infl_b).sum()
    p = [2 * sps.norm.sf(abs(e) / np.sqrt(v)) if v > 0 else np.nan for e, v in ((est_a, var_a), (est_b, var_b))]
    return {"kind": "ame", "regression": label, "term": term, "test": f"regression={label}, term={term}",
            "estimate_a": 100 * est_a, "estimate_b": 100 * est_b, "difference": 100 * (est_a - est_b),
            "se": 100 * np.sqrt(max(var, 0.0)), "n_a": fit_a["n"], "n_b": fit_b["n"], "n_clusters": len(infl_a),
            "p_a": p[0], "p_b": p[1]}


def ame_differences(graded_a: pd.DataFrame, graded_b: pd.DataFrame, length_control: bool = False, contrasts=(),
                    specs=None) -> pd.DataFrame:
    """Every average marginal effect of the regressions (analysis.persona_regressions: each persona against the
    original and each contrast) under judge a and judge b, and their difference with its 95% interval.

    Paired on the same answers without resampling: the two judges' logits are fitted apart (each as the
    analysis fits it), then stacked as one seemingly unrelated model whose covariance is clustered by item
    (the sandwich of the stacked scores: each item's influence on judge a's AME minus its influence on judge
    b's, summed over items), so the correlation of the two judges' verdicts on the same responses enters the
    variance. This equals the stacked regression with a full judge interaction and item-clustered SEs, at the
    cost of the two fits the comparison makes anyway. The interval and p-value use Student's t with G - 1 degrees
    of freedom (G items), as for the paired tests: a guard on small studies, the normal on large ones. `specs` (names from analysis.SPECS) limits the work,
    e.g. ["main"] for the headline effects; p_fdr is p_value (the regressions are not BH-corrected)."""
    tasks_a, tasks_b = conversational(graded_a), conversational(graded_b)
    rows = []
    for persona, reference in comparisons(tasks_a, contrasts) if len(tasks_a) else []:
        data_a, data_b = regression_data(tasks_a, persona, reference), regression_data(tasks_b, persona, reference)
        variants = [((), "")] + ([(("log_length",), "+length")] if length_control and "log_length" in data_a else [])
        for name, interaction, by, templates in SPECS:
            if specs is not None and name not in specs:
                continue
            for covariates, suffix in variants:
                fit_a, fit_b = (_fit_for_difference(spec_subset(d, templates), interaction, by, covariates)
                                for d in (data_a, data_b))
                if fit_a is None or fit_b is None:
                    continue
                label = f"{persona}_vs_{reference}:{name}{suffix}"
                rows += [_ame_difference_row(label, term, fit_a, fit_b) for term in fit_a["effects"]
                         if term in fit_b["effects"]]
    table = pd.DataFrame(rows, columns=DIFFERENCE_COLUMNS)
    if table.empty:
        return table
    table = table.astype({c: float for c in ("difference", "se")})
    table = _with_interval(table, df=(table["n_clusters"] - 1).where(table["n_clusters"] > 1))
    return _calls(table.assign(p_fdr=table["p_value"]), "p_fdr").reindex(columns=DIFFERENCE_COLUMNS)


def effect_differences(graded_a: pd.DataFrame, graded_b: pd.DataFrame, fdr_family: str = "paper", ames: bool = True,
                       length_control: bool = False, contrasts=(), specs=None) -> pd.DataFrame:
    """From two graded tables of the same answers (analysis.GRADED_COLUMNS), one per judge: every paired test's
    accuracy change and (with `ames`) every regression AME under each judge, their difference (a minus b) with
    its 95% interval and p-value, and the calls: `flip` (the difference is significant, BH-corrected for the
    paired tests, or both effects are significant in opposite directions), `threshold_crossing` (the old rule:
    significant under one judge only), `sign_change` (opposite signs, significant or not). One row per test,
    `kind` paired_test or ame (DIFFERENCE_COLUMNS)."""
    parts = [paired_differences(graded_a, graded_b, fdr_family)]
    if ames:
        parts.append(ame_differences(graded_a, graded_b, length_control, contrasts, specs))
    parts = [part for part in parts if len(part)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=DIFFERENCE_COLUMNS)


FLIP_DIFFERENCE_COLUMNS = ["difference", "difference_ci_low", "difference_ci_high", "difference_p_value",
                           "difference_p_fdr", "threshold_crossing", "sign_change", "flip"]


def _flip_row(row: dict, primary: str, judge: str) -> dict:
    changes = [label for label, changed in (("significance", row["threshold_crossing"]), ("sign", row["sign_change"]),
                                            ("difference", row["p_fdr"] < ALPHA)) if changed]
    return {"kind": row["kind"], "test": row["test"], "primary": primary, "judge": judge,
            "estimate_primary": row["estimate_a"], "estimate_judge": row["estimate_b"], "p_primary": row["p_a"],
            "p_judge": row["p_b"], "significant_primary": row["significant_a"], "significant_judge": row["significant_b"],
            "change": " and ".join(changes), "difference": row["difference"], "difference_ci_low": row["ci_low"],
            "difference_ci_high": row["ci_high"], "difference_p_value": row["p_value"],
            "difference_p_fdr": row["p_fdr"], "threshold_crossing": row["threshold_crossing"],
            "sign_change": row["sign_change"], "flip": row["flip"]}


def flips_table(one_judge_only: pd.DataFrame, differences: pd.DataFrame) -> pd.DataFrame:
    """The flips table: every test tested under both judges whose flip call (the paired difference), threshold
    crossing or sign differs, with the difference and its interval; then the tests under one judge only."""
    listed = differences[differences["flip"] | differences["threshold_crossing"] | differences["sign_change"]]
    rows = [_flip_row(row, row["primary"], row["judge"]) for row in listed.to_dict("records")]
    only = one_judge_only[one_judge_only["change"] == "tested under one judge only"].assign(flip=False)
    table = pd.concat([pd.DataFrame(rows), only], ignore_index=True) if rows else only
    return table.reindex(columns=FLIP_COLUMNS + FLIP_DIFFERENCE_COLUMNS)


def compare(graded: dict[str, pd.DataFrame], primary: str, paired: dict[str, pd.DataFrame] | None = None,
            regressions: dict[str, pd.DataFrame] | None = None, fdr_family: str = "paper",
            length_control: bool = False, annotations: pd.DataFrame | None = None, contrasts=(),
            difference_specs=None) -> dict[str, pd.DataFrame]:
    """The comparison tables from each judge's graded table (primary first). Paired tests and regressions
    already computed for a judge (the primary's, by the analysis stage) are reused, the others computed here,
    contrasts (analysis.contrasts) included; `differences` holds every test's difference primary minus judge
    (the AMEs of the `difference_specs` regressions, all by default)."""
    judges = [primary] + [name for name in graded if name != primary]
    paired, regressions = dict(paired or {}), dict(regressions or {})
    for name in judges:
        if name not in paired:
            paired[name] = paired_tests(graded[name], fdr_family)
        if name not in regressions:
            regressions[name] = persona_regressions(graded[name], length_control, contrasts)
    paired = {name: _with_effect(paired[name]) for name in judges}
    ames = {name: regressions[name][regressions[name]["kind"] == "ame"] for name in judges}
    paired_wide = side_by_side(paired, PAIRED_KEY, PAIRED_FIELDS)
    ames_wide = side_by_side(ames, AME_KEY, AME_FIELDS)
    others = judges[1:]
    threshold_rule = pd.concat([flips(paired_wide, "paired_test", PAIRED_KEY, primary, others, "effect_pp", "p_fdr"),
                                flips(ames_wide, "ame", AME_KEY, primary, others, "estimate", "p_value")],
                               ignore_index=True)
    differences = [effect_differences(graded[primary], graded[name], fdr_family, True, length_control, contrasts,
                                      difference_specs).assign(primary=primary, judge=name) for name in others]
    differences = (pd.concat(differences, ignore_index=True) if differences
                   else pd.DataFrame(columns=DIFFERENCE_COLUMNS + ["primary", "judge"]))
    differences = differences[["primary", "judge"] + DIFFERENCE_COLUMNS]
    verdicts = aligned_verdicts({name: graded[name] for name in judges})
    return {"agreement": agreement_table(verdicts, judges, annotations), "paired_tests": paired_wide,
            "ames": ames_wide, "flips": flips_table(threshold_rule, differences), "differences": differences}


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
                     annotations, cfg["contrasts"])
    for name, table in tables.items():
        write_table(getattr(smk.output, name), table)
    figures.effect_by_judge(headline_effects(tables["ames"], [primary, *others]), smk.output.figure)
    log.info("judges %s (primary %s): %d flips (%d threshold crossings); agreement:\n%s", [primary, *others], primary,
             int(tables["flips"]["flip"].sum()), int(tables["flips"]["threshold_crossing"].fillna(False).sum()),
             tables["agreement"].to_string())
