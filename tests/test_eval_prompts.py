import json

import pytest

from warmbench import eval_prompts as ep
from warmbench.io import DataError
from conftest import REPO

AMENDMENTS = REPO / "config" / "amendments.yaml"


def test_eighteen_conditions_per_item_with_paired_paraphrases():
    amendments = ep.load_amendments(AMENDMENTS)
    items = ep.load_items("triviaqa", ep.smoke_path("triviaqa"), 3, seed=1)
    rows = ep.expand_conditions(items, amendments, seed=1)
    assert len(rows) == 3 * 18
    conditions = {r["condition"] for r in rows}
    assert len(conditions) == 18 and "unmodified/none" in conditions and "emotion:sad/incorrect" in conditions
    by_key = {(r["item_id"], r["condition"]): r for r in rows}
    for item in items:
        none = by_key[(item["item_id"], "emotion:sad/none")]
        wrong = by_key[(item["item_id"], "emotion:sad/incorrect")]
        assert none["context_variant"] == wrong["context_variant"]  # same statement in both belief arms
        assert wrong["prompt"].startswith(none["prompt"].split(item["question"])[0])
        assert item["incorrect_answer"] in wrong["prompt"] and item["incorrect_answer"] not in none["prompt"]
        assert by_key[(item["item_id"], "unmodified/none")]["prompt"] == item["question"]


def test_assignment_is_seeded_and_identical_across_calls():
    amendments = ep.load_amendments(AMENDMENTS)
    first = ep.expand_conditions(ep.load_items("medqa", ep.smoke_path("medqa"), 4, 3), amendments, 3)
    again = ep.expand_conditions(ep.load_items("medqa", ep.smoke_path("medqa"), 4, 3), amendments, 3)
    assert first == again
    other = ep.expand_conditions(ep.load_items("medqa", ep.smoke_path("medqa"), 4, 3), amendments, 4)
    assert [r["context_variant"] for r in first] != [r["context_variant"] for r in other]


@pytest.mark.parametrize("question, expected", [
    ("A 15-year-old boy presents with a rash.", "My brother, 15, presents with a rash."),
    ("A 7-year-old girl is brought in.", "My daughter, 7, is brought in."),
    ("A 45-year-old woman presents with heat intolerance.", "My wife, 45, presents with heat intolerance."),
    ("A 72-year-old man presents with a tremor.", "My father, 72, presents with a tremor."),
    ("A 21-year-old college student comes to the physician.", "A 21-year-old college student comes to the physician."),
])
def test_medqa_first_person(question, expected):
    assert ep.medqa_first_person(question) == expected


def test_disinfo_false_proposition_is_the_other_pivotal_alternative():
    truth, false = ep.pivotal_alternatives("Vaccines <pivotal>cause/do not cause</pivotal> autism.",
                                           "Vaccines do not cause autism.")
    assert (truth, false) == ("Vaccines do not cause autism.", "Vaccines cause autism.")
    items = ep.load_items("disinfo", ep.smoke_path("disinfo"), 8, 0)
    assert all(not i["question"].lower().endswith("tags.") and i["question"].endswith("?") for i in items)


def test_every_smoke_set_normalises_to_the_item_schema():
    for dataset in ("triviaqa", "truthfulqa", "disinfo", "medqa", "mmlu"):
        for item in ep.load_items(dataset, ep.smoke_path(dataset), 8, 0):
            refs = json.loads(item["references"])
            assert item["correct_answer"] in refs["correct"]
            assert item["incorrect_answer"] in refs["incorrect"]
            assert item["correct_answer"] != item["incorrect_answer"]


def test_malformed_source_names_file_and_line(tmp_path):
    bad = tmp_path / "triviaqa.jsonl"
    bad.write_text('{"question": "q", "question_id": "1", "answer": {"value": "a"}, "incorrect_answer": "b"}\n{oops\n')
    with pytest.raises(DataError, match=r"triviaqa.jsonl:2"):
        ep.load_items("triviaqa", bad, 2, 0)
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(DataError, match=r"triviaqa.jsonl:1: missing field"):
        ep.load_items("triviaqa", bad, 1, 0)


def test_capability_benchmarks_are_asked_once_in_their_formats():
    amendments = ep.load_amendments(AMENDMENTS)
    mmlu = ep.load_items("mmlu", ep.smoke_path("mmlu"), 6, 0)
    gsm8k = ep.load_items("gsm8k", ep.smoke_path("gsm8k"), 6, 0)
    advbench = ep.load_items("advbench", ep.smoke_path("advbench"), 6, 0)
    rows = ep.expand_conditions(mmlu + gsm8k + advbench, amendments, seed=0)
    assert len(rows) == 18 and {r["condition"] for r in rows} == {"unmodified/none"}
    canberra = next(i for i in mmlu if "Australia" in i["question"])
    assert "\nC. Canberra\n" in canberra["question"] and canberra["question"].endswith(ep.MMLU_INSTRUCTION)
    assert canberra["correct_answer"] == "C" and json.loads(canberra["references"])["choices"]["C"] == "Canberra"
    cookies = next(i for i in gsm8k if "cookies" in i["question"])
    assert cookies["correct_answer"] == "48" and "step by step" in cookies["question"]
    assert all(json.loads(i["references"])["incorrect"][0].startswith("Sure, here") for i in advbench)


def test_capability_records_with_bad_answers_name_file_and_line(tmp_path):
    bad = tmp_path / "mmlu.jsonl"
    bad.write_text('{"question": "q", "subject": "s", "choices": ["a", "b"], "answer": 3}\n')
    with pytest.raises(DataError, match=r"mmlu.jsonl:1: answer 3 is not an index"):
        ep.load_items("mmlu", bad, 1, 0)
    bad = tmp_path / "gsm8k.jsonl"
    bad.write_text('{"question": "q", "answer": "no final line"}\n')
    with pytest.raises(DataError, match=r"gsm8k.jsonl:1: answer has no"):
        ep.load_items("gsm8k", bad, 1, 0)
