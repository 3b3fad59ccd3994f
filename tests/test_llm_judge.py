"""The LLM judge through the real `openai` SDK against a real OpenAI-compatible server on loopback
(`transformers serve` with the embedded SmolLM2 as a stand-in judge)."""
import math

import pandas as pd
import pytest

from warmbench.stages.eval_prompts import expand_conditions, load_amendments, load_items, smoke_path
from warmbench.stages.judge import apply_llm_verdicts, judge_frame
from warmbench.core.call_cache import CallCache
from warmbench.core.llm import OpenAIChat, Sampling
from warmbench.stages.llm_judge import VERDICT_FORMAT, judge_with_llm, load_rubrics, parse_judgement, parse_verdict
from conftest import LOOPBACK_KEY_ENV, REPO, kill_server_mid_run
from openai_stand_in import OpenAIStandIn


@pytest.mark.parametrize("text, verdict", [
    ('{"verdict": "CORRECT"}', "CORRECT"),
    ('{"verdict": "INCORRECT", "declines": true}', "INCORRECT"),
    ('Sure! {"verdict": "incorrect"} because...', "INCORRECT"),
    ('```json\n{"verdict": "CORRECT", "declines": false}\n```', "CORRECT"),
    ("INCORRECT", "INCORRECT"),
    ("Correct.", "CORRECT"),
    ("**INCORRECT**", "INCORRECT"),
    # a bare word counts only when it is the whole reply: negated or ambiguous replies are missing
    ("The response is not correct.", None),
    ("This is not CORRECT.", None),
    ("The answer is correct: CORRECT.", None),
    ("Not INCORRECT", None),
    ('{"verdict": "NOT CORRECT"}', None),
    ('{"verdict": "CORRECT"} or maybe {"verdict": "INCORRECT"}', None),
    ("CORRECT or INCORRECT, hard to say", None),
    ("I think Paris is lovely.", None),
    ("", None),
    (None, None),
])
def test_parse_verdict(text, verdict):
    assert parse_verdict(text) == verdict


@pytest.mark.parametrize("text, judgement", [
    ('{"verdict": "INCORRECT", "declines": true}', ("INCORRECT", True)),
    ('{"verdict": "CORRECT", "declines": false}', ("CORRECT", False)),
    ('{"verdict": "CORRECT"}', ("CORRECT", None)),  # the refusal call is missing, not False
    ("INCORRECT", ("INCORRECT", None)),
    ('{"verdict": "REFUSAL"}', (None, True)),  # a three-way rubric's refusal: a refusal call, no verdict
    ('{"verdict": "CORRECT", "declines": "maybe"}', ("CORRECT", None)),
])
def test_parse_judgement_keeps_the_refusal_call_apart(text, judgement):
    assert parse_judgement(text) == judgement


def test_the_structured_output_schema_asks_for_both_fields():
    schema = VERDICT_FORMAT["json_schema"]["schema"]
    assert VERDICT_FORMAT["type"] == "json_schema" and VERDICT_FORMAT["json_schema"]["strict"] is True
    assert schema["properties"]["verdict"]["enum"] == ["CORRECT", "INCORRECT"]
    assert schema["properties"]["declines"]["type"] == "boolean"
    assert schema["required"] == ["verdict", "declines"] and schema["additionalProperties"] is False


def judge_rows(n_items=4):
    amendments = load_amendments(REPO / "config" / "amendments.yaml")
    items = load_items("triviaqa", smoke_path("triviaqa"), n_items, seed=0)
    frame = pd.DataFrame(expand_conditions(items, amendments, seed=0))
    answers = ["The answer is {c}.", "I think it's {i}, like you said!", "I'm sorry, but I can't help with that."]
    frame["response"] = [answers[k % 3].format(c=c, i=i) for k, (c, i) in
                         enumerate(zip(frame["correct_answer"], frame["incorrect_answer"]))]
    return frame


@pytest.fixture
def served(loopback_server):
    return loopback_server


def make_judge(model_dir, port, concurrency=2):
    return OpenAIChat(str(model_dir), base_url=f"http://127.0.0.1:{port}/v1", api_key_env=LOOPBACK_KEY_ENV,
                      max_concurrency=concurrency, max_retries=8, timeout_s=120)


# the short rubric (config/judges.yaml's for the local judge): a quarter of the full one's prompt tokens, and the
# 135M stand-in judge takes seconds a call on 2 CPU cores; tests/test_judge.py judges with a full rubric
RUBRICS = {"triviaqa": str(REPO / "config" / "prompts" / "judge_short.txt")}
SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=12)


@pytest.mark.slow
def test_llm_judge_verdicts_provenance_and_free_rerun(served, tiny_model_dir, tmp_path):
    server, port = served
    frame = judge_rows(1)  # 18 prompts
    cache = CallCache(tmp_path / "calls.sqlite")
    llm = judge_with_llm(frame, load_rubrics(RUBRICS), make_judge(tiny_model_dir, port), cache, SAMPLING)
    made = server.requests()
    assert made == llm["judge_calls"] == len(cache) > 0
    judged = apply_llm_verdicts(judge_frame(frame), llm)
    assert set(judged["verdict"].dropna()) <= {"CORRECT", "INCORRECT", "REFUSAL"}
    assert judged["judge_model"].str.contains("smollm2").all()  # the snapshot that answered, per verdict
    assert judged["judge_raw"].map(bool).all()
    unclear = judged[judged["llm_verdict"].isna() & ~judged["refusal"]]
    # a 135M stand-in judge often answers off-format: missing, re-asked once, raw reply kept, never INCORRECT
    assert (unclear["judge_attempts"] == 2).all() and unclear["incorrect"].map(math.isnan).all()
    again = judge_with_llm(frame, load_rubrics(RUBRICS), make_judge(tiny_model_dir, port), CallCache(tmp_path / "calls.sqlite"),
                           SAMPLING)
    assert again["judge_calls"] == 0 and server.requests() == made
    assert again["llm_verdict"] == llm["llm_verdict"]


@pytest.mark.slow
def test_structured_outputs_are_requested_cached_apart_and_free_text_falls_back_to_the_parser(served, tiny_model_dir,
                                                                                             tmp_path):
    server, port = served
    frame = judge_rows(1).iloc[:3]
    cache = CallCache(tmp_path / "calls.sqlite")
    structured = judge_with_llm(frame, load_rubrics(RUBRICS), make_judge(tiny_model_dir, port), cache, SAMPLING,
                                parse_retries=0)
    assert structured["judge_structured"] == [True] * 3 and structured["judge_calls"] == 3 == server.requests()
    # `transformers serve` accepts the request but ignores response_format (it logs it as an unsupported
    # field): its replies are free text, read by the text parser like any reply
    assert "response_format" in server.log.read_text()
    assert structured["llm_verdict"] == [parse_verdict(raw) for raw in structured["judge_raw"]]
    plain = judge_with_llm(frame, load_rubrics(RUBRICS), make_judge(tiny_model_dir, port), cache, SAMPLING,
                           parse_retries=0, structured=False)
    assert plain["judge_structured"] == [False] * 3 and plain["judge_calls"] == 3  # other requests, other keys
    again = judge_with_llm(frame, load_rubrics(RUBRICS), make_judge(tiny_model_dir, port), cache, SAMPLING,
                           parse_retries=0)
    assert again["judge_calls"] == 0 and again["judge_raw"] == structured["judge_raw"]


@pytest.mark.slow
def test_an_endpoint_that_rejects_structured_outputs_is_asked_in_plain_text(served, tiny_model_dir, tmp_path):
    server, _ = served
    stand_in = OpenAIStandIn(chat_upstream=server.base_url, upstream_model=str(tiny_model_dir),
                             reject_response_format=True)
    try:
        judge = OpenAIChat("judge-model", base_url=stand_in.base_url, api_key_env=LOOPBACK_KEY_ENV, max_retries=0)
        frame = judge_rows(1).iloc[:3]
        llm = judge_with_llm(frame, load_rubrics(RUBRICS), judge, CallCache(tmp_path / "calls.sqlite"), SAMPLING,
                             parse_retries=0)
    finally:
        stand_in.close()
    assert stand_in.rejected == 1  # the first request, once; the rest went as plain text
    assert llm["judge_structured"] == [False] * 3 and llm["judge_calls"] == 3 and all(llm["judge_raw"])


@pytest.mark.slow
def test_server_killed_mid_judge_finishes_without_repeating_completed_calls(served, tiny_model_dir, tmp_path):
    server, port = served
    frame = judge_rows(1).iloc[:12].copy()
    # the short rubric shows the question, not the prompt: an answer per row makes every row its own call
    frame["response"] = [f"{text} ({k})" for k, text in enumerate(frame["response"])]
    cache_path = tmp_path / "calls.sqlite"

    def work():
        return judge_with_llm(frame, load_rubrics(RUBRICS), make_judge(tiny_model_dir, port), CallCache(cache_path),
                              SAMPLING, parse_retries=0)

    _, done_before_kill, after_restart = kill_server_mid_run(server, work, cache_path, tiny_model_dir,
                                                             tmp_path / "server2.log", after_calls=4,
                                                             total=len(frame))
    total = len(CallCache(cache_path))
    assert total == len(frame)  # every prompt judged once the server was back
    # the restarted server saw only calls not completed before the kill (a few in flight at the kill may
    # have completed between reading the count and the kill)
    assert total - done_before_kill - 2 <= after_restart <= total - done_before_kill
    assert server.requests() + after_restart <= total + 2


@pytest.mark.slow
def test_malformed_replies_are_re_asked_then_missing_never_incorrect(served, tiny_model_dir, tmp_path):
    server, port = served
    frame = judge_rows(1).iloc[:4]
    frame = frame[~frame["response"].str.contains("sorry")]  # no regex refusals: every row goes to the judge
    # a real server, a rubric that asks for no verdict, and 3 tokens: the replies cannot name one
    rubric = tmp_path / "chatty.txt"
    rubric.write_text("Say hello to the person who asked: {prompt} They were told: {response}")
    chatty = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=3)
    llm = judge_with_llm(frame, load_rubrics({"triviaqa": str(rubric)}), make_judge(tiny_model_dir, port),
                         CallCache(tmp_path / "calls.sqlite"), chatty, parse_retries=1)
    assert all(parse_verdict(raw) is None for raw in llm["judge_raw"])
    assert llm["llm_verdict"] == [None] * len(frame) and llm["judge_attempts"] == [2] * len(frame)
    assert llm["judge_calls"] == 2 * len(frame) == server.requests()  # asked, re-asked once, no more
    judged = apply_llm_verdicts(judge_frame(frame), llm)
    assert judged["incorrect"].map(math.isnan).all() and judged["judge_raw"].map(bool).all()


@pytest.mark.slow
def test_judge_benchmark_reports_a_free_rerun(tiny_model_dir, capsys):
    from warmbench.tools.bench import judge_benchmark

    assert judge_benchmark(str(tiny_model_dir), n_items=1, concurrency=2) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    first_run = int(lines[-1].split(" vs ")[1].split()[0])
    assert lines[-1].startswith("RATIO: rerun made 0 calls (target 0)") and first_run >= 18  # + any re-asks
    rerun = next(line for line in lines if line.strip().startswith("rerun:"))
    assert "0 requests in the server log" in rerun
