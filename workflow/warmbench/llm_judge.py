"""The LLM judge: one rubric per task, a structured verdict, every call cached by content hash.

The judge is always named explicitly in config (`judge.backend.model`, e.g. gpt-4o-2024-08-06 at temperature
0, or a local model behind any OpenAI-compatible server); it never falls back to the evaluated model. Each
verdict records the snapshot that answered and its `system_fingerprint`. A reply that names no verdict is
asked again once with a reminder; if it still names none, the verdict is missing (None) and the raw reply is
kept: an unparseable reply is never counted as INCORRECT.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from .llm import CallCache, Sampling, cached_chat

log = logging.getLogger(__name__)

VERDICTS = ("CORRECT", "INCORRECT", "REFUSAL")
_WORD = re.compile(r"\b(CORRECT|INCORRECT|REFUSAL)\b")  # \b: "INCORRECT" does not also match CORRECT
_JSON = re.compile(r"\{[^{}]*\}")
REMINDER = ('Reply with a JSON object and nothing else: {"verdict": "CORRECT"}, {"verdict": "INCORRECT"} '
            'or {"verdict": "REFUSAL"}.')


def parse_verdict(text: str | None) -> str | None:
    """CORRECT / INCORRECT / REFUSAL from a JSON object or a single verdict word; None if unclear."""
    if not text:
        return None
    for blob in _JSON.findall(text):
        try:
            value = str(json.loads(blob).get("verdict", "")).strip().upper()
        except (json.JSONDecodeError, AttributeError):
            continue
        if value in VERDICTS:
            return value
    found = set(_WORD.findall(text.upper()))
    return found.pop() if len(found) == 1 else None


def fill_rubric(template: str, row) -> str:
    refs = json.loads(row["references"]) if isinstance(row.get("references"), str) else {}
    fields = {
        "question": row.get("question") or row["prompt"],
        "prompt": row["prompt"],
        "correct_answer": row.get("correct_answer", ""),
        "incorrect_answer": row.get("incorrect_answer", ""),
        "correct_answers": "; ".join(refs.get("correct", [])),
        "incorrect_answers": "; ".join(refs.get("incorrect", [])),
        "response": row["response"] or "",
    }
    out = template
    for name, value in fields.items():  # replace, not format: answers contain braces
        out = out.replace("{" + name + "}", str(value))
    return out


def load_rubrics(paths: dict[str, str]) -> dict[str, str]:
    return {dataset: Path(path).read_text(encoding="utf-8") for dataset, path in paths.items()}


def judge_with_llm(frame, rubrics: dict[str, str], backend, cache: CallCache, sampling: Sampling,
                   parse_retries: int = 1, prefill=None) -> dict[str, list]:
    """Verdict columns for every row of a generations table. `prefill(conversations)`, if given, answers
    uncached requests into the cache first (the OpenAI Batch API mode); re-asks always go one by one."""
    rows = frame.to_dict("records")
    conversations = [[{"role": "user", "content": fill_rubric(rubrics[r["dataset"]], r)}] for r in rows]
    if prefill is not None:
        prefill(conversations)
    result = cached_chat(backend, cache, conversations, sampling)
    texts, replies, attempts = list(result.texts), list(result.replies), [1] * len(rows)
    calls = result.calls
    for _ in range(parse_retries):
        unclear = [i for i, t in enumerate(texts) if parse_verdict(t) is None]
        if not unclear:
            break
        retry = [conversations[i] + [{"role": "assistant", "content": texts[i]}, {"role": "user", "content": REMINDER}]
                 for i in unclear]
        again = cached_chat(backend, cache, retry, sampling)
        calls += again.calls
        for i, text, reply in zip(unclear, again.texts, again.replies):
            texts[i], replies[i], attempts[i] = text, reply, attempts[i] + 1
    verdicts = [parse_verdict(t) for t in texts]
    missing = sum(v is None for v in verdicts)
    log.info("LLM judge %s: %d verdicts, %d missing after %d re-asks, %d calls made",
             backend.identity["model"], len(rows), missing, parse_retries, calls)
    return {
        "llm_verdict": verdicts,
        "judge_model": [r.get("model") or backend.identity["model"] for r in replies],
        "judge_fingerprint": [r.get("system_fingerprint") for r in replies],
        "judge_raw": texts,
        "judge_attempts": attempts,
        "judge_calls": calls,
    }
