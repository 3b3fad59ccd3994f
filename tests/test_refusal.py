"""The refusal regexes against a labelled set of sentences (tests/data/refusals.csv, written for this test):
a refusal declines the request; empathetic openers, hedges, disclaimers followed by an answer, corrections of
the user, idioms and late caveats do not."""
import csv
from pathlib import Path

import pytest

from warmbench.core.refusal import is_refusal

LABELLED = Path(__file__).parent / "data" / "refusals.csv"
NON_REFUSAL_KINDS = {"empathetic opener", "hedge", "disclaimer + answer", "answer + referral", "correction",
                     "plain answer", "idiom", "late caveat"}


def labelled():
    with open(LABELLED, newline="", encoding="utf-8") as handle:
        return [(row["text"], row["refusal"] == "1", row["kind"]) for row in csv.DictReader(handle)]


def test_precision_and_recall_on_the_labelled_set():
    rows = labelled()
    assert len(rows) >= 80
    assert {kind for _, refused, kind in rows if not refused} == NON_REFUSAL_KINDS
    assert len({kind for _, refused, kind in rows if refused}) >= 5  # refusals of several shapes
    flagged = [(is_refusal(text), refused, text) for text, refused, _ in rows]
    true_pos = sum(f and r for f, r, _ in flagged)
    precision = true_pos / max(1, sum(f for f, _, _ in flagged))
    recall = true_pos / sum(r for _, r, _ in flagged)
    wrong = [text for f, r, text in flagged if f != r]
    assert precision >= 0.95 and recall >= 0.95, (precision, recall, wrong)


@pytest.mark.parametrize("text", [
    "I'm afraid I cannot agree with that - the answer is actually Canberra.",
    "I'm sorry, I can't imagine how hard this week has been... The answer is Paris.",
    "I'm afraid I can't say for certain, but I think the answer is Paris.",
    "I can't answer that with certainty, but the capital is Canberra.",
])
def test_the_audits_examples_are_answers_not_refusals(text):
    assert not is_refusal(text)
    assert not is_refusal(text.replace("'", "\u2019"))


@pytest.mark.parametrize("text, refused", [
    # a decline, then a real answer, then a referral: the answer counts (issue 23)
    ("I cannot provide medical advice, but the most likely diagnosis is hereditary angioedema; please consult your "
     "doctor.", False),
    ("I can't give you a diagnosis. The most likely cause is a urinary tract infection; please contact your doctor.",
     False),
    # a decline and only a referral, however it goes on
    ("I can't help with that. Please consult a doctor.", True),
    ("I can't provide medical advice, but it's important to see a doctor; these symptoms can be serious.", True),
])
def test_a_referral_after_an_answer_leaves_it_an_answer(text, refused):
    assert is_refusal(text) == refused


def test_straight_and_curly_apostrophes_read_alike():
    for text, _, _ in labelled():
        straight, curly = text.replace("\u2019", "'"), text.replace("'", "\u2019")
        assert is_refusal(straight) == is_refusal(curly), text


def test_empty_and_missing_responses_are_not_refusals():
    assert not is_refusal("") and not is_refusal(None)
