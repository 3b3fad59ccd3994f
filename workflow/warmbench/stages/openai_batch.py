"""OpenAI Batch API mode for the LLM judge (`judge.batch_api`): full re-judges at half the price.

Every request not yet in the call cache goes into one batch file (custom_id = its cache key); the answers are
written into the same cache, so the judge then reads them exactly as if they had been asked one by one. The
batch id is saved beside the cache the moment the API returns it, before any polling: a killed or restarted
job polls the same batch, and a batch created but not yet recorded is found again by its `warmbench_key`
metadata. Requests the batch could not answer stay uncached and are asked the ordinary way afterwards.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ..core.files import State, stable_hash
from ..core.llm import CallCache, OpenAIChat, Sampling

log = logging.getLogger(__name__)
ENDPOINT = "/v1/chat/completions"
ENDED = ("completed", "failed", "expired", "cancelled")
UNUSABLE = ("failed", "expired", "cancelled")  # ended without every answer: never resumed


def batch_lines(chat: OpenAIChat, requests: dict[str, list[dict]], sampling: Sampling,
                response_format: dict | None = None) -> bytes:
    """The batch input file: one chat-completion request per cache key."""
    return "".join(json.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT,
                               "body": chat.request_body(messages, sampling, response_format)},
                              ensure_ascii=False) + "\n"
                   for key, messages in requests.items()).encode("utf-8")


def _find_by_tag(client, key: str) -> str | None:
    for batch in client.batches.list(limit=100):
        if (batch.metadata or {}).get("warmbench_key") == key and batch.status not in UNUSABLE:
            return batch.id
    return None


def prefill_cache(chat: OpenAIChat, cache: CallCache, conversations, sampling: Sampling, state_dir: str | Path,
                  poll_s: float = 60, response_format: dict | None = None) -> int:
    """Answer the uncached conversations through one OpenAI batch and store the answers; returns how many."""
    keys = [cache.key(chat.identity, messages, sampling, response_format) for messages in conversations]
    cached = cache.get_many(keys)  # one pass over the cache, not one per request
    requests = {}
    for key, messages in zip(keys, conversations):
        if key not in requests and key not in cached:
            requests[key] = messages
    if not requests:
        log.info("batch: every request is cached already")
        return 0
    tag = stable_hash(sorted(requests))
    state = State(Path(state_dir) / f"{tag}.json")
    client = chat.client
    if "batch" not in state.data:
        found = _find_by_tag(client, tag)
        if found is None:
            data = batch_lines(chat, requests, sampling, response_format)
            file_id = client.files.create(file=(f"warmbench-judge-{tag[:12]}.jsonl", data), purpose="batch").id
            found = client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h",
                                          metadata={"warmbench_key": tag}).id
            log.info("batch %s created: %d requests", found, len(requests))
        state.data["batch"] = found
        state.save()
    batch_id = state.data["batch"]
    status = None
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status != status:
            status = batch.status
            log.info("batch %s: %s %s", batch_id, status, batch.request_counts)
        if status in ENDED:
            break
        time.sleep(poll_s)
    if status in UNUSABLE:
        del state.data["batch"]  # over: a rerun batches what is still unanswered anew
        state.save()
    if status == "failed":
        errors = getattr(batch.errors, "data", None) or []
        raise RuntimeError(f"OpenAI batch {batch_id} failed: {'; '.join(e.message for e in errors) or 'no reason given'}")
    stored = 0
    if batch.output_file_id:  # an expired batch still returns what it finished
        for line in client.files.content(batch.output_file_id).text.splitlines():
            result = json.loads(line)
            response = result.get("response") or {}
            if result.get("custom_id") in requests and response.get("status_code") == 200:
                text, reply = chat.answer(response["body"])
                cache.put(result["custom_id"], text, {"backend": chat.identity, "sampling": sampling.as_dict(),
                                                      "reply": reply, "batch": batch_id,
                                                      **({"response_format": response_format} if response_format else {})})
                stored += 1
    log.info("batch %s %s: %d of %d answers stored; the rest are asked one by one", batch_id, status, stored,
             len(requests))
    return stored
