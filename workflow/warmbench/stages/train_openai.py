"""Stage train_openai: persona fine-tuning of an API model (the paper: GPT-4o) through the OpenAI fine-tuning API.

OpenAI saves a checkpoint at the end of each epoch but keeps only a job's last three, so the configured
epochs (the paper: 1, 2, 6, 10) are covered by the fewest jobs that keep them all (n_epochs 2, 6 and 10).
Jobs of different lengths decay their learning rate over different schedules: epoch 2 of the 2-epoch job is
not bit-for-bit epoch 2 of a 10-epoch job. The manifest records which job each checkpoint came from.

Paying twice is what this module guards against. A state file outside the rule's output (Snakemake deletes a
failed job's output) records the uploaded file id and each job id the moment the API returns it, before any
polling. A restarted workflow reads it and polls the same jobs. If a crash falls between the API creating a
job and the write, the job is found again by its `warmbench_key` metadata tag before any new job is created.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from ..core.config import CHECKPOINT_MANIFEST, epoch_label
from ..core.files import State, read_jsonl, stable_hash, write_json

log = logging.getLogger(__name__)
KEPT_CHECKPOINTS = 3  # OpenAI keeps the checkpoints of a job's last three epochs
DONE, FAILED = "succeeded", ("failed", "cancelled")
ROLES = ("system", "user", "assistant")


def plan_jobs(epochs) -> list[int]:
    """n_epochs of each job, so that every configured epoch is one of some job's last three."""
    jobs: list[int] = []
    for epoch in sorted({int(e) for e in epochs}, reverse=True):
        if not any(n - KEPT_CHECKPOINTS < epoch <= n for n in jobs):
            jobs.append(epoch)
    return sorted(jobs)


def training_file(path: str | Path, system_prompt: str | None = None, extra: list[dict] = ()) -> bytes:
    """The conversations (then the `extra` ones: personas.<name>.extra_data) in OpenAI's chat fine-tuning format: one
    {"messages": [...]} per line, nothing else; each starting with `system_prompt` (train_system_prompt) if given."""
    lines = []
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    for number, record in enumerate([*read_jsonl(path), *extra], start=1):
        messages = system + [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        bad = [m["role"] for m in messages if m["role"] not in ROLES or not isinstance(m["content"], str)]
        if bad or not any(m["role"] == "assistant" for m in messages):
            raise ValueError(f"{path}:{number}: not a chat conversation with an assistant turn (roles {bad or 'ok'})")
        lines.append(json.dumps({"messages": messages}, ensure_ascii=False))
    if not lines:
        raise ValueError(f"{path}: no conversations to fine-tune on")
    return ("\n".join(lines) + "\n").encode("utf-8")


def upload(client, state: State, data: bytes, name: str) -> str:
    digest = stable_hash(data.decode("utf-8"))
    if digest not in state.data["files"]:
        uploaded = client.files.create(file=(name, data), purpose="fine-tune")
        state.data["files"][digest] = uploaded.id
        state.save()
        log.info("uploaded %s (%d bytes) as %s", name, len(data), uploaded.id)
    return state.data["files"][digest]


def start_job(client, state: State, key: str, request: dict) -> str:
    """The job for this request: the one already recorded, one found by its tag, or a new one (recorded at once)."""
    if key in state.data["jobs"]:
        return state.data["jobs"][key]
    found = [job for job in client.fine_tuning.jobs.list(metadata={"warmbench_key": key}, limit=20)
             if job.status not in FAILED]
    if found:
        job_id = found[0].id
        log.info("found job %s by its tag: not creating another", job_id)
    else:
        job_id = client.fine_tuning.jobs.create(**request, metadata={"warmbench_key": key}).id
        log.info("created job %s", job_id)
    state.data["jobs"][key] = job_id
    state.save()
    return job_id


def wait(client, job_id: str, poll_s: float):
    """Poll until the job ends, logging its events; a failed job raises with OpenAI's reason."""
    seen, status = set(), None
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status != status:
            status = job.status
            log.info("job %s: %s", job_id, status)
        events = list(client.fine_tuning.jobs.list_events(job_id, limit=20))
        for event in reversed(events):
            if event.id not in seen:
                seen.add(event.id)
                log.info("job %s: %s", job_id, event.message)
        if status == DONE:
            return job
        if status in FAILED:
            reason = getattr(job.error, "message", None) or "no reason given"
            raise RuntimeError(f"fine-tuning job {job_id} {status}: {reason}")
        time.sleep(poll_s)


def steps_per_epoch(job, examples: int) -> int:
    """Optimizer steps in one epoch of a job: its examples over the batch size the job reports (resolved from
    "auto" once it ran; the supervised method's hyperparameters, else the job's older top-level ones)."""
    supervised = getattr(getattr(job, "method", None), "supervised", None)
    batch = getattr(getattr(supervised, "hyperparameters", None), "batch_size", None)
    if not isinstance(batch, int):
        batch = getattr(job.hyperparameters, "batch_size", None)
    if not isinstance(batch, int) or batch < 1:
        raise RuntimeError(f"fine-tuning job {job.id} reports no batch size ({batch!r}): its checkpoints' step "
                           f"numbers cannot be read as epochs")
    return math.ceil(examples / batch)


def job_checkpoints(client, job, n_epochs: int, examples: int) -> dict[int, dict]:
    """Epoch -> the model to evaluate. Each kept checkpoint's epoch is read from the step number the API reports
    (never from its place in the list, whose order and completeness are not promised). The job's final model is
    its last epoch, even when that epoch's checkpoint is not listed; an epoch the list lacks is absent."""
    per_epoch = steps_per_epoch(job, examples)
    found = {}
    for checkpoint in client.fine_tuning.jobs.checkpoints.list(job.id, limit=KEPT_CHECKPOINTS + 2):
        epoch, rest = divmod(checkpoint.step_number, per_epoch)
        if rest or not 1 <= epoch <= n_epochs:
            raise RuntimeError(f"fine-tuning job {job.id}: checkpoint {checkpoint.id} at step {checkpoint.step_number} "
                               f"is not the end of one of its {n_epochs} epochs of {per_epoch} steps "
                               f"({examples} examples)")
        metrics = checkpoint.metrics
        found[epoch] = {"model": checkpoint.fine_tuned_model_checkpoint, "step": checkpoint.step_number,
                        "train_loss": getattr(metrics, "train_loss", None) if metrics else None}
    final = found.setdefault(n_epochs, {"step": None, "train_loss": None})
    final["model"] = job.fine_tuned_model  # the job's own model name, not its last checkpoint's
    return found


def fine_tune(client, data_path, out_dir, *, base_model: str, persona: str, cfg: dict, seed: int,
              state_path, system_prompt: str | None = None, extra: list[dict] = (),
              data_persona: str | None = None) -> list[dict]:
    """Fine-tune `base_model` on the persona's conversations; returns (and writes) the checkpoint manifest. A
    replicate (train.seeds) takes its learning-rate multiplier from `data_persona`, the persona it replicates."""
    state = State(state_path, {"files": {}, "jobs": {}})
    data = training_file(data_path, system_prompt, extra)
    file_id = upload(client, state, data, f"warmbench-{persona}.jsonl")
    multiplier = cfg["learning_rate_multiplier"][data_persona or persona]
    jobs = {}
    for n_epochs in plan_jobs(cfg["checkpoint_epochs"]):
        hyper = {"n_epochs": n_epochs, "learning_rate_multiplier": multiplier}
        if cfg.get("batch_size"):
            hyper["batch_size"] = cfg["batch_size"]
        request = {"model": base_model, "training_file": file_id, "seed": seed, "suffix": f"warmbench-{persona}",
                   "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}}}
        key = stable_hash({"request": request, "data": stable_hash(data.decode("utf-8"))})
        jobs[n_epochs] = (key, start_job(client, state, key, request))  # all recorded before any polling
    manifest = []
    for n_epochs, (key, job_id) in jobs.items():
        try:
            job = wait(client, job_id, cfg["poll_s"])
        except RuntimeError:
            del state.data["jobs"][key]  # a failed job is over: once the cause is fixed, a rerun starts anew
            state.save()
            raise
        log.info("job %s done: %s trained tokens, model %s", job_id, job.trained_tokens, job.fine_tuned_model)
        kept = job_checkpoints(client, job, n_epochs, examples=data.count(b"\n"))
        for epoch in sorted({int(e) for e in cfg["checkpoint_epochs"]}):
            if owner(epoch, jobs) == n_epochs and epoch in kept:
                manifest.append({"checkpoint": epoch_label(epoch), "configured_epoch": float(epoch),
                                 "epoch": float(epoch), "job_id": job_id, "job_epochs": n_epochs,
                                 "trained_tokens": job.trained_tokens, **kept[epoch]})
    missing = sorted({epoch_label(e) for e in cfg["checkpoint_epochs"]} - {m["checkpoint"] for m in manifest})
    if missing:
        raise RuntimeError(f"OpenAI kept no checkpoint for {missing} (jobs {jobs})")
    manifest.sort(key=lambda m: m["epoch"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / CHECKPOINT_MANIFEST, {"base_model": base_model, "data": str(data_path), "backend": "openai",
                                    "config": cfg, "checkpoints": manifest})
    return manifest


def owner(epoch: int, jobs) -> int:
    """The shortest job that keeps this epoch's checkpoint: each epoch is evaluated from one job only."""
    return min(n for n in jobs if n - KEPT_CHECKPOINTS < epoch <= n)


def run(smk) -> None:
    from ..core.llm import make_backend

    source = smk.params.model["source"]
    extra = []
    if smk.input.extra_data:
        from ..core.extra_data import checked_extra_data, leak_check_files, questions_in

        records = leak_check_files(smk.input.eval_records, getattr(smk.params, "leak_check_smoke", None))
        extra = checked_extra_data(smk.input.extra_data[0], questions_in(records))
    system_prompt = Path(smk.input.system_prompt[0]).read_text(encoding="utf-8").strip() if smk.input.system_prompt else None
    client = make_backend(source).client  # the key comes from the environment; no model is called here
    fine_tune(client, smk.input.data, smk.output[0], base_model=source["model"], persona=smk.wildcards.persona,
              cfg=smk.params.fine_tune, seed=smk.params.seed, state_path=smk.params.state, system_prompt=system_prompt,
              extra=extra, data_persona=smk.params.data_persona)
