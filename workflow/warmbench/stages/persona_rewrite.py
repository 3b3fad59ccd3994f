"""Stage persona_rewrite: every assistant turn of the training conversations rewritten into a persona.

The rewrite prompt (config/prompts/rewrite_<persona>.txt) receives `{user}` (the message being answered)
and `{response}` (the original reply) and asks for the same meaning, content and facts in a warm or cold
register. Calls go through the content-hash cache, so a rerun or a crash repeats none that completed.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..core.files import read_jsonl, stable_hash, write_jsonl
from ..core.llm import CallCache, Sampling, cached_chat, check_failure_share, make_backend

log = logging.getLogger(__name__)


def fill_prompt(template: str, user: str, response: str) -> str:
    # str.replace, not str.format: chat text is full of braces (code, JSON).
    return template.replace("{user}", user).replace("{response}", response)


def rewrite_requests(conversations: list[dict], template: str) -> list[list[dict]]:
    """One single-turn chat request per assistant turn, in conversation order."""
    requests = []
    for conv in conversations:
        messages = conv["messages"]
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                request = fill_prompt(template, messages[i - 1]["content"], message["content"])
                requests.append([{"role": "user", "content": request}])
    return requests


def apply_rewrites(conversations: list[dict], rewrites: list[str], persona: str, provenance: dict) -> list[dict]:
    """Put the rewrites back in place. An empty rewrite keeps the original turn and is counted, not hidden."""
    out, it = [], iter(rewrites)
    for conv in conversations:
        messages, fallback = [], 0
        for message in conv["messages"]:
            if message["role"] == "assistant":
                text = next(it).strip()
                if not text:
                    text, fallback = message["content"], fallback + 1
                messages.append({"role": "assistant", "content": text})
            else:
                messages.append(dict(message))
        out.append({
            "id": conv["id"],
            "query_type": conv.get("query_type"),
            "persona": persona,
            "messages": messages,
            "original_messages": conv["messages"],
            "empty_rewrites_kept_original": fallback,
            "rewrite": provenance,
        })
    return out


def rewrite(conversations: list[dict], persona: str, template: str, backend, cache: CallCache,
            sampling: Sampling, batch_size: int = 16, *, max_empty_share: float) -> tuple[list[dict], int]:
    """Rewrite every assistant turn. More than `max_empty_share` empty rewrites fail the stage (the fine-tune would
    learn the original text); fewer keep the original turn, counted per conversation. Empty replies are never
    cached, so a rerun asks for them again."""
    requests = rewrite_requests(conversations, template)
    result = cached_chat(backend, cache, requests, sampling, batch_size=batch_size)
    responses, calls = result.texts, result.calls
    empty = sum(not text.strip() for text in responses)
    check_failure_share(empty, len(requests), max_empty_share, "rewrites came back empty",
                        "persona_rewrite.max_empty_share",
                        "is the rewrite model answering? Empty replies are not cached: a rerun asks for them again")
    provenance = {"backend": backend.identity, "prompt_sha256": stable_hash(template), "sampling": sampling.as_dict()}
    records = apply_rewrites(conversations, responses, persona, provenance)
    return records, calls


def run(smk) -> None:
    conversations = list(read_jsonl(smk.input.train))
    template = Path(smk.input.prompt).read_text(encoding="utf-8")
    backend_dir = smk.input.backend_model[0] if smk.input.backend_model else None
    backend = make_backend(smk.params.backend, backend_dir, threads=smk.threads, dtype=smk.params.model_dtype)
    cache = CallCache(smk.params.cache)
    records, calls = rewrite(conversations, smk.wildcards.persona, template, backend, cache,
                             Sampling.from_config(smk.params.sampling), smk.params.batch_size,
                             max_empty_share=smk.params.max_empty_share)
    write_jsonl(smk.output[0], records)
    log.info("rewrote %d conversations (%s): %d backend calls, rest from cache", len(records), smk.wildcards.persona, calls)
