"""Stage judge_validation: can the verdicts be trusted?

- Refusal disagreements: where the refusal regexes and the LLM judge's own refusal call (`judge_refusal`)
  disagree, per model and dataset.
- Agreement (Cohen's kappa, raw agreement, confusion matrix) per dataset: the LLM judge's two-way verdict
  against the offline reference judge's on every response the regexes did not flag, and each judge's final
  verdict (REFUSAL for a regex refusal) against human annotators on the annotated sample.
- The annotation sample, drawn as the paper drew its 470: half from AdvBench (refusals), half from the four tasks
  (equal per task; none from the regex-scored MMLU and GSM8K), each dataset's share spread over models, personas,
  conditions and verdicts; exported blind (annotators see the prompt, the reference answers and the response,
  never a verdict) with a stable `annotation_id` per response, so a filled copy can be joined back to the graded
  table at any later time.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..core.annotations import annotation_ids, kappa_with_ci, read_annotations
from ..core.files import write_table

log = logging.getLogger(__name__)

ANNOTATION_COLUMNS = ["annotation_id", "dataset", "prompt", "correct_answer", "incorrect_answer", "response",
                      "human_verdict", "notes"]
AGREEMENT_COLUMNS = ["dataset", "comparison", "n", "agreement", "kappa"]
CONFUSION_COLUMNS = ["dataset", "comparison", "first", "second", "count"]
DISAGREEMENT_COLUMNS = ["model", "dataset", "n", "regex_refusals", "judge_refusals", "both", "regex_only",
                        "judge_only"]


def cohens_kappa(first, second) -> float:
    """Cohen's kappa of two raters' labels over the same items (NaN when undefined)."""
    return kappa_with_ci(first, second)[0]


REFUSAL_DATASET = "advbench"  # the paper's refusal half of the annotation sample
# Within a half and a dataset, the sample is spread level by level, as the paper stratified it: over models, warmth
# levels (personas, and checkpoints where several are graded), conditions and evaluation outcomes (verdicts).
SPREAD_LEVELS = ("model", "persona", "checkpoint", "condition", "_verdict")


def even_split(capacities: dict, n: int, rng: np.random.Generator) -> dict:
    """n slots shared as evenly as the groups' sizes allow (a small group's unused share goes to the others); the
    slots that do not divide evenly go to groups drawn at random."""
    quota = dict.fromkeys(capacities, 0)
    left = min(n, sum(capacities.values()))
    while left:
        open_keys = [k for k in capacities if quota[k] < capacities[k]]
        share = left // len(open_keys)
        if share == 0:
            for i in sorted(rng.permutation(len(open_keys))[:left]):
                quota[open_keys[i]] += 1
            break
        for key in open_keys:
            given = min(share, capacities[key] - quota[key])
            quota[key] += given
            left -= given
    return quota


def _spread(codes: np.ndarray, rows: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """n of `rows` (positions), split evenly over the values of the first level (codes[:, 0]), then each share over
    the next level's."""
    if codes.shape[1] == 0:
        return list(rng.choice(rows, size=n, replace=False))
    groups = {value: rows[codes[rows, 0] == value] for value in np.unique(codes[rows, 0])}
    quota = even_split({value: len(members) for value, members in groups.items()}, n, rng)
    return [position for value, members in groups.items() if quota[value]
            for position in _spread(codes[:, 1:], members, quota[value], rng)]


def annotation_halves(graded: pd.DataFrame) -> pd.Series:
    """The paper's two halves: AdvBench (refusals) and the tasks the LLM judge grades for accuracy (TriviaQA,
    TruthfulQA, Disinfo, MedQA); the regex-scored benchmarks (MMLU, GSM8K) are in neither (NaN)."""
    from ..core.config import REGEX_SCORED_DATASETS

    half = np.where(graded["dataset"] == REFUSAL_DATASET, "refusals", "tasks")
    return pd.Series(half, index=graded.index).where(~graded["dataset"].isin(REGEX_SCORED_DATASETS))


def annotation_sample(graded: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """About n responses, as the paper drew its 470: half from AdvBench, half from the four tasks, equal per task,
    and within each dataset spread evenly over models, personas, checkpoints, conditions and verdicts (not in
    proportion to their sizes). A half or a stratum too small for its share gives the rest to the others."""
    frame = graded.assign(annotation_id=annotation_ids(graded), _verdict=graded["verdict"].fillna("missing"),
                          _half=annotation_halves(graded)).dropna(subset=["_half"])
    levels = ["_half", "dataset", *(c for c in SPREAD_LEVELS if c in frame.columns)]
    codes = np.column_stack([pd.factorize(frame[c].astype(str), sort=True)[0] for c in levels])
    picked = _spread(codes, np.arange(len(frame)), n, np.random.default_rng(seed))
    sample = frame.iloc[sorted(picked)]
    sample = sample.sample(frac=1.0, random_state=seed)  # annotators should not see the strata in order
    return sample.assign(human_verdict="", notes="").reindex(columns=ANNOTATION_COLUMNS).reset_index(drop=True)


def _judge_columns(graded: pd.DataFrame) -> dict[str, str]:
    """Which columns hold each judge's final verdict: the reference judge always, the LLM judge when it ran."""
    if "llm_verdict" in graded.columns:
        return {"llm_judge": "verdict", "reference": "reference_verdict"}
    return {"reference": "verdict"}


def _compare(frame: pd.DataFrame, first: str, second: str, name: str):
    pairs = frame[["dataset", first, second]].dropna()
    agreement, confusion = [], []
    for dataset, group in [*pairs.groupby("dataset"), ("all", pairs)]:
        a, b = group[first].astype(str).to_numpy(), group[second].astype(str).to_numpy()
        agreement.append({"dataset": dataset, "comparison": name, "n": len(group),
                          "agreement": float(np.mean(a == b)) if len(group) else float("nan"),
                          "kappa": cohens_kappa(a, b)})
        counts = pd.crosstab(pd.Series(a, name="first"), pd.Series(b, name="second")).stack()
        confusion += [{"dataset": dataset, "comparison": name, "first": f, "second": s, "count": int(c)}
                      for (f, s), c in counts.items()]
    return agreement, confusion


def agreement_tables(graded: pd.DataFrame, annotations: pd.DataFrame | None = None):
    """(kappa table, confusion table): LLM judge vs reference on all rows; each judge vs humans."""
    judges = _judge_columns(graded)
    frame = graded.copy()
    comparisons = []
    if "llm_judge" in judges:  # both judges' own verdicts, where the regexes left them a response to judge
        comparisons.append(("llm_verdict", "reference_verdict", "llm_judge vs reference"))
    if annotations is not None and len(annotations):
        frame["annotation_id"] = annotation_ids(frame)
        unknown = set(annotations["annotation_id"]) - set(frame["annotation_id"])
        if unknown:
            log.warning("%d annotated ids match no graded response (from another run?)", len(unknown))
        frame = frame.merge(annotations, on="annotation_id", how="left")
        comparisons += [(column, "human_verdict", f"{name} vs human") for name, column in judges.items()]
    agreement, confusion = [], []
    for first, second, name in comparisons:
        rows = frame[~frame["refusal"].astype(bool)] if name == "llm_judge vs reference" else frame
        a, c = _compare(rows, first, second, name)
        agreement += a
        confusion += c
    return (pd.DataFrame(agreement, columns=AGREEMENT_COLUMNS), pd.DataFrame(confusion, columns=CONFUSION_COLUMNS))


def refusal_disagreements(graded: pd.DataFrame) -> pd.DataFrame:
    """Per model and dataset: refusals by the regexes, by the LLM judge's own call, and where only one says so.
    Every response counts, whichever way its verdict went."""
    if "judge_refusal" not in graded.columns or graded["judge_refusal"].isna().all():
        return pd.DataFrame(columns=DISAGREEMENT_COLUMNS)
    frame = graded.assign(regex=graded["refusal"].astype(bool), judge=graded["judge_refusal"].eq(True))
    rows = []
    for (model, dataset), group in frame.groupby(["model", "dataset"]):
        regex, judge = group["regex"], group["judge"]
        rows.append({"model": model, "dataset": dataset, "n": len(group), "regex_refusals": int(regex.sum()),
                     "judge_refusals": int(judge.sum()), "both": int((regex & judge).sum()),
                     "regex_only": int((regex & ~judge).sum()), "judge_only": int((~regex & judge).sum())})
    return pd.DataFrame(rows, columns=DISAGREEMENT_COLUMNS)


def run(smk) -> None:
    graded = pd.read_parquet(smk.input.graded)
    sample = annotation_sample(graded, smk.params.sample_size, smk.params.seed)
    write_table(smk.output.sample, sample)
    annotations = read_annotations(smk.input.annotations[0]) if smk.input.annotations else None
    agreement, confusion = agreement_tables(graded, annotations)
    write_table(smk.output.agreement, agreement)
    write_table(smk.output.confusion, confusion)
    write_table(smk.output.refusals, refusal_disagreements(graded))
    log.info("annotation sample: %d responses; %d human verdicts read; agreement:\n%s", len(sample),
             0 if annotations is None else len(annotations), agreement.to_string())
