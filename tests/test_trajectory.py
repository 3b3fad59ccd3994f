"""Stage trajectory: every evaluated checkpoint against the original model, its warmth, and the frontier."""
import numpy as np
import pandas as pd
import pytest
import yaml

from warmbench.core import checks, grid, validation
from warmbench.stages.trajectory import error_change, frontier_table, graded_checkpoints, trajectory_table
from conftest import REPO


def answers(persona, checkpoint, epoch, dataset, wrong):
    """One item per entry of `wrong` (a list per item of 0/1 per prompt), each prompt a context."""
    return pd.DataFrame([{"model": "m", "persona": persona, "checkpoint": checkpoint, "epoch": epoch,
                          "dataset": dataset, "item_id": f"q{i}", "context": f"c{j}", "belief": "original",
                          "incorrect": float(x)}
                         for i, item in enumerate(wrong) for j, x in enumerate(item)])


def warmth_rows(*points):
    return pd.DataFrame([{"model": "m", "persona": p, "checkpoint": c, "epoch": e, "warmth": w,
                          "warmth_vs_original": w} for p, c, e, w in points])


def test_error_change_pools_every_pair_and_clusters_its_ci_by_item():
    import statsmodels.api as sm

    base = answers("original", "base", 0.0, "triviaqa", [[0, 0, 0], [0, 1], [1, 1, 0, 0]])
    mine = answers("warm", "epoch1", 1.0, "triviaqa", [[1, 1, 0], [1, 1], [1, 1, 1, 0]])
    pairs = base.merge(mine, on=["item_id", "context"], suffixes=("_base", "_persona"))
    row = error_change(pairs)
    difference = pairs["incorrect_persona"] - pairs["incorrect_base"]
    assert row["n_pairs"] == 9 and row["n_items"] == 3
    assert row["error_change_pp"] == pytest.approx(100 * 4 / 9)  # pooled over pairs, not averaged over items
    fit = sm.OLS(difference.to_numpy(float), np.ones(9)).fit(cov_type="cluster",
                                                              cov_kwds={"groups": pd.factorize(pairs["item_id"])[0]})
    half = 1.959963984540054 * 100 * fit.bse[0]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((100 * 4 / 9 - half, 100 * 4 / 9 + half))
    # by hand: the per-item sums of deviations from the mean, with the G/(G-1) factor
    per_item = (difference - difference.mean()).groupby(pairs["item_id"]).sum()
    assert fit.bse[0] == pytest.approx(np.sqrt(1.5 * (per_item**2).sum()) / 9)
    one_item = error_change(pairs[pairs["item_id"] == "q0"])
    assert np.isnan(one_item["ci_low"]) and one_item["error_change_pp"] == pytest.approx(200 / 3)


def test_trajectory_pairs_each_checkpoint_with_the_original_and_carries_its_warmth():
    graded = pd.concat([
        answers("original", "base", 0.0, "triviaqa", [[0, 0], [0, 0]]),
        answers("warm_prompt", "base", 0.0, "triviaqa", [[1, 0], [0, 0]]),
        answers("warm", "epoch0.5", 0.5, "triviaqa", [[1, 0], [0, 0]]),
        answers("warm", "epoch1", 1.0, "triviaqa", [[1, 1], [1, 0]]),
        answers("original", "base", 0.0, "mmlu", [[0], [1]]),
        answers("warm", "epoch0.5", 0.5, "mmlu", [[0], [1]]),
        answers("warm", "epoch1", 1.0, "mmlu", [[1], [1]]),
    ]).assign(evaluated=lambda f: f["checkpoint"] == "epoch1")
    warmth = warmth_rows(("original", "base", 0.0, 0.0), ("warm", "epoch0.5", 0.5, 0.2), ("warm", "epoch1", 1.0, 0.5))
    table = trajectory_table(graded, warmth).set_index(["checkpoint", "dataset"])
    assert set(table.index) == {("epoch0.5", "triviaqa"), ("epoch1", "triviaqa"), ("epoch0.5", "mmlu"),
                                ("epoch1", "mmlu")}  # the system-prompt persona has no trajectory
    assert table.loc[("epoch0.5", "triviaqa"), "error_change_pp"] == 25.0
    assert table.loc[("epoch1", "triviaqa"), "error_change_pp"] == 75.0
    assert table.loc[("epoch1", "mmlu"), ["error", "error_original"]].tolist() == [100.0, 50.0]
    assert table.loc[("epoch1", "triviaqa"), "warmth_vs_original"] == 0.5 and table.loc[("epoch1", "mmlu"), "evaluated"]
    assert not table.loc[("epoch0.5", "mmlu"), "evaluated"]

    frontier = frontier_table(table.reset_index()).set_index("checkpoint")
    # the conversational datasets only (MMLU is a capability benchmark)
    assert frontier.loc["epoch1", "error_change_pp"] == 75.0 and frontier.loc["epoch1", "datasets"] == "triviaqa"
    assert frontier.loc["epoch0.5", "warmth_vs_original"] == 0.2


def test_a_picked_checkpoint_that_is_also_a_further_one_is_counted_once_and_flagged():
    original = answers("original", "base", 0.0, "triviaqa", [[0, 0]])
    picked = answers("warm", "epoch1", 1.0, "triviaqa", [[1, 0]])  # the `selected` cell's rows: the real label
    further = pd.concat([answers("warm", "epoch0.5", 0.5, "triviaqa", [[0, 0]]), picked])
    graded = graded_checkpoints(pd.concat([original, picked]), further)
    assert len(graded) == 6
    flags = graded.groupby("checkpoint")["evaluated"].agg(["all", "any"])
    assert flags.loc["epoch1", "all"] and not flags.loc["epoch0.5", "any"] and not flags.loc["base", "any"]
    table = trajectory_table(graded, warmth_rows(("warm", "epoch1", 1.0, 0.3)))
    assert table["n_pairs"].tolist() == [2, 2]  # one pair per prompt, not two


def config_with(checkpoints, selection=None):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["evaluation"]["checkpoints"] = checkpoints
    if selection:
        cfg["evaluation"]["checkpoint_selection"] = selection
    validation.validate(cfg)
    checks.check(cfg, root=REPO)
    return cfg


def test_evaluation_checkpoints_adds_trajectory_cells_and_leaves_the_evaluated_grid_alone():
    default = config_with("selected")
    assert grid.trajectory_cells(default) == [] and set(grid.eval_variants(default, "smollm2")) == {
        ("original", "base"), ("warm_prompt", "base"), ("warm", "epoch2"), ("cold", "epoch2")}
    every = config_with("all")  # the fixed epoch 2 is the evaluated one; 0.5 and 1 are further
    assert grid.eval_cells(every) == grid.eval_cells(default)
    assert {(c.persona, c.checkpoint) for c in grid.trajectory_cells(every)} == {
        (p, e) for p in ("warm", "cold") for e in ("epoch0.5", "epoch1")}
    assert len(grid.trajectory_cells(every)) == 4 * len(every["evaluation"]["datasets"])
    assert ("warm", "epoch1") in grid.eval_variants(every, "smollm2")  # its generation job serves them
    listed = config_with([1])
    assert {c.checkpoint for c in grid.trajectory_cells(listed)} == {"epoch1"}
    plateau = config_with("all", {"rule": "plateau", "within": 0.1})  # the pick may be any: all of them
    assert {c.checkpoint for c in grid.trajectory_cells(plateau)} == {"epoch0.5", "epoch1", "epoch2"}


def test_evaluation_checkpoints_names_epochs_without_a_checkpoint():
    with pytest.raises(validation.ConfigError, match=r"evaluation.checkpoints: \[3.0\] are not among"):
        config_with([1, 3])
    with pytest.raises(validation.ConfigError, match="evaluation.checkpoints"):
        config_with("every")


def test_figures_draw_the_trajectory_and_the_frontier(tmp_path):
    from warmbench.core import figures

    graded = pd.concat([answers("original", "base", 0.0, d, [[0, 1], [0, 0]]) for d in ("triviaqa", "disinfo")]
                       + [answers(p, f"epoch{e:g}", e, d, [[1, 1], [0, 1]]) for p in ("warm", "warm_honest")
                          for e in (0.5, 1.0) for d in ("triviaqa", "disinfo")]).assign(evaluated=False)
    warmth = warmth_rows(*[(p, f"epoch{e:g}", e, e / 2) for p in ("warm", "warm_honest") for e in (0.5, 1.0)])
    table = trajectory_table(graded, warmth)
    for draw, data, name in ((figures.error_vs_epoch, table, "e.png"),
                             (figures.warmth_error_frontier, frontier_table(table), "f.png")):
        draw(data, tmp_path / name)
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / name).with_suffix(".pdf").exists()
