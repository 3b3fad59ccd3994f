"""Stage train: LoRA supervised fine-tuning (TRL SFTTrainer + PEFT) on persona-rewritten conversations.

Each assistant turn becomes one prompt-completion example (prompt = the conversation up to that turn), so
the loss falls on assistant text only without needing `{% generation %}` markers in the chat template.
Checkpoints are saved when training passes each configured (fractional) epoch, and each is labelled with
the real epoch TRL recorded in its trainer_state.json.

A model too large for one GPU (models.<name>.resources.train.gpus > 1, e.g. 70B on 3 GPUs) is trained by
`accelerate launch` with FSDP, one process per GPU, following PEFT's recipe for LoRA: trainable and frozen
parameters wrapped apart (use_orig_params false), adapters saved as full state dicts so vLLM and PEFT read them.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .config import epoch_label
from .io import read_jsonl, write_json
from .stage import child_env

log = logging.getLogger(__name__)
MANIFEST = "checkpoints.json"
# accelerate's settings for LoRA + FSDP across the GPUs of one node (num_processes is added per job)
FSDP_CONFIG = {
    "compute_environment": "LOCAL_MACHINE", "distributed_type": "FSDP", "mixed_precision": "bf16",
    "downcast_bf16": "no", "num_machines": 1, "machine_rank": 0, "rdzv_backend": "static", "same_network": True,
    "use_cpu": False,
    "fsdp_config": {
        "fsdp_version": 1, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "fsdp_backward_prefetch": "BACKWARD_PRE",
        "fsdp_cpu_ram_efficient_loading": True, "fsdp_offload_params": False, "fsdp_sharding_strategy": "FULL_SHARD",
        "fsdp_state_dict_type": "FULL_STATE_DICT", "fsdp_sync_module_states": True, "fsdp_use_orig_params": False,
    },
}


def completion_examples(conversations: list[dict]) -> list[dict]:
    """Conversational prompt-completion examples, one per assistant turn."""
    examples = []
    for conv in conversations:
        messages = conv["messages"]
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                examples.append({"prompt": messages[:i], "completion": [message]})
    return examples


def save_callback(checkpoint_epochs: list[float]):
    """A TrainerCallback asking for a save the first step at or past each configured epoch."""
    from transformers import TrainerCallback

    class SaveAtEpochs(TrainerCallback):
        def __init__(self):
            self.pending = sorted(float(e) for e in checkpoint_epochs)

        def on_step_end(self, args, state, control, **kwargs):
            if self.pending and state.epoch is not None and state.epoch >= self.pending[0] - 1e-6:
                while self.pending and state.epoch >= self.pending[0] - 1e-6:
                    self.pending.pop(0)
                control.should_save = True
            return control

    return SaveAtEpochs()


def label_checkpoints(work_dir: Path, out_dir: Path, checkpoint_epochs: list[float]) -> list[dict]:
    """Move checkpoint-<step> dirs to epoch<label> dirs; label = configured epoch nearest the real one."""
    manifest = []
    targets = sorted(float(e) for e in checkpoint_epochs)
    saved = sorted(work_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if len(saved) != len(targets):
        raise RuntimeError(f"expected {len(targets)} checkpoints for epochs {targets}, found {[p.name for p in saved]}")
    for path, target in zip(saved, targets):
        state = json.loads((path / "trainer_state.json").read_text())
        losses = [h["loss"] for h in state.get("log_history", []) if "loss" in h]
        label = epoch_label(target)
        shutil.move(str(path), out_dir / label)
        manifest.append({
            "checkpoint": label,
            "configured_epoch": target,
            "epoch": state["epoch"],
            "global_step": state["global_step"],
            "train_loss": losses[-1] if losses else None,
            "path": label,
        })
    return manifest


def processes() -> int:
    """Processes of this training run (one per GPU under `accelerate launch`, else 1)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class BatchPlan:
    """How the configured effective batch (per-device batch x accumulation) is spread over the processes."""
    per_device: int
    accumulation: int
    processes: int
    configured: int

    @property
    def effective(self) -> int:
        return self.per_device * self.accumulation * self.processes

    @property
    def note(self) -> str | None:
        """What to say when the configured effective batch cannot be kept on this many GPUs."""
        if self.effective == self.configured:
            return None
        return (f"the configured effective batch {self.configured} (train.per_device_batch_size x "
                f"gradient_accumulation_steps) is not reachable on {self.processes} GPUs at per-device batch "
                f"{self.per_device}: training uses {self.effective} ({self.per_device} x accumulation "
                f"{self.accumulation} x {self.processes} processes)")


def batch_plan(cfg: dict, processes: int) -> BatchPlan:
    """Gradient accumulation that keeps the configured effective batch when the batch is spread over several
    processes; the nearest whole number when it does not divide evenly (16 over 3 GPUs at per-device 4: 12),
    which the plan's `note` says, the job logs and the manifest records."""
    configured = cfg["per_device_batch_size"] * cfg["gradient_accumulation_steps"]
    accumulation = max(1, round(configured / (cfg["per_device_batch_size"] * processes)))
    return BatchPlan(cfg["per_device_batch_size"], accumulation, processes, configured)


def accumulation_steps(cfg: dict, processes: int) -> int:
    return batch_plan(cfg, processes).accumulation


def training_manifest(base_model_dir, data_path, n_examples: int, cfg: dict, plan: BatchPlan, processes: int,
                      checkpoints: list[dict]) -> dict:
    """The run's record (checkpoints.json): the real effective batch beside the configured one."""
    effective = plan.per_device * plan.accumulation * processes
    return {"base_model": str(base_model_dir), "data": str(data_path), "n_examples": n_examples, "config": cfg,
            "processes": processes, "effective_batch": effective, "configured_effective_batch": plan.configured,
            "effective_batch_note": plan.note if effective != plan.configured else None, "checkpoints": checkpoints}


def train(data_path, base_model_dir, out_dir, cfg: dict, seed: int, threads: int | None = None) -> list[dict]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    if threads:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    work_dir = out_dir / "_trainer"
    examples = completion_examples(list(read_jsonl(data_path)))
    if not examples:
        raise ValueError(f"{data_path}: no assistant turns to train on")
    log.info("%d training examples from %s", len(examples), data_path)

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype="auto")
    lora = cfg.get("lora", {})
    peft_config = LoraConfig(
        r=lora.get("r", 8),
        lora_alpha=lora.get("alpha", 16),
        lora_dropout=lora.get("dropout", 0.1),
        target_modules=lora.get("target_modules", "all-linear"),
        task_type="CAUSAL_LM",
    )
    use_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    plan = batch_plan(cfg, processes())
    args = SFTConfig(
        output_dir=str(work_dir),
        num_train_epochs=cfg["epochs"],
        learning_rate=cfg["learning_rate"],
        per_device_train_batch_size=cfg["per_device_batch_size"],
        gradient_accumulation_steps=plan.accumulation,
        max_length=cfg["max_length"],
        save_strategy="no",  # SaveAtEpochs decides when to save
        # adapter and trainer state only: no optimizer, scheduler or RNG state, and under FSDP no extra
        # pytorch_model_fsdp.bin / optimizer.bin dumps (runs are never resumed mid-way)
        save_only_model=True,
        logging_steps=1,
        report_to="none",
        seed=seed,
        data_seed=seed,
        bf16=use_bf16,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[save_callback(cfg["checkpoint_epochs"])],
    )
    if trainer.is_fsdp_enabled:  # wrap LoRA weights apart from the frozen base (PEFT's FSDP recipe)
        from peft.utils.other import fsdp_auto_wrap_policy

        trainer.accelerator.state.fsdp_plugin.auto_wrap_policy = fsdp_auto_wrap_policy(trainer.model)
    run_state = trainer.accelerator.state
    effective_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * run_state.num_processes
    log.info("process %d of %d (%s): effective batch %d", run_state.process_index, run_state.num_processes,
             run_state.distributed_type, effective_batch)
    if plan.note and trainer.accelerator.is_main_process:
        log.warning(plan.note)
    result = trainer.train()
    log.info("training done: %s", result.metrics)
    if not trainer.accelerator.is_main_process:
        return []  # one process (the first GPU's) labels the checkpoints and writes the manifest
    manifest = label_checkpoints(work_dir, out_dir, cfg["checkpoint_epochs"])
    write_json(out_dir / "log_history.json", trainer.state.log_history)
    shutil.rmtree(work_dir, ignore_errors=True)
    write_json(out_dir / MANIFEST, training_manifest(base_model_dir, data_path, len(examples), cfg, plan,
                                                     run_state.num_processes, manifest))
    for entry in manifest:
        log.info("%s: real epoch %.3f (step %d), train loss %s", entry["checkpoint"], entry["epoch"],
                 entry["global_step"], entry["train_loss"])
    return manifest


def launch(arguments: dict, processes: int, config: dict | None = None) -> None:
    """Run train(**arguments) in `processes` processes under `accelerate launch` (FSDP_CONFIG unless given)."""
    work = Path(arguments["out_dir"]) / "_launch"
    work.mkdir(parents=True, exist_ok=True)
    (work / "accelerate.yaml").write_text(json.dumps({**(config or FSDP_CONFIG), "num_processes": processes}))
    (work / "arguments.json").write_text(json.dumps(arguments))
    log.info("accelerate launch: %d processes", processes)
    # the processes' output goes to stderr, which is the job's log
    subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(work / "accelerate.yaml"),
                    "-m", "warmbench.train", str(work / "arguments.json")], env=child_env(), check=True, stdout=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


def run(smk) -> None:
    arguments = {"data_path": str(smk.input.data), "base_model_dir": str(smk.input.base_model[0]),
                 "out_dir": str(smk.output[0]), "cfg": smk.params.train, "seed": smk.params.seed}
    gpus = int(getattr(smk.resources, "gpu", 0) or 0)
    if gpus > 1:
        launch(arguments, gpus)
    else:
        train(**arguments, threads=smk.threads)


if __name__ == "__main__":  # one process of a multi-GPU run (see launch)
    from .stage import configure_logging

    configure_logging()
    train(**json.loads(Path(sys.argv[1]).read_text()))
