"""Config validation: a wrong key or type fails before any job, with a message naming it."""
import re
import subprocess
import sys

import pytest
import yaml
from snakemake.utils import validate

from warmbench import config as wb
from conftest import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def dry_run(tmp_path, cfg, env=None):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(path)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=120)


def test_default_and_test_configs_are_valid():
    for path in (REPO / "config" / "config.yaml", REPO / "tests" / "config" / "config.yaml"):
        cfg = yaml.safe_load(path.read_text())
        validate(cfg, str(SCHEMA))
        wb.check(cfg, root=REPO, environ={})


def test_unknown_key_fails_before_any_job_and_names_it(tmp_path):
    cfg = default_config()
    cfg["train"]["epochz"] = 3
    result = dry_run(tmp_path, cfg)
    assert result.returncode != 0
    assert "epochz" in result.stderr + result.stdout
    assert "Job stats" not in result.stdout + result.stderr


def test_semantic_error_fails_before_any_job_and_names_the_key(tmp_path):
    cfg = default_config()
    cfg["evaluation"]["checkpoint_selection"]["epoch"] = 3
    result = dry_run(tmp_path, cfg)
    assert result.returncode != 0
    assert "evaluation.checkpoint_selection.epoch" in result.stderr + result.stdout


@pytest.mark.parametrize("mutate, needle", [
    (lambda c: c["evaluation"].update(items_per_dataset="many"), "'many' is not of type 'integer'"),
    (lambda c: c["evaluation"].update(datasets=["triviaqa", "mmlux"]), "'mmlux' is not one of"),
    (lambda c: c["models"].update({"Bad-Name": c["models"]["smollm2"]}), "Bad-Name"),
    (lambda c: c["models"]["smollm2"]["source"].update(kind="hub"), "kind"),
    (lambda c: c["train"]["lora"].update(rank=8), "rank"),
    (lambda c: c["evaluation"].update(checkpoint_selection={"rule": "plateau"}), "checkpoint_selection"),
])
def test_schema_errors_name_the_offender(mutate, needle):
    cfg = default_config()
    mutate(cfg)
    with pytest.raises(Exception) as err:
        validate(cfg, str(SCHEMA))
    assert needle in str(err.value)


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c["train"].update(checkpoint_epochs=[0.5, 3]), "train.checkpoint_epochs"),
    (lambda c: c["evaluation"].update(checkpoint_selection={"rule": "fixed", "epoch": 1.5}),
     "evaluation.checkpoint_selection.epoch"),
    (lambda c: c["persona_rewrite"]["backend"].update(model="llama"), "persona_rewrite.backend.model"),
    (lambda c: c["persona_rewrite"]["prompts"].update(warm="config/prompts/nope.txt"), "persona_rewrite.prompts.warm"),
    (lambda c: c["evaluation"].update(amendments="missing.yaml"), "evaluation.amendments"),
    (lambda c: c.update(data={**c["data"], "source": "hub"}), "data.hub.disinfo"),  # gated, no HF_TOKEN
    (lambda c: c.update(data={**c["data"], "source": "hub"}) or c["evaluation"].update(datasets=["triviaqa"]),
     "data.wrong_answers"),
    (lambda c: c["judge"].update(annotations="filled.csv"), "judge.annotations"),
])
def test_semantic_checks_name_the_key(mutate, key):
    cfg = default_config()
    validate(cfg, str(SCHEMA))
    mutate(cfg)
    with pytest.raises(wb.ConfigError, match=key.replace(".", r"\.")):
        wb.check(cfg, root=REPO, environ={})


def test_missing_api_key_fails_before_any_job(tmp_path):
    cfg = default_config()
    cfg["persona_rewrite"]["backend"] = {"kind": "openai", "model": "gpt-4o-2024-08-06", "api_key_env": "WARMBENCH_TEST_KEY"}
    result = dry_run(tmp_path, cfg, env={k: v for k, v in __import__("os").environ.items() if k != "WARMBENCH_TEST_KEY"})
    assert result.returncode != 0
    assert "WARMBENCH_TEST_KEY is not set" in result.stderr + result.stdout
    assert "Job stats" not in result.stdout + result.stderr


def test_grid_of_jobs():
    cfg = default_config()
    validate(cfg, str(SCHEMA))
    cells = wb.eval_cells(cfg)
    assert {(c.persona, c.checkpoint) for c in cells} == {
        ("original", "base"), ("warm_prompt", "base"), ("warm", "epoch2"), ("cold", "epoch2")}
    assert len(cells) == 4 * len(cfg["evaluation"]["datasets"])
    cfg["evaluation"]["checkpoint_selection"] = {"rule": "plateau", "within": 0.1}
    assert {(c.persona, c.checkpoint) for c in wb.eval_cells(cfg)} == {
        ("original", "base"), ("warm_prompt", "base"), ("warm", "selected"), ("cold", "selected")}
    warmth = {(c.persona, c.checkpoint) for c in wb.warmth_cells(cfg)}
    assert ("warm", "epoch0.5") in warmth and ("cold", "epoch1") in warmth and len(warmth) == 2 + 2 * 3
    assert wb.label_epoch(wb.epoch_label(0.5)) == 0.5 and wb.epoch_label(2.0) == "epoch2"


def test_canonical_key_order_makes_params_order_insensitive():
    a = {"b": 1, "a": {"y": [{"d": 1, "c": 2}], "x": None}}
    b = {"a": {"x": None, "y": [{"c": 2, "d": 1}]}, "b": 1}
    assert repr(wb.canonical(a)) == repr(wb.canonical(b))
    assert list(wb.canonical(a)) == ["a", "b"]


def test_hub_data_downloads_on_the_submit_host_before_the_prompts(tmp_path):
    cfg = default_config()
    cfg["data"] = {"source": "hub", "wrong_answers": {"backend": {"kind": "transformers", "model": "smollm2"}}}
    result = dry_run(tmp_path, cfg, env={**__import__("os").environ, "HF_TOKEN": "hf_dry_run"})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for dataset in cfg["evaluation"]["datasets"]:
        assert f"resources/data/{dataset}.jsonl" in out
    assert re.search(r"^download_dataset\s+7$", out, re.M)  # one download per dataset


def test_paper_config_is_valid_and_names_what_it_needs():
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    validate(cfg, str(SCHEMA))
    with pytest.raises(wb.ConfigError, match="HF_TOKEN"):
        wb.check(cfg, root=REPO, environ={"OPENAI_API_KEY": "k"})
    with pytest.raises(wb.ConfigError, match="OPENAI_API_KEY is not set"):
        wb.check(cfg, root=REPO, environ={"HF_TOKEN": "t"})
    wb.check(cfg, root=REPO, environ={"OPENAI_API_KEY": "k", "HF_TOKEN": "t"})
    assert [float(e) for e in cfg["train"]["checkpoint_epochs"]] == [0.5, 1, 1.5, 2, 4, 6, 8, 10]
    assert cfg["train"]["per_device_batch_size"] * cfg["train"]["gradient_accumulation_steps"] == 16


def test_a_model_behind_an_api_is_evaluated_untrained(tmp_path):
    cfg = default_config()
    cfg["models"]["gpt4o"] = {"source": {"kind": "openai", "model": "gpt-4o-2024-08-06",
                                         "api_key_env": "WARMBENCH_TEST_KEY"}}
    result = dry_run(tmp_path, cfg, env={**__import__("os").environ, "WARMBENCH_TEST_KEY": "k"})
    validate(cfg, str(SCHEMA))
    cells = [c for c in wb.eval_cells(cfg) if c.model == "gpt4o"]
    assert {c.persona for c in cells} == {"original", "warm_prompt"}  # no local weights to fine-tune
    assert {c.persona for c in wb.warmth_cells(cfg) if c.model == "gpt4o"} == {"original", "warm_prompt"}
    with pytest.raises(wb.ConfigError, match="WARMBENCH_TEST_KEY is not set"):
        wb.check(cfg, root=REPO, environ={})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resources/models/gpt4o" not in result.stdout and "results/train/gpt4o" not in result.stdout
    assert "results/generations/gpt4o/warm_prompt/base/triviaqa.parquet" in result.stdout


def test_an_api_model_with_fine_tune_gets_trained_personas_at_its_own_epochs(tmp_path):
    cfg = default_config()
    cfg["models"]["gpt4o"] = {"source": {"kind": "openai", "model": "gpt-4o-2024-08-06", "api_key_env": "WB_KEY"},
                              "fine_tune": {"learning_rate_multiplier": {"warm": 0.25, "cold": 0.1},
                                            "checkpoint_epochs": [1, 2]}}
    result = dry_run(tmp_path, cfg, env={**__import__("os").environ, "WB_KEY": "k"})  # before validate fills defaults
    validate(cfg, str(SCHEMA))
    wb.check(cfg, root=REPO, environ={"WB_KEY": "k"})
    warmth = {(c.persona, c.checkpoint) for c in wb.warmth_cells(cfg) if c.model == "gpt4o"}
    assert warmth == {("original", "base"), ("warm_prompt", "base"), ("warm", "epoch1"), ("warm", "epoch2"),
                      ("cold", "epoch1"), ("cold", "epoch2")}  # fine_tune's epochs, not train's
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^train_openai\s+2$", result.stdout, re.M)
    assert "results/train/gpt4o/warm" in result.stdout and "resources/models/gpt4o" not in result.stdout
    assert "results/generations/gpt4o/warm/epoch2/triviaqa.parquet" in result.stdout


GPT4O = {"kind": "openai", "model": "gpt-4o-2024-08-06"}


@pytest.mark.parametrize("model, message", [
    ({"source": {"kind": "path", "path": "tests"}, "fine_tune": {"learning_rate_multiplier": {"warm": 1},
                                                                 "checkpoint_epochs": [2]}},
     r"models\.extra\.fine_tune: only for models behind the OpenAI API"),
    ({"source": GPT4O, "fine_tune": {"learning_rate_multiplier": {"warm": 0.25}, "checkpoint_epochs": [2]}},
     r"models\.extra\.fine_tune\.learning_rate_multiplier: no multiplier for persona\(s\) \['cold'\]"),
    ({"source": GPT4O, "fine_tune": {"learning_rate_multiplier": {"warm": 0.25, "cold": 0.1}, "checkpoint_epochs": [1, 6]}},
     r"models\.extra\.fine_tune\.checkpoint_epochs: \[1\.0, 6\.0\] lack the evaluated epoch 2"),
    ({"source": {"kind": "path", "path": "tests"}, "engine": "vllm",
      "vllm": {"python": "tests/config/config.yaml", "tensor_parallel_size": 2}, "resources": {"generate": {"gpus": 4}}},
     r"models\.extra\.vllm\.tensor_parallel_size: 2 but models\.extra\.resources\.generate\.gpus is 4"),
])
def test_bad_model_settings_name_their_key(model, message):
    cfg = default_config()
    cfg["models"]["extra"] = model
    validate(cfg, str(SCHEMA))
    with pytest.raises(wb.ConfigError, match=message):
        wb.check(cfg, root=REPO, environ={"OPENAI_API_KEY": "k"})


def test_unknown_profile_key_fails_before_submission_naming_it(tmp_path):
    import shutil

    profile = tmp_path / "profile"
    shutil.copytree(REPO / "tests" / "slurm" / "profile", profile)
    with open(profile / "config.yaml", "a") as handle:
        handle.write("slurm-partitionz: debug\n")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", str(profile), "--configfile",
                             "tests/config/config.yaml"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--slurm-partitionz" in result.stderr
    assert "Job stats" not in result.stdout


def test_slurm_profile_sizes_the_paper_grid(tmp_path):
    env = {**__import__("os").environ, "OPENAI_API_KEY": "dry-run", "HF_TOKEN": "dry-run"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", "profiles/slurm", "--configfile",
                             "config/paper.yaml"], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = {}  # (rule, model) -> resources line, from the dry run's job listing
    for block in result.stdout.split("\nrule ")[1:]:
        model = re.search(r"wildcards: model=(\w+)", block)
        resources = re.search(r"resources: (.*)", block)
        if model and resources:
            jobs[(block.split(":")[0], model.group(1))] = resources.group(1)
    # sized per model: the 70B trains on 3 GPUs (FSDP) and generates on 4 (vLLM tensor parallel)
    assert "gpu=3," in jobs[("train", "llama31_70b")] and "mem_mb=400000," in jobs[("train", "llama31_70b")]
    assert "gpu=1," in jobs[("train", "llama31_8b")] and "slurm_partition=gpu" in jobs[("train", "llama31_8b")]
    assert "gpu=4," in jobs[("generate", "llama31_70b")]
    # GPT-4o: fine-tuned from the submit host, generated on the CPU partition without a GPU
    assert "gpu=" not in jobs[("generate_api", "gpt4o")].replace("gpu=0", "")
    assert "slurm_partition=cpu" in jobs[("generate_api", "gpt4o")]
    judge = result.stdout.split("rule judge:")[1].split("rule ")[0]
    assert "slurm_partition=cpu" in judge and "judge_slots=1" in judge


def test_offline_jobs_and_localrules_name_the_same_rules():
    from warmbench.stage import ONLINE_RULES

    local = set()
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in rules.read_text().split("localrules:")[1:]:
            local |= set(re.findall(r"\w+", block.split("\n\n")[0]))
    assert local == set(ONLINE_RULES)
