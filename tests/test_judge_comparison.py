"""Several judges: agreement with kappa intervals and prevalence, tests side by side, and the flips table."""
import math

import numpy as np
import pandas as pd
import pytest

from warmbench.core.files import DataError
from warmbench.stages.judge import incorrect_indicator
from warmbench.core.regression import paired_tests, persona_regressions
from warmbench.core.annotations import kappa_with_ci
from warmbench.stages.judge_comparison import (PAIRED_KEY, agreement_table, aligned_verdicts, ame_differences, compare,
                                               effect_differences, flips, headline_effects, paired_differences,
                                               side_by_side)
from warmbench.core.annotations import annotation_ids
from warmbench.stages.judge_validation import cohens_kappa

CONTEXTS = ["unmodified", "emotion:sad"]
BELIEFS = ["original", "incorrect"]


def graded_table(n_items=40, warm_wrong=0.6, seed=0) -> pd.DataFrame:
    """Original and warm answers to the same prompts: the original right 80% of the time, warm `warm_wrong`
    of the time wrong; every 10th response a regex refusal."""
    rng = np.random.default_rng(seed)
    rows = []
    for persona, wrong in (("original", 0.2), ("warm", warm_wrong)):
        for item in range(n_items):
            for context in CONTEXTS:
                for belief in BELIEFS:
                    k = len(rows)
                    verdict = "REFUSAL" if k % 10 == 9 else ("INCORRECT" if rng.random() < wrong else "CORRECT")
                    rows.append({"model": "m", "persona": persona, "checkpoint": "base", "dataset": "triviaqa",
                                 "item_id": f"q{item}", "context": context, "belief": belief,
                                 "condition": f"{context}|{belief}", "response": f"answer {k}",
                                 "refusal": verdict == "REFUSAL", "verdict": verdict})
    return with_outcome(pd.DataFrame(rows))


def with_outcome(frame: pd.DataFrame) -> pd.DataFrame:
    frame["incorrect"] = [incorrect_indicator(d, v) for d, v in zip(frame["dataset"], frame["verdict"])]
    return frame


def test_kappa_with_interval_matches_the_textbook_value_and_the_validation_kappa():
    # 2x2 table [[20, 5], [10, 15]]: po = 0.7, pe = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4
    first = ["CORRECT"] * 25 + ["INCORRECT"] * 25
    second = ["CORRECT"] * 20 + ["INCORRECT"] * 5 + ["CORRECT"] * 10 + ["INCORRECT"] * 15
    kappa, low, high = kappa_with_ci(first, second)
    assert kappa == pytest.approx(0.4) == pytest.approx(cohens_kappa(first, second))
    assert low < 0.4 < high and high - low < 1
    assert all(math.isnan(v) for v in kappa_with_ci(["CORRECT"] * 5, ["CORRECT"] * 5))  # one label: undefined


def test_agreement_per_dataset_and_pair_with_prevalence_and_humans():
    primary = graded_table()
    other = primary.copy()
    judged = ~other["refusal"]
    other.loc[judged & (other.index % 4 == 0), "verdict"] = "CORRECT"  # the other judge is more lenient
    other.loc[other.index % 7 == 0, "verdict"] = None  # and leaves some unjudged
    verdicts = aligned_verdicts({"ref": primary, "llm": with_outcome(other)})
    humans = pd.DataFrame({"annotation_id": annotation_ids(primary)[:30], "human_verdict": primary["verdict"][:30]})
    table = agreement_table(verdicts, ["ref", "llm"], humans).set_index(["dataset", "first", "second"])
    row = table.loc[("all", "ref", "llm")]
    both = judged & other["verdict"].notna()
    assert row["n"] == both.sum() and row["missing_second"] == other.loc[judged, "verdict"].isna().sum()
    assert row["agreement"] == pytest.approx((primary["verdict"] == other["verdict"])[both].mean())
    assert row["correct_share_second"] > row["correct_share_first"]  # prevalence shows the leniency
    assert row["kappa_ci_low"] < row["kappa"] < row["kappa_ci_high"]
    assert table.loc[("triviaqa", "ref", "llm"), "n"] == row["n"]
    human = table.loc[("all", "ref", "human")]
    assert human["n"] == 30 and human["agreement"] == 1.0  # the humans agreed with `ref` (REFUSAL included)
    assert table.loc[("all", "llm", "human"), "n"] == (other["verdict"][:30].notna()).sum()


def test_tables_of_other_generations_never_pair_up():
    primary = graded_table()
    with pytest.raises(DataError, match="not of the same generations"):
        aligned_verdicts({"ref": primary, "llm": primary.iloc[1:]})
    shuffled = primary.sample(frac=1.0, random_state=1)
    with pytest.raises(DataError, match="'ref' and 'llm'"):
        aligned_verdicts({"ref": primary, "llm": shuffled})


def test_flips_list_each_change_of_significance_or_sign_and_nothing_else():
    tests = {"a": pd.DataFrame({"t": [1, 2, 3, 4, 5], "est": [-10.0, 5.0, -3.0, 4.0, 2.0],
                                "p": [0.01, 0.01, 0.2, 0.3, 0.04]}),
             "b": pd.DataFrame({"t": [1, 2, 3, 4, 6], "est": [-12.0, -5.0, 0.0, 6.0, 1.0],
                                "p": [0.02, 0.01, 0.01, 0.9, 0.5]})}
    wide = side_by_side(tests, ["t"], ["est", "p"])
    table = flips(wide, "paired_test", ["t"], "a", ["b"], "est", "p").set_index("test")
    assert table["change"].to_dict() == {"t=2": "sign", "t=3": "significance", "t=5": "tested under one judge only",
                                         "t=6": "tested under one judge only"}
    assert table.loc["t=3", "significant_judge"] and not table.loc["t=3", "significant_primary"]


def test_compare_reports_a_conclusion_that_depends_on_the_judge():
    """Judge `ref` sees warm fine-tuning raise errors a lot; judge `lenient` calls most of warm's errors correct:
    under it warm looks better than the original, and the flips table lists every test that changed."""
    primary = graded_table()
    lenient = primary.copy()
    wrong_warm = (lenient["persona"] == "warm") & (lenient["verdict"] == "INCORRECT")
    lenient.loc[wrong_warm & (np.arange(len(lenient)) % 4 != 0), "verdict"] = "CORRECT"
    tables = compare({"ref": primary, "lenient": with_outcome(lenient)}, "ref", difference_specs=["main"])
    paired = tables["paired_tests"]
    assert {"ref:p_fdr", "lenient:p_fdr", "ref:effect_pp", "lenient:b"} <= set(paired.columns)
    assert (paired["ref:effect_pp"] < 0).all() and (paired["ref:p_fdr"] < 0.05).all()
    flipped = tables["flips"]
    assert set(flipped["kind"]) == {"paired_test", "ame"} and (flipped["judge"] == "lenient").all()
    tested = flipped[flipped["kind"] == "paired_test"]
    significant = paired[["ref:p_fdr", "lenient:p_fdr"]] < 0.05
    changed = significant["ref:p_fdr"].ne(significant["lenient:p_fdr"]) | \
        (np.sign(paired["ref:effect_pp"]) * np.sign(paired["lenient:effect_pp"]) < 0)
    assert len(tested) == changed.sum() > 0 and tested["change"].str.contains("sign").any()
    main = headline_effects(tables["ames"], ["ref", "lenient"]).set_index("judge")
    assert main.loc["ref", "estimate"] > main.loc["lenient", "estimate"]
    assert (main["ci_low"] < main["estimate"]).all() and (main["estimate"] < main["ci_high"]).all()
    agreement = tables["agreement"].set_index("dataset").loc["all"]
    assert agreement["first"] == "ref" and agreement["second"] == "lenient" and agreement["agreement"] < 1


def test_effect_figure_is_written(tmp_path):
    from warmbench.core import figures

    effects = pd.DataFrame({"regression": ["warm_vs_original:main"] * 2, "judge": ["ref", "llm"],
                            "estimate": [10.0, 4.0], "ci_low": [5.0, -1.0], "ci_high": [15.0, 9.0]})
    figures.effect_by_judge(effects, tmp_path / "effect.png")
    assert (tmp_path / "effect.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figures.effect_by_judge(effects.iloc[:0], tmp_path / "empty.png")
    assert (tmp_path / "empty.pdf").read_bytes()[:5] == b"%PDF-"


def test_overall_agreement_leaves_out_the_regex_scored_datasets():
    """MMLU is scored by the same regex under both judges: listed (judged False), but not pooled into `all`."""
    tasks = graded_table(n_items=10)
    mmlu = graded_table(n_items=30, seed=1).assign(dataset="mmlu")
    primary = pd.concat([tasks, mmlu], ignore_index=True).assign(response=lambda f: [f"r{k}" for k in range(len(f))])
    other = primary.copy()
    disagree = (other["dataset"] == "triviaqa") & ~other["refusal"] & (other.index % 3 == 0)
    other.loc[disagree, "verdict"] = other.loc[disagree, "verdict"].map({"CORRECT": "INCORRECT", "INCORRECT": "CORRECT"})
    table = agreement_table(aligned_verdicts({"ref": primary, "llm": other}), ["ref", "llm"]).set_index("dataset")
    assert table["judged"].to_dict() == {"mmlu": False, "triviaqa": True, "all": True}
    assert table.loc["mmlu", "agreement"] == 1.0
    for column in ("n", "agreement", "kappa", "kappa_ci_low", "correct_share_second"):
        assert table.loc["all", column] == pytest.approx(table.loc["triviaqa", column])


def noisy_judges(n_models=200, n_items=200, wrong=(0.3, 0.42), noise=0.1, missing=0.05, seed=0):
    """Two judges that agree up to noise independent of the persona: each sees every true verdict flipped with
    probability `noise` (and leaves `missing` out), independently. Each model is one paired-test cell and, with
    the `paper` family (model x persona x suite), its own BH family: 200 independent null differences at once."""
    rng = np.random.default_rng(seed)
    model = np.repeat([f"m{k}" for k in range(n_models)], n_items)
    item = np.tile([f"q{i}" for i in range(n_items)], n_models)
    tables = ([], [])
    for persona, share_wrong in zip(("original", "warm"), wrong):
        truth = (rng.random(model.size) < share_wrong).astype(float)
        for table in tables:
            seen = np.where(rng.random(model.size) < noise, 1 - truth, truth)
            seen[rng.random(model.size) < missing] = np.nan
            table.append(pd.DataFrame({"model": model, "persona": persona, "dataset": "triviaqa", "item_id": item,
                                       "context": "unmodified", "belief": "original", "incorrect": seen}))
    return [pd.concat(table, ignore_index=True) for table in tables]


def _with_effect_pp(paired: pd.DataFrame) -> pd.DataFrame:
    return paired.assign(effect_pp=paired["persona_accuracy"] - paired["base_accuracy"])


def test_flip_call_holds_its_size_under_the_null_where_threshold_crossings_do_not():
    """The true difference between the judges is 0; the effect itself (about -10 pp) is detected about half the
    time, so significance often crosses 0.05 under one judge only. The paired difference's interval covers 0
    about 95% of the time and flips about 5% of cells; the old threshold-crossing rule flags far more."""
    graded_a, graded_b = noisy_judges()
    table = paired_differences(graded_a, graded_b)
    assert len(table) == 200
    covered = ((table["ci_low"] <= 0) & (0 <= table["ci_high"])).mean()
    assert 0.91 <= covered <= 0.98
    assert 0.02 <= table["flip"].mean() <= 0.09
    wide = side_by_side({"a": _with_effect_pp(paired_tests(graded_a)), "b": _with_effect_pp(paired_tests(graded_b))},
                        PAIRED_KEY, ["effect_pp", "p_fdr"])
    threshold_rule = flips(wide, "paired_test", PAIRED_KEY, "a", ["b"], "effect_pp", "p_fdr")
    assert len(threshold_rule) / len(table) > max(0.15, 3 * table["flip"].mean())
    assert table["threshold_crossing"].sum() == len(threshold_rule[threshold_rule["change"].str.contains("signif")])


def test_paired_differences_are_each_judges_paired_test_and_detect_a_real_difference():
    primary = graded_table()
    lenient = primary.copy()
    wrong_warm = (lenient["persona"] == "warm") & (lenient["verdict"] == "INCORRECT")
    lenient.loc[wrong_warm & (np.arange(len(lenient)) % 4 != 0), "verdict"] = "CORRECT"
    lenient = with_outcome(lenient)
    table = paired_differences(primary, lenient).set_index(PAIRED_KEY)
    own = _with_effect_pp(paired_tests(primary)).set_index(PAIRED_KEY)
    assert table["estimate_a"].to_dict() == pytest.approx(own["effect_pp"].to_dict())
    assert table["p_a"].to_dict() == pytest.approx(own["p_fdr"].to_dict())
    assert (table["difference"] == table["estimate_a"] - table["estimate_b"]).all()
    erased = table["difference"] != 0  # the lenient judge erases warm's errors in three cells of four
    assert erased.sum() == 3 and (table.loc[erased, "ci_high"] < 0).all()
    assert table["flip"].to_dict() == erased.to_dict()
    same = paired_differences(primary, primary)
    assert (same["difference"] == 0).all() and (same["se"] == 0).all() and not same["flip"].any()


def test_ame_differences_use_each_fits_own_clustered_variance():
    """Each judge's AME and p-value are the analysis's (the influence functions rebuild statsmodels' clustered
    covariance); the same verdicts give a zero difference with a zero interval; a lenient judge a real one."""
    primary = graded_table()
    lenient = primary.copy()
    lenient.loc[(lenient["persona"] == "warm") & (lenient["verdict"] == "INCORRECT") & (lenient.index % 3 == 0),
                "verdict"] = "CORRECT"
    lenient = with_outcome(lenient)
    table = ame_differences(primary, lenient, specs=["main", "user_belief"]).set_index(["regression", "term"])
    reference = persona_regressions(primary)
    reference = reference[reference["kind"] == "ame"].set_index(["regression", "term"])
    assert set(table.index) == set(reference.loc[table.index].index) and len(table) == 7
    assert table["estimate_a"].to_dict() == pytest.approx(reference.loc[table.index, "estimate"].to_dict())
    assert table["p_a"].to_dict() == pytest.approx(reference.loc[table.index, "p_value"].to_dict(), rel=1e-4)
    headline = table.loc[("warm_vs_original:main", "treated")]
    assert headline["difference"] > 0 and headline["ci_low"] > 0 and headline["flip"]
    assert headline["se"] < np.hypot(*(reference.loc[("warm_vs_original:main", "treated"), "ci_high"] -
                                       reference.loc[("warm_vs_original:main", "treated"), "estimate"],) * 2) / 1.96
    same = ame_differences(primary, primary, specs=["main"])
    assert same["difference"].abs().max() < 1e-9 and same["se"].max() < 1e-6 and not same["flip"].any()


def test_effect_differences_stack_paired_tests_and_ames_and_compare_fits_contrasts_under_every_judge():
    primary = pd.concat([graded_table(20), graded_table(20, seed=2).query("persona == 'warm'").assign(persona="cold")],
                        ignore_index=True)
    other = primary.copy()
    other.loc[other.index % 5 == 0, "verdict"] = "CORRECT"
    other = with_outcome(other)
    table = effect_differences(primary, other, specs=["main"])
    assert set(table["kind"]) == {"paired_test", "ame"} and len(table) == 8 + 2  # 2 personas x 4 cells; 2 mains
    tables = compare({"ref": primary, "llm": other}, "ref", contrasts=[["warm", "cold"]], difference_specs=["main"])
    ames = tables["ames"]
    contrast = ames[ames["regression"].str.startswith("warm_vs_cold")]
    assert len(contrast) and contrast[["ref:estimate", "llm:estimate"]].notna().all().all()
    assert not tables["flips"]["test"].str.contains("warm_vs_cold").any() or \
        (tables["flips"].set_index("test").filter(like="warm_vs_cold", axis=0)["change"]
         != "tested under one judge only").all()
    differences = tables["differences"]
    assert (differences["judge"] == "llm").all() and differences["regression"].str.startswith("warm_vs_cold").any()
