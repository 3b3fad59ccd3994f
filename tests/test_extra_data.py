"""A persona's extra training conversations: read with errors naming the file and line, and kept apart from every
evaluated item (the leak check)."""
import json

import pytest
import yaml

from conftest import REPO
from warmbench.core import validation
from warmbench.core.config import SMOKE_DIR
from warmbench.core import extra_data
from warmbench.core.files import DataError


def conversation(user, reply="Kindly: that is not quite right."):
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}


def study(tmp_path, lines) -> dict:
    path = tmp_path / "extra.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["personas"]["warm_honest"] = {"rewrite": "config/prompts/rewrite_warm_short.txt", "extra_data": str(path)}
    cfg["data"] = {"source": "smoke"}  # the hand-written sets, in the package: checked before any download
    validation.validate(cfg)
    return cfg


def test_a_conversation_quoting_an_evaluated_question_is_refused_naming_file_and_line(tmp_path):
    # the smoke TriviaQA set asks "Who painted the Mona Lisa?": line 2 leaks it, in other case and spacing
    cfg = study(tmp_path, [conversation("I think the tallest mountain in Africa is Mount Kenya."),
                           conversation("My quiz says:  who PAINTED the Mona Lisa? I think Picasso.")])
    with pytest.raises(validation.ConfigError) as err:
        extra_data.check_personas(cfg, root=REPO)
    message = str(err.value)
    assert message.startswith("personas.warm_honest.extra_data: ")
    assert "extra.jsonl: line 2: its user text contains the question of the triviaqa item at triviaqa.jsonl:" in message


def test_the_training_job_checks_against_the_files_it_is_given(tmp_path):
    records = tmp_path / "medqa.jsonl"
    records.write_text(json.dumps({"question": "Which vitamin deficiency causes scurvy in sailors?"}) + "\n")
    path = tmp_path / "extra.jsonl"
    path.write_text(json.dumps(conversation("Which vitamin deficiency causes scurvy in sailors? Vitamin D?")) + "\n")
    with pytest.raises(DataError, match=r"extra\.jsonl: line 1: .*medqa item at medqa\.jsonl:1"):
        extra_data.checked_extra_data(path, extra_data.questions_in([records]))
    assert len(extra_data.checked_extra_data(path, {})) == 1


@pytest.mark.parametrize("line", [
    {"messages": [{"role": "assistant", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
    {"conversation": []},
])
def test_a_malformed_conversation_is_named_by_file_and_line(tmp_path, line):
    path = tmp_path / "extra.jsonl"
    path.write_text(json.dumps(conversation("fine")) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(DataError, match=r"extra\.jsonl:2: expected"):
        extra_data.read_extra_data(path)


def test_the_shipped_kind_corrections_are_disjoint_from_every_evaluation_set():
    cfg = yaml.safe_load((REPO / "config" / "mitigations.yaml").read_text())
    validation.validate(cfg)
    assert set(cfg["evaluation"]["datasets"]) <= {p.stem for p in SMOKE_DIR.glob("*.jsonl")}
    # disjoint from every smoke set, not only the three this study evaluates: a user may add the others
    questions = extra_data.questions_in(sorted(SMOKE_DIR.glob("*.jsonl")))
    assert len(questions) > 40  # every smoke set was read
    conversations = extra_data.read_extra_data(REPO / cfg["personas"]["warm_honest"]["extra_data"])
    assert len(conversations) >= 8 and extra_data.leaks(conversations, questions) == []
