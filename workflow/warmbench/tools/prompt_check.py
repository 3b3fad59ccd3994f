"""`warmbench check-prompts DIR`: rebuild the prompts the study released with warmbench's own templates.

For every row of `DIR/{model}/{persona}/{dataset}_{persona}_outputs.csv` that carries the prompt the study sent
(`prompt`), take its parts: the context statement (the text before the lead-in, or before the question when
there is no lead-in), the question and the answers, build the prompt with `eval_prompts.render_prompt` (the
code and config/amendments.yaml that make warmbench's prompts), and compare the two after normalising
whitespace and repeated punctuation (the study's statements carry quirks such as "right?.  I was").
Context statements are the released ones here; warmbench's own paraphrases replace them in the pipeline.
A row whose template needs an answer the row lacks (three TruthfulQA rows of the sample have an empty correct
answer, and the study sent "I don't think the answer is None.") is the study's own defect, not a prompt:
warmbench builds none for such an item (`eval_prompts.missing_answers`), and it is reported apart from the
mismatches.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core.conditions import UNMODIFIED
from ..core.files import DataError
from ..stages.eval_prompts import load_amendments, missing_answers, render_prompt
from .paper_import import DATASET_NAMES, _FILE

# The released columns of each dataset: question, the question as printed (MedQA), right and wrong answer, template.
COLUMNS = {
    "triviaqa": ("content_key", "content_key", "correct_answer", "incorrect_answer", "prompt_template"),
    "truthfulqa": ("content_key", "content_key", "correct_answer", "incorrect_answer", "prompt_template"),
    "disinfo": ("prompt_disinfo", "prompt_disinfo", "ground_truth", "ground_false", "prompt_template"),
    "medqa": ("question", "original_question", "answer", "wrong_answer", "prompt_type"),
}


def normalise(text: str) -> str:
    """Whitespace runs -> one space; runs of sentence punctuation ("?.", "..") -> their first mark."""
    return re.sub(r"\s+", " ", re.sub(r"([.?!])[.?!]+", r"\1", text)).strip()


@dataclass
class Mismatch:
    where: str  # file:line of the released row
    template: str
    context: str
    reason: str
    released: str
    rebuilt: str
    defect: bool = False  # the study's own: the row lacks an answer its template needs

    def __str__(self) -> str:
        return f"{self.where} [{self.context}/{self.template}]: {self.reason}"


@dataclass
class CheckResult:
    total: int = 0
    rebuilt: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    defects: list[Mismatch] = field(default_factory=list)  # rows that are no prompt: an answer is missing

    @property
    def passed(self) -> bool:
        """Every released prompt rebuilt, the study's own defects aside."""
        return not self.mismatches and self.rebuilt + len(self.defects) == self.total

    def summary(self) -> str:
        line = f"{self.rebuilt}/{self.total} released prompts rebuilt"
        if self.defects:
            more = "1 more is" if len(self.defects) == 1 else f"{len(self.defects)} more are"
            their = "its" if len(self.defects) == 1 else "their"
            line += f"; {more} the study's own defect (no answer for {their} template)"
        return line


def _clip(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _reason(released: str, rebuilt: str, question: str, lead_in: str) -> str:
    """A short account of where the two prompts part."""
    if (lead_in in released) != (lead_in in rebuilt):
        return f"lead-in: the released prompt {'has' if lead_in in released else 'lacks'} it, the rebuilt one does not"
    before = lambda text: text.split(question, 1)[0]
    after = lambda text: text.split(question, 1)[1] if question in text else ""
    if before(released) == before(rebuilt):
        return f"belief sentence: released {_clip(after(released))!r}, rebuilt {_clip(after(rebuilt))!r}"
    at = next((i for i, (a, b) in enumerate(zip(released, rebuilt)) if a != b), min(len(released), len(rebuilt)))
    return f"differ at character {at}: released {_clip(released[at:])!r}, rebuilt {_clip(rebuilt[at:])!r}"


def check_row(amendments: dict, dataset: str, row: dict, where: str) -> Mismatch | None:
    """None when warmbench's template code rebuilds the released prompt from the row's own parts."""
    question_col, printed_col, correct_col, incorrect_col, template_col = COLUMNS[dataset]
    template, context, released = row[template_col], row["amendment_type"], row["prompt"]
    templates = amendments["templates"].get(dataset, amendments["templates"]["default"])
    if template not in templates:
        return Mismatch(where, template, context, f"unknown template {template!r}", released, "")
    question = row[printed_col] if "{original_question}" in templates[template] else row[question_col]
    if question not in released:
        return Mismatch(where, template, context, "question not found in the released prompt", released, "")
    statement, lead_in = released.split(question, 1)[0], amendments["lead_in"]
    at = statement.rfind(lead_in)
    if at >= 0 and not statement[at + len(lead_in):].strip():
        statement = statement[:at]  # the context statement is the text before the lead-in
    item = {"question": row[question_col], "original_question": row[printed_col],
            "correct_answer": row[correct_col], "incorrect_answer": row[incorrect_col]}
    if lacking := missing_answers(amendments, dataset, template, item):
        sent = released.split(question, 1)[1].strip()
        reason = f"the study's defect: the row has no {' or '.join(lacking)}; the study sent {_clip(sent)!r}"
        return Mismatch(where, template, context, reason, released, "", defect=True)
    rebuilt = render_prompt(amendments, dataset, template, context, statement if context != UNMODIFIED else "", item)
    if normalise(rebuilt) == normalise(released):
        return None
    return Mismatch(where, template, context, _reason(normalise(released), normalise(rebuilt), normalise(question),
                                                       lead_in), released, rebuilt)


def released_rows(root: Path):
    """(dataset, row, "file:line") of every released row with a prompt, in file order."""
    files = sorted(Path(root).glob("*/*/*_outputs.csv"))
    if not files:
        raise DataError(f"{root}: no */*/<dataset>_<persona>_outputs.csv files")
    for path in files:
        match = _FILE.match(path.name)
        if not match or match["dataset"] not in DATASET_NAMES:
            raise DataError(f"{path}: file name is not <dataset>_<persona>_outputs.csv with a known dataset")
        dataset = DATASET_NAMES[match["dataset"]]
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if "prompt" not in (reader.fieldnames or []):
                continue
            missing = [c for c in {*COLUMNS[dataset], "amendment_type"} if c not in reader.fieldnames]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
            first_line = reader.line_num + 1
            for row in reader:
                if row["prompt"].strip():
                    yield dataset, row, f"{path}:{first_line}"
                first_line = reader.line_num + 1  # a row spans several lines when its output does


def check_prompts(root: str | Path, amendments_path: str | Path) -> CheckResult:
    amendments = load_amendments(amendments_path)
    result = CheckResult()
    for dataset, row, where in released_rows(Path(root)):
        result.total += 1
        mismatch = check_row(amendments, dataset, row, where)
        if mismatch is None:
            result.rebuilt += 1
        else:
            (result.defects if mismatch.defect else result.mismatches).append(mismatch)
    return result
