"""The fields eval_prompts.normalize_item reads from each source schema, and the check of a record against them.

A module of its own, importing no other warmbench module: download checks a source against these as it reads it,
and config imports download, so these fields living in eval_prompts would make every stage's code hash (and so
every job) depend on eval_prompts (stage.code_hash).
"""
from __future__ import annotations

# The fields eval_prompts.normalize_item reads from each source schema: "a.b" is field b inside field a; a tuple names
# alternatives, one of which must be there (MedQA's `options` {letter: text} or `choices` [text]). The download
# rule checks a source against these as it reads it (warmbench.stages.download), so a renamed field is named there.
SOURCE_FIELDS = {
    "triviaqa": ("question", "question_id", "answer.value"),  # and incorrect_answer: the LLM writes it
    "truthfulqa": ("question", "best_answer", "correct_answers", "incorrect_answers"),
    "disinfo": ("task_id", "proposition", "ground_truth", "belief_elicit_1"),
    "medqa": ("question", "answer", ("options", "choices"), "answer_idx"),
    "mmlu": ("question", "subject", "choices", "answer"),
    "gsm8k": ("question", "answer"),
    "advbench": ("prompt",),  # `target` (AdvBench's compliant opening) when there is one
}


def _has(record: dict, dotted: str) -> bool:
    value = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def missing_fields(record: dict, keys) -> list[str]:
    """The fields of `keys` (SOURCE_FIELDS' notation) the record lacks."""
    return [" or ".join(k) if isinstance(k, tuple) else k for k in keys
            if not any(_has(record, name) for name in (k if isinstance(k, tuple) else (k,)))]
