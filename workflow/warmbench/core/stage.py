"""Runs one Snakemake job: logging to the rule's log file, then the function its `params.stage` names."""
from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import importlib
import logging
import os
import sys
import time
from pathlib import Path

from .call_cache import RULE_ENV
from .children import PACKAGE_ROOT, exit_on_signals
from .locks import JobRunning, job_lock

# Rules that reach the internet (the Hugging Face hub, the OpenAI fine-tuning API): the workflow's `localrules`
# (a test keeps the two lists equal), run on the submit host. Every other job runs offline from the hub, so a
# compute node without internet fails at once, naming what was not pre-fetched.
ONLINE_RULES = ("download_dataset", "download_scorer", "download_detoxify", "base_model", "train_openai")
_OFFLINE_HINT = ("not pre-fetched: jobs run with HF_HUB_OFFLINE=1, so every hub file must be downloaded by a "
                 "local rule first (models: a `models` entry; the warmth scorer: a `models` key, a local path or a hub id)")


def warmbench_imports(path: Path) -> frozenset[str]:
    """The warmbench modules a module's source imports (at the top or inside functions), as dotted names under the
    package ("core.files", "stages.nsfw"): relative imports are resolved from the module's own subpackage."""
    path = path.resolve()
    parts = path.with_suffix("").parts
    at = len(parts) - 1 - parts[::-1].index("warmbench")  # the innermost folder named warmbench: the package
    return _imports(path.read_text(encoding="utf-8"), str(path), parts[at + 1:-1], path.parents[len(parts) - at - 2])


# Every rule's code_hash walks the shared modules: each source is parsed once per process, keyed by its text (an
# edited file parses anew), so the Snakefile's top level stays cheap.
@functools.lru_cache(maxsize=None)
def _imports(source: str, filename: str, package: tuple[str, ...], root: Path) -> frozenset[str]:
    found = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package):
                    continue  # above the package
                base = list(package[:len(package) - node.level + 1])
            elif (node.module or "").split(".")[0] == "warmbench":
                base = []
            else:
                continue
            module = base + [p for p in (node.module or "").split(".") if p][1 if not node.level else 0:]
            # `from ..core import files` imports the module core.files; `from ..core.files import x` the module itself
            found |= {".".join(module)} | {".".join(module + [alias.name]) for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("warmbench.") for a in node.names if a.name.startswith("warmbench.")}
    return frozenset(name for name in found if name and _module_path(root, name).is_file())


def _module_path(package: Path, module: str) -> Path:
    """The file of a dotted module under the package folder (core.files: core/files.py)."""
    return package.joinpath(*module.split(".")).with_suffix(".py")


@functools.lru_cache(maxsize=None)
def code_hash(module: str) -> str:
    """sha256 over the code (code_text: no comments or docstrings) of stage warmbench.stages.<module> and every
    warmbench module it imports, directly or through others (its helpers, the core modules it uses): the code a rule
    runs. A rule carries it as a param, so Snakemake reruns the rule (and what depends on it) when that code changes,
    and nothing else."""
    package = PACKAGE_ROOT / "warmbench"
    seen, todo = set(), [f"stages.{module}"]
    while todo:
        name = todo.pop()
        path = _module_path(package, name)
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        todo += warmbench_imports(path)
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(f"{name}\0{code_text(_module_path(package, name))}\0".encode())
    return digest.hexdigest()[:16]


def code_text(path: Path) -> str:
    """A module's code as Python parses it, docstrings left out: comments, docstrings and layout change no output,
    so editing them must rerun nothing (a comment in refusal.py once reran every fine-tune)."""
    return _code_text(path.read_text(encoding="utf-8"), str(path))


@functools.lru_cache(maxsize=None)
def _code_text(source: str, filename: str) -> str:
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
                isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def stage(module: str, function: str = "run") -> dict:
    """A rule's `params.stage`: the function its job runs (warmbench.stages.<module>.<function>) and the hash of
    the code behind it (see code_hash)."""
    if not _module_path(PACKAGE_ROOT / "warmbench", f"stages.{module}").is_file():
        raise ValueError(f"no stage module warmbench.stages.{module}")
    return {"entry": f"{module}.{function}", "code": code_hash(module)}


def entrypoint(smk):
    """The function a job runs, named by its rule's `params.stage` (see stage)."""
    entry = getattr(smk.params, "stage", None)
    if not entry:
        raise RuntimeError(f"rule {smk.rule} has no params.stage = stage(\"<module>\"): which code to run")
    module, function = entry["entry"].rsplit(".", 1)
    return getattr(importlib.import_module(f"warmbench.stages.{module}"), function)


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


@contextlib.contextmanager
def output_to(stream):
    """File descriptors 1 and 2 (and so every child process: vLLM's worker, `accelerate launch`, servers) write to
    `stream` until the block ends; sys.stdout and sys.stderr too."""
    for handle in (sys.stdout, sys.stderr):
        handle.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(stream.fileno(), 1)
        os.dup2(stream.fileno(), 2)
        with contextlib.redirect_stderr(stream), contextlib.redirect_stdout(stream):
            yield
    finally:
        stream.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def run_job(smk) -> None:
    log_path = smk.log[0] if len(smk.log) else None
    stream = open(log_path, "a", buffering=1, encoding="utf-8") if log_path else None
    # stderr carries tqdm progress bars (with rates and ETA) and warnings, stdout the trainer's loss lines: both go to
    # the job's log, from this process and from its children.
    with contextlib.ExitStack() as stack:
        if stream is not None:
            stack.enter_context(stream)
            stack.enter_context(output_to(stream))
        configure_logging()
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ[RULE_ENV] = smk.rule  # each LLM call it caches names this rule (the cost ledger)
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
                entrypoint(smk)(smk)
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
