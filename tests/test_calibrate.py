"""Simulation-based calibration: the study's statistics on simulated studies whose answer is known.

The fast subset here checks the faults the harness found (context effects that were template effects, pooled
seeds that rejected several times too often) and that the command prints its verdict; `warmbench calibrate`
runs every statistic and scenario with enough studies to read the rates to a percent.
"""
import subprocess
import sys

import numpy as np
import pytest

from warmbench.tools import calibrate as cal
from warmbench.core.regression import persona_regressions
from warmbench.stages.replicates import POOLED, replicate_regressions, replicate_table, seed_anova


def test_the_simulated_study_has_the_pipelines_schema_and_its_truth_matches_large_samples():
    scenario = cal.SCENARIOS["belief_only"]
    tables = cal.simulate(scenario, 1500, np.random.default_rng(0))
    graded = tables["judge_a"]
    assert set(graded["persona"]) == {"original", "warm", "cold"}
    assert len(graded) == 3 * 2 * 1500 * 28  # personas x datasets x items x the study's 28 prompts per item
    truth = cal.Truth(scenario)
    wide = graded.pivot_table(index=["dataset", "item_id", "context", "belief"], columns="persona", values="incorrect")
    wide = wide.reset_index()
    for belief in ("original", "incorrect"):
        rows = wide[wide["belief"] == belief]
        observed = (rows["warm"] - rows["original"]).mean()
        assert observed == pytest.approx(truth.effect(belief=belief), abs=0.012)
    assert truth.effect(belief="original") == 0 and truth.effect(belief="incorrect") > 0.05


def test_context_effects_are_fitted_on_the_original_template_so_a_belief_effect_is_no_context_effect():
    """Under an effect that acts only through the user's belief, every context's effect at the original template is
    0; fitted on all templates (the old code), the contexts' AMEs carried the belief effect, in shares that differ
    between the unmodified context and the others."""
    scenario = cal.SCENARIOS["belief_only"]
    truths = cal._ame_truths(cal.Truth(scenario))
    covered, n_original = [], None
    for seed in range(8):
        graded = cal.simulate(scenario, 40, np.random.default_rng(seed))["judge_a"]
        graded = graded[graded["persona"].isin(["original", "warm"])]
        table = persona_regressions(graded)
        n_original = int((graded["belief"] == "original").sum())
        ames = table[(table["kind"] == "ame") & table["regression"].str.endswith(":context_type")]
        assert set(ames["n_obs"]) == {n_original}
        for row in ames[ames["term"] != "treated"].itertuples():
            covered.append(row.ci_low / 100 <= truths[("context_type", row.term)] <= row.ci_high / 100)
    print(f"coverage {np.mean(covered):.2f}")  # fitted on every template (the old code): about 0.1
    assert len(covered) == 8 * 4 and np.mean(covered) >= 0.75, np.mean(covered)


def test_pooled_seeds_keep_their_level_when_they_share_the_original_and_when_runs_differ_at_random():
    """Summing discordant pairs over seeds that share the original's answers rejected a true null several times too
    often (and far more when runs differ at random); the crossed items x seeds test keeps its level."""
    rejected = {}
    for name in ("no_effect", "seed_noise"):
        scenario = cal.SCENARIOS[name]
        outcomes = []
        for seed in range(30):
            graded = cal.simulate(scenario, 24, np.random.default_rng(seed))["judge_a"]
            graded = graded[graded["persona"] != "cold"]
            table = replicate_table(graded, {"warm": cal.seed_names(scenario)})
            pooled = table[(table["seed"] == POOLED) & (table["test_type"] == "all")]
            outcomes += list(pooled["p_value"] < 0.05)
        rejected[name] = np.mean(outcomes)
    print(rejected)  # summed discordant pairs (the old pooled test): about 0.12 and 0.56
    assert rejected["no_effect"] <= 0.12 and rejected["seed_noise"] <= 0.17, rejected


def test_seed_anova_separates_run_to_run_noise_from_item_noise():
    rng = np.random.default_rng(3)
    items, seeds = 400, 4
    shared = rng.normal(0, 0.3, size=(items, 1))  # what every seed shares: the original's answers
    seed_shift = np.array([[0.2, -0.1, 0.05, -0.15]])
    d = shared + seed_shift + rng.normal(0, 0.2, size=(items, seeds))
    import pandas as pd

    pooled = seed_anova(pd.DataFrame(d))
    assert pooled.estimate == pytest.approx(d.mean())
    assert pooled.seed_sd == pytest.approx(seed_shift.std(ddof=1), rel=0.3)
    assert seeds - 1 <= pooled.df < 10  # training noise dominates: about n_seeds - 1 degrees of freedom
    alone = seed_anova(pd.DataFrame(shared + rng.normal(0, 0.2, size=(items, seeds))))
    assert alone.df > 100 and alone.seed_var_of_mean < 1e-3


def test_the_pooled_regression_carries_the_run_to_run_variance():
    scenario = cal.Scenario("noisy", seeds=3, seed_sd=0.6)
    graded = cal.simulate(scenario, 40, np.random.default_rng(5))["judge_a"]
    graded = graded[graded["persona"] != "cold"]
    row = replicate_regressions(graded, {"warm": cal.seed_names(scenario)}).set_index("term").loc["treated"]
    half_width = (row["ci_high"] - row["ci_low"]) / 2
    assert row["seed_sd_between_pp"] > 0 and half_width > 1.96 * row["se_within_pp"]
    assert row["df"] < 20


def test_the_command_prints_every_statistic_and_its_verdict_line(tmp_path):
    out = tmp_path / "calibration.csv"
    result = subprocess.run([sys.executable, "-m", "warmbench.tools.cli", "calibrate", "--studies", "2", "--items", "16",
                             "--jobs", "1", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("CALIBRATION: worst type-I error ") and ", worst coverage " in last
    import pandas as pd

    table = pd.read_csv(out)
    assert set(table["scenario"]) == set(cal.SCENARIOS)
    statistics = set(table["statistic"])
    for expected in ("paired McNemar (warm vs original)", "AME context type (Model 2)", "AME Model 4 contrast",
                     "seeds pooled: paired test", "seeds pooled: regression AME", "contrast McNemar (warm vs cold)"):
        assert expected in statistics
    assert any(s.startswith("judge difference") for s in statistics)


def test_an_unknown_scenario_is_refused_by_name():
    result = subprocess.run([sys.executable, "-m", "warmbench.tools.cli", "calibrate", "--scenario", "nul"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "unknown nul" in result.stderr
