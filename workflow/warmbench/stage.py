"""Runs one Snakemake job: logging to the rule's log file, then warmbench.<rule>.run(snakemake)."""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import time

# Rules whose logic lives in a module of another name (one module per stage, several rules per stage).
RULE_MODULES = {"select_checkpoint": "warmth", "warmth_validation": "warmth"}


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
        log = logging.getLogger(f"warmbench.{smk.rule}")
        wildcards = dict(smk.wildcards.items())
        log.info("start rule=%s wildcards=%s threads=%s", smk.rule, wildcards, smk.threads)
        started = time.perf_counter()
        try:
            importlib.import_module(f"warmbench.{RULE_MODULES.get(smk.rule, smk.rule)}").run(smk)
        except Exception:
            log.exception("rule %s failed", smk.rule)
            raise
        log.info("done in %.1f s", time.perf_counter() - started)
