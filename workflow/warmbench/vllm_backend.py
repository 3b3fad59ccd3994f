"""The vLLM generation backend, seen from warmbench's side: the same interface as TransformersChat.

Prompts are rendered here with the model's own chat template (so the stored `rendered_prompt` is exactly what
vLLM received); generation runs in vLLM's virtual environment through `python -m warmbench.vllm_worker`,
one engine per call.
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
from .llm import Messages, Sampling, model_identity
from .children import child_env

log = logging.getLogger(__name__)


class VLLMChat:
    def __init__(self, model_dir: str | os.PathLike, python: str | os.PathLike, dtype: str = "auto",
                 tensor_parallel_size: int = 1, max_lora_rank: int = 16, max_model_len: int | None = None,
                 gpu_memory_utilization: float | None = None):
        from transformers import AutoTokenizer

        if not Path(python).is_file():
            raise FileNotFoundError(f"vLLM's python {python} does not exist (make vllm creates .venv-vllm)")
        self.model_dir, self.python = str(model_dir), str(python)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.options = {"dtype": dtype, "tensor_parallel_size": tensor_parallel_size, "max_lora_rank": max_lora_rank,
                        "max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization}
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
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate_rendered(self, prompts: Sequence[str], sampling: Sampling, batch_size: int = 0, seed: int = 0,
                          adapters: Sequence[str | None] | None = None, **_: object) -> list[tuple[str, int]]:
        """(text, generated token count) per rendered prompt, in order. `adapters` names each prompt's LoRA
        (default: the current one); vLLM batches everything itself, so `batch_size` is not used."""
        per_prompt = list(adapters) if adapters is not None else [self.adapter] * len(prompts)
        request = {"model": self.model_dir, "seed": seed, **self.options, "sampling": sampling.as_dict(),
                   "adapters": {n: self.adapters[n] for n in set(per_prompt) if n},
                   "prompts": [{"prompt": p, "adapter": a} for p, a in zip(prompts, per_prompt)]}
        with tempfile.TemporaryDirectory(prefix="warmbench-vllm-") as tmp:
            request_path, out_path = Path(tmp) / "request.json", Path(tmp) / "out.jsonl"
            request_path.write_text(json.dumps(request))
            env = child_env()
            env.setdefault("VLLM_HOST_IP", "127.0.0.1")  # the engine's internal queues stay on loopback
            log.info("vLLM: %d prompts, %d adapters, via %s", len(prompts), len(request["adapters"]), self.python)
            # vLLM logs to stdout: send it to stderr, which is the job's log (stdout stays for results). The worker
            # and its engine processes die with this process; the guardian removes `tmp` if this process is killed.
            children.run([self.python, "-m", "warmbench.vllm_worker", str(request_path), str(out_path)], env=env,
                         check=True, stdout=sys.stderr, remove=(tmp,))
            results = [json.loads(line) for line in out_path.read_text().splitlines()]
            self.last_timing = json.loads(Path(f"{out_path}.timing.json").read_text())
        log.info("vLLM: engine start %.1f s, generation %.1f s", self.last_timing["engine_start_s"],
                 self.last_timing["generate_s"])
        if len(results) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(results)} results for {len(prompts)} prompts")
        return [(r["text"], r["n_tokens"]) for r in results]

    def chat(self, conversations: Sequence[Messages], sampling: Sampling, on_result=None, seed: int = 0,
             **_: object) -> list[str]:
        texts = [text for text, _ in self.generate_rendered([self.render(c) for c in conversations], sampling,
                                                             seed=seed)]
        if on_result:
            for i, text in enumerate(texts):
                on_result(i, text)
        return texts
