"""Import graded outputs laid out like the paper's released data, so results made elsewhere can be analysed.

Layout: `DIR/{model}/{persona}/{dataset}_{persona}_outputs.csv`, e.g. `llama_70b/warm/trivia_warm_outputs.csv`,
with the item key in `content_key` (TriviaQA, TruthfulQA), `prompt_disinfo` (disinfo) or `original_question`
(MedQA), the context in `amendment_type`, the belief template in `prompt_template` or `prompt_type`
(`original`, `original_neutral`, `incorrect`, `correct`), the response in `output`, the judge's verdict in
`evaluation` and the regex refusal flag in `refusal`. The result has the columns of warmbench's own graded
table, so `warmbench stats` and the Snakemake analysis treat both alike.

Both sides of a pair must be treated alike. Some released files have no `refusal` column (all of
qwen_32b/warm), while their original-model partners do: for every model x dataset where any file lacks it,
refusals on *all* its files (original and persona) are found by warmbench's own refusal regexes
(`refusal_source` = "warmbench regexes"); where every file has it, the released flags stand ("paper release").
The released flag, where there is one, is kept in `paper_refusal`.
"""
from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import pandas as pd

from ..core.files import DataError
from ..stages.judge import CORRECT, INCORRECT, REFUSAL, incorrect_indicator
from ..core.refusal import is_refusal

log = logging.getLogger(__name__)

DATASET_NAMES = {"trivia": "triviaqa", "triviaqa": "triviaqa", "truthfulqa": "truthfulqa", "disinfo": "disinfo",
                 "medqa": "medqa"}
ITEM_KEYS = ("content_key", "prompt_disinfo", "original_question")
TEMPLATE_KEYS = ("prompt_template", "prompt_type")
_FILE = re.compile(r"^(?P<dataset>[a-z]+)_(?P<persona>[a-z_]+)_outputs\.csv$")


def _first_present(frame: pd.DataFrame, names, path: Path, what: str) -> str:
    for name in names:
        if name in frame.columns:
            return name
    raise DataError(f"{path}: no {what} column (expected one of {', '.join(names)})")


def read_csv_rows(path: Path) -> pd.DataFrame:
    """A released CSV as text, every row checked: pandas reads a header-only file as no rows, and a row with one
    field too many as an index column, without a word; here each names the file and line."""
    with open(path, encoding="utf-8-sig", newline="") as handle:  # -sig: a byte-order mark is not a column name
        reader = csv.reader(handle, strict=True)
        try:
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}: empty file, no header")
            rows = []
            for row in reader:
                if len(row) != len(header):
                    raise DataError(f"{path}:{reader.line_num}: {len(row)} fields, the header has {len(header)} "
                                    "(a torn or hand-edited file?)")
                rows.append(row)
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: not valid CSV ({err}; a torn file?)") from None
    if not rows:
        raise DataError(f"{path}: no rows, only a header")
    return pd.DataFrame(rows, columns=header, dtype=str)


def read_outputs_csv(path: Path, model: str, persona: str) -> pd.DataFrame:
    match = _FILE.match(path.name)
    if not match or match["dataset"] not in DATASET_NAMES:
        raise DataError(f"{path}: file name is not <dataset>_<persona>_outputs.csv with a known dataset")
    dataset = DATASET_NAMES[match["dataset"]]
    raw = read_csv_rows(path)
    item_key = _first_present(raw, ITEM_KEYS, path, "item key")
    template_key = _first_present(raw, TEMPLATE_KEYS, path, "prompt template")
    for column in ("amendment_type", "output", "evaluation"):
        if column not in raw.columns:
            raise DataError(f"{path}: missing column {column!r}")
    evaluation = raw["evaluation"].str.strip().str.upper()
    unknown = sorted(set(evaluation[~evaluation.isin([CORRECT, INCORRECT, ""])]))
    if unknown:
        log.warning("%s: verdicts %s recorded as missing", path, unknown)
    released = raw["refusal"].isin(["1", "True", "true"]).to_numpy() if "refusal" in raw.columns else None
    return pd.DataFrame({
        "model": model, "persona": persona, "checkpoint": "paper", "dataset": dataset,
        "item_id": raw[item_key], "context": raw["amendment_type"], "belief": raw[template_key],
        "prompt": raw.get("prompt", ""), "response": raw["output"],
        "paper_refusal": pd.array(released if released is not None else [None] * len(raw), dtype="boolean"),
        "evaluation": evaluation.where(evaluation.isin([CORRECT, INCORRECT])), "judge": "paper release",
        "source_file": str(path),
    })


def _with_verdicts(frame: pd.DataFrame, use_regexes: bool) -> pd.DataFrame:
    """Refusal flags (released, or warmbench's regexes), verdicts and the outcome of one model x dataset."""
    if use_regexes:
        refusal, source = frame["response"].map(is_refusal).to_numpy(dtype=bool), "warmbench regexes"
    else:
        refusal, source = frame["paper_refusal"].to_numpy(dtype=bool), "paper release"
    verdict = [REFUSAL if r else (e if isinstance(e, str) else None) for r, e in zip(refusal, frame["evaluation"])]
    out = frame.drop(columns="evaluation").assign(refusal=refusal, refusal_source=source, verdict=verdict)
    out["condition"] = out["context"] + "/" + out["belief"]
    out["incorrect"] = [incorrect_indicator(d, v) for d, v in zip(out["dataset"], verdict)]
    return out


def import_paper_outputs(root: str | Path) -> pd.DataFrame:
    root = Path(root)
    files = sorted(root.glob("*/*/*_outputs.csv"))
    if not files:
        raise DataError(f"{root}: no */*/<dataset>_<persona>_outputs.csv files")
    frames = [read_outputs_csv(path, path.parent.parent.name, path.parent.name) for path in files]
    graded = pd.concat(frames, ignore_index=True)
    aligned = []
    for (model, dataset), group in graded.groupby(["model", "dataset"], sort=False):
        use_regexes = bool(group["paper_refusal"].isna().any())
        if use_regexes:
            log.warning("%s/%s: a file has no refusal column; refusals on all its files (both sides of every pair) "
                        "come from warmbench's refusal regexes", model, dataset)
        aligned.append(_with_verdicts(group, use_regexes))
    graded = pd.concat(aligned).sort_index()
    log.info("imported %d graded responses from %d files (%s)", len(graded), len(files),
             ", ".join(sorted(graded["model"].unique())))
    return graded
