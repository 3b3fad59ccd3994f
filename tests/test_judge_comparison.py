"""Several judges: agreement with kappa intervals and prevalence, tests side by side, and the flips table."""
import math

import numpy as np
import pandas as pd
import pytest

from warmbench.io import DataError
from warmbench.judge import incorrect_indicator
from warmbench.judge_comparison import (agreement_table, aligned_verdicts, compare, flips, headline_effects,
                                        kappa_with_ci, side_by_side)
from warmbench.judge_validation import annotation_ids, cohens_kappa

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
    tables = compare({"ref": primary, "lenient": with_outcome(lenient)}, "ref")
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
    from warmbench import figures

    effects = pd.DataFrame({"regression": ["warm_vs_original:main"] * 2, "judge": ["ref", "llm"],
                            "estimate": [10.0, 4.0], "ci_low": [5.0, -1.0], "ci_high": [15.0, 9.0]})
    figures.effect_by_judge(effects, tmp_path / "effect.png")
    assert (tmp_path / "effect.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figures.effect_by_judge(effects.iloc[:0], tmp_path / "empty.png")
    assert (tmp_path / "empty.pdf").read_bytes()[:5] == b"%PDF-"
