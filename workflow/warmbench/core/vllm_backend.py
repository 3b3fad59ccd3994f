"""The vLLM generation backend, seen from warmbench's side: the same interface as TransformersChat.

Prompts are rendered here with the model's own chat template (so the stored `rendered_prompt` is exactly what
vLLM received); generation runs in vLLM's virtual environment through `python -m warmbench.core.vllm_worker`,
one engine per call, serving the base model and every LoRA adapter the call names. Each prompt carries its own
seed (prompt_seed: from the job's seed and the prompt's text).
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from . import children
from .local_models import resolve_dtype
from .children import child_env
from .llm import Messages, OnResult, Sampling, load_chat_tokenizer, model_identity, prompt_seed, render_chat

log = logging.getLogger(__name__)


class VLLMChat:
    def __init__(self, model_dir: str | os.PathLike, python: str | os.PathLike, dtype: str = "auto",
                 tensor_parallel_size: int = 1, max_lora_rank: int = 16, max_model_len: int | None = None,
                 gpu_memory_utilization: float | None = None, enforce_eager: bool = False, config_key: str = "models.<name>.vllm.python"):
        # checked where the job runs (a compute node): the submit host's check cannot see this node's files
        if not Path(python).is_file():
            raise FileNotFoundError(f"{config_key}: vLLM's python {str(python)!r} does not exist here "
                                    "(`make vllm` creates .venv-vllm; on a cluster, envs/README.md)")
        self.model_dir, self.python = str(model_dir), str(python)
        self.tokenizer = load_chat_tokenizer(self.model_dir)
        self.options = {"dtype": resolve_dtype(dtype), "tensor_parallel_size": tensor_parallel_size, "max_lora_rank": max_lora_rank,
                        "max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization,
                        "enforce_eager": enforce_eager}
        self.adapters: dict[str, str] = {}
        self.last_timing: dict = {}
        self.adapter: str | None = None
        self.identity = model_identity("vllm", self.model_dir, dtype)

    def use_adapter(self, name: str, path: str | os.PathLike) -> None:
        """Serve a LoRA adapter beside the base weights (never merged); later prompts use it."""
        self.adapters[name] = str(path)
        self.adapter = name
        self.identity = model_identity("vllm", self.model_dir, self.options["dtype"], adapter=path)

    def render(self, messages: Messages) -> str:
        return render_chat(self.tokenizer, messages)

    def generate_rendered(self, prompts: Sequence[str], sampling: Sampling, batch_size: int = 0, seed: int = 0,
                          adapters: Sequence[str | None] | None = None, on_result: OnResult | None = None,
                          **_: object) -> list[tuple[str, int]]:
        """(text, generated token count) per rendered prompt, in order. `adapters` names each prompt's LoRA
        (default: the current one); vLLM batches everything itself, so `batch_size` is not used. `on_result` gets
        every completed prompt, also those the worker finished before failing or being stopped (it writes them
        as it goes), so a caller can keep them."""
        per_prompt = list(adapters) if adapters is not None else [self.adapter] * len(prompts)
        request = {"model": self.model_dir, "seed": seed, **self.options, "sampling": sampling.as_dict(),
                   "adapters": {n: self.adapters[n] for n in set(per_prompt) if n},
                   "prompts": [{"prompt": p, "adapter": a, "seed": prompt_seed(seed, p)}
                               for p, a in zip(prompts, per_prompt)]}
        results: list[tuple[str, int] | None] = [None] * len(prompts)
        with tempfile.TemporaryDirectory(prefix="warmbench-vllm-") as tmp:
            request_path, out_path = Path(tmp) / "request.json", Path(tmp) / "out.jsonl"
            request_path.write_text(json.dumps(request))
            env = child_env()
            env.setdefault("VLLM_HOST_IP", "127.0.0.1")  # the engine's internal queues stay on loopback
            log.info("vLLM: %d prompts, %d adapters, via %s", len(prompts), len(request["adapters"]), self.python)
            try:
                # vLLM logs to stdout: send it to stderr, which is the job's log (stdout stays for results). The
                # worker and its engine processes die with this process; the guardian removes `tmp` if this process
                # is killed.
                children.run([self.python, "-m", "warmbench.core.vllm_worker", str(request_path), str(out_path)], env=env,
                             check=True, stdout=sys.stderr, remove=(tmp,))
                self.last_timing = json.loads(Path(f"{out_path}.timing.json").read_text())
            finally:
                for line in (out_path.read_text().splitlines(keepends=True) if out_path.exists() else []):
                    if not line.endswith("\n"):
                        continue  # the line being written when the worker stopped
                    record = json.loads(line)
                    results[record["index"]] = (record["text"], record["n_tokens"])
                    if on_result:
                        on_result(record["index"], record["text"], {"completion_tokens": record["n_tokens"]})
        log.info("vLLM: engine start %.1f s, generation %.1f s", self.last_timing["engine_start_s"],
                 self.last_timing["generate_s"])
        missing = sum(r is None for r in results)
        if missing:
            raise RuntimeError(f"vLLM returned no result for {missing} of {len(prompts)} prompts")
        return results  # type: ignore[return-value]

    def chat(self, conversations: Sequence[Messages], sampling: Sampling, on_result=None, seed: int = 0,
             **_: object) -> list[str]:
        return [text for text, _ in self.generate_rendered([self.render(c) for c in conversations], sampling,
                                                           seed=seed, on_result=on_result)]
