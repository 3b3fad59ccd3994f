"""Persona rewrites against a loopback OpenAI-compatible server that answers empty replies: the stage fails,
naming the count, keeps nothing bad in the cache, and asks again once the server is fixed."""
import json
import subprocess
import sys

import pytest
import yaml

from warmbench.core.call_cache import CallCache
from warmbench.core.llm import OpenAIChat, Sampling, TooManyFailures
from warmbench.stages.persona_rewrite import rewrite
from conftest import LOOPBACK_KEY_ENV, REPO, scratch_workflow

TEMPLATE = "Rewrite warmly. User: {user} Reply: {response}"


def conversations(n):
    return [{"id": f"c{i}", "messages": [{"role": "user", "content": f"question {i}"},
                                         {"role": "assistant", "content": f"answer {i}"}]} for i in range(n)]


def chat_for(stand_in):
    return OpenAIChat("gpt-4o-2024-08-06", base_url=stand_in.base_url, api_key_env=LOOPBACK_KEY_ENV, max_retries=0)


def warm_reply(request):
    return "Warmly: " + request["messages"][0]["content"][-20:]


def test_too_many_empty_rewrites_fail_the_stage_naming_the_count(stand_in, tmp_path):
    stand_in.chat_handler = lambda request: ""
    with pytest.raises(TooManyFailures, match=r"40 of 40 rewrites came back empty \(100\.0%\), more than "
                                              r"persona_rewrite\.max_empty_share = 0\.05"):
        rewrite(conversations(40), "warm", TEMPLATE, chat_for(stand_in), CallCache(tmp_path / "calls"), Sampling(),
                max_empty_share=0.05)  # the schema's default
    assert len(CallCache(tmp_path / "calls")) == 0
    stand_in.chat_handler = warm_reply  # the server is fixed: every rewrite is asked again
    records, calls = rewrite(conversations(40), "warm", TEMPLATE, chat_for(stand_in), CallCache(tmp_path / "calls"),
                             Sampling(), max_empty_share=0.05)
    assert calls == 40 and stand_in.chat_requests == 80
    assert all(r["messages"][1]["content"].startswith("Warmly: ") for r in records)


def test_a_few_empty_rewrites_within_the_share_keep_the_original_turn(stand_in, tmp_path):
    stand_in.chat_handler = lambda request: "" if "answer 7" in request["messages"][0]["content"] else warm_reply(request)
    records, calls = rewrite(conversations(40), "warm", TEMPLATE, chat_for(stand_in), CallCache(tmp_path / "calls"),
                             Sampling(), max_empty_share=0.05)  # 1 of 40 = 2.5%
    assert calls == 40 and records[7]["messages"][1]["content"] == "answer 7"
    assert records[7]["empty_rewrites_kept_original"] == 1 and len(CallCache(tmp_path / "calls")) == 39
    with pytest.raises(TooManyFailures, match="1 of 40 rewrites came back empty"):
        rewrite(conversations(40), "warm", TEMPLATE, chat_for(stand_in), CallCache(tmp_path / "calls"), Sampling(),
                max_empty_share=0.0)


@pytest.mark.slow
def test_the_rule_fails_on_an_empty_answering_server_and_succeeds_after_the_fix(stand_in, tmp_path):
    """The issue's probe, through the real snakemake CLI: a server answering "" to every rewrite."""
    work = scratch_workflow(tmp_path / "work")
    cfg = yaml.safe_load((REPO / "tests/config/config.yaml").read_text())
    cfg["persona_rewrite"]["backend"] = {"kind": "openai", "model": "gpt-4o-2024-08-06", "base_url": stand_in.base_url,
                                         "api_key_env": LOOPBACK_KEY_ENV, "max_retries": 0}
    (work / "api.yaml").write_text(yaml.safe_dump(cfg))
    target = "results/persona_rewrite/warm.jsonl"

    def snakemake():
        return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "api.yaml", "--",
                               target], cwd=work, capture_output=True, text=True, timeout=600)

    stand_in.chat_handler = lambda request: ""
    failed = snakemake()
    assert failed.returncode != 0 and not (work / target).exists()
    asked = stand_in.chat_requests
    log = (work / "logs/persona_rewrite/warm.log").read_text()
    assert f"{asked} of {asked} rewrites came back empty (100.0%), more than persona_rewrite.max_empty_share" in log
    assert CallCache(work / "results/cache/llm_calls").shards() == []  # nothing bad was kept
    stand_in.chat_handler = warm_reply
    fixed = snakemake()
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert stand_in.chat_requests == 2 * asked  # every rewrite asked again
    rewrites = [json.loads(line) for line in (work / target).read_text().splitlines()]
    assert all(m["content"].startswith("Warmly: ") for r in rewrites for m in r["messages"] if m["role"] == "assistant")
