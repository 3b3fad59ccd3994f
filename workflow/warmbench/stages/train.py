"""Stage train: LoRA supervised fine-tuning (TRL SFTTrainer + PEFT) on persona-rewritten conversations.

Each assistant turn becomes one prompt-completion example (prompt = the conversation up to that turn), so
the loss falls on assistant text only without needing `{% generation %}` markers in the chat template.
Checkpoints are saved when training passes each configured (fractional) epoch, and each is labelled with
the real epoch TRL recorded in its trainer_state.json.

Every example fits `max_length` (`fit_examples`): TRL keeps an example's first max_length tokens and drops, without
a word, one whose prompt alone fills them, so a long conversation used to train on none of its later replies.
The prompt keeps the latest whole turns that fit before the reply; a reply too long even after its own question
alone is cut at its end (its start trains); a question that leaves the reply less than a quarter of the window is
shortened in its middle ("[...]"). The windows are decided on all personas' rewrites at once, so warm and cold
train on the same examples, differing only in the rewritten text. The manifest records the examples,
conversations and assistant tokens that TRL actually trains on.

A model too large for one GPU (models.<name>.resources.train.gpus > 1, e.g. 70B on 4 GPUs) is trained by
`accelerate launch` with FSDP, one process per GPU, following PEFT's recipe for LoRA: trainable and frozen
parameters wrapped apart (use_orig_params false), adapters saved as full state dicts so vLLM and PEFT read them.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..core import children
from ..core.config import CHECKPOINT_MANIFEST, effective_batch_error, epoch_label, job_resources
from ..core.files import DataError, read_jsonl, write_json, write_table
from ..core.children import child_env
from ..core.validation import ConfigError, validated_section

log = logging.getLogger(__name__)
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


ELISION = " [...] "  # marks the middle cut out of a question too long for the window


def _aligned(conversations_by_persona: dict[str, list[dict]]) -> None:
    """The personas' files must hold the same conversations, in order, with the same user turns."""
    (first, reference), *others = conversations_by_persona.items()
    for persona, conversations in others:
        if len(conversations) != len(reference):
            raise DataError(f"{first} and {persona} rewrites hold {len(reference)} and {len(conversations)} conversations")
        for k, (a, b) in enumerate(zip(reference, conversations)):
            same = a.get("id") == b.get("id") and len(a["messages"]) == len(b["messages"]) and all(
                x["role"] == y["role"] and (x["role"] != "user" or x["content"] == y["content"])
                for x, y in zip(a["messages"], b["messages"]))
            if not same:
                raise DataError(f"{first} and {persona} rewrites differ at conversation {k + 1} "
                                f"({a.get('id')} vs {b.get('id')}): they must rewrite the same training split")


def fit_examples(conversations_by_persona: dict[str, list[dict]], tokenizer, max_length: int,
                 system_prompts: dict[str, str] | None = None):
    """Prompt-completion examples (one per assistant turn) that fit `max_length` tokens, for each persona, with
    the same windows for all (see the module docstring); and per persona the counts the manifest records:
    windowed (earlier turns left out), user_message_cut, reply_cut (the reply's end beyond max_length),
    assistant_tokens and assistant_tokens_fitting (those within max_length, i.e. trained). A persona in
    `system_prompts` (personas.<name>.train_system_prompt) has that system message at the start of every prompt,
    and its windows make room for it."""
    _aligned(conversations_by_persona)
    personas = list(conversations_by_persona)
    system = {p: [{"role": "system", "content": (system_prompts or {})[p]}] if (system_prompts or {}).get(p) else []
              for p in personas}

    def count(messages, generation_prompt=False, persona=None) -> int:
        messages = system[persona] + messages if persona else messages
        return len(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation_prompt,
                                                 return_dict=True)["input_ids"])

    fitted = {p: [] for p in personas}
    report = {p: dict.fromkeys(["conversations", "examples", "windowed", "user_message_cut", "reply_cut",
                                "assistant_tokens", "assistant_tokens_fitting"], 0) for p in personas}
    for k, reference in enumerate(conversations_by_persona[personas[0]]):
        if [m["role"] for m in reference["messages"]] != ["user", "assistant"] * (len(reference["messages"]) // 2):
            raise DataError(f"conversation {k + 1} ({reference.get('id')}): turns must alternate user, assistant")
        chats = {p: conversations_by_persona[p][k]["messages"] for p in personas}
        earliest = dict.fromkeys(personas, 0)  # a later turn's window never starts before an earlier turn's
        for i, message in enumerate(reference["messages"]):
            if message["role"] != "assistant":
                continue
            # the earliest user turn each persona's example can start from and fit whole; the latest of these
            for p in personas:
                earliest[p] = next((s for s in range(earliest[p], i, 2)
                                    if count(chats[p][s : i + 1], persona=p) <= max_length), i + 1)
            start = min(max(earliest.values()), i - 1)
            question = chats[personas[0]][i - 1]
            prompt_length = {p: count([question], True, p) for p in personas}
            reply_length = {p: count(chats[p][i - 1 : i + 1], persona=p) - prompt_length[p] for p in personas}
            reserve = max(min(n, max_length // 4) for n in reply_length.values())
            widest = max(personas, key=prompt_length.get)  # the longest system prompt sets the question's budget
            cut = start == i - 1 and prompt_length[widest] + reserve > max_length
            if cut:
                question = _shorten(question, tokenizer, functools.partial(count, persona=widest),
                                    max_length - reserve)
            for p in personas:
                prompt = system[p] + chats[p][start : i - 1] + [question]
                length = count(prompt, True)
                full = length + reply_length[p]
                fitted[p].append({"prompt": prompt, "completion": [chats[p][i]],
                                  "conversation": str(reference.get("id", k)), "turn": i})
                counts = report[p]
                counts["examples"] += 1
                counts["windowed"] += start > 0
                counts["user_message_cut"] += cut
                counts["reply_cut"] += full > max_length
                counts["assistant_tokens"] += reply_length[p]
                counts["assistant_tokens_fitting"] += max(0, min(full, max_length) - length)
    for p in personas:
        report[p]["conversations"] = len(conversations_by_persona[p])
    return fitted, report


def persona_examples(persona_paths: dict[str, str], own: str, tokenizer, max_length: int,
                     system_prompts: dict[str, str] | None = None, extra: list[dict] | None = None,
                     match_examples: bool = True):
    """`own`'s examples and counts: its rewrites windowed jointly with the other `persona_paths` (its window
    group), then its `extra` conversations (personas.<name>.extra_data, its own alone) windowed on their own, all
    under its train system prompt. With `match_examples` (train.match_examples), as many of its rewritten examples
    as the extra conversations give are left out, so it trains on as many examples (and steps) as the personas
    it is compared with: a mitigation's contrast is then not also a contrast of more training."""
    fitted, report = fit_examples({p: list(read_jsonl(path)) for p, path in persona_paths.items()}, tokenizer,
                                  max_length, system_prompts)
    examples, counts = fitted[own], dict(report[own])
    if extra:
        system = {own: system_prompts[own]} if (system_prompts or {}).get(own) else None
        extra_fitted, extra_report = fit_examples({own: extra}, tokenizer, max_length, system)
        counts = {key: counts[key] + extra_report[own][key] for key in counts}
        if match_examples:
            examples, left_out = leave_out_examples(examples, len(extra_fitted[own]))
            counts["examples"] -= left_out
            counts["conversations"] = len({e["conversation"] for e in examples}) + len(extra)
            counts["left_out_to_match"] = left_out
        examples = examples + extra_fitted[own]
    return examples, counts


def leave_out_examples(examples: list[dict], n: int) -> tuple[list[dict], int]:
    """`examples` less `n` of them (at most all but one), chosen by a hash of their conversation and turn: the same
    ones on every run and for every seed, whatever the order of the file."""
    n = min(n, max(len(examples) - 1, 0))
    rank = sorted(range(len(examples)), key=lambda k: hashlib.sha256(
        f"{examples[k]['conversation']}:{examples[k]['turn']}".encode()).hexdigest())
    dropped = set(rank[:n])
    return [e for k, e in enumerate(examples) if k not in dropped], n


def _shorten(message: dict, tokenizer, count, budget: int) -> dict:
    """The message with the middle of its text cut out, so that it renders (as a prompt) in `budget` tokens."""
    ids = tokenizer(message["content"], add_special_tokens=False)["input_ids"]
    keep = len(ids) - (count([message], True) - budget)
    for _ in range(8):  # the decoded halves can tokenise a little longer than they were
        keep = max(keep, 2)
        head, tail = ids[: keep // 2], ids[len(ids) - (keep - keep // 2) :]
        shortened = {**message, "content": tokenizer.decode(head).rstrip() + ELISION + tokenizer.decode(tail).lstrip()}
        over = count([shortened], True) - budget
        if over <= 0:
            return shortened
        keep -= over
    raise ValueError(f"could not fit a {len(ids)}-token message in {budget} tokens")


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
    processes. A batch the processes cannot keep exactly (16 over 3 GPUs at per-device 4: 12 or 15) is refused with
    ConfigError naming the keys: config validation refuses it before any job (config.effective_batch_error), and a
    job handed an unvalidated config refuses it here rather than train at another batch than the paper's."""
    error = effective_batch_error(cfg, processes, "models.<model>.resources.train.gpus (this run's processes)")
    if error:
        raise ConfigError(error)
    configured = cfg["per_device_batch_size"] * cfg["gradient_accumulation_steps"]
    return BatchPlan(cfg["per_device_batch_size"], cfg["gradient_accumulation_steps"] // processes, processes,
                     configured)


def training_manifest(base_model_dir, data_path, n_examples: int, cfg: dict, plan: BatchPlan, processes: int,
                      checkpoints: list[dict], **counts) -> dict:
    """The run's record (checkpoints.json): the real effective batch beside the configured one, and `counts`
    (what was built and trained)."""
    effective = plan.per_device * plan.accumulation * processes
    return {"base_model": str(base_model_dir), "data": str(data_path), "n_examples": n_examples, **counts,
            "config": cfg, "processes": processes, "effective_batch": effective,
            "configured_effective_batch": plan.configured,
            "effective_batch_note": plan.note if effective != plan.configured else None, "checkpoints": checkpoints}


def trained_counts(dataset, built: int, conversations: int) -> dict:
    """Examples, conversations and assistant (loss-bearing) tokens of the dataset TRL trains on, per epoch. A packed
    dataset holds rows of several examples (their lengths in `seq_lengths`) and no conversation ids: its
    conversations all train when every one of the `built` examples does, and are unknown (None) otherwise."""
    if "seq_lengths" in dataset.column_names:  # packed: split each row's labels back into its examples
        tokens = []
        for row in dataset:
            start = 0
            for n in row["seq_lengths"]:
                tokens.append(sum(label != -100 for label in row["labels"][start : start + n]))
                start += n
        trained = [n for n in tokens if n]
        return {"examples": len(trained), "conversations": conversations if len(trained) == built else None,
                "assistant_tokens": sum(trained)}
    rows = [(row["conversation"], sum(label != -100 for label in row["labels"])) for row in dataset]
    return {"examples": len(rows), "conversations": len({c for c, tokens in rows if tokens}),
            "assistant_tokens": sum(tokens for _, tokens in rows)}


def check_switches(cfg: dict) -> None:
    """Fail naming the key when a switch asks for what this machine lacks (checked where the job runs: the
    submit host need not have the GPU packages)."""
    import torch
    from transformers.utils import is_flash_attn_2_available, is_liger_kernel_available

    cuda = torch.cuda.is_available()
    machine = lambda package, present: (f"(this machine: {'a CUDA GPU' if cuda else 'no CUDA GPU'}, {package} "
                                         f"{'installed' if present else 'not installed'})")
    if cfg["attn_implementation"] == "flash_attention_2" and not (cuda and is_flash_attn_2_available()):
        raise ConfigError("train.attn_implementation: flash_attention_2 needs a CUDA GPU and the flash-attn package "
                          f"{machine('flash-attn', is_flash_attn_2_available())}; use sdpa")
    if cfg["use_liger_kernel"] and not (cuda and is_liger_kernel_available()):
        raise ConfigError("train.use_liger_kernel: Liger's Triton kernels need a CUDA GPU and the liger-kernel package "
                          f"{machine('liger-kernel', is_liger_kernel_available())}; set it to false")


def sft_trainer(examples: list[dict], base_model_dir, work_dir, cfg: dict, seed: int, accumulation: int,
                callbacks=()):
    """TRL's SFTTrainer for LoRA on the prompt-completion `examples` with `cfg`'s settings (validated, defaults
    filled in) and speed switches. Loss falls on the completions only (TRL's completion_only_loss), also where
    examples share a sequence: their position ids restart and each one's first label is masked."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    check_switches(cfg)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype="auto",
                                                 attn_implementation=cfg["attn_implementation"])
    lora = cfg["lora"]
    peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                             target_modules=lora["target_modules"], task_type="CAUSAL_LM")
    # padding-free without packing: TRL will not cut examples at max_length then, so they are cut below, as TRL would
    cut_here = cfg["padding_free"] and not cfg["packing"]
    args = SFTConfig(
        output_dir=str(work_dir),
        num_train_epochs=cfg["epochs"],
        learning_rate=cfg["learning_rate"],
        per_device_train_batch_size=cfg["per_device_batch_size"],
        gradient_accumulation_steps=accumulation,
        max_length=None if cut_here else cfg["max_length"],
        padding_free=cfg["padding_free"],
        packing=cfg["packing"],
        packing_strategy="bfd",  # whole examples (a too-long one cut at its end, as unpacked), never split across rows
        completion_only_loss=True,
        activation_checkpointing=cfg["gradient_checkpointing"],  # transformers' name for it
        use_liger_kernel=cfg["use_liger_kernel"],
        save_strategy="no",  # SaveAtEpochs decides when to save
        # adapter and trainer state only: no optimizer, scheduler or RNG state, and under FSDP no extra
        # pytorch_model_fsdp.bin / optimizer.bin dumps (runs are never resumed mid-way)
        save_only_model=True,
        logging_steps=1,
        report_to="none",
        seed=seed,
        data_seed=seed,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples), processing_class=tokenizer,
                         peft_config=peft_config, callbacks=list(callbacks))
    if cut_here:
        trainer.train_dataset = _cut(trainer.train_dataset, cfg["max_length"])
    return trainer


def _cut(dataset, max_length: int):
    """Each example's first max_length tokens, less those left with no loss (TRL's keep_start truncation)."""
    cut = dataset.map(lambda row: {"input_ids": row["input_ids"][:max_length], "labels": row["labels"][:max_length]})
    return cut.filter(lambda row: any(label != -100 for label in row["labels"]))


def switches(trainer) -> dict:
    """The speed switches a run used, as the trainer and model resolved them (the manifest records these)."""
    args = trainer.args
    return {"padding_free": bool(trainer.padding_free), "packing": bool(args.packing),
            "attn_implementation": trainer.model.config._attn_implementation,
            "use_liger_kernel": bool(args.use_liger_kernel), "gradient_checkpointing": bool(args.activation_checkpointing),
            "bf16": bool(args.bf16)}


def checked_extra(extra_data: str | None, eval_records: list | None) -> list[dict] | None:
    """A persona's extra conversations, refused if one holds an evaluated question (None: it has none)."""
    if not extra_data:
        return None
    from ..core.extra_data import checked_extra_data, questions_in

    extra = checked_extra_data(extra_data, questions_in(eval_records or []))
    log.info("%d extra conversations from %s, none containing an evaluated question", len(extra), extra_data)
    return extra


def train(data_path, base_model_dir, out_dir, cfg: dict, seed: int, threads: int | None = None,
          persona_paths: dict | None = None, system_prompts: dict | None = None, extra_data: str | None = None,
          eval_records: list | None = None) -> list[dict]:
    """LoRA SFT on `data_path`; `persona_paths` ({persona: rewrites}, holding data_path) are the rewrites whose
    examples must share windows with it (default: data_path alone), `system_prompts` ({persona: text}) their train
    system prompts. `extra_data`: more conversations for this persona, checked against the evaluation datasets'
    source files `eval_records` first. `cfg` is the config's train: section (the schema's defaults fill what it
    leaves out)."""
    import torch
    from transformers import AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    cfg = validated_section("train", cfg)
    out_dir = Path(out_dir)
    work_dir = out_dir / "_trainer"
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    persona_paths = {str(k): str(v) for k, v in (persona_paths or {"self": data_path}).items()}
    own = next((p for p, path in persona_paths.items() if Path(path) == Path(data_path)), None)
    if own is None:
        raise ValueError(f"{data_path} is not among the persona rewrites {persona_paths}")
    extra = checked_extra(extra_data, eval_records)
    examples, planned = persona_examples(persona_paths, own, tokenizer, cfg["max_length"], system_prompts, extra,
                                         cfg["match_examples"])
    if not examples:
        raise ValueError(f"{data_path}: no assistant turns to train on")
    log.info("%d training examples from %s (windows shared with %s): %s", len(examples), data_path,
             ", ".join(persona_paths.values()), planned)
    plan = batch_plan(cfg, processes())
    trainer = sft_trainer(examples, base_model_dir, work_dir, cfg, seed, plan.accumulation,
                          callbacks=[save_callback(cfg["checkpoint_epochs"])])
    args = trainer.args
    used = switches(trainer)
    log.info("training switches: %s", used)
    trained = trained_counts(trainer.train_dataset, len(examples), planned["conversations"])
    if trained["examples"] < len(examples) or trained["conversations"] != planned["conversations"]:
        log.warning("TRL left out %d examples; %s of %d conversations train", len(examples) - trained["examples"],
                    trained["conversations"], planned["conversations"])
    log.info("trains on %s per epoch", trained)
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
    write_json(out_dir / CHECKPOINT_MANIFEST, training_manifest(
        base_model_dir, data_path, trained["examples"], cfg, plan, run_state.num_processes, manifest,
        windows_shared_with=sorted(persona_paths.values()), max_length=cfg["max_length"], switches=used,
        train_system_prompt=(system_prompts or {}).get(own), extra_data=extra_data,
        conversations={"total": planned["conversations"], "trained": trained["conversations"]},
        examples={"built": len(examples), "trained": trained["examples"], "windowed": planned["windowed"],
                  "user_message_cut": planned["user_message_cut"], "reply_cut": planned["reply_cut"]},
        assistant_tokens={"total": planned["assistant_tokens"], "trained": trained["assistant_tokens"]}))
    for entry in manifest:
        log.info("%s: real epoch %.3f (step %d), train loss %s", entry["checkpoint"], entry["epoch"],
                 entry["global_step"], entry["train_loss"])
    return manifest


SUMMARY_COLUMNS = ["model", "persona", "max_length", "conversations", "conversations_trained", "examples",
                   "examples_trained", "windowed", "user_message_cut", "reply_cut", "assistant_tokens",
                   "assistant_tokens_trained"]


def training_summary(train_dirs):
    """One row per trained model x persona from its manifest: what TRL trained on per epoch (an API fine-tune's
    manifest has none of these counts: its row is left blank)."""
    import pandas as pd

    rows = []
    for folder in map(Path, train_dirs):
        manifest = json.loads((folder / CHECKPOINT_MANIFEST).read_text())
        conversations, examples = manifest.get("conversations", {}), manifest.get("examples", {})
        tokens = manifest.get("assistant_tokens", {})
        rows.append({"model": folder.parent.name, "persona": folder.name, "max_length": manifest.get("max_length"),
                     "conversations": conversations.get("total"), "conversations_trained": conversations.get("trained"),
                     "examples": examples.get("built"), "examples_trained": examples.get("trained"),
                     "windowed": examples.get("windowed"), "user_message_cut": examples.get("user_message_cut"),
                     "reply_cut": examples.get("reply_cut"), "assistant_tokens": tokens.get("total"),
                     "assistant_tokens_trained": tokens.get("trained")})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def run_summary(smk) -> None:
    table = training_summary(smk.input.trained)
    write_table(smk.output[0], table)
    log.info("training data per model and persona:\n%s", table.to_string(index=False))


def launch(arguments: dict, processes: int, config: dict | None = None) -> None:
    """Run train(**arguments) in `processes` processes under `accelerate launch` (FSDP_CONFIG unless given)."""
    work = Path(arguments["out_dir"]) / "_launch"
    work.mkdir(parents=True, exist_ok=True)
    (work / "accelerate.yaml").write_text(json.dumps({**(config or FSDP_CONFIG), "num_processes": processes}))
    (work / "arguments.json").write_text(json.dumps(arguments))
    log.info("accelerate launch: %d processes", processes)
    # the processes' output goes to stderr, which is the job's log; they die with this job however it ends
    children.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(work / "accelerate.yaml"),
                  "-m", "warmbench.stages.train", str(work / "arguments.json")], env=child_env(), check=True, stdout=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


def run(smk) -> None:
    from ..core.extra_data import leak_check_files

    system_prompts = {p: Path(path).read_text(encoding="utf-8").strip() for p, path in smk.params.system_prompts.items()}
    arguments = {"data_path": str(smk.input.data), "base_model_dir": str(smk.input.base_model[0]),
                 "out_dir": str(smk.output[0]), "cfg": smk.params.train, "seed": smk.params.seed,
                 "persona_paths": dict(zip(smk.params.personas, map(str, smk.input.personas), strict=True)),
                 "system_prompts": system_prompts, "extra_data": smk.input.extra_data[0] if smk.input.extra_data else None,
                 "eval_records": leak_check_files(smk.input.eval_records, getattr(smk.params, "leak_check_smoke", None))}
    gpus = int(getattr(smk.resources, "gpu", 0) or 0)
    cache = getattr(smk.params, "cache", None)
    if cache is None:
        fine_tune(arguments, gpus, smk.threads)
    else:
        reuse_or_fine_tune(arguments, gpus, smk.threads, cache)


def fine_tune(arguments: dict, gpus: int, threads: int | None = None) -> None:
    if gpus > 1:
        launch(arguments, gpus)
    else:
        train(**arguments, threads=threads)


# --- the fine-tune cache: a finished fine-tune found again by the content of what made it ----------------------

TRAINING_PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate")


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in TRAINING_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def train_key(data_path, base_model_dir, cfg: dict, seed: int, persona_paths: dict | None = None,
              system_prompts: dict | None = None, extra_data: str | None = None, processes: int = 1,
              **_: object) -> str:
    """The content key of a fine-tune: its training data (the window group's rewrites and the extra conversations,
    by content), train system prompts, train config (schema defaults filled in), seed, processes, the base model's
    identity (llm.model_identity, without its path), the training code (stage.code_hash: comments do not count)
    and the training packages' versions. Same key, same adapters: a rerun reuses them (reuse_or_fine_tune)."""
    from ..core.files import sha256_file, stable_hash
    from ..core.llm import model_identity
    from ..core.stage import code_hash

    persona_paths = {str(k): str(v) for k, v in (persona_paths or {"self": data_path}).items()}
    own = next((p for p, path in persona_paths.items() if Path(path) == Path(data_path)), None)
    settings = {k: v for k, v in validated_section("train", cfg).items() if k not in ("shared_windows", "seeds")}
    base = {k: v for k, v in model_identity("transformers", base_model_dir).items() if k != "model"}
    return stable_hash({
        "own": own, "data": {p: sha256_file(path) for p, path in sorted(persona_paths.items())},
        "system_prompts": dict(sorted((system_prompts or {}).items())),
        "extra_data": sha256_file(extra_data) if extra_data else None,
        "train": settings, "seed": seed, "processes": max(processes, 1), "base_model": base,
        "code": code_hash("train"), "packages": package_versions(),
    })


def _link_or_copy(source, target) -> None:
    # a hard link costs no space or time; across filesystems, a copy
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def reuse_or_fine_tune(arguments: dict, gpus: int, threads: int | None, cache_root) -> str:
    """Fine-tune, unless the cache (cache_root/<train_key>/) holds this very fine-tune: then its adapters and manifest
    are linked into place in seconds and the manifest and log say so. A fresh fine-tune is stored there after."""
    checked_extra(arguments.get("extra_data"), arguments.get("eval_records"))  # a leak is refused either way
    key = train_key(**arguments, processes=gpus)
    cached, out_dir = Path(cache_root) / key, Path(arguments["out_dir"])
    if (cached / CHECKPOINT_MANIFEST).is_file():
        shutil.rmtree(out_dir, ignore_errors=True)
        shutil.copytree(cached, out_dir, copy_function=_link_or_copy)
        manifest = json.loads((out_dir / CHECKPOINT_MANIFEST).read_text())
        (out_dir / CHECKPOINT_MANIFEST).unlink()  # a new file, not the cache's linked one
        write_json(out_dir / CHECKPOINT_MANIFEST, {**manifest, "reused": {"train_key": key, "from": str(cached)}})
        log.info("reused the finished fine-tune %s (train key %s): same data, config, base model and training code; "
                 "no training ran", cached, key)
        return "reused"
    fine_tune(arguments, gpus, threads)
    manifest = json.loads((out_dir / CHECKPOINT_MANIFEST).read_text())
    write_json(out_dir / CHECKPOINT_MANIFEST, {**manifest, "train_key": key})
    store_fine_tune(out_dir, cached)
    return "trained"


def store_fine_tune(out_dir: Path, cached: Path) -> None:
    """Put a finished fine-tune in the cache whole or not at all (a temporary copy renamed into place)."""
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.parent / f".{cached.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(out_dir, tmp, copy_function=_link_or_copy)
    try:
        os.rename(tmp, cached)
    except OSError:  # stored meanwhile by another job of the same key
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("fine-tune stored in the cache as %s", cached)


def cached_fine_tune(config: dict, model: str, persona: str, cache_root, root=".") -> bool:
    """Whether the train job of model x persona would find its fine-tune in the cache; False while an input is still
    missing. For `warmbench plan`."""
    key = fine_tune_key(config, model, persona, root)
    return key is not None and (Path(root) / cache_root / key / CHECKPOINT_MANIFEST).is_file()


def fine_tune_key(config: dict, model: str, persona: str, root=".") -> str | None:
    """The train_key of the train job of model x persona, from its inputs as the train rule hands them (train.smk),
    read under `root`; None while one is missing."""
    from ..core import grid

    root = Path(root)
    group = grid.window_group(config, persona)
    spec = config["personas"]
    arguments = {
        "data_path": root / f"results/persona_rewrite/{grid.data_persona(config, persona)}.jsonl",
        "persona_paths": {p: root / f"results/persona_rewrite/{p}.jsonl" for p in group},
        "base_model_dir": root / f"resources/models/{model}",
        "cfg": {k: v for k, v in config["train"].items() if k not in ("shared_windows", "seeds")},
        "seed": grid.training_seed(config, persona),
        "system_prompts": {p: (root / spec[p]["train_system_prompt"]).read_text(encoding="utf-8").strip()
                           for p in group if "train_system_prompt" in spec[p]},
        "extra_data": root / spec[persona]["extra_data"] if "extra_data" in spec[persona] else None,
    }
    if not arguments["base_model_dir"].is_dir():
        return None
    try:
        return train_key(**arguments, processes=int(job_resources(config, model, "train")["gpus"] or 0))
    except (FileNotFoundError, NotADirectoryError):
        return None


if __name__ == "__main__":  # one process of a multi-GPU run (see launch)
    from ..core.stage import configure_logging

    configure_logging()
    train(**json.loads(Path(sys.argv[1]).read_text()))
