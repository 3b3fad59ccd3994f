import numpy as np
import pandas as pd
import pytest

from warmbench.core import stats


def test_mcnemar_exact_matches_hand_computed_binomial():
    # b=8, c=2: p = 2 * P(X <= 2 | n=10, 1/2) = 2 * (1 + 10 + 45) / 1024
    assert stats.mcnemar_exact(8, 2) == pytest.approx(2 * 56 / 1024)
    assert stats.mcnemar_exact(2, 8) == stats.mcnemar_exact(8, 2)
    assert stats.mcnemar_exact(5, 5) == 1.0
    assert stats.mcnemar_exact(0, 0) == 1.0


def test_mcnemar_agrees_with_statsmodels():
    from statsmodels.stats.contingency_tables import mcnemar

    for b, c in [(3, 11), (20, 9), (1, 0), (7, 7)]:
        expected = mcnemar(np.array([[0, b], [c, 0]]), exact=True).pvalue
        assert stats.mcnemar_exact(b, c) == pytest.approx(expected)


def test_cohens_g_is_the_papers_definition_not_the_released_codes():
    assert stats.cohens_g(8, 2) == pytest.approx(0.3)  # max(b,c)/(b+c) - 0.5
    assert stats.cohens_g(2, 8) == pytest.approx(0.3)
    assert stats.cohens_g(5, 5) == 0.0
    assert np.isnan(stats.cohens_g(0, 0))
    # the released code's |b-c|/sqrt(b+c) would give 1.897 here
    assert stats.cohens_g(8, 2) != pytest.approx(6 / np.sqrt(10))


def test_odds_ratio_and_exact_interval():
    ratio, low, high = stats.odds_ratio(8, 2)
    assert ratio == 4.0
    assert low < 4.0 < high
    # the interval is the Clopper-Pearson interval of b/(b+c) mapped to odds
    from scipy.stats import beta

    p_low = beta.ppf(0.025, 8, 3)
    assert low == pytest.approx(p_low / (1 - p_low))
    assert stats.odds_ratio(3, 0)[0] == float("inf")


def test_benjamini_hochberg_known_values():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    adjusted = stats.benjamini_hochberg(p)
    # sorted: 0.005, 0.01, 0.03, 0.04 -> *4/rank: 0.02, 0.02, 0.04, 0.04
    assert adjusted[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert np.isnan(adjusted[4])
    from statsmodels.stats.multitest import multipletests

    assert adjusted[:4] == pytest.approx(multipletests(p[:4], method="fdr_bh")[1])


def test_odds_ratio_interval_is_statsmodels_clopper_pearson():
    from statsmodels.stats.proportion import proportion_confint

    for b, c in [(8, 2), (0, 5), (5, 0), (1, 1), (30, 41)]:
        p_low, p_high = proportion_confint(b, b + c, alpha=0.05, method="beta")
        _, low, high = stats.odds_ratio(b, c)
        assert low == pytest.approx(p_low / (1 - p_low))
        assert high == pytest.approx(p_high / (1 - p_high)) if p_high < 1 else high == float("inf")
    assert all(np.isnan(v) for v in stats.odds_ratio(0, 0))


def test_impossible_counts_are_an_error_not_a_p_value():
    # a negative or fractional discordant count is a bug upstream; the old binomial formula returned p = 0
    for b, c in [(-1, 3), (2.5, 3)]:
        with pytest.raises(ValueError, match="discordant counts"):
            stats.mcnemar_exact(b, c)
        with pytest.raises(ValueError, match="discordant counts"):
            stats.odds_ratio(b, c)


def test_benjamini_hochberg_nan_empty_and_out_of_range():
    assert stats.benjamini_hochberg([]).shape == (0,)
    assert np.isnan(stats.benjamini_hochberg([np.nan, np.nan])).all()
    # NaN rows are not in the family: the others are adjusted as if they were alone
    from statsmodels.stats.multitest import multipletests

    p = pd.Series([0.2, np.nan, 0.01, 0.03], index=[10, 11, 12, 13])
    adjusted = stats.benjamini_hochberg(p)
    assert np.isnan(adjusted[1])
    assert adjusted[[0, 2, 3]] == pytest.approx(multipletests([0.2, 0.01, 0.03], method="fdr_bh")[1])
    with pytest.raises(ValueError, match="p-values"):
        stats.benjamini_hochberg([0.2, 1.5])


def test_planted_fine_tuning_effect_is_recovered_within_its_ci():
    rng = np.random.default_rng(0)
    n_items = 400
    item_difficulty = rng.normal(0, 1, n_items)
    rows = []
    for item in range(n_items):
        for task in ("a", "b"):
            for treated in (0, 1):
                logit = -0.5 + item_difficulty[item] + (0.4 if task == "b" else 0) + 0.6 * treated
                rows.append({"item": f"{task}{item}", "task": task, "model": "m", "treated": treated,
                             "incorrect": int(rng.random() < 1 / (1 + np.exp(-logit)))})
    data = pd.DataFrame(rows)
    result, formula = stats.fit_logit(data, "incorrect", "treated", ["task", "model"], "item")
    assert "C(model)" not in formula  # single-level fixed effect dropped
    ame = stats.Counterfactuals(result, data, "treated").ame()
    # the true AME, by the same counterfactual on the true model
    base = -0.5 + np.repeat(item_difficulty, 2) + np.tile([0, 0.4], n_items)
    true = np.mean(1 / (1 + np.exp(-(base + 0.6))) - 1 / (1 + np.exp(-base)))
    assert ame.ci_low < true < ame.ci_high
    assert ame.p_value < 0.01
    assert result.params["treated"] > 0
