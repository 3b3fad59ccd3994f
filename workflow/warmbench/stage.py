"""Runs one Snakemake job: logging to the rule's log file, then warmbench.<rule>.run(snakemake)."""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time
from pathlib import Path

from .children import exit_on_signals
from .locks import JobRunning, job_lock

# Rules whose entry point is not warmbench.<rule>.run (one module per stage, several rules per stage).
RULE_ENTRYPOINTS = {"select_checkpoint": ("warmth", "run_select_checkpoint"),
                    "judge_other": ("judge", "run"),
                    "warmth_validation": ("warmth", "run_validation"),
                    "download_dataset": ("download", "run"),
                    "download_scorer": ("base_model", "run"),
                    "generate_api": ("generate", "run"),
                    "training_summary": ("train", "run_summary"),
                    "explorer_screenshot": ("explorer", "run_screenshot")}


# Rules that reach the internet (the Hugging Face hub, the OpenAI fine-tuning API): the workflow's `localrules`
# (a test keeps the two lists equal), run on the submit host. Every other job runs offline from the hub, so a
# compute node without internet fails at once, naming what was not pre-fetched.
ONLINE_RULES = ("download_dataset", "download_scorer", "base_model", "train_openai")
_OFFLINE_HINT = ("not pre-fetched: jobs run with HF_HUB_OFFLINE=1, so every hub file must be downloaded by a "
                 "local rule first (models: a `models` entry; the warmth scorer: a `models` key, a local path or a hub id)")


PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding `warmbench/`


def child_env() -> dict:
    """This process's environment for a `python -m warmbench.<module>` child (vLLM's own venv, or each process
    of `accelerate launch`): the same, with warmbench importable."""
    paths = [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}


def entrypoint(rule: str):
    module, function = RULE_ENTRYPOINTS.get(rule, (rule, "run"))
    return getattr(importlib.import_module(f"warmbench.{module}"), function)


def configure_logging() -> None:
    # stderr is the job's log file by the time this runs (see run_job)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[logging.StreamHandler(sys.stderr)],
        force=True,
    )
    # Third-party chatter (HTTP requests, which could carry endpoints) stays out of the logs.
    for noisy in ("httpx", "httpcore", "openai", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_job(smk) -> None:
    log_path = smk.log[0] if len(smk.log) else None
    stream = open(log_path, "a", buffering=1, encoding="utf-8") if log_path else None
    # stderr carries tqdm progress bars and warnings, stdout the trainer's loss lines: both go to the job's log.
    with contextlib.ExitStack() as stack:
        if stream is not None:
            stack.enter_context(stream)
            stack.enter_context(contextlib.redirect_stderr(stream))
            stack.enter_context(contextlib.redirect_stdout(stream))
        configure_logging()
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if smk.rule not in ONLINE_RULES:
            os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
        log = logging.getLogger(f"warmbench.{smk.rule}")
        wildcards = dict(smk.wildcards.items())
        log.info("start rule=%s wildcards=%s threads=%s", smk.rule, wildcards, smk.threads)
        started = time.perf_counter()
        # SIGTERM (snakemake stopping, a SLURM cancel or time limit) unwinds: children stop, the lock is released
        exit_on_signals()
        try:
            # one copy of a job at a time: a second copy (e.g. after a restart while this one ran on) stops here
            with job_lock(smk.rule, list(smk.output)):
                entrypoint(smk.rule)(smk)
        except JobRunning as err:
            log.error("rule %s: %s", smk.rule, err)
            raise
        except OSError as err:
            if smk.rule not in ONLINE_RULES and "offline" in str(err).lower():
                log.error("rule %s: %s (%s)", smk.rule, _OFFLINE_HINT, err)
                raise RuntimeError(f"rule {smk.rule}: {_OFFLINE_HINT}: {err}") from err
            log.exception("rule %s failed", smk.rule)
            raise
        except Exception:
            log.exception("rule %s failed", smk.rule)
            raise
        log.info("done in %.1f s", time.perf_counter() - started)
