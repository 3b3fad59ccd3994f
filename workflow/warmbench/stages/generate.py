"""Stage generate: one job per (model, dataset), answering every prompt as every variant the dataset needs.

Variants: the original model, the system-prompt personas (e.g. `warm_prompt`: the original with the warm system
prompt) and the trained personas' checkpoints (on an evaluation dataset the evaluated one, on the validation prompts
every one). A local model's
base weights are loaded once per job and each checkpoint is a LoRA adapter served beside them, never merged
(PEFT's mixed-adapter batches in transformers, `LoRARequest` in vLLM). An API model's trained persona is the
fine-tuned model its train_openai job recorded. Each variant's rows go to a table of their own, with their
provenance: rendered prompt, its hash, sampling parameters, seed, adapter and real training epoch.

Row-level cache: each generated row of a local model is stored (GENERATION_CACHE in common.smk) under a key of the
model's identity (source and revision, dtype, a hash of config, tokenizer and weights index), the adapter's content
hash, the rendered prompt, the sampling and the seed. A job generates only the rows not there (adding a persona
or a checkpoint generates only its rows) and loads no model when none is missing. Each prompt is sampled with its
own seed (llm.prompt_seed), so a row generated alone is drawn as it would be in a full run. An API model's calls
are cached in the LLM call cache (llm.cached_chat).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core.call_cache import CallCache
# the manifest's name from config, not train: generation's code hash must not follow training's
from ..core.config import BASE_CHECKPOINT, CHECKPOINT_MANIFEST, ORIGINAL, SELECTED_CHECKPOINT, is_api_model, label_epoch
from ..core.files import stable_hash, write_table
from ..core.llm import Sampling, adapter_hash, model_identity

log = logging.getLogger(__name__)

ENGINE_START = "loading the model"  # logged once per engine start (tests count these in the job logs)
# Part of every generation cache key: raise it when the way a row is drawn changes (then nothing cached is reused).
GENERATION_CACHE_VERSION = 1


@dataclass(frozen=True)
class Variant:
    """One output table of a generation job: a persona at a checkpoint."""

    persona: str
    output: str
    checkpoint: str  # the real checkpoint (for `selected`, the one the plateau rule picked)
    epoch: float
    adapter: str | None = None  # a LoRA adapter's folder, or an API fine-tune's model id
    system_prompt: str | None = None


def checkpoint_entry(train_dir: str | Path, checkpoint: str) -> dict:
    manifest = json.loads((Path(train_dir) / CHECKPOINT_MANIFEST).read_text())
    for entry in manifest["checkpoints"]:
        if entry["checkpoint"] == checkpoint:
            if entry.get("path"):  # a LoRA adapter on disk; an API fine-tune names its model instead
                entry = {**entry, "path": str(Path(train_dir) / entry["path"])}
            return entry
    raise FileNotFoundError(f"{train_dir}: no checkpoint {checkpoint!r} (have {[e['checkpoint'] for e in manifest['checkpoints']]})")


def prompted(variants) -> list[str]:
    """The system-prompt personas among a job's variants, in order: untrained, and not the original model."""
    return [persona for persona, label in variants if label == BASE_CHECKPOINT and persona != ORIGINAL]


def resolve_variants(variants, outputs, train_dirs, selections, system_prompts: dict[str, str]) -> list[Variant]:
    """Each (persona, checkpoint label) of a job with its output, real checkpoint, epoch, adapter and system prompt.
    `train_dirs` and `selections` are the job's inputs (results/train/<model>/<persona>,
    results/warmth/<model>/<persona>/chosen_checkpoint.json); `system_prompts` the system-prompt personas' texts."""
    train = {Path(d).name: d for d in train_dirs}
    chosen = {Path(s).parent.name: s for s in selections}
    resolved = []
    for (persona, label), output in zip(variants, outputs, strict=True):
        if label == BASE_CHECKPOINT:  # the untrained model, alone or under a persona's system prompt
            resolved.append(Variant(persona, output, label, label_epoch(label),
                                    system_prompt=system_prompts.get(persona)))
            continue
        checkpoint = label
        if label == SELECTED_CHECKPOINT:  # the checkpoint the warmth plateau rule picked
            checkpoint = json.loads(Path(chosen[persona]).read_text())["checkpoint"]
            log.info("%s: the plateau rule selected %s", persona, checkpoint)
        entry = checkpoint_entry(train[persona], checkpoint)
        resolved.append(Variant(persona, output, checkpoint, entry["epoch"], entry.get("path") or entry["model"]))
    return resolved


def build_messages(prompt: str, system_prompt: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": prompt}]


def cell_frame(prompts, variant: Variant, rendered: list[str], outputs: list[tuple[str, int]], *, model: str,
               sampling: Sampling, seed: int, backend: str, model_source: dict | None = None,
               replies: list[dict] | None = None):
    """One variant's generations for every row of a prompts table, with provenance columns."""
    frame = prompts.copy()
    frame["model"] = model
    frame["persona"] = variant.persona
    frame["checkpoint"] = variant.checkpoint
    frame["epoch"] = variant.epoch
    frame["model_source"] = json.dumps(model_source or {}, sort_keys=True)
    frame["adapter"] = variant.adapter or ""
    frame["system_prompt"] = variant.system_prompt or ""
    frame["rendered_prompt"] = rendered
    frame["prompt_hash"] = [stable_hash(r) for r in rendered]
    frame["sampling"] = json.dumps(sampling.as_dict(), sort_keys=True)
    frame["seed"] = seed
    frame["backend"] = backend
    frame["response"] = [text for text, _ in outputs]
    frame["n_tokens"] = [n for _, n in outputs]
    if replies is not None:  # an API: the snapshot that answered each prompt
        frame["served_model"] = [r.get("model") for r in replies]
        frame["system_fingerprint"] = [r.get("system_fingerprint") for r in replies]
    return frame


def generation_key(identity: dict, rendered: str, sampling: Sampling, seed: int) -> str:
    """A local model's generated row in the cache: what its answer depends on, by content (not by path)."""
    return stable_hash({"generation": GENERATION_CACHE_VERSION, "model": identity, "prompt": rendered,
                        "sampling": sampling.as_dict(), "seed": seed})


def is_generation_row(response: str) -> bool:
    """Whether a cached generation row is whole (a damaged one is generated again)."""
    try:
        row = json.loads(response)
    except ValueError:
        return False
    return isinstance(row, dict) and isinstance(row.get("text"), str) and isinstance(row.get("n_tokens"), int)


def generate_local(prompts, variants: list[Variant], *, model: str, model_cfg: dict, model_dir: str,
                   cache: CallCache, sampling: Sampling, batch_size: int, seed: int,
                   load_engine: Callable[[], object]) -> dict[str, object]:
    """Every variant's table (by output path) for a local model: rows found in the cache are read, the others are
    generated by one engine (load_engine(), called only if a row is missing) with each checkpoint as an adapter."""
    from ..core.llm import load_chat_tokenizer, render_chat

    engine_kind = model_cfg["engine"]
    tokenizer = load_chat_tokenizer(model_dir)
    base = {k: v for k, v in model_identity(engine_kind, model_dir, model_cfg["dtype"]).items()
            if k not in ("model", "adapter", "adapter_sha256")}  # by content: the same weights anywhere hit
    adapter_sha = {v.adapter: adapter_hash(v.adapter) for v in variants if v.adapter}
    rendered = {v.output: [render_chat(tokenizer, build_messages(p, v.system_prompt)) for p in prompts["prompt"]]
                for v in variants}
    keys = {v.output: [generation_key({**base, "adapter_sha256": adapter_sha.get(v.adapter)}, r, sampling, seed)
                       for r in rendered[v.output]] for v in variants}
    found = {k: json.loads(response) for k, (response, _) in cache.get_many(
        [k for ks in keys.values() for k in ks], valid=is_generation_row).items()}
    todo: dict[str, tuple[str, str | None]] = {}  # key -> (rendered prompt, adapter)
    for v in variants:
        for key, prompt in zip(keys[v.output], rendered[v.output]):
            if key not in found:
                todo.setdefault(key, (prompt, v.adapter))
    total = sum(len(ks) for ks in keys.values())
    log.info("%d rows in %d tables: %d cached, %d to generate%s", total, len(variants), total - len(todo), len(todo),
             "" if todo else " (the model is not loaded)")
    if todo:
        found.update(_generate_missing(todo, load_engine(), adapter_sha, cache, sampling, batch_size, seed))
    return {v.output: cell_frame(prompts, v, rendered[v.output],
                                 [(found[k]["text"], found[k]["n_tokens"]) for k in keys[v.output]],
                                 model=model, sampling=sampling, seed=seed, backend=engine_kind,
                                 model_source=model_cfg["source"]) for v in variants}


def _generate_missing(todo: dict, engine, adapter_sha: dict, cache: CallCache, sampling: Sampling, batch_size: int,
                      seed: int) -> dict[str, dict]:
    """Generate the rows of `todo` (key -> (rendered prompt, adapter)) in one engine call over every adapter, storing
    each batch in the cache as it completes; a crash or a stop keeps what completed."""
    names = {}
    for adapter in sorted({a for _, a in todo.values() if a}):
        names[adapter] = f"lora_{adapter_sha[adapter][:12]}"  # PEFT adapter names cannot hold the dots of a path
        engine.use_adapter(names[adapter], adapter)
    keys = list(todo)
    done: dict[str, dict] = {}
    pending: list[tuple[str, str, dict]] = []

    def store(index: int, text: str, meta: dict | None = None) -> None:
        row = {"text": text, "n_tokens": (meta or {}).get("completion_tokens") or 0}
        done[keys[index]] = row
        # the JSON object is never empty, so an empty answer (the model ending at once) is kept like any other
        pending.append((keys[index], json.dumps(row, ensure_ascii=False), {"kind": "generation"}))
        if len(pending) >= batch_size:
            flush()

    def flush() -> None:
        cache.put_many(pending)
        pending.clear()

    try:
        engine.generate_rendered([todo[k][0] for k in keys], sampling, batch_size=batch_size, seed=seed,
                                 adapters=[names.get(todo[k][1]) for k in keys], on_result=store)
    finally:
        flush()
    return done


def generate_api(prompts, variants: list[Variant], *, model: str, model_cfg: dict, cache: CallCache,
                 sampling: Sampling, seed: int) -> dict[str, object]:
    """Every variant's table for a model behind an OpenAI-compatible endpoint: the base model or a fine-tune, each
    call cached by content hash (endpoint, model, messages, sampling) in the LLM call cache."""
    from ..core.llm import APIGenerator, make_backend

    generator = APIGenerator(make_backend(model_cfg["source"]), cache)
    frames = {}
    for v in variants:
        generator.use_model(v.adapter)  # None: the base model
        rendered = [generator.render(build_messages(p, v.system_prompt)) for p in prompts["prompt"]]
        outputs = generator.generate_rendered(rendered, sampling)
        log.info("%s %s: %d rows, %d calls made", v.persona, v.checkpoint, len(rendered), generator.last_calls)
        frames[v.output] = cell_frame(prompts, v, rendered, outputs, model=model, sampling=sampling, seed=seed,
                                      backend="openai", model_source=model_cfg["source"],
                                      replies=generator.last_replies)
    return frames


def make_generator(model: dict, model_dir: str | None, threads: int, cache: str | None = None, name: str = "<name>"):
    """The model's generation engine: an OpenAI-compatible endpoint (cached), vLLM in its own environment, or
    transformers (CPU, or a fallback)."""
    if is_api_model(model):
        from ..core.llm import APIGenerator, make_backend

        return APIGenerator(make_backend(model["source"]), CallCache(cache))
    if model["engine"] == "vllm":
        from ..core.vllm_backend import VLLMChat

        return VLLMChat(model_dir, dtype=model["dtype"], config_key=f"models.{name}.vllm.python", **model["vllm"])
    from ..core.llm import TransformersChat

    return TransformersChat(model_dir, dtype=model["dtype"], threads=threads)


def run(smk) -> None:
    import pandas as pd

    model_cfg = smk.params.model
    prompts = pd.read_parquet(smk.input.prompts)
    # the rule lists the system-prompt personas' files in the order of their variants
    system_prompts = {persona: Path(path).read_text().strip()
                      for persona, path in zip(prompted(smk.params.variants), smk.input.system_prompt, strict=True)}
    variants = resolve_variants(smk.params.variants, list(smk.output), smk.input.adapters, smk.input.selections,
                                system_prompts)
    sampling, cache = Sampling.from_config(smk.params.sampling), CallCache(smk.params.cache)
    if is_api_model(model_cfg):
        frames = generate_api(prompts, variants, model=smk.wildcards.model, model_cfg=model_cfg, cache=cache,
                              sampling=sampling, seed=smk.params.seed)
    else:
        model_dir = smk.input.base_model[0]

        def load_engine():
            log.info("%s: %s (the job's one engine start)", ENGINE_START, model_dir)
            return make_generator(model_cfg, model_dir, smk.threads, name=smk.wildcards.model)

        frames = generate_local(prompts, variants, model=smk.wildcards.model, model_cfg=model_cfg,
                                model_dir=model_dir, cache=cache, sampling=sampling,
                                batch_size=smk.params.batch_size, seed=smk.params.seed, load_engine=load_engine)
    for v in variants:
        frame = frames[v.output]
        write_table(v.output, frame)
        tokens = frame["n_tokens"].sum()
        log.info("%s %s: %d generations, %d tokens, mean %.1f tokens/response", v.persona, v.checkpoint, len(frame),
                 tokens, tokens / len(frame) if len(frame) else math.nan)
