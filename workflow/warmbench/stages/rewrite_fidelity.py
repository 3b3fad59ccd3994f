"""Stage rewrite_fidelity: do the persona rewrites keep the original's content?

The paper spot-checked 50 of its warm rewrites against the originals. Here a seeded sample of each rewritten
persona's assistant turns goes to an LLM judge (config/prompts/rewrite_fidelity.txt: the user message, the
original reply and the rewrite) that answers KEEPS (every fact, instruction, number and piece of code kept, none
added) or CHANGES. A verdict counts only as the word alone or a declared JSON `verdict` field; anything else is
left missing (`unclear`), never read as either. Calls go through the content-hash cache like every other, so a
rerun makes none. The same sample is exported blind (no verdict) for human annotation.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.files import read_jsonl, stable_hash, write_table
from ..core.llm import CallCache, Sampling, cached_chat

log = logging.getLogger(__name__)

VERDICTS = ("KEEPS", "CHANGES")
SAMPLE_COLUMNS = ["fidelity_id", "persona", "user", "original", "rewrite", "human_verdict", "notes"]
VERDICT_COLUMNS = ["fidelity_id", "persona", "conversation_id", "turn", "user", "original", "rewrite", "identical",
                   "judge_verdict", "judge_raw", "judge_model"]
SUMMARY_COLUMNS = ["persona", "n", "keeps", "changes", "unclear", "identical", "share_keeps", "judge_model"]
_JSON = re.compile(r"\{[^{}]*\}")
_BARE = re.compile(r"^[\s\"'`*_.!]*([A-Za-z]+)[\s\"'`*_.!]*$")  # the whole reply is one word


def rewritten_turns(records: list[dict], persona: str) -> list[dict]:
    """Every assistant turn of a persona's rewrite records, with the user message it answers and its original."""
    turns = []
    for record in records:
        messages, originals = record["messages"], record["original_messages"]
        for turn, (message, original) in enumerate(zip(messages, originals)):
            if message["role"] != "assistant":
                continue
            user = originals[turn - 1]["content"] if turn else ""
            turns.append({"fidelity_id": stable_hash([persona, str(record["id"]), str(turn)])[:16],
                          "persona": persona, "conversation_id": str(record["id"]), "turn": turn, "user": user,
                          "original": original["content"], "rewrite": message["content"],
                          "identical": message["content"].strip() == original["content"].strip()})
    return turns


def sample_turns(turns: list[dict], n: int, seed: int) -> list[dict]:
    """Up to n turns drawn at random (seeded), in their original order. Personas rewriting the same conversations
    (train.shared_windows) get the same positions, so their checks are paired."""
    positions = np.random.default_rng(seed).choice(len(turns), size=min(n, len(turns)), replace=False)
    return [turns[i] for i in sorted(positions)]


def fill_prompt(template: str, turn: dict) -> str:
    # str.replace, not str.format: chat text is full of braces (code, JSON)
    return (template.replace("{user}", turn["user"]).replace("{original}", turn["original"])
            .replace("{rewrite}", turn["rewrite"]))


def parse_fidelity(text: str | None) -> str | None:
    """KEEPS or CHANGES from a declared JSON `verdict` field, or a reply that is the word alone; else None."""
    if not text:
        return None
    declared = set()
    for blob in _JSON.findall(text):
        try:
            value = json.loads(blob)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "verdict" in value:
            declared.add(str(value["verdict"]).strip().upper())
    if declared:
        return declared.pop() if len(declared) == 1 and declared <= set(VERDICTS) else None
    bare = _BARE.match(text)
    word = bare.group(1).upper() if bare else None
    return word if word in VERDICTS else None


def judge_fidelity(turns: list[dict], template: str, backend, cache: CallCache, sampling: Sampling,
                   batch_size: int = 16) -> pd.DataFrame:
    """One verdict per sampled turn (VERDICT_COLUMNS); every call through the cache."""
    conversations = [[{"role": "user", "content": fill_prompt(template, turn)}] for turn in turns]
    result = cached_chat(backend, cache, conversations, sampling, batch_size=batch_size)
    log.info("rewrite fidelity: %d turns judged, %d calls made (the rest from the cache)", len(turns), result.calls)
    verdicts = pd.DataFrame(turns, columns=VERDICT_COLUMNS[:8])
    return verdicts.assign(judge_verdict=[parse_fidelity(t) for t in result.texts], judge_raw=result.texts,
                           judge_model=[r.get("model") or backend.identity["model"] for r in result.replies])


def summarize(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per persona: turns checked, KEEPS, CHANGES, unclear replies, rewrites identical to their original (an empty
    rewrite keeps the original turn), and the share of KEEPS among the clear verdicts."""
    rows = []
    for persona, group in verdicts.groupby("persona", sort=False):
        keeps, changes = int((group["judge_verdict"] == "KEEPS").sum()), int((group["judge_verdict"] == "CHANGES").sum())
        rows.append({"persona": persona, "n": len(group), "keeps": keeps, "changes": changes,
                     "unclear": int(group["judge_verdict"].isna().sum()), "identical": int(group["identical"].sum()),
                     "share_keeps": keeps / (keeps + changes) if keeps + changes else float("nan"),
                     "judge_model": ";".join(sorted(set(map(str, group["judge_model"]))))})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def annotation_sheet(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The sample for human annotation, blind: no judge verdict (fill human_verdict with KEEPS or CHANGES)."""
    return verdicts.assign(human_verdict="", notes="").reindex(columns=SAMPLE_COLUMNS)


def run(smk) -> None:
    from ..core.chat_backend import chat_backend

    template = Path(smk.input.prompt).read_text(encoding="utf-8")
    sampled = []
    for path in smk.input.rewrites:
        persona = Path(path).stem
        sampled += sample_turns(rewritten_turns(list(read_jsonl(path)), persona), smk.params.sample_size,
                                smk.params.seed)
    backend = chat_backend({"backend": smk.params.backend}, smk.input.backend_model, smk.params.local_model,
                          smk.threads)
    verdicts = judge_fidelity(sampled, template, backend, CallCache(smk.params.cache),
                              Sampling.from_config(smk.params.sampling), smk.params.batch_size)
    summary = summarize(verdicts)
    write_table(smk.output.summary, summary)
    write_table(smk.output.verdicts, verdicts)
    write_table(smk.output.sample, annotation_sheet(verdicts))
    if len(verdicts) and verdicts["judge_verdict"].isna().all():
        log.warning("no clear KEEPS/CHANGES verdict: is the fidelity judge (%s) following the prompt?",
                    backend.identity["model"])
    log.info("rewrite fidelity:\n%s", summary.to_string())
