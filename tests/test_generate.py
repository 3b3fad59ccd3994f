import json

import pandas as pd
import pytest

from warmbench.generate import build_messages, generate_cell
from warmbench.llm import Sampling, TransformersChat
from conftest import LOOPBACK_KEY_ENV, kill_server_mid_run


@pytest.fixture(scope="module")
def chat(tiny_model_dir):
    return TransformersChat(tiny_model_dir, threads=2)


def prompts_table():
    return pd.DataFrame({"item_id": ["a", "b", "c"], "dataset": "triviaqa", "condition": "unmodified/none",
                         "prompt": ["What is the capital of France?", "Who painted the Mona Lisa?", "Name a planet."]})


def test_every_row_carries_its_provenance(chat):
    sampling = Sampling(temperature=0.8, top_p=1.0, max_new_tokens=8)
    frame = generate_cell(prompts_table(), chat, model="smollm2", persona="warm_prompt", checkpoint="base",
                          sampling=sampling, batch_size=2, seed=5, system_prompt="Be warm.",
                          model_source={"kind": "gguf_package"})
    assert len(frame) == 3 and frame["response"].map(len).gt(0).all()
    assert (frame["n_tokens"] <= 8).all()
    assert all("Be warm." in r and p in r for r, p in zip(frame["rendered_prompt"], frame["prompt"]))
    assert frame["prompt_hash"].nunique() == 3
    assert json.loads(frame["sampling"].iloc[0]) == sampling.as_dict()
    assert set(frame[["model", "persona", "checkpoint", "seed"]].iloc[0]) == {"smollm2", "warm_prompt", "base", 5}
    assert frame["epoch"].iloc[0] == 0.0


def test_seeded_sampling_is_reproducible(chat):
    sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=8)
    kwargs = dict(model="m", persona="original", checkpoint="base", sampling=sampling, batch_size=3)
    first = generate_cell(prompts_table(), chat, seed=11, **kwargs)["response"].tolist()
    assert generate_cell(prompts_table(), chat, seed=11, **kwargs)["response"].tolist() == first


def test_system_prompt_only_when_given():
    assert build_messages("hi", None) == [{"role": "user", "content": "hi"}]
    assert build_messages("hi", "warm")[0] == {"role": "system", "content": "warm"}


@pytest.fixture
def api_server(loopback_server):
    return loopback_server


def api_generator(tiny_model_dir, port, cache_path):
    from warmbench.generate import make_generator

    source = {"kind": "openai", "model": str(tiny_model_dir), "base_url": f"http://127.0.0.1:{port}/v1",
              "api_key_env": LOOPBACK_KEY_ENV, "max_concurrency": 2, "max_retries": 8, "timeout_s": 120}
    return make_generator({"source": source, "dtype": "auto", "engine": "transformers"}, None, 1, str(cache_path))


def many_prompts(n):
    questions = ["What is the capital of France?", "Who painted the Mona Lisa?", "Name a planet.", "What is 3+4?",
                 "Name a fruit.", "What colour is the sky?"]
    return pd.DataFrame({"item_id": [str(i) for i in range(n)], "dataset": "triviaqa", "condition": "unmodified/none",
                         "prompt": [f"{questions[i % len(questions)]} (question {i})" for i in range(n)]})


@pytest.mark.slow
def test_api_generation_records_the_served_model_and_a_rerun_is_free(api_server, tiny_model_dir, tmp_path):
    server, port = api_server
    sampling = Sampling(temperature=0.8, top_p=1.0, max_new_tokens=8)
    chat = api_generator(tiny_model_dir, port, tmp_path / "calls.sqlite")
    args = dict(model="tiny_api", persona="warm_prompt", checkpoint="base", sampling=sampling, batch_size=4, seed=3,
                system_prompt="Be warm.", model_source={"kind": "openai"})
    frame = generate_cell(many_prompts(6), chat, **args)
    assert chat.last_calls == 6 == server.requests()
    assert frame["response"].map(len).gt(0).all() and frame["backend"].eq("openai").all()
    assert frame["served_model"].str.contains("smollm2").all() and frame["n_tokens"].between(1, 8).all()
    sent = json.loads(frame["rendered_prompt"].iloc[0])  # exactly the messages sent
    assert sent == build_messages(frame["prompt"].iloc[0], "Be warm.")
    again = generate_cell(many_prompts(6), api_generator(tiny_model_dir, port, tmp_path / "calls.sqlite"), **args)
    assert server.requests() == 6 and again["response"].tolist() == frame["response"].tolist()


@pytest.mark.slow
def test_api_server_killed_mid_generation_resumes_without_repeating_calls(api_server, tiny_model_dir, tmp_path):
    from warmbench.llm import CallCache

    server, port = api_server
    cache_path = tmp_path / "calls.sqlite"

    def work():
        return generate_cell(many_prompts(30), api_generator(tiny_model_dir, port, cache_path), model="tiny_api",
                             persona="original", checkpoint="base", sampling=Sampling(0.0, 1.0, 12), batch_size=8,
                             seed=0)

    frame, done_before_kill, after_restart = kill_server_mid_run(server, work, cache_path, tiny_model_dir,
                                                                 tmp_path / "server2.log", after_calls=5)
    assert len(frame) == 30 and len(CallCache(cache_path)) == 30
    # the restarted server answered only what had not completed before the kill (up to the 2 in flight)
    assert 30 - done_before_kill - 2 <= after_restart <= 30 - done_before_kill
