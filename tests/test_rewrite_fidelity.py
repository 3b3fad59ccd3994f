"""Rewrite fidelity: the sample of rewritten turns, the prompt, the strict verdict parser, the tables, and the judge
through the real OpenAI client and the call cache against the loopback stand-in (a rerun makes no call)."""
import pandas as pd
import pytest
import yaml

from warmbench.core import checks, grid, validation
from warmbench.core.call_cache import CallCache
from warmbench.core.llm import OpenAIChat, Sampling
from warmbench.stages.rewrite_fidelity import (SAMPLE_COLUMNS, SUMMARY_COLUMNS, VERDICT_COLUMNS, annotation_sheet,
                                               fill_prompt, judge_fidelity, parse_fidelity, rewritten_turns,
                                               sample_turns, summarize)
from conftest import LOOPBACK_KEY_ENV, REPO

PROMPT = (REPO / "config" / "prompts" / "rewrite_fidelity.txt").read_text()


def records(persona, n=6):
    """persona_rewrite records: two assistant turns per conversation; the last conversation's second rewrite came
    back empty and kept its original."""
    out = []
    for i in range(n):
        original = [{"role": "user", "content": f"q{i}a"}, {"role": "assistant", "content": f"answer {i}a"},
                    {"role": "user", "content": f"q{i}b"}, {"role": "assistant", "content": f"answer {i}b {{json}}"}]
        rewritten = [dict(m) for m in original]
        rewritten[1]["content"] = f"{persona}: answer {i}a"
        if i < n - 1:
            rewritten[3]["content"] = f"{persona}: answer {i}b {{json}}"
        out.append({"id": f"c{i}", "persona": persona, "messages": rewritten, "original_messages": original})
    return out


def test_turns_pair_each_rewrite_with_its_original_and_user_message():
    turns = rewritten_turns(records("warm"), "warm")
    assert len(turns) == 12
    first = turns[0]
    assert (first["user"], first["original"], first["rewrite"]) == ("q0a", "answer 0a", "warm: answer 0a")
    assert [t["identical"] for t in turns].count(True) == 1 and turns[-1]["identical"]
    assert len({t["fidelity_id"] for t in turns}) == 12  # one stable id per persona, conversation and turn
    assert rewritten_turns(records("warm"), "warm")[5]["fidelity_id"] == turns[5]["fidelity_id"]
    assert rewritten_turns(records("cold"), "cold")[5]["fidelity_id"] != turns[5]["fidelity_id"]


def test_the_sample_is_seeded_ordered_and_paired_across_personas():
    warm, cold = rewritten_turns(records("warm"), "warm"), rewritten_turns(records("cold"), "cold")
    sample = sample_turns(warm, 5, seed=7)
    assert len(sample) == 5 and sample == sample_turns(warm, 5, seed=7) != sample_turns(warm, 5, seed=8)
    assert [t["turn"] for t in sample] == [t["turn"] for t in sample_turns(cold, 5, seed=7)]
    assert [(t["conversation_id"], t["turn"]) for t in sample] == sorted((t["conversation_id"], t["turn"])
                                                                         for t in sample)
    assert len(sample_turns(warm, 50, seed=7)) == 12  # all there are


def test_the_prompt_shows_all_three_texts_and_keeps_braces():
    assert all(field in PROMPT for field in ("{user}", "{original}", "{rewrite}", "KEEPS", "CHANGES"))
    turn = rewritten_turns(records("warm"), "warm")[1]
    text = fill_prompt(PROMPT, turn)
    assert "q0b" in text and "answer 0b {json}" in text and "warm: answer 0b {json}" in text
    assert "{user}" not in text and "{original}" not in text and "{rewrite}" not in text


@pytest.mark.parametrize("reply, verdict", [
    ("KEEPS", "KEEPS"), (" changes.\n", "CHANGES"), ("**Keeps**", "KEEPS"), ('{"verdict": "CHANGES"}', "CHANGES"),
    ('Here: {"verdict": "keeps"}', "KEEPS"),
    ("It KEEPS the content", None), ("KEEPS or CHANGES", None), ("not KEEPS", None), ("KEEP", None),
    ('{"verdict": "maybe"}', None), ('{"verdict": "KEEPS"} {"verdict": "CHANGES"}', None), ("", None), (None, None),
])
def test_only_the_word_alone_or_a_declared_verdict_counts(reply, verdict):
    assert parse_fidelity(reply) == verdict


def test_judge_through_the_client_and_cache_then_a_free_rerun(stand_in, tmp_path):
    stand_in.chat_handler = lambda request: "CHANGES" if "q1" in request["messages"][0]["content"] else (
        "I think so." if "q2a" in request["messages"][0]["content"] else "KEEPS")
    turns = [t for p in ("warm", "cold") for t in sample_turns(rewritten_turns(records(p), p), 8, seed=3)]
    chat = OpenAIChat("gpt-4o-2024-08-06", base_url=stand_in.base_url, api_key_env=LOOPBACK_KEY_ENV, max_retries=0)
    sampling = Sampling(temperature=0.0, max_new_tokens=8)
    verdicts = judge_fidelity(turns, PROMPT, chat, CallCache(tmp_path / "cache"), sampling)
    assert list(verdicts.columns) == VERDICT_COLUMNS and len(verdicts) == 16
    assert stand_in.chat_requests == 16
    expected = ["CHANGES" if t["user"].startswith("q1") else None if t["user"] == "q2a" else "KEEPS" for t in turns]
    assert verdicts["judge_verdict"].fillna("unclear").tolist() == [v or "unclear" for v in expected]
    again = judge_fidelity(turns, PROMPT, chat, CallCache(tmp_path / "cache"), sampling)
    assert stand_in.chat_requests == 16 and again.equals(verdicts)  # every call came from the cache

    summary = summarize(verdicts).set_index("persona")
    assert list(summarize(verdicts).columns) == SUMMARY_COLUMNS
    for persona, group in verdicts.groupby("persona"):
        row, said = summary.loc[persona], group["judge_verdict"]
        assert row["n"] == 8 == row["keeps"] + row["changes"] + row["unclear"]
        assert (row["keeps"], row["changes"]) == ((said == "KEEPS").sum(), (said == "CHANGES").sum())
        assert row["share_keeps"] == pytest.approx(row["keeps"] / (row["keeps"] + row["changes"]))
        assert row["identical"] == group["identical"].sum() and row["judge_model"] == "gpt-4o-2024-08-06"
    assert summary["unclear"].sum() == expected.count(None) > 0

    sheet = annotation_sheet(verdicts)
    assert list(sheet.columns) == SAMPLE_COLUMNS  # blind: no judge verdict for the annotators
    assert sheet["fidelity_id"].tolist() == verdicts["fidelity_id"].tolist() and (sheet["human_verdict"] == "").all()


def test_no_turns_give_empty_tables_of_the_right_shape():
    class NoCalls:
        identity = {"model": "none"}

        def chat(self, *args, **kwargs):
            raise AssertionError("no call expected")

    verdicts = judge_fidelity([], PROMPT, NoCalls(), CallCache("/nonexistent/cache"), Sampling())
    assert list(verdicts.columns) == VERDICT_COLUMNS and verdicts.empty
    assert list(summarize(verdicts).columns) == SUMMARY_COLUMNS and summarize(verdicts).empty


def config_of(name):
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    validation.validate(cfg)
    return cfg


def test_the_judge_is_the_study_judge_else_the_rewrite_model_unless_named():
    embedded = config_of("config.yaml")  # judge.kind reference: no LLM judge, so the rewrite model
    assert grid.fidelity_backend(embedded) == {"kind": "transformers", "model": "smollm2"}
    assert grid.fidelity_model_key(embedded) == "smollm2" and embedded["rewrite_fidelity"]["sample"] == 8
    paper = config_of("paper.yaml")
    assert grid.fidelity_backend(paper)["model"] == "gpt-4o-2024-08-06" == paper["judge"]["backend"]["model"]
    assert paper["rewrite_fidelity"]["sample"] == 50 and grid.fidelity_model_key(paper) is None
    own = {"kind": "openai", "model": "gpt-4.1-2025-04-14", "api_key_env": "FIDELITY_KEY"}
    embedded["rewrite_fidelity"]["backend"] = own
    assert grid.fidelity_backend(embedded) == own
    assert "rewrite_fidelity.backend (gpt-4.1-2025-04-14)" in checks.missing_secrets(embedded, environ={})["FIDELITY_KEY"]


def test_a_local_fidelity_judge_must_be_a_local_model_key():
    cfg = config_of("config.yaml")
    cfg["rewrite_fidelity"]["backend"] = {"kind": "transformers", "model": "llama"}
    with pytest.raises(validation.ConfigError, match="rewrite_fidelity.backend.model"):
        checks.check(cfg, root=REPO)
    cfg["rewrite_fidelity"].update(backend=None, prompt="config/prompts/nope.txt")
    with pytest.raises(validation.ConfigError, match="rewrite_fidelity.prompt"):
        checks.check(cfg, root=REPO)


def test_the_stage_writes_its_three_tables_and_a_rerun_makes_no_call(stand_in, tmp_path):
    from types import SimpleNamespace

    from warmbench.core.files import write_jsonl
    from warmbench.stages.rewrite_fidelity import run

    stand_in.chat_handler = lambda request: "KEEPS"
    paths = []
    for persona in ("warm", "cold"):
        paths.append(str(tmp_path / f"{persona}.jsonl"))
        write_jsonl(paths[-1], records(persona))
    output = SimpleNamespace(summary=str(tmp_path / "fidelity.csv"), verdicts=str(tmp_path / "verdicts.parquet"),
                             sample=str(tmp_path / "sample.csv"))
    backend = {"kind": "openai", "model": "gpt-4o-2024-08-06", "base_url": stand_in.base_url,
               "api_key_env": LOOPBACK_KEY_ENV, "max_retries": 0}
    smk = SimpleNamespace(
        input=SimpleNamespace(rewrites=paths, prompt=str(REPO / "config/prompts/rewrite_fidelity.txt"), backend_model=[]),
        output=output, threads=1,
        params=SimpleNamespace(backend=backend, local_model=None, sample_size=3, sampling={"temperature": 0.0,
                               "max_new_tokens": 8}, batch_size=4, seed=5, cache=str(tmp_path / "cache")))
    run(smk)
    summary = pd.read_csv(output.summary)
    assert summary[["persona", "n", "keeps"]].values.tolist() == [["warm", 3, 3], ["cold", 3, 3]]
    assert len(pd.read_parquet(output.verdicts)) == 6 and len(pd.read_csv(output.sample)) == 6
    run(smk)
    assert stand_in.chat_requests == 6
