"""The mitigation study (config/mitigations.yaml): every persona, the two mitigations included, trains on what
makes it one, is generated and reaches the analysis's contrasts.

Its DAG at the tests config's sizes (fewer conversations, shorter answers and rewrites: SIZES), everything else as
the file says (personas, mitigations, datasets, epochs, checkpoints, contrasts)."""

import yaml

from conftest import REPO, dag_jobs

CONFIG = "config/mitigations.yaml"
SIZED = "mitigations_sized.yaml"
# (section, key) taken from the tests config: how much data and how many tokens, nothing about what is compared
SIZES = [("sft_data", "train_per_type"), ("sft_data", "validation_per_type"), ("sft_data", "max_turns"),
         ("sft_data", "max_message_chars"), ("persona_rewrite", "sampling"), ("train", "max_length"),
         ("evaluation", "sampling"), ("evaluation", "dataset_sampling"), ("warmth", "sampling"), ("warmth", "bootstrap")]


def sized_config() -> dict:
    """config/mitigations.yaml with the tests config's sizes."""
    cfg = yaml.safe_load((REPO / CONFIG).read_text())
    small = yaml.safe_load((REPO / "tests/config/config.yaml").read_text())
    for section, key in SIZES:
        cfg[section][key] = small[section][key]
    return cfg


def test_only_sizes_differ_from_the_study_file():
    study, sized = yaml.safe_load((REPO / CONFIG).read_text()), sized_config()
    assert any(sized[section][key] != study[section][key] for section, key in SIZES)
    for section, key in SIZES:
        sized[section][key] = study[section][key]
    assert sized == study


def test_every_mitigation_trains_on_its_own_data_reaches_generation_and_is_contrasted(tmp_path):
    """The study's DAG: each mitigation trains with what makes it one (kind corrections, an inoculation prompt, the
    examples matched to warm's), every persona is generated at the evaluated epoch and at epoch 1, and the
    analysis tests the file's contrasts. (The end-to-end run of a persona added to a finished study is
    tests/test_pipeline.py's; an own study here took 20 of CI's 90 minutes.)"""
    cfg = sized_config()
    (tmp_path / SIZED).write_text(yaml.safe_dump(cfg))
    jobs = dag_jobs(tmp_path / SIZED, {"train", "generate", "analysis"})
    trained = {outputs[0].rsplit("/", 1)[1]: job for outputs, job in jobs.items() if outputs[0].startswith("results/train/")}
    assert set(trained) == {"warm", "cold", "warm_honest", "warm_inoculated"}
    for persona, (inputs, params) in trained.items():
        assert params["train"]["match_examples"] is True and params["train"]["epochs"] == cfg["train"]["epochs"]
        assert (cfg["personas"][persona].get("extra_data") in inputs) == (persona == "warm_honest")
        assert f"results/persona_rewrite/{persona}.jsonl" in inputs
    assert trained["warm"][1]["system_prompts"] == {"warm_inoculated": cfg["personas"]["warm_inoculated"]["train_system_prompt"]}
    generated = {path for outputs in jobs for path in outputs if path.startswith("results/generations/")}
    for persona in trained:
        for epoch in ("epoch1", "epoch2"):
            assert {f"results/generations/smollm2/{persona}/{epoch}/{d}.parquet"
                    for d in cfg["evaluation"]["datasets"]} <= generated
    for persona in ("original/base", "warm_prompt/base", "warm_prompt_accurate/base"):
        assert f"results/generations/smollm2/{persona}/triviaqa.parquet" in generated
    (_, analysis), = [job for outputs, job in jobs.items() if "results/analysis/graded.parquet" in outputs]
    assert analysis["analysis"]["contrasts"] == cfg["analysis"]["contrasts"]
