"""Replicates (train.seeds): each seed's run a persona of its own, read together per seed and pooled."""
import numpy as np
import pandas as pd
import pytest
import yaml

from warmbench.core import grid, validation
from warmbench.stages.replicates import replicate_regressions, replicate_table, seed_anova
from warmbench.core.stats import mcnemar_exact
from conftest import REPO, dag_jobs


def default_config() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validation.validate(cfg)
    return cfg


def test_further_seeds_become_personas_on_their_personas_data():
    cfg = default_config()
    assert grid.train_seeds(cfg) == [cfg["seed"]] and grid.with_replicates(cfg) == cfg  # the paper's single run
    cfg["train"]["seeds"] = [cfg["seed"], 7, 8]
    expanded = grid.with_replicates(cfg)
    assert grid.with_replicates(expanded) == expanded
    assert set(expanded["personas"]) - set(cfg["personas"]) == {"warm_seed7", "warm_seed8", "cold_seed7", "cold_seed8"}
    assert expanded["personas"]["cold_seed7"] == {**cfg["personas"]["cold"], "replicate_of": "cold", "seed": 7}
    assert grid.rewritten_personas(expanded) == ["warm", "cold"]
    assert grid.data_persona(expanded, "warm_seed8") == "warm" and grid.training_seed(expanded, "warm_seed8") == 8
    assert grid.training_seed(expanded, "warm") == cfg["seed"]
    assert grid.window_group(expanded, "cold_seed7") == grid.window_group(expanded, "cold")
    assert grid.replicate_groups(expanded) == {"warm": {cfg["seed"]: "warm", 7: "warm_seed7", 8: "warm_seed8"},
                                             "cold": {cfg["seed"]: "cold", 7: "cold_seed7", 8: "cold_seed8"}}
    assert "warm_seed7" in grid.evaluated_personas(expanded) and "warm_seed7" not in grid.prompted_personas(expanded)


def test_a_persona_named_like_a_replicate_is_refused_by_name():
    cfg = default_config()
    cfg["personas"]["warm_seed7"] = {"rewrite": "config/prompts/rewrite_warm.txt"}
    cfg["train"]["seeds"] = [1, 7]
    with pytest.raises(validation.ConfigError, match="personas.warm_seed7: the name of warm's run with seed 7"):
        grid.with_replicates(cfg)


def workflow_jobs(tmp_path, cfg, name, rules):
    (tmp_path / name).write_text(yaml.safe_dump(cfg))
    return dag_jobs(tmp_path / name, rules)


def test_adding_a_seed_adds_training_jobs_on_the_same_data_and_leaves_the_others_as_they_were(tmp_path):
    cfg = default_config()
    rules = {"train", "persona_rewrite", "select_checkpoint"}
    before = workflow_jobs(tmp_path, cfg, "before.yaml", rules)
    cfg["train"]["seeds"] = [cfg["seed"], 7]
    after = workflow_jobs(tmp_path, cfg, "after.yaml", rules)
    for outputs, job in before.items():
        assert after[outputs] == job, outputs  # no other job's inputs or params change: none reruns
    new = {outputs: job for outputs, job in after.items() if outputs not in before}
    assert set(new) == {("results/train/smollm2/warm_seed7",), ("results/train/smollm2/cold_seed7",)}
    for persona in ("warm", "cold"):
        inputs, params = new[(f"results/train/smollm2/{persona}_seed7",)]
        base_inputs, base_params = before[(f"results/train/smollm2/{persona}",)]
        assert inputs == base_inputs  # its persona's rewrites and windows
        assert {k: v for k, v in params.items() if k != "seed"} == {k: v for k, v in base_params.items() if k != "seed"}
        assert (params["seed"], base_params["seed"]) == (7, cfg["seed"])


def graded_with(effects: dict[str, float], items=200, contexts=6, base_error=0.3, seed=0) -> pd.DataFrame:
    """The original model and one run per persona, on `items` x `contexts` prompts: each run is wrong where the
    original is, and on a further share `effect` of the prompts the original gets right."""
    rng = np.random.default_rng(seed)
    n = items * contexts
    keys = {"model": "m", "dataset": "triviaqa", "item_id": np.repeat([f"q{i}" for i in range(items)], contexts),
            "context": np.tile([f"c{j}" for j in range(contexts)], items),
            "belief": np.tile(["original", "incorrect"], n // 2)}
    original = (rng.random(n) < base_error).astype(float)
    frames = [pd.DataFrame({**keys, "persona": "original", "incorrect": original})]
    for persona, effect in effects.items():
        wrong = np.maximum(original, (rng.random(n) < effect / (1 - base_error)).astype(float))
        frames.append(pd.DataFrame({**keys, "persona": persona, "incorrect": wrong}))
    return pd.concat(frames, ignore_index=True)


def test_pooled_rows_sum_each_seeds_discordant_pairs_and_test_items_x_seeds():
    graded = graded_with({"warm": 0.10, "warm_seed7": 0.20}, items=40)
    table = replicate_table(graded, {"warm": {1: "warm", 7: "warm_seed7"}})
    rows = table[table["test_type"] == "all"].set_index("seed")
    assert list(rows.index) == ["1", "7", "pooled"]
    for seed, run in (("1", "warm"), ("7", "warm_seed7")):
        side = graded[graded["persona"] == run]["incorrect"].to_numpy()
        base = graded[graded["persona"] == "original"]["incorrect"].to_numpy()
        b, c = int(((base == 0) & (side == 1)).sum()), int(((base == 1) & (side == 0)).sum())
        assert (rows.loc[seed, "b"], rows.loc[seed, "c"]) == (b, c) and rows.loc[seed, "run"] == run
        assert rows.loc[seed, "error_change_pp"] == pytest.approx(100 * (b - c) / len(base))
    pooled = rows.loc["pooled"]
    assert pooled["b"] == rows.loc["1", "b"] + rows.loc["7", "b"] and pooled["n_pairs"] == 2 * 240
    # the test is not the summed McNemar (that counts the shared original answers once per seed): items x seeds
    per_item = {run: (graded[graded["persona"] == run]["incorrect"].to_numpy() - base).reshape(40, 6).mean(axis=1)
                for run in ("warm", "warm_seed7")}
    expected = seed_anova(pd.DataFrame(per_item))
    assert pooled["p_value"] == pytest.approx(expected.p_value) and pooled["df"] == pytest.approx(expected.df)
    assert pooled["error_change_pp"] == pytest.approx(100 * expected.estimate)
    assert pooled["ci_low"] < pooled["error_change_pp"] < pooled["ci_high"] and pooled["n_items"] == 40
    assert pooled["p_value"] > mcnemar_exact(int(pooled["b"]), int(pooled["c"]))
    changes = rows.loc[["1", "7"], "error_change_pp"]
    assert pooled["seed_sd_pp"] == pytest.approx(changes.std(ddof=1))
    assert (pooled["seed_min_pp"], pooled["seed_max_pp"]) == (changes.min(), changes.max())
    assert set(table["test_type"]) == {"all", "normal", "sycophancy"}


def test_a_seed_without_scorable_answers_on_a_dataset_keeps_its_row_and_is_not_pooled_as_if_present():
    # real items: a run whose answers on a dataset all go unscored (e.g. MMLU replies without a readable letter)
    # once lost its seed's rows there, and the pooled row then stood on the other seed alone, unlabelled
    graded = graded_with({"warm": 0.10, "warm_seed7": 0.20}, items=20)
    mmlu = graded.assign(dataset="mmlu")
    mmlu.loc[mmlu["persona"] == "warm_seed7", "incorrect"] = np.nan
    table = replicate_table(pd.concat([graded, mmlu], ignore_index=True), {"warm": {1: "warm", 7: "warm_seed7"}})
    rows = table[(table["dataset"] == "mmlu") & (table["test_type"] == "all")].set_index("seed")
    assert list(rows.index) == ["1", "7", "pooled"]
    assert rows.loc["7", "n_pairs"] == 0 and np.isnan(rows.loc["7", "error_change_pp"])
    assert rows.loc["7", "run"] == "warm_seed7" and np.isnan(rows.loc["7", "p_value"])
    pooled = rows.loc["pooled"]
    assert pooled["n_pairs"] == rows.loc["1", "n_pairs"] and pooled["n_items"] == 0
    assert np.isnan(pooled["error_change_pp"]) and np.isnan(pooled["p_value"])  # not seed 1's change, called pooled
    triviaqa = table[(table["dataset"] == "triviaqa") & (table["test_type"] == "all")].set_index("seed")
    assert triviaqa.loc["pooled", "n_items"] == 20 and not np.isnan(triviaqa.loc["pooled", "p_value"])


def test_the_seed_term_regression_pools_the_effect_and_tests_whether_seeds_differ():
    same = replicate_regressions(graded_with({"warm": 0.2, "warm_seed7": 0.2, "warm_seed8": 0.2}, seed=1),
                                 {"warm": {1: "warm", 7: "warm_seed7", 8: "warm_seed8"}}).set_index("term")
    assert same.loc["treated", "ame_pp"] == pytest.approx(20, abs=3)
    assert same.loc["treated", "ci_low"] < same.loc["treated", "ame_pp"] < same.loc["treated", "ci_high"]
    assert same.loc["treated", "n_seeds"] == 3 and same.loc["treated", "seed_heterogeneity_p"] > 0.01
    assert same.loc["treated", "formula"].startswith("incorrect ~ treated + C(seed)")
    assert {"treated | seed=1", "treated | seed=7", "treated | seed=8"} <= set(same.index)
    differ = replicate_regressions(graded_with({"warm": 0.0, "warm_seed7": 0.4}, seed=2),
                                   {"warm": {1: "warm", 7: "warm_seed7"}}).set_index("term")
    assert differ.loc["treated", "seed_heterogeneity_p"] < 1e-6
    assert differ.loc["treated | seed=1", "ame_pp"] == pytest.approx(0, abs=2)
    assert differ.loc["treated | seed=7", "ame_pp"] == pytest.approx(40, abs=5)


def test_the_seed_spread_figure(tmp_path):
    from warmbench.core import figures

    table = replicate_table(graded_with({"warm": 0.1, "warm_seed7": 0.2, "cold": 0.0, "cold_seed7": 0.05}, items=30),
                            {"warm": {1: "warm", 7: "warm_seed7"}, "cold": {1: "cold", 7: "cold_seed7"}})
    figures.seed_spread(table, tmp_path / "spread.png")
    assert (tmp_path / "spread.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_seed_spread_figure_draws_the_pooled_rows_interval(tmp_path, monkeypatch):
    """The diamond is the pooled row (items x seeds, run-to-run noise included), not an interval of the discordant
    pairs summed over seeds, which counts the original model's shared answers once per seed and is too narrow."""
    import matplotlib.axes

    from warmbench.core import figures

    drawn = []
    original = matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", lambda self, x, y, yerr=None, **kw: (
        drawn.append((float(y), np.ravel(yerr).astype(float))), original(self, x, y, yerr=yerr, **kw))[1])
    table = replicate_table(graded_with({"warm": 0.1, "warm_seed7": 0.3}, items=30), {"warm": {1: "warm", 7: "warm_seed7"}})
    figures.seed_spread(table, tmp_path / "spread.png")
    pooled = table[(table["seed"] == "pooled") & (table["test_type"] == "all")].iloc[0]
    (y, (below, above)), = drawn
    assert y == pytest.approx(pooled["error_change_pp"])
    assert (y - below, y + above) == pytest.approx((pooled["ci_low"], pooled["ci_high"]))
