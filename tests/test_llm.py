"""The content-hash cache and the batched transformers backend, on the real tiny model."""
import pytest

from warmbench.llm import CallCache, Sampling, TransformersChat, cached_chat

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
    from warmbench.llm import OpenAIChat

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
