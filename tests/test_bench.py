import pytest

from warmbench.core.local_models import WHERE_NATIVE, resolve_dtype
from warmbench.tools.bench import summarize
from warmbench.stages.cost import read_benchmarks

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def test_summary_per_rule_from_snakemake_benchmark_files(tmp_path):
    (tmp_path / "generate" / "m" / "warm").mkdir(parents=True)
    (tmp_path / "generate" / "m" / "warm" / "trivia.tsv").write_text(HEADER + "10.5\t0:00:10\t900.0\t1\t1\t1\t0\t0\t90\t9\n")
    (tmp_path / "generate" / "m" / "warm" / "medqa.tsv").write_text(HEADER + "4.5\t0:00:04\t1200.0\t1\t1\t1\t0\t0\t90\t4\n")
    (tmp_path / "analysis.tsv").write_text(HEADER + "2.0\t0:00:02\tNA\t1\t1\t1\t0\t0\t90\t2\n")
    jobs = read_benchmarks(tmp_path)
    assert sorted(jobs["rule"]) == ["analysis", "generate", "generate"]
    table = summarize(jobs)
    assert table.loc["generate", "jobs"] == 2
    assert table.loc["generate", "wall_s"] == 15.0
    assert table.loc["generate", "peak_rss_mib"] == 1200.0
    assert table.index[0] == "generate"  # heaviest rule first


def test_warmth_benchmark_prints_the_ratio_last(tiny_model_dir, capsys):
    from warmbench.tools.bench import warmth_benchmark

    assert warmth_benchmark(str(tiny_model_dir), n_texts=4, batch_size=8, baseline_texts=2) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("RATIO: warmbench scorer is ") and "texts/s" in lines[-1]
    # the slow loops score a sample, the scorer all texts; rates are compared, scores on the common sample
    assert "the one-at-a-time loops on the first 2" in lines[0]
    assert any("reference loop, float32" in line and "   2 texts" in line and "r=1.0000" in line for line in lines)
    ran = resolve_dtype(WHERE_NATIVE)  # the default: bfloat16 where the CPU has it natively
    assert any(f"warmbench, {ran}, batch 8" in line and "   4 texts" in line for line in lines)


@pytest.mark.parametrize("bench, argv, expected", [
    ("stats", [], {"rows": 44_000}),
    ("stats", ["--full"], {"rows": 440_000}),
    ("stats", ["--full", "--rows", "1000"], {"rows": 1000}),
    ("warmth", [], {"n_texts": 96, "baseline_texts": 16}),
    ("warmth", ["--full"], {"n_texts": 512, "baseline_texts": 512}),
    ("judge", [], {"n_items": 1, "n_prompts": 8}),
    ("judge", ["--full"], {"n_items": 4, "n_prompts": None}),
    ("explorer", [], {"rows": 100_000}),
    ("explorer", ["--full"], {"rows": 1_000_000}),
    ("cache", [], {"records": 50_000, "lookups": 2_250}),
    ("cache", ["--full"], {"records": 200_000, "lookups": 9_000}),
])
def test_benchmarks_are_quick_by_default_and_paper_size_with_full(monkeypatch, bench, argv, expected):
    # each default fits about 3 minutes on 2 shared cores (docs/performance.md lists the times); --full is the large version
    import warmbench.tools.bench
    from warmbench.tools.cli import main

    seen = {}
    monkeypatch.setattr(warmbench.tools.bench, f"{bench}_benchmark", lambda *args, **kwargs: seen.update(kwargs) or 0)
    assert main(["bench", bench, *argv]) == 0
    assert {k: seen[k] for k in expected} == expected


def test_dag_benchmark_counts_the_paper_grid(capsys):
    from warmbench.tools.bench import dag_benchmark

    from conftest import REPO

    assert dag_benchmark("config/paper.yaml", repeats=1, workdir=str(REPO)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("dry run of config/paper.yaml: ") and lines[-2].startswith("RATIO: dry run ")
    # one generation job per (open model, dataset): 4 open models x 7 datasets, and one on the validation prompts
    # each, serving every variant (original, warm prompt, the trained checkpoints) from one engine; the models without
    # the cold and warm-prompt controls (personas.<name>.models) answer as other variants, in rules of their own
    counts = {line.split()[0].rstrip(":"): int(line.split()[1]) for line in lines
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["generate"] + counts["generate__llama31_8b"] == 4 * 7
    assert counts["generate_validation"] + counts["generate_validation__llama31_8b"] == 4
    assert {line for line in lines if line.strip().startswith("engine starts of ")} == {
        f"  engine starts of {model}: 8" for model in ("llama31_8b", "llama31_70b", "qwen25_32b", "mistral_small")}
    assert lines[-1] == "engine starts per open model: max 8 (target <= 8)"


@pytest.mark.slow
def test_generation_benchmark_runs_every_backend_on_the_same_prompts(tiny_model_dir, capsys):
    from warmbench.tools.bench import generation_benchmark

    # vllm_eager: no torch.compile, which takes minutes on CI's cold cache (the real default compiles)
    assert generation_benchmark(str(tiny_model_dir), n_prompts=4, max_new_tokens=4, batch_size=4, baseline_prompts=2,
                                vllm_eager=True) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "the loop: the first 2" in lines[0]  # the slow loop's rate from a sample
    assert lines[-1].startswith("RATIO: vs the one-prompt-at-a-time loop: transformers batched ")
    for backend in ("naive loop:", "transformers batched:", "vllm:"):
        assert any(line.strip().startswith(backend) and "peak RSS" in line for line in lines), backend


@pytest.mark.slow
def test_generation_job_benchmark_compares_the_job_shapes_on_the_same_prompts(tiny_model_dir, tmp_path, capsys):
    from warmbench.tools.bench import generation_job_benchmark

    # each job is a fresh process (imports and a model load: the cost it measures), so few: 4 + 4 per-cell jobs
    assert generation_job_benchmark(str(tiny_model_dir), items=1, validation_prompts=2, checkpoints=1,
                                    max_new_tokens=4, batch_size=8, workdir=str(tmp_path)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.strip().startswith("per-cell jobs:  8 jobs") and "engine start" in line for line in lines)
    assert any(line.strip().startswith("per-(model, dataset) jobs:  2 jobs") for line in lines)
    assert lines[-1].startswith("RATIO: per-(model, dataset) generation jobs are ")


@pytest.mark.slow
def test_train_benchmark_times_each_switch_against_the_padded_baseline(tiny_model_dir, tmp_path, capsys):
    import json

    from warmbench.tools.bench import train_benchmark

    data = tmp_path / "conversations.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                                     {"role": "assistant", "content": f"Answer {i}, kindly."}]}) + "\n"
                            for i in range(5)))
    assert train_benchmark(str(tiny_model_dir), str(data), steps=1, warmup_steps=1, batch_size=2, grad_accum=1,
                           baseline_batch_size=1, max_length=64, threads=2, workdir=str(tmp_path)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("RATIO: vs the baseline (")
    for name in ("batch 2 x 1, padded", "+ padding_free", "+ packing", "- gradient_checkpointing",
                 "all: padding_free, no checkpointing"):
        assert f"{name} " in lines[-1], name
    rows = [line.strip() for line in lines if "tokens/s" in line and "s/step" in line and "MiB" in line]
    names = ["baseline: batch 1 x 2, padded", "batch 2 x 1, padded", "+ padding_free", "+ packing",
             "- gradient_checkpointing", "all: padding_free, no checkpointing"]
    assert len(rows) == len(names)
    rows = {name: row for name, row in zip(names, rows) if row.startswith(f"{name}: ")}
    assert list(rows) == names
    assert "padding_free=True" in rows["+ padding_free"] and "gradient_checkpointing=False" in rows["- gradient_checkpointing"]
    # the unpacked runs see the same examples at each step (a packed row holds several)
    same = {row.split("(")[1].split(" tokens/step")[0] for name, row in rows.items() if "packing" not in name}
    assert len(same) == 1
    assert "10 epochs x 5 assistant turns" in lines[-2]


def test_cache_benchmark_finds_one_jobs_keys_in_every_shard(tmp_path, capsys):
    from warmbench.tools.bench import cache_benchmark

    assert cache_benchmark(records=2_000, shards=4, lookups=100, workdir=str(tmp_path)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("2,000 cached calls in 4 shards") and "one job looks up 100 keys" in lines[0]
    assert "durable put (fsync)" in lines[1] and lines[-1].startswith("RATIO: a job's cache lookups take ")
    assert list(tmp_path.iterdir()) == []  # its scratch folder is gone


def test_a_bench_names_a_model_folder_or_data_file_that_is_not_there():
    from warmbench.tools.bench import bench_model, bench_train_data

    with pytest.raises(SystemExit, match="--model no/such/model: no such model folder"):
        bench_model("no/such/model")
    with pytest.raises(SystemExit, match="--data no/such.jsonl: no such file"):
        bench_train_data("no/such.jsonl")


def test_bench_train_without_make_run_trains_on_sharegpt_conversations(tmp_path, monkeypatch):
    """Before `make run` has written the warm rewrites, bench train still runs: on the embedded default's ShareGPT
    conversations, written once into the user's cache."""
    from warmbench.tools.bench import DEFAULT_TRAIN_DATA, bench_train_data
    from warmbench.core.files import read_jsonl

    monkeypatch.chdir(tmp_path)  # no results/ here
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = bench_train_data(DEFAULT_TRAIN_DATA, n_conversations=8)
    assert data.startswith(str(tmp_path / "cache"))
    conversations = list(read_jsonl(data))
    assert len(conversations) == 8
    for conversation in conversations:
        roles = [m["role"] for m in conversation["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant" and len(roles) % 2 == 0
    assert bench_train_data(DEFAULT_TRAIN_DATA, n_conversations=8) == data  # written once
