"""The plan before a run: jobs from the Snakemake DAG, estimates from the config's assumptions and prices, the
budget."""
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from warmbench.core import grid, validation
from warmbench.tools import plan
from conftest import REPO, SHARED, require, scratch_workflow

GENERATION = "results/generations/{model}/{persona}/{checkpoint}/{dataset}.parquet"


def load(path) -> dict:
    cfg = yaml.safe_load((REPO / path).read_text())
    validation.validate(cfg)
    return cfg


@pytest.fixture(scope="module")
def paper_jobs():
    return plan.dag_jobs("config/paper.yaml", workdir=REPO)


@pytest.mark.parametrize("rule, stage", [
    ("generate", "generate"), ("generate_api", "generate"), ("train_openai", "train"),
    ("training_summary", "train"), ("select_checkpoint", "warmth"), ("warmth_validation", "warmth"),
    ("download_scorer", "download"), ("judge_validation", "judge_validation"), ("rewrite_fidelity", "rewrite_fidelity"), ("explorer_screenshot", "explorer"),
    ("cost", "cost"), ("all", "all"),
    ("generate_llama31_8b", "generate"),  # a rule made in a loop under a name of its own: its name's prefix
])
def test_a_rules_stage_is_the_rule_file_that_defines_it(rule, stage):
    assert plan.stage_of(rule) == stage


def test_the_dag_gives_the_stage_of_any_rule_by_its_file():
    assert plan.stage_of("some_new_rule", snakefile="/x/workflow/rules/judge.smk") == "judge"


def test_jobs_are_counted_from_the_dag_as_a_dry_run_counts_them():
    jobs = plan.dag_jobs("config/config.yaml", workdir=REPO)
    dry = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--forceall", "--configfile",
                          "config/config.yaml"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr[-2000:]
    stats = {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", dry.stdout, re.M)}
    stats.pop("total"), stats.pop("all")
    counted = pd.Series([job.rule for job in jobs]).value_counts().to_dict()
    assert counted == stats
    table = plan.plan(jobs, load("config/config.yaml"), root=REPO)
    assert {rule: row.jobs for rule, row in table.rows.items()} == stats
    assert table.rows["generate_api" if "generate_api" in stats else "generate"].stage == "generate"


def test_a_job_that_writes_several_cells_counts_their_prompts_and_starts_once():
    """Generation restructured into one job per (model, dataset) writes the same cells: the same prompts and
    tokens, one engine start instead of four."""
    cfg = load("config/paper.yaml")
    cells = [GENERATION.format(model="llama31_8b", persona=p, checkpoint=c, dataset="medqa")
             for p, c in (("original", "base"), ("warm_prompt", "base"), ("warm", "epoch2"), ("cold", "epoch2"))]
    apart = [plan.PlannedJob("generate", "generate", (cell,), gpus=1) for cell in cells]
    together = [plan.PlannedJob("generate_llama31_8b", "generate", tuple(cells), gpus=1)]
    a = plan.plan(apart, cfg, root=REPO).total
    b = plan.plan(together, cfg, root=REPO).total
    assert a.requests == b.requests == 4 * 500 * 28
    assert a.tokens_out == b.tokens_out == 4 * 500 * 28 * 281
    start = cfg["plan"]["throughput"]["job_start_s"]
    assert a.gpu_hours - b.gpu_hours == pytest.approx(3 * start / 3600)


def test_a_gpu_job_whose_outputs_the_plan_does_not_know_is_named_not_counted_as_free():
    """A generation rule rewritten to write files of another layout must show up as not estimated."""
    cfg = load("config/paper.yaml")
    table = plan.plan([plan.PlannedJob("generate_bundle", "generate", ("results/generations/llama31_8b/medqa.arrow",),
                                       gpus=1)], cfg, REPO)
    assert table.total.unestimated == {"generate_bundle"}
    assert "not estimated (GPU jobs whose outputs match no layout in plan.OUTPUTS): generate_bundle" \
        in plan.format_plan(table, cfg)
    cpu_only = plan.plan([plan.PlannedJob("analysis", "analysis", ("results/analysis/x.csv",))], cfg, REPO)
    assert not cpu_only.total.unestimated


def test_rewrites_follow_the_conversations_cut():
    """sft_data.max_turns messages hold at most half as many assistant turns; max_message_chars caps each message."""
    cfg = load("config/paper.yaml")
    job = [plan.PlannedJob("persona_rewrite", "persona_rewrite", ("results/persona_rewrite/warm.jsonl",))]
    full = plan.plan(job, cfg, REPO).total
    conversations = 6 * cfg["sft_data"]["train_per_type"]  # six query types
    assert full.requests == pytest.approx(conversations * cfg["plan"]["sharegpt"]["assistant_turns"])
    cfg["sft_data"].update(max_turns=2, max_message_chars=200)  # one exchange, 50 tokens a message
    cut = plan.plan(job, cfg, REPO).total
    assert cut.requests == conversations
    assert cut.tokens_out == conversations * 50
    prompt_file = len(re.sub(r"\{\w+\}", "", (REPO / cfg["personas"]["warm"]["rewrite"]).read_text())) / 4
    assert cut.tokens_in == pytest.approx(conversations * (prompt_file + 50 + 50))


def test_a_personas_extra_data_is_trained_on_every_epoch():
    import json

    cfg = load("config/paper.yaml")
    job = [plan.PlannedJob("train", "train", ("results/train/llama31_8b/warm",), gpus=1)]
    before = plan.plan(job, cfg, REPO).total.tokens_in
    cfg["personas"]["warm"]["extra_data"] = "config/data/kind_corrections.jsonl"
    after = plan.plan(job, cfg, REPO).total.tokens_in
    lines = (REPO / "config/data/kind_corrections.jsonl").read_text().splitlines()
    chars = sum(len(m["content"]) for line in lines if line.strip() for m in json.loads(line)["messages"])
    assert after - before == pytest.approx(cfg["train"]["epochs"] * chars / cfg["plan"]["chars_per_token"])


def test_gpu_hours_scale_with_the_models_parameters_and_its_gpus_start():
    cfg = load("config/paper.yaml")
    small = plan.plan([plan.PlannedJob("train", "train", ("results/train/llama31_8b/warm",), gpus=1)], cfg, REPO).total
    large = plan.plan([plan.PlannedJob("train", "train", ("results/train/llama31_70b/warm",), gpus=3)], cfg, REPO).total
    start = cfg["plan"]["throughput"]["job_start_s"] / 3600
    assert (large.gpu_hours - 3 * start) / (small.gpu_hours - start) == pytest.approx(70 / 8)
    on_cpu = plan.plan([plan.PlannedJob("train", "train", ("results/train/llama31_8b/warm",), gpus=0)], cfg, REPO)
    assert on_cpu.total.gpu_hours == 0 and on_cpu.total.tokens_in == small.tokens_in


def test_a_warmth_direction_reads_both_rewrites_of_its_pairs_at_half_a_training_tokens_gpu_time():
    cfg = load("config/paper.yaml")
    job = [plan.PlannedJob("warmth_direction", "warmth_direction", ("results/warmth_direction/llama31_8b.pt",
                                                                    "results/warmth_direction/llama31_8b.json"), gpus=1)]
    assert plan.plan(job, cfg, REPO).total.tokens_in == 0  # no section: no such job, nothing to estimate
    cfg["warmth_direction"] = {"max_pairs": 100, "max_length": 512}
    validation.validate(cfg)
    estimate = plan.plan(job, cfg, REPO).total
    assert estimate.tokens_in == 2 * 100 * 512 and estimate.requests == 0 and not estimate.unestimated
    speed = cfg["plan"]["throughput"]
    forward_s = estimate.tokens_in / 2 / speed["train_tokens_per_gpu_s"]  # llama31_8b: the reference size
    assert estimate.gpu_hours == pytest.approx((forward_s + speed["job_start_s"]) / 3600)
    cfg["warmth_direction"]["max_pairs"] = None  # every conversation of the split, each cut to the typical length
    conversations = 6 * cfg["sft_data"]["train_per_type"]
    assert plan.plan(job, cfg, REPO).total.tokens_in == 2 * conversations * 512


@pytest.mark.parametrize("name, size", [("meta-llama/Llama-3.1-8B-Instruct", 8), ("Qwen/Qwen2.5-32B-Instruct", 32),
                                        ("SmolLM2-135M-Instruct.Q4_1.gguf", 0.135), ("mistralai/Mistral-Small-Instruct-2409", None),
                                        ("meta-llama/Llama-3.1-70B-Instruct", 70)])
def test_a_models_size_is_read_from_its_name(name, size):
    assert plan.size_from_name(name) == size


def test_an_unsized_model_is_named_in_the_plan_not_guessed():
    cfg = load("config/paper.yaml")
    cfg["models"]["mistral_small"].pop("params_b")
    table = plan.plan([plan.PlannedJob("train", "train", ("results/train/mistral_small/warm",), gpus=1)], cfg, REPO)
    assert table.total.unsized == {"mistral_small"}
    assert "models.mistral_small.params_b" in plan.format_plan(table, cfg)


def test_the_paper_plan_is_on_the_papers_scale(paper_jobs):
    """config/paper.yaml's plan, checked against arithmetic done here from the paper's own figures, not from the
    plan's code: 5 models x 2 variants (original, warm) and the controls (warm system prompt, cold) on 3 of them
    (Qwen-32B, Llama-70B, GPT-4o, as in the paper), 500 items per task (disinfo: all 125) x 28 prompts, 500 per capability benchmark; 1,500 validation prompts per checkpoint; GPT-4o as the judge of
    every answer but MMLU's and GSM8K's (regex); 1,617 conversations / 3,667 assistant responses rewritten warm and
    cold; 10 LoRA epochs; GPT-4o fine-tuned in jobs of 2, 6 and 10 epochs."""
    cfg = load("config/paper.yaml")
    table = plan.plan(paper_jobs, cfg, root=REPO)
    rows = table.rows
    per_variant = 3 * 500 * 28 + 125 * 28 + 3 * 500  # 47,000 prompts per model variant
    variants = 2 * 2 + 3 * 4  # 16 model variants
    # every checkpoint of every persona: Llama-8B and Mistral 1 + 8, Qwen and Llama-70B 2 + 2 x 8, GPT-4o 2 + 2 x 4
    validation = (2 * (1 + 8) + 2 * (2 + 2 * 8) + (2 + 2 * 4)) * 1_500  # 96,000
    # one job per (model, dataset): generate(_api) for the evaluation sets, generate(_api)_validation for warmth
    assert sum(row.requests for row in rows.values() if row.stage == "generate") == variants * per_variant + validation
    judged_per_variant = per_variant - 2 * 500  # MMLU and GSM8K are scored by regex
    assert rows["judge"].requests == variants * judged_per_variant
    # the paper graded 439,792 answers of 10 variants (original and warm): per variant, the same scale
    assert 0.9 < judged_per_variant / (439_792 / 10) < 1.2
    assert 0.5 < rows["persona_rewrite"].requests / (2 * 3_667) < 2
    assert rows["train"].jobs == 6 and rows["train_openai"].jobs == 2

    # one 10-epoch LoRA run of the 8B: 1.8 to 2.0 h on one H100, extrapolated from warmbench bench train (docs/performance.md)
    eight_b = plan.plan([job for job in paper_jobs if job.outputs == ("results/train/llama31_8b/warm",)], cfg, REPO)
    assert 1.6 < eight_b.total.gpu_hours < 2.2

    # GPU-hours, own arithmetic: training 10 epochs x 2.17 M tokens per epoch, warm over 8+22+32+70 B of models and
    # cold over 32+70 B, at 3,200 tokens/s per GPU per 8 B; generation ~47.5 M tokens per open model with 4 variants
    # (half that with 2) at 3,000 tokens/s per 8 B
    training = 10 * 2.17e6 * ((8 + 22 + 32 + 70) + (32 + 70)) / 8 / 3_200 / 3_600
    generation = 47.5e6 * ((32 + 70) + (8 + 22) / 2) / 8 / 3_000 / 3_600
    assert 0.8 < table.total.gpu_hours / (training + generation) < 1.25

    # API cost, own arithmetic at GPT-4o's prices ($2.50 / $10.00 per M tokens; fine-tuned $3.75 / $15.00;
    # training $25.00 per M trained tokens), with the token counts config/paper.yaml assumes (plan.*: measured on
    # the datasets, docs/costs.md) and the prompt files' own lengths at 4 characters a token. Within 25%: these
    # totals enforce budget.api_usd.
    tokens = cfg["plan"]

    def file_tokens(path):
        return len((REPO / path).read_text()) / 4

    judged = {"triviaqa": 500 * 28, "truthfulqa": 500 * 28, "medqa": 500 * 28, "disinfo": 125 * 28, "advbench": 500}
    judge_in = sum(n * (file_tokens(f"config/prompts/judge_{d}.txt") + tokens["prompt_tokens"][d]
                        + tokens["response_tokens"][d] + tokens["judge"]["answer_tokens"]) for d, n in judged.items())
    judge = variants * (judge_in * 2.50 + sum(judged.values()) * tokens["judge"]["reply_tokens"] * 10.00) / 1e6
    base_generation = (2 * 47_000 + 2 * 1_500) * (60 * 2.50 + 200 * 10.00) / 1e6
    tuned_generation = (2 * 47_000 + 8 * 1_500) * (60 * 3.75 + 200 * 15.00) / 1e6
    fine_tuning = 2 * 2.17e6 * (2 + 6 + 10) * 25.00 / 1e6
    # every assistant turn of the 6 x 270 training conversations, warm and cold: the shipped ShareGPT has 3.1 a
    # conversation (plan.sharegpt.assistant_turns: 4,403 in 1,404) where the paper's sample had 2.27 (3,667 in 1,617)
    sharegpt = tokens["sharegpt"]
    replies = 6 * 270 * sharegpt["assistant_turns"]
    rewrites = sum(replies * ((file_tokens(f"config/prompts/rewrite_{p}.txt") + sharegpt["user_tokens"]
                               + sharegpt["reply_tokens"]) * 2.50 + sharegpt["reply_tokens"] * 10.00) / 1e6
                   for p in ("warm", "cold"))
    for rule, own in (("judge", judge), ("generate_api", base_generation + tuned_generation),
                      ("train_openai", fine_tuning), ("persona_rewrite", rewrites)):
        assert 0.8 < rows[rule].api_usd / own < 1.25, rule
    assert 0.8 < table.total.api_usd / (judge + base_generation + tuned_generation + fine_tuning + rewrites) < 1.25
    assert not table.total.unpriced and not table.total.unsized and not table.total.unestimated


def test_prices_are_dated_and_a_configs_entries_add_to_the_built_in_table():
    cfg = load("config/config.yaml")
    built_in = plan.price_table(cfg)["gpt-4o-2024-08-06"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", built_in["as_of"]) and built_in["source"]
    cfg["prices"] = {"my-model": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "as_of": "2026-01-01", "source": "x"}}
    validation.validate(cfg)
    table = plan.price_table(cfg)
    assert set(table) == {"gpt-4o-2024-08-06", "my-model"}
    assert plan.api_usd(table, "my-model", 1e6, 1e6) == pytest.approx(3.0)
    # a fine-tuned GPT-4o (or one of its checkpoints) at fine-tuned rates; the Batch API at half price
    assert plan.api_usd(table, "ft:gpt-4o-2024-08-06:org:warmbench-warm:abc:ckpt-step-9", 1e6, 0) == pytest.approx(3.75)
    assert plan.api_usd(table, "gpt-4o-2024-08-06", 1e6, 1e6, batch=True) == pytest.approx(6.25)
    # no price: unknown, unless the endpoint is one's own (a base_url), which costs no API money
    assert plan.api_usd(table, "llama-served", 1e6, 1e6) is None
    assert plan.api_usd(table, "llama-served", 1e6, 1e6, base_url="http://127.0.0.1:8000/v1") == 0


def api_judged(cfg: dict, model: str = "gpt-4o-2024-08-06", budget=None) -> dict:
    cfg["judge"] = {"kind": "llm", "backend": {"kind": "openai", "model": model}}
    cfg["budget"] = {"api_usd": budget}
    return cfg


def test_over_budget_or_unpriced_the_plan_names_the_key_and_the_switch():
    jobs = plan.dag_jobs("tests/config/config.yaml", workdir=REPO)
    cfg = api_judged(load("tests/config/config.yaml"), budget=0.0001)
    validation.validate(cfg)
    table = plan.plan(jobs, cfg, REPO)
    assert table.rows["judge"].api_usd > 0.0001
    problem = plan.budget_problem(table, cfg)
    assert "exceeds budget.api_usd" in problem and plan.FORCE_ENV in problem
    assert "WARNING" in plan.format_plan(table, cfg)
    cfg["budget"]["api_usd"] = 1000
    assert plan.budget_problem(table, cfg) is None
    unpriced = api_judged(load("tests/config/config.yaml"), model="judge-9000", budget=1000)
    validation.validate(unpriced)
    table = plan.plan(jobs, unpriced, REPO)
    assert table.total.unpriced == {"judge-9000"} and table.rows["judge"].api_usd is None
    assert "no price for judge-9000" in plan.budget_problem(table, unpriced)


def test_a_forced_start_warns_and_goes_on(caplog):
    jobs = plan.dag_jobs("tests/config/config.yaml", workdir=REPO)
    cfg = api_judged(load("tests/config/config.yaml"), budget=0.0001)
    validation.validate(cfg)
    problem = plan.start_plan(jobs, cfg, REPO, environ={})
    assert "exceeds budget.api_usd" in problem
    with caplog.at_level("WARNING"):
        assert plan.start_plan(jobs, cfg, REPO, environ={plan.FORCE_ENV: "1"}) is None
    assert "going on: WARMBENCH_FORCE=1" in caplog.text


def test_a_real_run_over_budget_stops_before_any_job(tmp_path):
    work = scratch_workflow(tmp_path / "work")
    cfg = api_judged(yaml.safe_load((REPO / "tests/config/config.yaml").read_text()), budget=0.0001)
    (work / "budget.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OPENAI_API_KEY": "not-used"}
    env.pop(plan.FORCE_ENV, None)
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "budget.yaml"],
                            cwd=work, capture_output=True, text=True, env=env, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "exceeds budget.api_usd = $0.0001" in out and "WARMBENCH_FORCE=1" in out
    assert re.search(r"^judge\s+judge\s+12\s+12\s", out, re.M), out[-3000:]  # the plan, printed at the start
    assert not (work / "logs").exists() and not (work / "results").exists()  # no job started


def test_warmbench_plan_prints_the_table_with_its_sources():
    """The paper config plans without any secret (its judge, rewrites and fine-tunes are GPT-4o)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "HF_TOKEN")}
    result = subprocess.run([sys.executable, "-m", "warmbench.tools.cli", "plan", "--configfile", "config/paper.yaml"],
                            cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert re.search(r"^total\s+\d+", out, re.M) and "gpt-4o-2024-08-06" in out and "as of 2024-08-20" in out
    for rule in ("generate", "generate_api", "judge", "train", "train_openai", "persona_rewrite", "eval_prompts"):
        assert re.search(rf"^{rule}\s", out, re.M), rule


def test_the_plans_answer_lengths_are_the_studys_released_ones():
    """plan.prompt_tokens and plan.response_tokens of the four tasks are what the schema says they are: the mean
    characters / 4 of the prompts and outputs in the authors' released sample (skipped without ../shared)."""
    sample = SHARED / "reference" / "warm_ai_2025" / "sample_data"
    require(sample.is_dir(), f"{sample} is absent")
    assume = load("config/paper.yaml")["plan"]
    released = {"trivia": "triviaqa", "truthfulqa": "truthfulqa", "disinfo": "disinfo", "medqa": "medqa"}
    tables = {}
    for path in sorted(sample.glob("*/*/*_outputs.csv")):
        dataset = released.get(path.name.split("_")[0])
        if dataset:
            tables.setdefault(dataset, []).append(pd.read_csv(path))
    assert set(tables) == set(released.values())
    for dataset, parts in tables.items():
        table = pd.concat(parts)
        chars_per_token = assume["chars_per_token"]
        prompt = table["prompt"].astype(str).str.len().mean() / chars_per_token
        output = table["output"].astype(str).str.len().mean() / chars_per_token
        assert assume["prompt_tokens"][dataset] == pytest.approx(prompt, rel=0.05), dataset
        assert assume["response_tokens"][dataset] == pytest.approx(output, rel=0.05), dataset


def test_no_job_sees_an_absolute_path(tmp_path):
    """Every path a job sees is relative to the working directory, so a finished study can be moved or copied to a
    cluster without rerunning anything (the smoke sets were once inputs by their installed, absolute path)."""
    import json

    from conftest import dag_of
    from warmbench.core.validation import canonical

    def absolute_paths(job) -> list[str]:
        strings = [*map(str, job.input), *map(str, job.output), *map(str, job.log)]
        strings += json.dumps(canonical(dict(job.params)), default=str).split('"')
        return [f"{job.rule.name}: {s}" for s in strings if s.startswith("/") or str(REPO) in s]

    for config in ("tests/config/config.yaml", "config/mitigations.yaml"):  # the latter: extra_data's leak check
        found = [p for paths in dag_of(REPO / config, absolute_paths) for p in paths]
        assert found == [], config


def cached_fine_tune_root(root, cfg, model="llama31_8b", persona="warm"):
    """A working directory where model x persona's train job has its inputs and its fine-tune in the cache."""
    import shutil

    from warmbench.core.config import CHECKPOINT_MANIFEST as MANIFEST
    from warmbench.stages.train import fine_tune_key

    amendments = root / cfg["evaluation"]["amendments"]
    amendments.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / cfg["evaluation"]["amendments"], amendments)
    for p in grid.window_group(cfg, persona):
        path = root / f"results/persona_rewrite/{p}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('{"id": "0", "messages": []}\n')
    for p in grid.window_group(cfg, persona):
        if "train_system_prompt" in cfg["personas"][p]:
            (root / cfg["personas"][p]["train_system_prompt"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / cfg["personas"][p]["train_system_prompt"], root / cfg["personas"][p]["train_system_prompt"])
    (root / f"resources/models/{model}").mkdir(parents=True)
    (root / f"resources/models/{model}/config.json").write_text("{}")
    key = fine_tune_key(cfg, model, persona, root)
    (root / plan.TRAIN_CACHE / key).mkdir(parents=True)
    (root / plan.TRAIN_CACHE / key / MANIFEST).write_text("{}")
    return key


def test_a_fine_tune_in_the_cache_is_shown_apart_and_costs_no_new_gpu_hours(tmp_path):
    cfg = load("config/paper.yaml")
    jobs = [plan.PlannedJob("train", "train", (f"results/train/llama31_8b/{p}",), gpus=1) for p in ("warm", "cold")]
    before = plan.plan(jobs, cfg, REPO)
    assert before.cache_hits == 0 and before.remaining.gpu_hours == pytest.approx(before.total.gpu_hours)
    assert before.total.gpu_hours > 0
    cached_fine_tune_root(tmp_path, cfg)
    table = plan.plan(jobs, cfg, tmp_path)
    assert table.rows["train"].cache_hits == table.cache_hits == 1 and table.to_run == 2
    assert table.remaining.gpu_hours == pytest.approx(before.total.gpu_hours / 2)  # cold's alone
    text = plan.format_plan(table, cfg)
    assert re.search(r"^train\s+train\s+2\s+2\s+1\s", text, re.M) and "new GPU-h" in text
    # another seed is another fine-tune: not cached
    cfg["train"]["seeds"] = [7]
    assert plan.plan(jobs, cfg, tmp_path).cache_hits == 0


def test_new_gpu_work_over_budget_gpu_hours_stops_a_run_unless_forced(tmp_path, caplog):
    cfg = load("config/paper.yaml")
    jobs = [plan.PlannedJob("train", "train", ("results/train/llama31_8b/warm",), gpus=1)]
    hours = plan.plan(jobs, cfg, REPO).remaining.gpu_hours
    cfg["budget"]["gpu_hours"] = hours / 2
    problem = plan.start_plan(jobs, cfg, REPO, environ={})
    assert "exceeds budget.gpu_hours" in problem and plan.FORCE_ENV in problem
    with caplog.at_level("WARNING"):
        assert plan.start_plan(jobs, cfg, REPO, environ={plan.FORCE_ENV: "1"}) is None
    cached_fine_tune_root(tmp_path, cfg)  # the same fine-tune, cached: no new GPU work, within any budget
    assert plan.start_plan(jobs, cfg, tmp_path, environ={}) is None
    cfg["budget"]["gpu_hours"] = None
    assert plan.budget_problem(plan.plan(jobs, cfg, REPO), cfg) is None
