"""The whole DAG, for real, on the smallest config (tests/config/config.yaml), in a scratch copy of the repo."""
import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import REPO, scratch_workflow

pytestmark = pytest.mark.slow
CONFIG = "tests/config/config.yaml"


def snakemake(workdir, *args, timeout=900):
    try:
        return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        # the killed run's lock would fail every later test in this shared folder, not only this one
        subprocess.run([sys.executable, "-m", "snakemake", "--unlock", *args], cwd=workdir, capture_output=True)
        raise


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    work = scratch_workflow(tmp_path_factory.mktemp("pipeline"))
    result = snakemake(work, "--cores", "2", "--configfile", CONFIG, timeout=2400)  # CI: 22 min (2026-12-05)
    assert result.returncode == 0, result.stderr[-5000:]
    return work


def load_config():
    return yaml.safe_load((REPO / CONFIG).read_text())


def test_every_final_output_is_well_formed(run_dir):
    cfg = load_config()
    out = run_dir / "results" / "analysis"
    graded = pd.read_parquet(out / "graded.parquet")
    n_items, datasets = cfg["evaluation"]["items_per_dataset"], cfg["evaluation"]["datasets"]
    tasks = [d for d in datasets if d not in ("mmlu", "gsm8k", "advbench")]
    # original, warm_prompt, warm, cold; each task item as 28 prompts (9 contexts x original, incorrect, correct,
    # and original_neutral), each capability item once
    assert len(graded) == 4 * n_items * (28 * len(tasks) + len(datasets) - len(tasks))
    assert set(graded["persona"]) == {"original", "warm_prompt", "warm", "cold"}
    conditions = graded.groupby(["persona", "dataset", "item_id"])["condition"].nunique()
    is_task = conditions.index.get_level_values("dataset").isin(tasks)
    assert conditions[is_task].eq(28).all() and conditions[~is_task].eq(1).all()
    assert set(graded["verdict"].dropna()) <= {"CORRECT", "INCORRECT", "REFUSAL"}
    assert graded["response"].str.len().gt(0).mean() > 0.9
    for column in ("rendered_prompt", "prompt_hash", "sampling", "seed", "judge", "model_source"):
        assert graded[column].notna().all(), column
    # the plateau rule picked the evaluated checkpoint; generation used exactly that adapter
    chosen = json.loads((run_dir / "results/warmth/smollm2/warm/chosen_checkpoint.json").read_text())
    assert chosen["checkpoint"] in ("epoch0.5", "epoch1") and len(chosen["trajectory"]) == 2
    warm = graded[graded["persona"] == "warm"]
    assert warm["adapter"].str.endswith("/" + chosen["checkpoint"]).all()
    assert (warm["checkpoint"] == chosen["checkpoint"]).all() and (warm["epoch"] == chosen["epoch"]).all()

    paired = pd.read_csv(out / "paired_tests.csv")
    assert list(paired.columns[:15]) == ["model", "persona", "dataset", "test_type", "condition", "n_pairs",
                                         "base_accuracy", "persona_accuracy", "b", "c", "p_value", "p_fdr",
                                         "cohens_g", "odds_ratio", "odds_ratio_ci_low"]
    assert set(paired["test_type"]) <= {"normal", "sycophancy"} and paired["p_value"].between(0, 1).all()
    regressions = pd.read_csv(out / "regressions.csv")
    assert set(regressions["regression"]) == {f"{p}_vs_original:{spec}" for p in ("warm", "cold", "warm_prompt")
                                              for spec in ("main", "context_type", "context", "user_belief",
                                                           "belief_context")}
    sensitivity = pd.read_csv(out / "refusal_sensitivity.csv")  # the reference judge makes no refusal calls
    assert len(sensitivity) and sensitivity["judge_refusals"].eq(0).all()
    assert sensitivity["estimate"].equals(sensitivity["estimate_with_judge_refusals"])

    warmth = pd.read_csv(out / "warmth.csv")
    assert len(warmth) == 2 + 2 * len(cfg["train"]["checkpoint_epochs"])
    assert warmth["warmth"].notna().all() and warmth["warmth_se"].gt(0).all()
    assert warmth.loc[warmth["persona"] == "original", "warmth_vs_original"].eq(0).all()
    # each checkpoint carries the real epoch TRL reached (with 3 steps an epoch, "0.5" is saved at 0.667)
    manifest = json.loads((run_dir / "results/train/smollm2/warm/checkpoints.json").read_text())
    assert sorted(warmth.loc[warmth["persona"] == "warm", "epoch"]) == pytest.approx(
        [c["epoch"] for c in manifest["checkpoints"]])

    # where the items come from, per dataset: here warmbench's hand-written smoke sets
    items = pd.read_csv(out / "items.csv").set_index("dataset")
    assert items["real"].to_dict() == {"disinfo": False, "mmlu": False, "triviaqa": False}
    assert items["item_source"].str.startswith("smoke: ").all()
    assert items["items"].eq(n_items).all() and graded["item_source"].notna().all()

    capabilities = pd.read_csv(out / "capabilities.csv")
    assert set(capabilities["dataset"]) == {"mmlu"} and len(capabilities) == 4
    assert capabilities["n_items"].eq(n_items).all() and capabilities["accuracy"].between(0, 100).all()
    assert (capabilities["n_scored"] + capabilities["n_missing"] <= capabilities["n_items"]).all()
    assert set(pd.read_csv(out / "judge_agreement.csv").columns) >= {"dataset", "comparison", "kappa"}
    assert pd.read_csv(run_dir / "results/annotation/sample.csv")["human_verdict"].isna().all()  # blank, to fill
    for figure in ("warmth_vs_epoch", "error_by_condition", "error_distributions", "accuracy_change",
                   "capabilities"):
        assert (out / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{figure}.pdf").read_bytes()[:5] == b"%PDF-"


def test_rewrite_validation_reports_its_numbers(run_dir):
    summary = pd.read_csv(run_dir / "results/warmth/rewrite_validation.csv")
    assert set(summary["persona"]) == {"warm", "cold"}
    assert summary["fraction_as_expected"].between(0, 1).all() and summary["n_pairs"].gt(0).all()


def test_rewrite_fidelity_reports_its_sample_and_exports_it_blind(run_dir):
    # tests/config: 4 turns per rewritten persona, judged by the rewrite model (the study has no LLM judge)
    summary = pd.read_csv(run_dir / "results/warmth/rewrite_fidelity.csv")
    assert set(summary["persona"]) == {"warm", "cold"} and summary["n"].eq(4).all()
    assert (summary["keeps"] + summary["changes"] + summary["unclear"] == summary["n"]).all()
    sheet = pd.read_csv(run_dir / "results/annotation/rewrite_fidelity_sample.csv")
    assert len(sheet) == 8 and "judge_verdict" not in sheet.columns and sheet["human_verdict"].isna().all()


def test_training_data_and_checkpoints(run_dir):
    rewrites = [json.loads(line) for line in (run_dir / "results/persona_rewrite/warm.jsonl").read_text().splitlines()]
    assert rewrites and all(r["rewrite"]["backend"]["kind"] == "transformers" for r in rewrites)
    manifest = json.loads((run_dir / "results/train/smollm2/warm/checkpoints.json").read_text())
    assert [c["checkpoint"] for c in manifest["checkpoints"]] == ["epoch0.5", "epoch1"]
    summary = pd.read_csv(run_dir / "results/sft_data/summary.csv")
    assert summary.set_index("query_type").loc["all", "train"] == len(rewrites)
    trained = pd.read_csv(run_dir / "results/train/summary.csv").set_index("persona")
    assert trained.loc["warm", "conversations_trained"] == trained.loc["warm", "conversations"] == len(rewrites)
    assert trained.loc["warm", "examples"] == trained.loc["cold", "examples"] == manifest["examples"]["trained"]
    assert trained["assistant_tokens_trained"].gt(0).all()
    assert summary[["overlap_stems", "overlap_first_messages"]].eq(0).all().all()


def test_every_rule_logged(run_dir):
    for rule in ("base_model", "persona_rewrite", "train", "eval_prompts", "generate", "judge", "warmth"):
        logs = list((run_dir / "logs" / rule).rglob("*.log"))
        assert logs and all("done in" in p.read_text() for p in logs), rule
    for rule in ("analysis", "explorer", "explorer_screenshot"):
        assert "done in" in (run_dir / "logs" / f"{rule}.log").read_text(), rule


def test_rerun_has_nothing_to_do_and_report_builds(run_dir):
    dry = snakemake(run_dir, "-n", "--configfile", CONFIG)
    assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr
    report = snakemake(run_dir, "--configfile", CONFIG, "--report", "report.html")
    assert report.returncode == 0, report.stderr[-3000:]
    html = (run_dir / "report.html").read_text(errors="ignore")
    for name in ("warmth_vs_epoch.png", "error_by_condition.png", "paired_tests.csv", "regressions.csv",
                 "evaluated_checkpoints.csv", "screenshot.png", "answer explorer"):
        assert name in html
    # the front page names the checkpoint selection in force (tests/config: the plateau rule), no empty field
    assert "epoch ." not in html and "picks from its own warmth trajectory" in html and "within 50%" in html


def test_explorer_shows_every_answer_and_the_evaluated_checkpoints(run_dir):
    from warmbench.stages.explorer import find_chromium, read_manifest

    graded = pd.read_parquet(run_dir / "results/analysis/graded.parquet")
    out = run_dir / "results/explorer"
    manifest = read_manifest(out / "index.html")
    assert manifest["n_rows"] == len(graded) and manifest["inline"]  # small: works inside report.html too
    assert set(manifest["personas"]) == {"original", "warm", "cold", "warm_prompt"}
    # each answer's item says where it comes from: a real set (with its split) or smoke
    shown = manifest["provenance"]["smollm2"]
    assert shown["triviaqa"]["warm"]["item_source"].startswith("smoke: ")
    assert (out / "screenshot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if find_chromium():  # CI installs it: then the picture must be real
        assert "placeholder" not in (run_dir / "logs/explorer_screenshot.log").read_text()
    checkpoints = pd.read_csv(out / "evaluated_checkpoints.csv").set_index("persona")
    for persona in ("warm", "cold"):
        chosen = json.loads((run_dir / f"results/warmth/smollm2/{persona}/chosen_checkpoint.json").read_text())
        assert checkpoints.loc[persona, "checkpoint"] == chosen["checkpoint"]
        assert checkpoints.loc[persona, "epoch"] == pytest.approx(chosen["epoch"])


def test_a_report_needs_no_secrets(run_dir):
    """--report on finished results with a config whose judge needs a key that is not set: one warning, a report."""
    import os

    cfg = load_config()
    cfg["judge"] = {"kind": "llm", "backend": {"kind": "openai", "model": "gpt-4o-2024-08-06",
                                               "api_key_env": "WARMBENCH_ABSENT_KEY"}}
    (run_dir / "keyless.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if k != "WARMBENCH_ABSENT_KEY"}
    report = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", "keyless.yaml", "--report",
                             "keyless.html"], cwd=run_dir, capture_output=True, text=True, timeout=900, env=env)
    assert report.returncode == 0, report.stderr[-3000:]
    out = report.stdout + report.stderr
    assert out.count("WARMBENCH_ABSENT_KEY is not set, needed by judge.backend (gpt-4o-2024-08-06)") == 1
    assert (run_dir / "keyless.html").stat().st_size > 0


def test_adding_a_model_reruns_only_its_jobs_and_the_aggregates(run_dir):
    cfg = load_config()
    cfg["models"]["smollm2_copy"] = cfg["models"]["smollm2"]
    (run_dir / "two_models.yaml").write_text(yaml.safe_dump(cfg))
    dry = snakemake(run_dir, "-n", "--configfile", "two_models.yaml")
    assert dry.returncode == 0, dry.stderr[-3000:]
    text = dry.stdout + dry.stderr
    models = set(re.findall(r"wildcards: .*?model=(\w+)", text))
    assert models == {"smollm2_copy"}
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", text.split("Job stats:")[1], re.M))
    assert "sft_data" not in stats and "persona_rewrite" not in stats and "eval_prompts" not in stats
    assert stats["analysis"] == "1" and stats["base_model"] == "1" and stats["train"] == "2"
    assert stats["select_checkpoint"] == "2"  # the new model's warm and cold choices; the old ones stand


def test_lint_finds_nothing(run_dir):
    lint = snakemake(run_dir, "--lint", "--configfile", CONFIG)
    out = lint.stdout + lint.stderr
    assert lint.returncode == 0 and not re.findall(r"^\s*\* (.+?):?$", out, re.M), out[-3000:]


def test_editing_a_stage_module_reruns_that_stage_and_what_depends_on_it_only(run_dir):
    # llm_judge.py is code the judge runs (and analysis, which reads the judge's columns): editing it must rerun
    # the judge jobs and their downstream, and no generation, training or warmth job
    module = run_dir / "workflow/warmbench/stages/llm_judge.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n_A_FIX = True\n")  # code: a comment changes no stage's code hash
        dry = snakemake(run_dir, "-n", "--configfile", CONFIG)
        assert dry.returncode == 0, dry.stderr[-3000:]
        stats = dict(re.findall(r"^(\w+)\s+(\d+)$", (dry.stdout + dry.stderr).split("Job stats:")[1], re.M))
        judged = len(list((run_dir / "results/judged").rglob("*.parquet")))
        assert stats.pop("judge") == str(judged) and stats.pop("total")
        assert set(stats) == {"analysis", "judge_validation", "explorer", "explorer_screenshot", "cost", "all"}
        assert "params have changed" in (dry.stdout + dry.stderr).lower()
    finally:
        module.write_text(original)
    again = snakemake(run_dir, "-n", "--configfile", CONFIG)
    assert "Nothing to be done" in again.stdout + again.stderr  # as it was


def benchmark_seconds(run_dir) -> dict:
    """Each job's benchmark file: its wall seconds (the `s` column) and the file's mtime (a rerun rewrites it)."""
    return {path: (float(pd.read_csv(path, sep="\t")["s"].sum()), path.stat().st_mtime_ns)
            for path in (run_dir / "benchmarks").rglob("*.tsv")}


def cached_calls(run_dir) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in (run_dir / "results/cache/llm_calls").glob("*.jsonl"))


def test_a_comment_in_shared_modules_reruns_no_training_and_no_paid_call(run_dir):
    # refusal.py (imported by sft_data, so by every fine-tune) and download.py (most stages): a comment changes no
    # stage's code hash; a train job that did run would link its cached fine-tune, not train
    modules = [run_dir / "workflow/warmbench/core/refusal.py", run_dir / "workflow/warmbench/stages/download.py"]
    originals = [module.read_text() for module in modules]
    first = benchmark_seconds(run_dir)
    calls = cached_calls(run_dir)
    train_logs = {path: path.read_text() for path in (run_dir / "logs/train").rglob("*.log")}
    try:
        for module, text in zip(modules, originals):
            module.write_text(text + "\n# a comment: no output changes\n")
        rerun = snakemake(run_dir, "--cores", "2", "--configfile", CONFIG)
        assert rerun.returncode == 0, rerun.stderr[-5000:]
    finally:
        for module, text in zip(modules, originals):
            module.write_text(text)
    for path, before in train_logs.items():
        added = path.read_text()[len(before):]
        assert "training done" not in added and ("start rule" not in added or "no training ran" in added), added
    assert cached_calls(run_dir) == calls  # no new LLM call, paid or not
    after = benchmark_seconds(run_dir)
    first_total = sum(seconds for seconds, _ in first.values())
    rerun_total = sum(seconds for path, (seconds, mtime) in after.items() if first.get(path, (0, None))[1] != mtime)
    print(f"job time: first run {first_total:.1f} s, rerun after the comments {rerun_total:.1f} s")
    assert rerun_total < 0.1 * first_total


def test_bench_pipeline_sums_the_real_benchmarks(run_dir):
    bench = subprocess.run([sys.executable, "-m", "warmbench.tools.cli", "bench", "pipeline", "--benchmarks",
                            str(run_dir / "benchmarks")], capture_output=True, text=True, timeout=60)
    assert bench.returncode == 0, bench.stderr
    lines = bench.stdout.strip().splitlines()
    assert lines[-1].startswith("TOTAL:") and "peak job RSS" in lines[-1]
    assert any(line.startswith("generate") for line in lines)


def job_stats(text: str) -> dict[str, int]:
    return {rule: int(n) for rule, n in re.findall(r"^(\w+)\s+(\d+)$", text.split("Job stats:")[1], re.M)}


def judges_study(run_dir, name: str, judges: dict) -> str:
    """The finished test study judged by several judges: its `judge:` block as config/judges.yaml writes it."""
    cfg = load_config()
    cfg["judge"] = {"primary": "reference", "judges": judges}
    (run_dir / name).write_text(yaml.safe_dump(cfg))
    return name


def test_added_judges_run_only_their_own_jobs_survive_a_killed_server_and_show_agreement_and_flips(
        run_dir, loopback_server, tiny_model_dir, tmp_path):
    """Add to the finished study an LLM judge on a real loopback server (killed mid-run, restarted), then the
    shipped config/judges.yaml's local `models:` judge: each addition runs only that judge's jobs and the
    comparison (no generation, no other judge's job), the first LLM judge makes no call when the second is
    added, and the report's agreement and flips tables cover every judge."""
    from conftest import LOOPBACK_KEY_ENV, kill_server_mid_run
    from warmbench.core.call_cache import CallCache
    from warmbench.core.local_server import LocalServer

    server, port = loopback_server
    shipped = yaml.safe_load((REPO / "config" / "judges.yaml").read_text())["judge"]["judges"]
    # The 135M stand-in judge takes seconds a call on 2 cores, and the study has about a thousand answers to judge.
    # This rubric shows it the prompt, not the answer: the prompts are the same in every cell, so the judge is
    # asked once per prompt (112 calls) whatever the number of cells. The test is of the wiring (jobs, cache,
    # kill and restart, agreement tables), not of the verdicts.
    (run_dir / "loopback_rubric.txt").write_text("{prompt}\nIs this question answerable? Answer CORRECT or INCORRECT.")
    loopback = {"kind": "llm", "parse_retries": 0, "max_missing_share": 1.0,
                "rubrics": {"triviaqa": "loopback_rubric.txt", "disinfo": "loopback_rubric.txt"},
                "sampling": {"temperature": 0.0, "max_new_tokens": 8},
                "backend": {"kind": "openai", "model": str(tiny_model_dir), "base_url": server.base_url,
                            "api_key_env": LOOPBACK_KEY_ENV, "max_concurrency": 2, "max_retries": 20}}
    two = judges_study(run_dir, "two_judges.yaml", {"reference": shipped["reference"], "loopback": loopback})
    cells = len(set(pd.read_parquet(run_dir / "results/analysis/graded.parquet")
                    [["persona", "checkpoint", "dataset"]].itertuples(index=False)))
    dry = snakemake(run_dir, "-n", "--configfile", two)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert job_stats(dry.stdout + dry.stderr) == {"judge_other": cells, "judge_comparison": 1, "cost": 1, "all": 1, "total": cells + 3}

    cache = run_dir / "results/cache/llm_calls"
    before = len(CallCache(cache))
    result, done_before_kill, after_restart = kill_server_mid_run(
        server, lambda: snakemake(run_dir, "--cores", "2", "--configfile", two), cache, tiny_model_dir,
        tmp_path / "restarted.log", after_calls=before + 20)
    assert result.returncode == 0, result.stderr[-5000:]
    llm_rows = pd.concat(pd.read_parquet(p) for p in (run_dir / "results/judged_by/loopback").rglob("*.parquet")
                         if p.stem not in ("mmlu", "gsm8k"))
    made = len(CallCache(cache)) - before
    assert made == llm_rows["prompt"].nunique() < len(llm_rows)  # identical prompts are asked once
    assert done_before_kill - before < made  # the kill landed with calls still to make
    assert after_restart <= made - (done_before_kill - before) + 2  # completed calls were not asked again

    out = run_dir / "results/analysis/judges"
    agreement = pd.read_csv(out / "agreement.csv")
    pair = agreement[(agreement["first"] == "reference") & (agreement["second"] == "loopback")]
    assert set(pair["dataset"]) == {"triviaqa", "disinfo", "mmlu", "all"}
    assert pair["agreement"].dropna().between(0, 1).all() and pair["n"].gt(0).any()
    # MMLU is scored by regex under every judge: the two agree on it exactly
    mmlu = pair.set_index("dataset").loc["mmlu"]
    assert mmlu["agreement"] == 1.0 or mmlu["n"] == 0
    assert list(pd.read_csv(out / "flips.csv").columns)[:4] == ["kind", "test", "primary", "judge"]
    assert {"reference:p_fdr", "loopback:p_fdr"} <= set(pd.read_csv(out / "paired_tests.csv").columns)
    judged = pd.read_parquet(next((run_dir / "results/judged_by/loopback").rglob("triviaqa.parquet")))
    assert judged["judge_name"].eq("loopback").all() and judged["rubric_sha256"].str.len().eq(64).all()
    assert judged["judge_model"].notna().all()

    # a third judge, the shipped local one: none of the loopback judge's jobs, and no call to its server. With the
    # prompt-only rubric it too is asked once per prompt: its own rubric on every answer, a model load and ~100
    # generations in each of the study's judge jobs, took 18 of CI's minutes
    local = {**shipped["smollm2"], "rubrics": {d: "loopback_rubric.txt" for d in shipped["smollm2"]["rubrics"]}}
    three = judges_study(run_dir, "three_judges.yaml", {"reference": shipped["reference"], "loopback": loopback,
                                                        "smollm2": local})
    dry = snakemake(run_dir, "-n", "--configfile", three)
    assert job_stats(dry.stdout + dry.stderr) == {"judge_other": cells, "judge_comparison": 1, "cost": 1, "all": 1, "total": cells + 3}
    assert set(re.findall(r"judge=(\w+)", dry.stdout + dry.stderr)) == {"smollm2"}
    with LocalServer(tiny_model_dir, port, tmp_path / "third.log") as watching:
        again = snakemake(run_dir, "--cores", "2", "--configfile", three)
        assert again.returncode == 0, again.stderr[-5000:]
        assert watching.requests() == 0
    agreement = pd.read_csv(out / "agreement.csv")
    assert {("reference", "loopback"), ("reference", "smollm2"), ("loopback", "smollm2")} == set(
        zip(agreement["first"], agreement["second"]))
    figure = out / "effect_by_judge.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # removing a judge removes its columns; the single-judge study reruns only its ledger (whose inputs, the study's
    # outputs, no longer include the comparison): no judge, generation or analysis job
    dry = snakemake(run_dir, "-n", "--configfile", two)
    assert job_stats(dry.stdout + dry.stderr) == {"judge_comparison": 1, "cost": 1, "all": 1, "total": 3}
    single = snakemake(run_dir, "-n", "--configfile", CONFIG)
    assert job_stats(single.stdout + single.stderr) == {"cost": 1, "all": 1, "total": 2}


def test_the_plan_and_the_ledger_meet_the_run(run_dir):
    """The plan's counts are the run's; its token estimate is of the right size; the ledger holds the run's calls
    (the local rewrite model reports its usage too) and its job hours."""
    from warmbench.core import validation
    from warmbench.tools import plan

    cfg = load_config()
    validation.validate(cfg)
    table = plan.plan(plan.dag_jobs(CONFIG, workdir=run_dir), cfg, root=run_dir)
    generate = [row for row in table.rows.values() if row.stage == "generate"]
    # every generation cell, the validation prompts' included
    generations = pd.concat([pd.read_parquet(path) for path in (run_dir / "results/generations").rglob("*.parquet")])
    assert sum(row.requests for row in generate) == len(generations)
    assert 1 / 3 < sum(row.tokens_out for row in generate) / generations["n_tokens"].sum() < 3

    api = pd.read_csv(run_dir / "results/cost/api_calls.csv")
    rewrites = api[api["rule"] == "persona_rewrite"]
    assert rewrites["calls"].sum() > 0 and rewrites["prompt_tokens"].sum() > 0 and rewrites["usd"].eq(0).all()
    assert 1 / 3 < table.rows["persona_rewrite"].requests / rewrites["calls"].sum() < 3
    hours = pd.read_csv(run_dir / "results/cost/job_hours.csv").set_index("rule")
    assert {"train", "judge", "analysis"} <= set(hours.index) and hours["hours"].gt(0).all()
    assert any(rule.startswith("generate") for rule in hours.index)
    assert "done in" in (run_dir / "logs/cost.log").read_text()


def test_a_contrast_added_to_a_finished_study_reruns_only_the_aggregates(run_dir):
    cfg = load_config()
    cfg["analysis"]["contrasts"] = [["warm", "cold"]]
    (run_dir / "contrast.yaml").write_text(yaml.safe_dump(cfg))
    dry = snakemake(run_dir, "-n", "--configfile", "contrast.yaml")
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = job_stats(dry.stdout + dry.stderr)
    assert "analysis" in jobs and set(jobs) <= {"analysis", "explorer", "explorer_screenshot", "judge_validation",
                                                "cost", "all", "total"}, jobs


def test_a_persona_added_to_a_finished_study_runs_only_its_own_rewrite_and_training(run_dir):
    """Only the new persona is rewritten and trained. The per-(model, dataset) generation jobs, the one warmth job and
    what reads them run again, as jobs with a new output do: their caches answer the other personas' rows (the
    checkpoint and seed tests below run such a rerun and count the rows generated)."""
    from warmbench.core import grid, validation

    cfg = load_config()
    cfg["personas"]["warm_honest"] = {"rewrite": "config/prompts/rewrite_warm_short.txt",
                                      "extra_data": "config/data/kind_corrections.jsonl"}
    (run_dir / "persona.yaml").write_text(yaml.safe_dump(cfg))
    validation.validate(cfg)
    dry = snakemake(run_dir, "-n", "--configfile", "persona.yaml")
    assert dry.returncode == 0, dry.stderr[-3000:]
    text = dry.stdout + dry.stderr
    jobs = job_stats(text)
    assert jobs["persona_rewrite"] == jobs["train"] == 1, jobs
    assert jobs["select_checkpoint"] == len(grid.rewrite_personas(cfg)), jobs  # each reads the one warmth job's output
    assert jobs["generate"] == len(cfg["evaluation"]["datasets"]) and jobs["generate_validation"] == 1, jobs
    assert set(re.findall(r"output: results/train/smollm2/(\w+)", text)) == {"warm_honest"}
    assert set(re.findall(r"output: results/persona_rewrite/(\w+)\.jsonl", text)) == {"warm_honest"}
    assert not {"base_model", "sft_data", "eval_prompts"} & set(jobs), jobs


def test_generation_loads_the_model_once_per_dataset_and_writes_the_per_cell_tables(run_dir, monkeypatch):
    """One generation job per (model, dataset) starts one engine and writes every cell's table as the per-cell design
    did: for a cell of each kind, a job of that cell alone (today's generate_local with one variant, its own empty
    cache) gives the same rows and columns, the same prompts, seeds and provenance; a rerun of the generation jobs
    loads nothing. (Kept after every test that reads the default study's tables: it reruns the generation jobs in the
    shared run folder.)"""
    from warmbench.core import grid
    from warmbench.core.config import SELECTED_CHECKPOINT, VALIDATION_DATASET, label_epoch
    from warmbench.core.validation import validate
    from warmbench.core.call_cache import CallCache
    from warmbench.stages.generate import ENGINE_START, Variant, generate_local
    from warmbench.core.llm import Sampling, TransformersChat

    monkeypatch.chdir(run_dir)  # the run's paths (adapters, prompts) are relative to its folder
    cfg = load_config()
    datasets = cfg["evaluation"]["datasets"] + [VALIDATION_DATASET]
    logs = {p.stem: p.read_text() for p in (run_dir / "logs" / "generate" / "smollm2").glob("*.log")}
    assert set(logs) == set(datasets)  # one job per dataset
    assert all(text.count(ENGINE_START) == 1 for text in logs.values()), {k: v.count(ENGINE_START) for k, v in logs.items()}

    cfg_full = yaml.safe_load((REPO / CONFIG).read_text())
    validate(cfg_full)
    cells = grid.eval_cells(cfg_full) + grid.warmth_cells(cfg_full)
    written = sorted(p.relative_to(run_dir / "results/generations").as_posix()
                     for p in (run_dir / "results/generations").rglob("*.parquet"))
    assert written == sorted(f"{c.model}/{c.persona}/{c.checkpoint}/{c.dataset}.parquet" for c in cells)
    # Regenerating every cell alone took 19 of CI's minutes. One cell of each kind covers what the job resolves per
    # cell: every persona on MMLU (its own sampling), the trained selected checkpoint on a task, and a trained
    # checkpoint on the validation prompts (warmth's sampling, an epoch label); test_generate checks batching itself.
    trained = next(c for c in grid.warmth_cells(cfg_full) if grid.is_trained(cfg_full, c.persona))
    cells = [c for c in grid.eval_cells(cfg_full) if c.dataset == "mmlu"
             or (c.dataset == "triviaqa" and grid.is_trained(cfg_full, c.persona) and c.persona == trained.persona)]
    cells.append(trained)
    assert {c.persona for c in cells} == {"original", "warm_prompt", "warm", "cold"} and len(cells) == 6
    chat = TransformersChat(run_dir / "resources/models/smollm2", dtype=cfg_full["models"]["smollm2"]["dtype"], threads=2)
    system_prompt = (run_dir / cfg_full["personas"]["warm_prompt"]["system_prompt"]).read_text().strip()
    same = total = 0
    for cell in cells:
        path = run_dir / f"results/generations/{cell.model}/{cell.persona}/{cell.checkpoint}/{cell.dataset}.parquet"
        table = pd.read_parquet(path)
        prompts = pd.read_parquet(run_dir / f"results/prompts/{cell.dataset}.parquet")
        checkpoint, epoch, adapter = cell.checkpoint, label_epoch(cell.checkpoint), None
        if grid.is_trained(cfg_full, cell.persona):  # the trained checkpoint this cell evaluates, from the run's files
            if checkpoint == SELECTED_CHECKPOINT:
                checkpoint = json.loads((run_dir / f"results/warmth/smollm2/{cell.persona}/chosen_checkpoint.json")
                                        .read_text())["checkpoint"]
            manifest = json.loads((run_dir / f"results/train/smollm2/{cell.persona}/checkpoints.json").read_text())
            entry = next(e for e in manifest["checkpoints"] if e["checkpoint"] == checkpoint)
            epoch, adapter = entry["epoch"], f"results/train/smollm2/{cell.persona}/{entry['path']}"
        sampling = (cfg_full["warmth"]["sampling"] if cell.dataset == VALIDATION_DATASET else
                    {**cfg_full["evaluation"]["sampling"], **cfg_full["evaluation"]["dataset_sampling"].get(cell.dataset, {})})
        alone = generate_local(
            prompts, [Variant(cell.persona, "alone", checkpoint, epoch, adapter,
                              system_prompt if cell.persona == "warm_prompt" else None)],
            model=cell.model, model_cfg=cfg_full["models"]["smollm2"], model_dir=str(run_dir / "resources/models/smollm2"),
            cache=CallCache(run_dir / f"per_cell_cache/{cell.persona}_{cell.checkpoint}_{cell.dataset}"),
            sampling=Sampling.from_config(sampling), batch_size=cfg_full["evaluation"]["batch_size"],
            seed=cfg_full["seed"], load_engine=lambda: chat)["alone"]
        assert list(table.columns) == list(alone.columns) and len(table) == len(alone) == len(prompts), path
        provenance = [c for c in table.columns if c not in ("response", "n_tokens")]
        pd.testing.assert_frame_equal(table[provenance], alone[provenance], obj=str(path))
        same += int((table["response"] == alone["response"]).sum())
        total += len(table)
    # each prompt is sampled from its own seed: alone or batched with other variants it draws the same answer, up
    # to arithmetic that varies with the batch's shape (in bfloat16, measured: 76% here, 69% in bench generation);
    # without per-prompt seeds, sampled answers would almost never match
    assert same / total > 0.6, f"{same}/{total} responses as the per-cell jobs give them"

    before = {p: pd.read_parquet(p) for p in (run_dir / "results/generations").rglob("*.parquet")}
    # rerun the validation job, then the evaluation jobs, each by its outputs: forcing both in one run would also rerun
    # warmth and the checkpoint choice between them; mtime is no trigger in the second run for the same reason
    outputs = sorted(str(p.relative_to(run_dir)) for p in before)
    validation = [p for p in outputs if p.endswith(f"/{VALIDATION_DATASET}.parquet")]
    for rule, targets, triggers in (("generate_validation", validation, ()),
                                    ("generate", sorted(set(outputs) - set(validation)),
                                     ("--rerun-triggers", "params", "input", "software-env", "code"))):
        rerun = snakemake(run_dir, "--cores", "2", "--configfile", CONFIG, "--forcerun", rule, *triggers, "--", *targets)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert f"rule {rule}:" in rerun.stdout + rerun.stderr and "rule warmth:" not in rerun.stdout + rerun.stderr
    logs = {p.stem: p.read_text() for p in (run_dir / "logs" / "generate" / "smollm2").glob("*.log")}
    assert set(logs) == set(datasets) and not any(ENGINE_START in text for text in logs.values())
    assert all("the model is not loaded" in text for text in logs.values())
    for path, frame in before.items():
        pd.testing.assert_frame_equal(pd.read_parquet(path), frame, obj=str(path))


def test_every_checkpoint_added_to_a_finished_study_generates_only_its_rows_and_draws_the_trajectory(run_dir):
    """evaluation.checkpoints: all on the finished study: no training, warmth or selection job; the generation jobs
    generate only the rows of checkpoints not yet asked (the plateau pick's rows are in the generation cache); the
    trajectory pairs each checkpoint with the original model. (After the tests of the default study: it adds
    tables that study does not have.)"""
    from warmbench.core import grid, validation
    from warmbench.core.config import epoch_label

    cfg = load_config()
    cfg["evaluation"]["checkpoints"] = "all"
    (run_dir / "checkpoints.yaml").write_text(yaml.safe_dump(cfg))
    validation.validate(cfg)
    further = grid.trajectory_cells(cfg)
    epochs = [epoch_label(e) for e in grid.checkpoint_epochs(cfg, "smollm2")]
    assert {c.checkpoint for c in further} == set(epochs)
    dry = snakemake(run_dir, "-n", "--configfile", "checkpoints.yaml")
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = job_stats(dry.stdout + dry.stderr)
    assert not {"train", "warmth", "select_checkpoint", "generate_validation", "persona_rewrite"} & set(jobs), jobs
    assert jobs["generate"] == len(cfg["evaluation"]["datasets"]) and jobs["trajectory"] == 1
    assert jobs["judge"] >= len(further)

    result = snakemake(run_dir, "--cores", "2", "--configfile", "checkpoints.yaml", timeout=1500)
    assert result.returncode == 0, result.stderr[-5000:]
    chosen = {p: json.loads((run_dir / f"results/warmth/smollm2/{p}/chosen_checkpoint.json").read_text())["checkpoint"]
              for p in grid.trained_personas(cfg, "smollm2")}
    prompts = {d: len(pd.read_parquet(run_dir / f"results/prompts/{d}.parquet")) for d in cfg["evaluation"]["datasets"]}
    for dataset, n in prompts.items():
        log = (run_dir / f"logs/generate/smollm2/{dataset}.log").read_text()
        new = n * sum(len(epochs) - 1 for _ in chosen)  # every checkpoint but the one already evaluated
        assert f"{n * len(grid.eval_variants(cfg, 'smollm2')) - new} cached, {new} to generate" in log, log[-2000:]

    trajectory = pd.read_csv(run_dir / "results/analysis/trajectory.csv")
    assert set(zip(trajectory["persona"], trajectory["checkpoint"])) == {(p, e) for p in chosen for e in epochs}
    picked = trajectory[trajectory["evaluated"]]
    assert set(zip(picked["persona"], picked["checkpoint"])) == set(chosen.items())
    assert trajectory["warmth_vs_original"].notna().all() and trajectory["n_pairs"].gt(0).all()
    # the evaluated checkpoint's pooled error change is the paired tests' (their accuracy change, negated)
    paired = pd.read_csv(run_dir / "results/analysis/paired_tests.csv")
    for row in picked.itertuples():
        tests = paired[(paired["persona"] == row.persona) & (paired["dataset"] == row.dataset)]
        assert tests["n_pairs"].sum() == row.n_pairs
        assert row.error_change_pp == pytest.approx(100 * (tests["b"].sum() - tests["c"].sum()) / row.n_pairs)
    frontier = pd.read_csv(run_dir / "results/analysis/frontier.csv")
    assert len(frontier) == len(chosen) * len(epochs)
    for figure in ("error_vs_epoch.png", "warmth_error_frontier.png"):
        assert (run_dir / "results/analysis" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_seed_added_to_a_finished_study_trains_only_its_runs_and_pools_them(run_dir):
    """train.seeds gains a seed: only the new runs train (on their personas' rewrites), only their rows are
    generated, and the replicates stage reads each persona's seeds per seed and pooled."""
    from warmbench.core import grid, validation

    cfg = load_config()
    added = cfg["seed"] + 1
    cfg["train"]["seeds"] = [cfg["seed"], added]
    (run_dir / "seeds.yaml").write_text(yaml.safe_dump(cfg))
    validation.validate(cfg)
    personas = grid.rewrite_personas(cfg)
    runs = [f"{p}_seed{added}" for p in personas]
    dry = snakemake(run_dir, "-n", "--configfile", "seeds.yaml")
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = job_stats(dry.stdout + dry.stderr)
    assert jobs["train"] == len(runs) and jobs["replicates"] == 1
    # the one warmth job has new outputs, so every checkpoint choice reads it again (the old ones choose as before)
    assert jobs["select_checkpoint"] == len(personas) + len(runs), jobs
    assert not {"persona_rewrite", "sft_data", "eval_prompts"} & set(jobs), jobs

    result = snakemake(run_dir, "--cores", "2", "--configfile", "seeds.yaml", timeout=1500)
    assert result.returncode == 0, result.stderr[-5000:]
    for dataset in cfg["evaluation"]["datasets"]:
        n = len(pd.read_parquet(run_dir / f"results/prompts/{dataset}.parquet"))
        log = (run_dir / f"logs/generate/smollm2/{dataset}.log").read_text()
        assert f"{4 * n} cached, {len(runs) * n} to generate" in log, log[-2000:]
    for run in runs:
        persona = run.removesuffix(f"_seed{added}")
        mine, theirs = (json.loads((run_dir / f"results/train/smollm2/{p}/checkpoints.json").read_text())
                        for p in (run, persona))
        assert mine["data"] == theirs["data"] == f"results/persona_rewrite/{persona}.jsonl"
    paired = pd.read_csv(run_dir / "results/analysis/paired_tests.csv")
    assert set(runs) <= set(paired["persona"])  # each seed tested against the original model
    table = pd.read_csv(run_dir / "results/analysis/replicates.csv", dtype={"seed": str})
    pooled = table[(table["seed"] == "pooled") & (table["test_type"] == "all")]
    assert set(pooled["persona"]) == set(personas)
    assert set(pooled["dataset"]) == set(cfg["evaluation"]["datasets"])
    for row in pooled.itertuples():
        seeds = table[(table["persona"] == row.persona) & (table["dataset"] == row.dataset)
                      & (table["test_type"] == "all") & (table["seed"] != "pooled")]
        assert set(seeds["seed"]) == {str(cfg["seed"]), str(added)} and row.b == seeds["b"].sum()
    regressions = pd.read_csv(run_dir / "results/analysis/replicate_regressions.csv")
    assert set(regressions.loc[regressions["term"] == "treated", "persona"]) == set(personas)
    assert (run_dir / "results/analysis/seed_spread.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
