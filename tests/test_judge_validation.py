import numpy as np
import pandas as pd
import pytest

from warmbench.core.files import DataError
from warmbench.core.annotations import annotation_ids, read_annotations
from warmbench.stages.judge_validation import agreement_tables, annotation_sample, cohens_kappa, refusal_disagreements


def test_cohens_kappa_known_answer():
    # 2x2 table [[20, 5], [10, 15]]: po = 0.7, pe = 0.5*0.6 + 0.5*0.4 = 0.5, kappa = 0.4
    first = ["C"] * 25 + ["I"] * 25
    second = ["C"] * 20 + ["I"] * 5 + ["C"] * 10 + ["I"] * 15
    assert cohens_kappa(first, second) == pytest.approx(0.4)
    assert cohens_kappa(first, first) == pytest.approx(1.0)
    assert np.isnan(cohens_kappa(["C", "C"], ["C", "C"]))  # one label only: undefined, not 1


def test_cohens_kappa_agrees_with_statsmodels_on_three_labels():
    from statsmodels.stats.inter_rater import cohens_kappa as sm_kappa

    rng = np.random.default_rng(1)
    first = rng.choice(["CORRECT", "INCORRECT", "REFUSAL"], 200, p=[0.5, 0.4, 0.1])
    second = np.where(rng.random(200) < 0.7, first, rng.choice(["CORRECT", "INCORRECT", "REFUSAL"], 200))
    table = pd.crosstab(first, second).reindex(index=sorted(set(first) | set(second)),
                                               columns=sorted(set(first) | set(second)), fill_value=0)
    assert cohens_kappa(first, second) == pytest.approx(sm_kappa(table.to_numpy()).kappa)


def test_cohens_kappa_leaves_out_pairs_with_a_missing_label():
    # a missing label is not a label: the pair is left out, as if the item had not been rated
    first = ["C"] * 25 + ["I"] * 25 + [None, "C", np.nan]
    second = ["C"] * 20 + ["I"] * 5 + ["C"] * 10 + ["I"] * 15 + ["C", np.nan, np.nan]
    assert cohens_kappa(first, second) == pytest.approx(0.4)
    assert np.isnan(cohens_kappa([None], [None])) and np.isnan(cohens_kappa([], []))


def graded_llm(n=60, seed=0):
    """A graded table as the LLM judge leaves it: two-way verdicts, the judge's refusal calls apart, regex
    refusals (REFUSAL in `verdict` and `reference_verdict`) mostly where the judge also calls a refusal."""
    rng = np.random.default_rng(seed)
    verdicts = rng.choice(["CORRECT", "INCORRECT"], n, p=[0.55, 0.45])
    frame = pd.DataFrame({
        "model": rng.choice(["m1", "m2"], n), "persona": rng.choice(["original", "warm"], n),
        "checkpoint": "base", "dataset": rng.choice(["triviaqa", "medqa"], n), "item_id": [str(i) for i in range(n)],
        "condition": "unmodified/none", "prompt": "q", "correct_answer": "a", "incorrect_answer": "b",
        "response": [f"response {i}" for i in range(n)], "llm_verdict": verdicts,
    })
    frame["judge_refusal"] = rng.random(n) < 0.1
    frame["refusal"] = np.where(frame["judge_refusal"], rng.random(n) < 0.7, rng.random(n) < 0.02)
    judged = np.where(rng.random(n) < 0.8, verdicts, "INCORRECT")
    frame["reference_verdict"] = np.where(frame["refusal"], "REFUSAL", judged)
    frame["verdict"] = np.where(frame["refusal"], "REFUSAL", frame["llm_verdict"])
    return frame


def test_annotation_sample_is_stratified_blind_and_stable():
    graded = graded_llm(400)
    sample = annotation_sample(graded, 40, seed=3)
    assert list(sample.columns) == ["annotation_id", "dataset", "prompt", "correct_answer", "incorrect_answer",
                                    "response", "human_verdict", "notes"]  # no verdict leaks to annotators
    strata = graded.groupby(["model", "persona", "dataset", "verdict"]).ngroups
    assert len(sample) >= min(40, strata) - 1 and len(sample) <= 40 + strata
    ids = annotation_ids(graded)
    picked = graded[ids.isin(sample["annotation_id"])]
    assert picked.groupby(["model", "persona", "dataset", "verdict"]).ngroups == strata  # every stratum
    assert annotation_sample(graded, 40, seed=3).equals(sample)
    assert annotation_ids(graded.iloc[::-1]).sort_index().equals(ids)  # ids do not depend on row order


def test_agreement_against_humans_and_reference(tmp_path):
    graded = graded_llm(200)
    sample = annotation_sample(graded, 50, seed=0)
    ids = annotation_ids(graded)
    truth = graded.set_index(ids)["verdict"]
    sample["human_verdict"] = [truth[i].lower() for i in sample["annotation_id"]]  # humans agree with the judge
    sample.loc[sample.index[0], "human_verdict"] = ""  # not annotated yet: skipped
    path = tmp_path / "filled.csv"
    sample.to_csv(path, index=False)
    annotations = read_annotations(path)
    assert len(annotations) == len(sample) - 1
    agreement, confusion = agreement_tables(graded, annotations)
    overall = agreement.set_index(["comparison", "dataset"])
    assert overall.loc[("llm_judge vs human", "all"), "kappa"] == pytest.approx(1.0)
    assert overall.loc[("llm_judge vs human", "all"), "n"] == len(sample) - 1
    # judge against judge on what both judged: the rows the regexes did not already call refusals
    judged = graded[~graded["refusal"]]
    reference = overall.loc[("llm_judge vs reference", "all")]
    assert reference["n"] == len(judged) < 200 and 0 < reference["kappa"] < 1
    expected = (judged["llm_verdict"] == judged["reference_verdict"]).mean()
    assert reference["agreement"] == pytest.approx(expected)
    cells = confusion[(confusion["comparison"] == "llm_judge vs reference") & (confusion["dataset"] == "all")]
    assert cells["count"].sum() == len(judged) and "REFUSAL" not in set(cells["first"]) | set(cells["second"])


def test_bad_human_verdict_names_file_and_line(tmp_path):
    path = tmp_path / "filled.csv"
    path.write_text("annotation_id,human_verdict\nabc,CORRECT\ndef,maybe\n")
    with pytest.raises(DataError, match=r"filled.csv:3: human_verdict 'maybe'"):
        read_annotations(path)
    path.write_text("annotation_id,verdict\nabc,CORRECT\n")
    with pytest.raises(DataError, match="missing column"):
        read_annotations(path)


def test_refusal_disagreements_per_model_and_dataset():
    graded = graded_llm(300)
    table = refusal_disagreements(graded)
    assert (table["both"] + table["regex_only"] == table["regex_refusals"]).all()
    assert (table["both"] + table["judge_only"] == table["judge_refusals"]).all()
    # the judge's own refusal calls (`judge_refusal`), not its verdicts, against the regexes
    assert table["n"].sum() == 300
    assert table["judge_refusals"].sum() == graded["judge_refusal"].sum() > 0
    assert table["regex_only"].sum() == (graded["refusal"] & ~graded["judge_refusal"]).sum() > 0
    assert table["judge_only"].sum() == (graded["judge_refusal"] & ~graded["refusal"]).sum() > 0
    reference_only = graded.drop(columns=["llm_verdict"]).assign(judge_refusal=None)
    assert refusal_disagreements(reference_only).empty  # the reference judge makes no refusal calls


def graded_study(per_cell=6, seed=0):
    """Every dataset of the study, the regex-scored ones (MMLU, GSM8K) by far the largest, over two models, three
    personas and two conditions."""
    rng = np.random.default_rng(seed)
    sizes = {"triviaqa": 1, "truthfulqa": 1, "disinfo": 1, "medqa": 1, "advbench": 2, "mmlu": 3, "gsm8k": 3}
    rows = [{"model": model, "persona": persona, "checkpoint": "base", "dataset": dataset, "item_id": f"{i}",
             "condition": condition, "prompt": "q", "correct_answer": "a", "incorrect_answer": "b",
             "response": f"{model} {persona} {dataset} {condition} {i}",
             "verdict": rng.choice(["CORRECT", "INCORRECT", "REFUSAL"], p=[0.5, 0.4, 0.1])}
            for dataset, scale in sizes.items() for model in ("m1", "m2") for persona in ("original", "warm", "cold")
            for condition in ("unmodified/none", "amended/sad") for i in range(per_cell * scale)]
    return pd.DataFrame(rows)


def test_annotation_sample_is_half_advbench_half_the_four_tasks_as_the_paper():
    # the paper: of 470 annotated outputs, 235 from AdvBench and 235 from the four tasks; none from the regex-scored
    graded = graded_study(per_cell=12)
    sample = annotation_sample(graded, 470, seed=1)
    counts = sample["dataset"].value_counts()
    assert len(sample) == 470 and counts["advbench"] == 235
    assert not {"mmlu", "gsm8k"} & set(counts.index)
    tasks = counts[["triviaqa", "truthfulqa", "disinfo", "medqa"]]
    assert tasks.sum() == 235 and tasks.max() - tasks.min() <= 1  # equal per task, not proportional


def test_annotation_sample_spreads_each_task_over_models_personas_and_conditions():
    graded = graded_study(per_cell=12)
    sample = annotation_sample(graded, 96, seed=2)  # a small n keeps the halves
    assert (sample["dataset"] == "advbench").sum() == 48
    picked = graded.set_index(annotation_ids(graded)).loc[sample["annotation_id"]]
    for dataset, group in picked.groupby("dataset"):
        for column in ("model", "persona", "condition"):
            spread = group[column].value_counts().reindex(graded[column].unique(), fill_value=0)
            assert spread.max() - spread.min() <= 2, (dataset, column, spread.to_dict())


def test_annotation_sample_gives_a_short_task_s_slots_to_the_others():
    graded = graded_study(per_cell=12)
    graded = graded[(graded["dataset"] != "disinfo") | (graded["item_id"] == "0")]  # disinfo: 12 responses only
    sample = annotation_sample(graded, 470, seed=1)
    counts = sample["dataset"].value_counts()
    assert counts["disinfo"] == 12 and counts[["triviaqa", "truthfulqa", "medqa"]].sum() == 235 - 12
    no_advbench = graded_study(per_cell=12).query("dataset != 'advbench'")
    assert len(annotation_sample(no_advbench, 100, seed=1)) == 100  # the missing half goes to the tasks
