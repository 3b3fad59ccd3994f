"""The LLM judge: one rubric per task, a two-way verdict and a separate refusal call, every call cached.

The judge is always named explicitly in config (`judge.backend.model`, e.g. gpt-4o-2024-08-06 at temperature
0, or a local model behind any OpenAI-compatible server); it never falls back to the evaluated model. Each
verdict records the snapshot that answered and its `system_fingerprint`.

The rubrics ask for `{"verdict": "CORRECT" | "INCORRECT", "declines": true | false}`: the paper's two-way
verdict, and apart from it whether the response declines to answer (kept as `judge_refusal`, a sensitivity
analysis; refusals that leave the analysis come from the regexes, as in the paper). Where the endpoint
supports structured outputs (OpenAI, vLLM's server) the request carries that JSON schema as `response_format`;
an endpoint that rejects it (HTTP 400/422 on the first request) is asked in plain text, and an endpoint that
ignores it (e.g. `transformers serve`) answers in free text: either way the reply goes through the text parser.
A verdict counts only as a declared JSON field or as a reply that is the verdict word alone: a negated or
ambiguous reply ("not CORRECT", "CORRECT or INCORRECT") is missing, asked again once with a reminder, then left
missing with the raw reply kept. An unparseable reply is never counted as INCORRECT.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ..core.llm import CallCache, Sampling, cached_chat

log = logging.getLogger(__name__)

VERDICTS = ("CORRECT", "INCORRECT")
THREE_WAY_REFUSAL = "REFUSAL"  # a custom three-way rubric's refusal: read as a refusal call with no verdict
VERDICT_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": list(VERDICTS)}, "declines": {"type": "boolean"}},
    "required": ["verdict", "declines"], "additionalProperties": False}}}
_JSON = re.compile(r"\{[^{}]*\}")
_BARE = re.compile(r"^[\s\"'`*_.!]*([A-Za-z]+)[\s\"'`*_.!]*$")  # the whole reply is one word
REMINDER = ('Reply with a JSON object and nothing else: {"verdict": "CORRECT", "declines": false}, with '
            '"verdict" either "CORRECT" or "INCORRECT" and "declines" true or false.')


def parse_judgement(text: str | None) -> tuple[str | None, bool | None]:
    """(verdict, declines) from declared JSON fields, or a reply that is a verdict word alone; None if unclear."""
    if not text:
        return None, None
    fields = []
    for blob in _JSON.findall(text):
        try:
            value = json.loads(blob)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and ("verdict" in value or "declines" in value):
            fields.append(value)
    if fields:
        verdicts = {str(f.get("verdict", "")).strip().upper() for f in fields if "verdict" in f}
        declines = {f["declines"] for f in fields if isinstance(f.get("declines"), bool)}
        if verdicts == {THREE_WAY_REFUSAL}:
            return None, True
        verdict = verdicts.pop() if len(verdicts) == 1 and verdicts <= set(VERDICTS) else None
        return verdict, (declines.pop() if len(declines) == 1 else None)
    bare = _BARE.match(text)
    word = bare.group(1).upper() if bare else None
    if word == THREE_WAY_REFUSAL:
        return None, True
    return (word if word in VERDICTS else None), None


def parse_verdict(text: str | None) -> str | None:
    """CORRECT / INCORRECT from a declared JSON field or a reply that is the word alone; None if unclear."""
    return parse_judgement(text)[0]


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


def accepts_response_format(backend, cache: CallCache, conversation, sampling: Sampling) -> tuple[bool, int]:
    """Ask the first request with the verdict schema: (False: ask in plain text) if the endpoint rejects it.
    Returns (accepted, calls made): the answer is cached like any other, so the probe is no extra call."""
    from openai import BadRequestError, UnprocessableEntityError

    try:
        return True, cached_chat(backend, cache, [conversation], sampling, response_format=VERDICT_FORMAT).calls
    except (BadRequestError, UnprocessableEntityError) as err:
        log.warning("%s rejected structured outputs (%s): asking in plain text", backend.identity["model"], err)
        return False, 0


def judge_with_llm(frame, rubrics: dict[str, str], backend, cache: CallCache, sampling: Sampling,
                   parse_retries: int = 1, prefill=None, structured: bool = True) -> dict[str, list]:
    """Verdict columns for every row of a generations table. `prefill(conversations, response_format)`, if
    given, answers uncached requests into the cache first (the OpenAI Batch API mode, whose requests carry
    the schema: OpenAI supports it); re-asks always go one by one. With `structured`, requests carry the
    verdict JSON schema where the endpoint accepts it."""
    rows = frame.to_dict("records")
    conversations = [[{"role": "user", "content": fill_rubric(rubrics[r["dataset"]], r)}] for r in rows]
    fmt, calls = (VERDICT_FORMAT if structured else None), 0
    if fmt is not None and rows and prefill is None:
        accepted, calls = accepts_response_format(backend, cache, conversations[0], sampling)
        fmt = fmt if accepted else None
    if prefill is not None:
        prefill(conversations, fmt)
    result = cached_chat(backend, cache, conversations, sampling, response_format=fmt)
    texts, replies, attempts = list(result.texts), list(result.replies), [1] * len(rows)
    calls += result.calls
    for _ in range(parse_retries):
        unclear = [i for i, t in enumerate(texts) if parse_verdict(t) is None]
        if not unclear:
            break
        retry = [conversations[i] + [{"role": "assistant", "content": texts[i]}, {"role": "user", "content": REMINDER}]
                 for i in unclear]
        again = cached_chat(backend, cache, retry, sampling, response_format=fmt)
        calls += again.calls
        for i, text, reply in zip(unclear, again.texts, again.replies):
            texts[i], replies[i], attempts[i] = text, reply, attempts[i] + 1
    judgements = [parse_judgement(t) for t in texts]
    verdicts = [v for v, _ in judgements]
    schema_json = sum(v is not None and d is not None for v, d in judgements)
    log.info("LLM judge %s: %d verdicts, %d missing after %d re-asks, %d calls made; structured outputs %s, "
             "%d replies had both schema fields", backend.identity["model"], len(rows),
             sum(v is None for v in verdicts), parse_retries, calls, "requested" if fmt else "not used", schema_json)
    return {
        "llm_verdict": verdicts,
        "judge_refusal": [d for _, d in judgements],
        "judge_model": [r.get("model") or backend.identity["model"] for r in replies],
        "judge_fingerprint": [r.get("system_fingerprint") for r in replies],
        "judge_raw": texts,
        "judge_attempts": attempts,
        "judge_structured": [fmt is not None] * len(rows),
        "judge_calls": calls,
    }
