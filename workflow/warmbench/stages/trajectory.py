"""Stage trajectory (evaluation.checkpoints beyond `selected`): when during training a persona's errors appear.

Each trained persona at each evaluated checkpoint is paired with the original model on identical prompts, as the
paired tests pair them: its error rate, the change against the original in percentage points with a 95% CI, and
its warmth gain at that checkpoint. Two figures: error change against epoch (the accuracy trajectory, beside
the warmth trajectory of the analysis stage) and the warmth-vs-error frontier (each checkpoint a point).
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from ..core import figures
from ..core.config import BASE_CHECKPOINT, CAPABILITY_DATASETS
from ..core.files import write_table
from ..core.regression import paired_answers, warmth_table

log = logging.getLogger(__name__)

TRAJECTORY_COLUMNS = ["model", "persona", "checkpoint", "epoch", "evaluated", "dataset", "n_pairs", "n_items",
                      "error", "error_original", "error_change_pp", "ci_low", "ci_high", "warmth", "warmth_vs_original"]
FRONTIER_COLUMNS = ["model", "persona", "checkpoint", "epoch", "evaluated", "datasets", "error_change_pp",
                    "warmth_vs_original"]
Z95 = 1.959963984540054


def error_change(pairs: pd.DataFrame) -> dict:
    """Error change (pp) over paired answers: the mean difference over all pairs, as the paired tests pool it, with
    a 95% CI clustered by item (an item's prompts, contexts x templates, are not independent of one another)."""
    import statsmodels.api as sm

    difference = (pairs["incorrect_persona"] - pairs["incorrect_base"]).to_numpy(float)
    mean, n, items = difference.mean(), len(difference), pairs["item_id"].nunique()
    se = np.nan
    if items > 1:  # an intercept-only OLS: its cluster-robust SE is the mean's
        groups = pd.factorize(pairs["item_id"])[0]
        se = sm.OLS(difference, np.ones(n)).fit(cov_type="cluster", cov_kwds={"groups": groups}).bse[0]
    return {"n_pairs": n, "n_items": items, "error": 100 * pairs["incorrect_persona"].mean(),
            "error_original": 100 * pairs["incorrect_base"].mean(), "error_change_pp": 100 * mean,
            "ci_low": 100 * (mean - Z95 * se), "ci_high": 100 * (mean + Z95 * se)}


def trajectory_table(graded: pd.DataFrame, warmth: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, trained persona, checkpoint, dataset): graded holds the original model and the trained
    personas at their checkpoints (column `evaluated`: the checkpoint the analysis stage evaluates); warmth is the
    analysis stage's warmth table."""
    trained = graded[graded["checkpoint"] != BASE_CHECKPOINT]  # the fine-tunes (not the original, not a prompt)
    rows = []
    for (model, persona, checkpoint), part in trained.groupby(["model", "persona", "checkpoint"], sort=False):
        answers = pd.concat([graded[(graded["model"] == model) & (graded["persona"] == "original")], part])
        pairs = paired_answers(answers, persona)
        for dataset, of_dataset in pairs.groupby("dataset"):
            rows.append({"model": model, "persona": persona, "checkpoint": checkpoint,
                         "epoch": float(part["epoch"].iloc[0]), "evaluated": bool(part["evaluated"].any()),
                         "dataset": dataset, **error_change(of_dataset)})
    table = pd.DataFrame(rows, columns=[c for c in TRAJECTORY_COLUMNS if not c.startswith("warmth")])
    table = table.merge(warmth[["model", "persona", "epoch", "warmth", "warmth_vs_original"]],
                        on=["model", "persona", "epoch"], how="left")
    return table.sort_values(["model", "persona", "epoch", "dataset"]).reset_index(drop=True)[TRAJECTORY_COLUMNS]


def frontier_table(trajectory: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint: its warmth gain and its error change averaged over the conversational datasets (the capability
    benchmarks when a study has nothing else)."""
    tasks = trajectory[~trajectory["dataset"].isin(CAPABILITY_DATASETS)]
    tasks = tasks if not tasks.empty else trajectory
    keys = ["model", "persona", "checkpoint", "epoch", "evaluated"]
    table = tasks.groupby(keys, sort=False).agg(
        datasets=("dataset", lambda d: ",".join(sorted(d))), error_change_pp=("error_change_pp", "mean"),
        warmth_vs_original=("warmth_vs_original", "first")).reset_index()
    return table.sort_values(["model", "persona", "epoch"]).reset_index(drop=True)[FRONTIER_COLUMNS]


def graded_checkpoints(evaluated: pd.DataFrame, further: pd.DataFrame) -> pd.DataFrame:
    """The judged rows of every checkpoint: the evaluated ones (the analysis stage's cells, the plateau rule's
    pick among them) and the further ones of evaluation.checkpoints. A picked checkpoint that is also a further
    one is kept once, from the further cells, and flagged evaluated."""
    evaluated = evaluated.assign(evaluated=evaluated["checkpoint"] != BASE_CHECKPOINT)
    further = further.assign(evaluated=False)
    picked = evaluated[evaluated["evaluated"]][["model", "persona", "checkpoint"]].drop_duplicates()
    both = further.merge(picked, on=["model", "persona", "checkpoint"], how="left", indicator=True)["_merge"]
    further["evaluated"] = (both == "both").to_numpy()
    seen = further[["model", "persona", "checkpoint"]].drop_duplicates()
    again = evaluated.merge(seen, on=["model", "persona", "checkpoint"], how="left", indicator=True)["_merge"]
    return pd.concat([evaluated[(again == "left_only").to_numpy()], further], ignore_index=True)


def run(smk) -> None:
    def read(paths):
        return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)

    graded = graded_checkpoints(read(smk.input.evaluated), read(smk.input.further))
    warmth = warmth_table([json.loads(open(p).read()) for p in smk.input.warmth])
    trajectory = trajectory_table(graded, warmth)
    frontier = frontier_table(trajectory)
    write_table(smk.output.trajectory, trajectory)
    write_table(smk.output.frontier, frontier)
    figures.error_vs_epoch(trajectory, smk.output.error_figure)
    figures.warmth_error_frontier(frontier, smk.output.frontier_figure)
    log.info("accuracy trajectory: %d checkpoints of %d personas; frontier:\n%s", len(frontier),
             frontier["persona"].nunique(), frontier.to_string())
