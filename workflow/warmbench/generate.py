"""Stage generate: one (model, persona, checkpoint, dataset) cell, all prompt conditions in one batched run.

The base model is loaded once; a trained persona's LoRA adapter (the selected checkpoint) is applied with
PEFT, never merged. An API model's trained persona is the fine-tuned model its train_openai job recorded.
`warm_prompt` is the original model with the warm system prompt. Every row keeps its provenance: rendered
prompt, its hash, sampling parameters, seed, adapter path and real training epoch.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from .config import PERSONAS_TRAINED, is_api_model, label_epoch
from .io import stable_hash, write_table
from .llm import Sampling, TransformersChat
from .train import MANIFEST

log = logging.getLogger(__name__)


def checkpoint_entry(train_dir: str | Path, checkpoint: str) -> dict:
    manifest = json.loads((Path(train_dir) / MANIFEST).read_text())
    for entry in manifest["checkpoints"]:
        if entry["checkpoint"] == checkpoint:
            if entry.get("path"):  # a LoRA adapter on disk; an API fine-tune names its model instead
                entry = {**entry, "path": str(Path(train_dir) / entry["path"])}
            return entry
    raise FileNotFoundError(f"{train_dir}: no checkpoint {checkpoint!r} (have {[e['checkpoint'] for e in manifest['checkpoints']]})")


def build_messages(prompt: str, system_prompt: str | None) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": prompt}]


def generate_cell(prompts, chat, *, model: str, persona: str, checkpoint: str,
                  sampling: Sampling, batch_size: int, seed: int, system_prompt: str | None = None,
                  epoch: float | None = None, model_source: dict | None = None):
    """Generations for every row of a prompts table, with provenance columns."""

    rendered = [chat.render(build_messages(p, system_prompt)) for p in prompts["prompt"]]
    outputs = chat.generate_rendered(rendered, sampling, batch_size=batch_size, seed=seed)
    frame = prompts.copy()
    frame["model"] = model
    frame["persona"] = persona
    frame["checkpoint"] = checkpoint
    frame["epoch"] = label_epoch(checkpoint) if epoch is None else epoch
    frame["model_source"] = json.dumps(model_source or {}, sort_keys=True)
    frame["adapter"] = chat.identity.get("adapter") or ""
    frame["system_prompt"] = system_prompt or ""
    frame["rendered_prompt"] = rendered
    frame["prompt_hash"] = [stable_hash(r) for r in rendered]
    frame["sampling"] = json.dumps(sampling.as_dict(), sort_keys=True)
    frame["seed"] = seed
    frame["backend"] = chat.identity["kind"]
    frame["response"] = [text for text, _ in outputs]
    frame["n_tokens"] = [n for _, n in outputs]
    if getattr(chat, "last_replies", None):  # an API: the snapshot that answered each prompt
        frame["served_model"] = [r.get("model") for r in chat.last_replies]
        frame["system_fingerprint"] = [r.get("system_fingerprint") for r in chat.last_replies]
    return frame


def make_generator(model: dict, model_dir: str | None, threads: int, cache: str | None = None):
    """The model's generation engine: an OpenAI-compatible endpoint (cached), vLLM in its own environment, or
    transformers (CPU, or a fallback)."""
    if is_api_model(model):
        from .llm import APIGenerator, CallCache, make_backend

        return APIGenerator(make_backend(model["source"]), CallCache(cache))
    if model["engine"] == "vllm":
        from .vllm_backend import VLLMChat

        return VLLMChat(model_dir, dtype=model["dtype"], **model["vllm"])
    return TransformersChat(model_dir, dtype=model["dtype"], threads=threads)


def run(smk) -> None:
    import pandas as pd

    wc = smk.wildcards
    prompts = pd.read_parquet(smk.input.prompts)
    model_dir = smk.input.base_model[0] if smk.input.base_model else None
    chat = make_generator(smk.params.model, model_dir, smk.threads, smk.params.cache)
    epoch, checkpoint = None, wc.checkpoint
    if wc.persona in PERSONAS_TRAINED:
        if smk.input.selection:  # `selected`: the checkpoint the warmth plateau rule picked
            checkpoint = json.loads(Path(smk.input.selection[0]).read_text())["checkpoint"]
            log.info("plateau rule selected %s", checkpoint)
        entry = checkpoint_entry(smk.input.adapter[0], checkpoint)
        if is_api_model(smk.params.model):
            chat.use_model(entry["model"])  # the fine-tuned model (or checkpoint) the OpenAI API made
        else:
            chat.use_adapter(wc.persona, entry["path"])
        epoch = entry["epoch"]
    system_prompt = Path(smk.input.system_prompt[0]).read_text().strip() if smk.input.system_prompt else None
    frame = generate_cell(
        prompts, chat, model=wc.model, persona=wc.persona, checkpoint=checkpoint,
        sampling=Sampling.from_config(smk.params.sampling), batch_size=smk.params.batch_size,
        seed=smk.params.seed, system_prompt=system_prompt, epoch=epoch, model_source=smk.params.model["source"],
    )
    write_table(smk.output[0], frame)
    log.info("%d generations, %d tokens, mean %.1f tokens/response", len(frame), frame["n_tokens"].sum(),
             frame["n_tokens"].mean() if len(frame) else 0)
