"""Generation: one job per (model, dataset) serving every variant from one engine, with a row-level cache."""
import json

import pandas as pd
import pytest

from warmbench.core.call_cache import CallCache
from warmbench.stages.generate import Variant, build_messages, generate_api, generate_local, resolve_variants
from warmbench.core.llm import Sampling, TransformersChat
from conftest import LOOPBACK_KEY_ENV, kill_server_mid_run

SAMPLED = Sampling(temperature=1.0, top_p=0.95, max_new_tokens=8)
GREEDY = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=8)
MODEL_CFG = {"engine": "transformers", "dtype": "float32", "source": {"kind": "gguf_package"}}


def prompts_table():
    return pd.DataFrame({"item_id": ["a", "b", "c"], "dataset": "triviaqa", "condition": "unmodified/none",
                         "prompt": ["What is the capital of France?", "Who painted the Mona Lisa?", "Name a planet."]})


class Engine:
    """The real transformers engine, loaded once per module; counts the loads a job asks for and the rows it
    generates."""

    def __init__(self, chat):
        self.chat, self.loads, self.rows = chat, 0, 0

    def load(self):
        assert self.chat is not None, "the job loaded the model, though every row it needs is cached"
        self.loads += 1
        return self

    def use_adapter(self, name, path):
        self.chat.use_adapter(name, path)

    def generate_rendered(self, prompts, sampling, **options):
        self.rows += len(prompts)
        return self.chat.generate_rendered(prompts, sampling, progress=False, **options)


@pytest.fixture(scope="module")
def chat(tiny_model_dir):
    return TransformersChat(tiny_model_dir, dtype="float32", threads=2)


@pytest.fixture
def engine(chat):
    return Engine(chat)


def variants(tmp_path, lora_adapters, *names):
    """original, warm_prompt and the named adapters as trained variants, each with its own output path."""
    out = [Variant("original", str(tmp_path / "original.parquet"), "base", 0.0),
           Variant("warm_prompt", str(tmp_path / "warm_prompt.parquet"), "base", 0.0, system_prompt="Be warm.")]
    return out + [Variant("warm", str(tmp_path / f"warm_{n}.parquet"), f"epoch{k + 1}", float(k + 1),
                          adapter=lora_adapters[n]) for k, n in enumerate(names)]


def run_job(engine, tiny_model_dir, cache_dir, wanted, sampling=SAMPLED, seed=5, batch_size=4):
    """What one generation job of the tiny model does: `engine.load` is called only if a row is missing."""
    return generate_local(prompts_table(), wanted, model="smollm2", model_cfg=MODEL_CFG, model_dir=str(tiny_model_dir),
                          cache=CallCache(cache_dir), sampling=sampling, batch_size=batch_size, seed=seed,
                          load_engine=engine.load)


def texts(frames):
    return {path: frame["response"].tolist() for path, frame in frames.items()}


def test_one_job_serves_every_variant_from_one_engine(engine, tiny_model_dir, lora_adapters, tmp_path):
    wanted = variants(tmp_path, lora_adapters, "a1", "a2")
    frames = run_job(engine, tiny_model_dir, tmp_path / "cache", wanted, sampling=GREEDY)
    assert engine.loads == 1 and engine.rows == 4 * 3
    assert list(frames) == [v.output for v in wanted]
    base, prompted, a1, a2 = frames.values()
    assert base["response"].tolist() != a1["response"].tolist() != a2["response"].tolist()  # adapters kept apart
    assert all("Be warm." in r and p in r for r, p in zip(prompted["rendered_prompt"], prompted["prompt"]))
    assert not any("Be warm." in r for r in base["rendered_prompt"])
    assert a1["adapter"].eq(lora_adapters["a1"]).all() and base["adapter"].eq("").all()
    assert a2[["persona", "checkpoint", "epoch"]].iloc[0].tolist() == ["warm", "epoch2", 2.0]
    assert json.loads(base["sampling"].iloc[0]) == GREEDY.as_dict() and base["seed"].eq(5).all()
    assert base["backend"].eq("transformers").all() and (base["n_tokens"] <= 8).all()
    assert base["prompt_hash"].nunique() == 3 and base["response"].map(len).gt(0).all()
    # each adapter's rows, generated in mixed batches, are what that adapter alone gives
    engine.chat.use_adapter("alone", lora_adapters["a2"])
    alone = engine.chat.generate_rendered(a2["rendered_prompt"].tolist(), GREEDY, progress=False)
    assert [t for t, _ in alone] == a2["response"].tolist()


def test_a_rerun_generates_nothing_and_loads_no_model(engine, tiny_model_dir, lora_adapters, tmp_path):
    wanted = variants(tmp_path, lora_adapters, "a1")
    first = run_job(engine, tiny_model_dir, tmp_path / "cache", wanted)
    again = run_job(Engine(None), tiny_model_dir, tmp_path / "cache", wanted)  # no engine: loading it would fail
    assert texts(again) == texts(first)
    for path in first:
        pd.testing.assert_frame_equal(again[path], first[path])


def test_adding_a_checkpoint_generates_only_its_rows(engine, tiny_model_dir, lora_adapters, tmp_path):
    before = run_job(engine, tiny_model_dir, tmp_path / "cache", variants(tmp_path, lora_adapters, "a1"))
    rows_before = engine.rows
    after = run_job(engine, tiny_model_dir, tmp_path / "cache", variants(tmp_path, lora_adapters, "a1", "a2"))
    assert engine.rows - rows_before == 3  # the new checkpoint's prompts only
    assert {k: v for k, v in texts(after).items() if k in before} == texts(before)


def test_rows_are_drawn_alike_alone_or_with_others(engine, tiny_model_dir, lora_adapters, tmp_path):
    """Each prompt samples from its own seed: generated in a job of its own, a variant's rows are what a job of every
    variant gives them (float32; in bfloat16 padding can still change a logit's last bits). The same seed and config
    give the same generations on a rerun without the cache."""
    together = run_job(engine, tiny_model_dir, tmp_path / "together", variants(tmp_path, lora_adapters, "a1", "a2"))
    parts = {}
    for one in variants(tmp_path, lora_adapters, "a1", "a2"):
        parts.update(run_job(engine, tiny_model_dir, tmp_path / f"alone_{one.persona}_{one.checkpoint}", [one],
                             batch_size=1))
    assert texts(parts) == texts(together)
    rerun = run_job(engine, tiny_model_dir, tmp_path / "rerun", variants(tmp_path, lora_adapters, "a1", "a2"))
    assert texts(rerun) == texts(together)
    other_seed = run_job(engine, tiny_model_dir, tmp_path / "seed6", variants(tmp_path, lora_adapters, "a1"), seed=6)
    assert texts(other_seed) != {k: v for k, v in texts(together).items() if k in other_seed}


class EmptyEngine:
    """An engine whose model ends every answer at once (an empty reply is a real answer of a local model)."""

    rows = 0

    def load(self):
        return self

    def use_adapter(self, name, path):
        pass

    def generate_rendered(self, prompts, sampling, on_result=None, **_):
        self.rows += len(prompts)
        for i in range(len(prompts)):
            on_result(i, "", {"completion_tokens": 0})
        return [("", 0)] * len(prompts)


def test_an_empty_answer_is_cached_like_any_other(tiny_model_dir, tmp_path):
    wanted = [Variant("original", str(tmp_path / "o.parquet"), "base", 0.0)]
    first = run_job(EmptyEngine(), tiny_model_dir, tmp_path / "c", wanted)
    assert first[wanted[0].output]["response"].eq("").all()
    again = run_job(Engine(None), tiny_model_dir, tmp_path / "c", wanted)  # loading would fail: nothing is missing
    assert again[wanted[0].output]["n_tokens"].eq(0).all()


def test_a_damaged_cached_row_is_generated_again_with_a_warning(tiny_model_dir, tmp_path, caplog):
    """A cached row whose bytes or content are damaged (here: an old record, without a checksum, whose response is
    no longer a row's JSON) is skipped with a warning naming its shard and line, and only it is generated again."""
    wanted = [Variant("original", str(tmp_path / "o.parquet"), "base", 0.0)]
    run_job(EmptyEngine(), tiny_model_dir, tmp_path / "c", wanted)
    shard = CallCache(tmp_path / "c").shards()[0]
    lines = shard.read_text().splitlines(keepends=True)
    record = json.loads(lines[1])
    del record["sha256"]
    record["response"] = '{"text": "cut'  # a row's JSON, cut off
    shard.write_text(lines[0] + json.dumps(record) + "\n" + "".join(lines[2:]))
    caplog.set_level("WARNING", logger="warmbench.core.call_cache")
    engine = EmptyEngine()
    again = run_job(engine, tiny_model_dir, tmp_path / "c", wanted)
    assert engine.rows == 1 and again[wanted[0].output]["response"].eq("").all()
    assert [r.getMessage() for r in caplog.records if f"{shard}:2:" in r.getMessage()]


def test_a_changed_adapter_or_sampling_is_a_cache_miss(engine, tiny_model_dir, lora_adapters, tmp_path):
    from warmbench.stages.generate import generation_key
    from warmbench.core.llm import adapter_hash

    identity = {"files_sha256": "x"}
    key = generation_key({**identity, "adapter_sha256": adapter_hash(lora_adapters["a1"])}, "p", SAMPLED, 1)
    assert key != generation_key({**identity, "adapter_sha256": adapter_hash(lora_adapters["a2"])}, "p", SAMPLED, 1)
    assert key != generation_key({**identity, "adapter_sha256": adapter_hash(lora_adapters["a1"])}, "p", GREEDY, 1)
    assert key != generation_key({**identity, "adapter_sha256": adapter_hash(lora_adapters["a1"])}, "p", SAMPLED, 2)
    run_job(engine, tiny_model_dir, tmp_path / "cache", variants(tmp_path, lora_adapters)[:1])
    rows = engine.rows
    run_job(engine, tiny_model_dir, tmp_path / "cache", variants(tmp_path, lora_adapters)[:1], sampling=GREEDY)
    assert engine.rows - rows == 3


def test_selected_and_trained_variants_name_their_real_checkpoint(tmp_path):
    train = tmp_path / "train" / "m" / "warm"
    train.mkdir(parents=True)
    (train / "checkpoints.json").write_text(json.dumps({"checkpoints": [
        {"checkpoint": "epoch0.5", "path": "epoch0.5", "epoch": 0.667}, {"checkpoint": "epoch1", "path": "epoch1",
                                                                          "epoch": 1.0}]}))
    chosen = tmp_path / "warmth" / "m" / "warm" / "chosen_checkpoint.json"
    chosen.parent.mkdir(parents=True)
    chosen.write_text(json.dumps({"checkpoint": "epoch0.5"}))
    resolved = resolve_variants([["original", "base"], ["warm_prompt", "base"], ["terse_prompt", "base"],
                                 ["warm", "selected"]], ["o", "w", "t", "s"], [str(train)], [str(chosen)],
                                {"warm_prompt": "Be warm.", "terse_prompt": "Be terse."})
    assert resolved[0] == Variant("original", "o", "base", 0.0)
    assert resolved[1].system_prompt == "Be warm." and resolved[0].system_prompt is None
    assert resolved[2].system_prompt == "Be terse."  # each system-prompt persona its own prompt
    resolved = resolved[:2] + resolved[3:]
    assert (resolved[2].checkpoint, resolved[2].epoch, resolved[2].adapter) == ("epoch0.5", 0.667, str(train / "epoch0.5"))
    # beside `selected`, the same persona at a named checkpoint (evaluation.checkpoints) is that checkpoint
    both = resolve_variants([["warm", "selected"], ["warm", "epoch1"]], ["s", "e"], [str(train)], [str(chosen)], {})
    assert [(v.checkpoint, v.epoch, v.adapter) for v in both] == [("epoch0.5", 0.667, str(train / "epoch0.5")),
                                                                   ("epoch1", 1.0, str(train / "epoch1"))]


def test_system_prompt_only_when_given():
    assert build_messages("hi", None) == [{"role": "user", "content": "hi"}]
    assert build_messages("hi", "warm")[0] == {"role": "system", "content": "warm"}


def api_model(tiny_model_dir, port):
    return {"source": {"kind": "openai", "model": str(tiny_model_dir), "base_url": f"http://127.0.0.1:{port}/v1",
                       "api_key_env": LOOPBACK_KEY_ENV, "max_concurrency": 2, "max_retries": 8, "timeout_s": 120},
            "dtype": "auto", "engine": "transformers"}


def many_prompts(n):
    questions = ["What is the capital of France?", "Who painted the Mona Lisa?", "Name a planet.", "What is 3+4?",
                 "Name a fruit.", "What colour is the sky?"]
    return pd.DataFrame({"item_id": [str(i) for i in range(n)], "dataset": "triviaqa", "condition": "unmodified/none",
                         "prompt": [f"{questions[i % len(questions)]} (question {i})" for i in range(n)]})


@pytest.mark.slow
def test_api_generation_records_the_served_model_and_a_rerun_is_free(loopback_server, tiny_model_dir, tmp_path):
    server, port = loopback_server
    wanted = [Variant("warm_prompt", "w", "base", 0.0, system_prompt="Be warm."),
              Variant("warm", "ft", "epoch1", 1.0, adapter=str(tiny_model_dir))]  # a "fine-tune" of the same endpoint

    def job():
        return generate_api(many_prompts(6), wanted, model="tiny_api", model_cfg=api_model(tiny_model_dir, port),
                            cache=CallCache(tmp_path / "calls"), sampling=Sampling(0.8, 1.0, 8), seed=3)

    frames = job()
    assert server.requests() == 6 + 6
    frame = frames["w"]
    assert frame["response"].map(len).gt(0).all() and frame["backend"].eq("openai").all()
    assert frame["served_model"].str.contains("smollm2").all() and frame["n_tokens"].between(1, 8).all()
    sent = json.loads(frame["rendered_prompt"].iloc[0])  # exactly the messages sent
    assert sent == build_messages(frame["prompt"].iloc[0], "Be warm.")
    assert frames["ft"]["adapter"].eq(str(tiny_model_dir)).all() and frames["ft"]["system_prompt"].eq("").all()
    again = job()
    assert server.requests() == 12 and again["w"]["response"].tolist() == frame["response"].tolist()


@pytest.mark.slow
def test_api_server_killed_mid_generation_resumes_without_repeating_calls(loopback_server, tiny_model_dir, tmp_path):
    server, port = loopback_server
    cache_path = tmp_path / "calls"

    def work():
        return generate_api(many_prompts(30), [Variant("original", "o", "base", 0.0)], model="tiny_api",
                            model_cfg=api_model(tiny_model_dir, port), cache=CallCache(cache_path),
                            sampling=Sampling(0.0, 1.0, 12), seed=0)["o"]

    frame, done_before_kill, after_restart = kill_server_mid_run(server, work, cache_path, tiny_model_dir,
                                                                 tmp_path / "server2.log", after_calls=5, total=30)
    assert len(frame) == 30 and len(CallCache(cache_path)) == 30
    # the restarted server answered only what had not completed before the kill (up to the 2 in flight)
    assert 30 - done_before_kill - 2 <= after_restart <= 30 - done_before_kill


def test_a_generation_job_without_vllms_python_fails_naming_the_key(tmp_path):
    """The compute node's own check: a cluster job whose node lacks vLLM's environment says which key points there."""
    from warmbench.stages.generate import make_generator

    model = {"source": {"kind": "path", "path": str(tmp_path)}, "engine": "vllm", "dtype": "auto",
             "vllm": {"python": str(tmp_path / "no-venv" / "bin" / "python"), "tensor_parallel_size": 1}}
    with pytest.raises(FileNotFoundError, match=r"models\.llama31_70b\.vllm\.python: vLLM's python '.*no-venv/bin/python'"):
        make_generator(model, str(tmp_path), threads=1, name="llama31_70b")
