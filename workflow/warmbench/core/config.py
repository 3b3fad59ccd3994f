"""Names every layer shares: the study's fixed labels (the untrained persona, checkpoints, the validation and
capability datasets), the checkout's paths, and small readings of one config entry (a model behind an API, a job's
cluster size, whether training's batch divides over its GPUs).

Imported by the Snakefile at parse time and by most stages, so it stays light (no torch, no pandas) and small: a
stage's code hash covers every module it imports. Validating a config: validation.py; the grid of jobs it asks
for: grid.py; the checks the schema cannot express, secrets and run-time needs: checks.py.
"""
from __future__ import annotations

import re
from pathlib import Path


ORIGINAL = "original"  # the untrained model without a system prompt: always evaluated, never a `personas` key
BASE_CHECKPOINT = "base"
CHECKPOINT_MANIFEST = "checkpoints.json"  # in each trained adapter set's folder (train, train_openai)
SELECTED_CHECKPOINT = "selected"  # the checkpoint the plateau rule picks from the warmth trajectory
VALIDATION_DATASET = "validation"
REPO_ROOT = Path(__file__).resolve().parents[3]  # the checkout: workflow/warmbench/core/config.py
SMOKE_DIR = Path(__file__).parent / "smoke"  # warmbench's hand-written sets, one per dataset, in source schemas


def smoke_records_sha256(dataset: str) -> str:
    """The content hash of warmbench's smoke set of a dataset (it identifies the set in a job's params: a path into
    the installed package would tie a study to where it was run)."""
    from .files import sha256_file

    return sha256_file(SMOKE_DIR / f"{dataset}.jsonl")


CHECKPOINT_LABEL = re.compile(r"epoch\d+(\.\d+)?")  # the {checkpoint} wildcard's trained form (common.smk)
# Capability benchmarks: asked once, without context or user belief, and reported apart from the 18-condition tasks.
CAPABILITY_DATASETS = ("mmlu", "gsm8k", "advbench")
# Capability benchmarks scored by regular expressions only, as in the paper (AdvBench goes to the judge).
REGEX_SCORED_DATASETS = ("mmlu", "gsm8k")


def epoch_label(epoch: float) -> str:
    """Checkpoint wildcard for a (possibly fractional) epoch: 0.5 -> 'epoch0.5', 2.0 -> 'epoch2'."""
    return f"epoch{float(epoch):g}"


def label_epoch(checkpoint: str) -> float:
    """Inverse of epoch_label; the base model is epoch 0."""
    if checkpoint == BASE_CHECKPOINT:
        return 0.0
    if checkpoint == SELECTED_CHECKPOINT:
        return float("nan")  # known only once selected; generate records the real epoch
    match = re.fullmatch(r"epoch(\d+(?:\.\d+)?)", checkpoint)
    if not match:
        raise ValueError(f"not a checkpoint label: {checkpoint!r}")
    return float(match.group(1))


def is_api_model(model: dict) -> bool:
    """A model served by an OpenAI-compatible endpoint: no local weights, so no LoRA; fine-tuned, if at all,
    through the OpenAI fine-tuning API (its `fine_tune` block)."""
    return model["source"]["kind"] == "openai"


def job_resources(config: dict, model: str, rule: str) -> dict:
    """A model's cluster job size for `rule` (train or generate); API models need no GPU."""
    spec = config["models"][model]
    size = dict(spec["resources"][rule])
    return {**size, "gpus": 0} if is_api_model(spec) else size


def effective_batch_error(train: dict, gpus: int, gpus_key: str = "the GPU count") -> str | None:
    """Why train's effective batch (per_device_batch_size x gradient_accumulation_steps) cannot be kept exactly on
    `gpus` GPUs (one process each): the accumulation per process, gradient_accumulation_steps / GPUs, must be a
    whole number. None when it can."""
    processes = max(1, gpus)
    per_device, accumulation = train["per_device_batch_size"], train["gradient_accumulation_steps"]
    if accumulation % processes == 0:
        return None
    return (f"{gpus_key}: {processes} GPUs cannot keep the effective batch {per_device * accumulation} "
            f"(train.per_device_batch_size {per_device} x train.gradient_accumulation_steps {accumulation}) exactly: "
            f"train.gradient_accumulation_steps must be a multiple of the GPU count, so that each GPU accumulates "
            f"{accumulation} / {processes} micro-batches; change one of these keys")
