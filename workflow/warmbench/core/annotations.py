"""Human annotations of judge verdicts: the id of a graded response, the filled annotation file and Cohen's kappa
between two raters, used by both judge_validation (which writes the sample) and judge_comparison (which scores judges
against it)."""
from __future__ import annotations

import csv

import numpy as np
import pandas as pd

from .files import DataError, stable_hash
VERDICTS = ("CORRECT", "INCORRECT", "REFUSAL")  # a human may call a response a refusal


def annotation_ids(graded: pd.DataFrame) -> pd.Series:
    """A stable id per graded response, from what identifies it (not its row position)."""
    keys = [c for c in ("model", "persona", "checkpoint", "dataset", "item_id", "condition", "response")
            if c in graded.columns]
    return pd.Series([stable_hash(list(map(str, row)))[:16] for row in graded[keys].itertuples(index=False)],
                     index=graded.index)


def read_annotations(path) -> pd.DataFrame:
    """annotation_id -> human_verdict from a filled sample; blank verdicts are not yet annotated."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"annotation_id", "human_verdict"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, record in enumerate(reader, start=2):
            verdict = (record["human_verdict"] or "").strip().upper()
            if not verdict:
                continue
            if verdict not in VERDICTS:
                raise DataError(f"{path}:{line}: human_verdict {record['human_verdict']!r} is not one of "
                                f"{', '.join(VERDICTS)}")
            rows.append({"annotation_id": record["annotation_id"], "human_verdict": verdict})
    return pd.DataFrame(rows, columns=["annotation_id", "human_verdict"])


def kappa_with_ci(first, second) -> tuple[float, float, float]:
    """Cohen's kappa of two raters over the same items and its 95% interval (statsmodels, asymptotic standard
    error); pairs with a missing label are left out; NaN when undefined (no pairs, or one label only)."""
    from statsmodels.stats.inter_rater import cohens_kappa as statsmodels_kappa

    pairs = pd.DataFrame({"first": list(first), "second": list(second)}, dtype=object).dropna()
    labels = sorted(set(pairs["first"]) | set(pairs["second"]))
    if len(labels) < 2:
        return float("nan"), float("nan"), float("nan")
    table = pd.crosstab(pairs["first"], pairs["second"]).reindex(index=labels, columns=labels, fill_value=0).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        result = statsmodels_kappa(table)
    return float(result["kappa"]), float(result["kappa_low"]), float(result["kappa_upp"])
