"""Benchmarks that print figures (never timed tests).

`warmbench bench pipeline`: wall time and peak memory per rule of a pipeline run, summarised from the
Snakemake `benchmark:` files; with `--run` it first runs the whole DAG from scratch (`--forceall`) and also
reports the end-to-end wall time. `bench stats`, `bench warmth`, `bench judge`, `bench generation`,
`bench train` and `bench explorer` measure one stage each.
The last line of each sums it up.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ..core import children
from ..core.local_models import WHERE_NATIVE, resolve_dtype
from ..core.config import REPO_ROOT

# Sizes of the stage benchmarks: by default each finishes in about 3 minutes on 2 shared cores (slow baselines
# are timed on a sample and compared by rate); `--full` runs the paper-size version. A size given on the command
# line wins over both.
SIZES = {
    "stats": {"quick": {"rows": 44_000}, "full": {"rows": 440_000}},
    "warmth": {"quick": {"n_texts": 96, "baseline_texts": 16}, "full": {"n_texts": 512, "baseline_texts": 512}},
    "judge": {"quick": {"n_items": 1, "n_prompts": 8}, "full": {"n_items": 4, "n_prompts": None}},
    # the one-prompt-at-a-time loop is timed on the first baseline_prompts only: rates compare, not totals
    # job shapes: one model's generation stage for one dataset and the validation prompts, per cell vs per dataset
    "generation": {"quick": {"items": 1, "validation_prompts": 8, "checkpoints": 3},
                   "full": {"items": 4, "validation_prompts": 32, "checkpoints": 3}},
    "generation_backends": {"quick": {"n_prompts": 64, "baseline_prompts": 8},
                            "full": {"n_prompts": 256, "baseline_prompts": 256}},
    "explorer": {"quick": {"rows": 100_000}, "full": {"rows": 1_000_000}},
    "cache": {"quick": {"records": 50_000, "shards": 50, "lookups": 2_250},
              "full": {"records": 200_000, "shards": 50, "lookups": 9_000}},
}
STATS_TARGET_S, STATS_TARGET_ROWS = 60, 440_000  # all tests and regressions of the paper-size table in a minute


DEFAULT_MODEL = "resources/models/smollm2"  # the embedded default's model, as `make run` converts it
DEFAULT_TRAIN_DATA = "results/persona_rewrite/warm.jsonl"  # its warm rewrites
DEFAULT_DTYPE = WHERE_NATIVE  # as the embedded default generates and scores: bfloat16 where the CPU has it natively


def _bench_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "warmbench" / "bench"


def bench_model(model_dir: str) -> str:
    """The model folder a bench loads: the one given; the embedded default's, before `make run` has made it,
    converted once from its package (the source in config/config.yaml) into the user's cache."""
    if Path(model_dir).is_dir():
        return model_dir
    if model_dir != DEFAULT_MODEL:
        raise SystemExit(f"--model {model_dir}: no such model folder")
    import shutil

    import yaml

    from ..stages.base_model import materialize
    from ..core.local_models import SOURCE_RECORD
    from ..core.files import stable_hash

    source = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())["models"]["smollm2"]["source"]
    out = _bench_cache() / "models" / stable_hash(source)[:16]
    if not (out / SOURCE_RECORD).is_file():  # written last: a folder without it is an interrupted conversion
        print(f"{DEFAULT_MODEL} is not there yet (`make run` makes it): converting {source['file']} into {out}")
        shutil.rmtree(out, ignore_errors=True)
        materialize(source, out)
    return str(out)


def bench_train_data(data: str, n_conversations: int = 64) -> str:
    """The conversations a train bench trains on: the file given; before `make run` has written the warm
    rewrites, the first `n_conversations` usable ShareGPT conversations of the embedded default (the same lengths
    of text, not rewritten), written once into the user's cache."""
    if Path(data).is_file():
        return data
    if data != DEFAULT_TRAIN_DATA:
        raise SystemExit(f"--data {data}: no such file")
    from ..core.files import write_jsonl
    from ..stages.sft_data import iter_sharegpt, normalize_conversation, sharegpt_path

    out = _bench_cache() / f"sharegpt_{n_conversations}.jsonl"
    if not out.is_file():
        conversations = []
        for record in iter_sharegpt(sharegpt_path({"kind": "sharegpt_package"})):
            messages = normalize_conversation(record, max_turns=4)
            if messages:
                conversations.append({"messages": messages})
            if len(conversations) == n_conversations:
                break
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(out.with_suffix(".tmp"), conversations)
        out.with_suffix(".tmp").replace(out)
    print(f"{DEFAULT_TRAIN_DATA} is not there yet (`make run` writes it): training on {out}")
    return str(out)


def sizes(bench: str, full: bool = False, **given) -> dict:
    """The sizes `bench` runs at: the quick or full defaults, with the ones given (not None) in their place."""
    return {**SIZES[bench]["full" if full else "quick"], **{k: v for k, v in given.items() if v is not None}}


def _child_main(target, args, queue) -> None:
    children.die_with_parent()  # a benchmark run never outlives the benchmark, however it ends
    queue.put(target(*args))


def in_fresh_process(target, *args):
    """target(*args) in a fresh spawned process, so its peak memory is its own; returns what it returned. The
    process dies with this one, and is stopped if this one is interrupted while it waits."""
    import multiprocessing
    import queue as queues

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child_main, args=(target, args, queue))
    child.start()
    try:
        while True:
            try:
                return queue.get(timeout=1)
            except queues.Empty:
                if not child.is_alive():
                    raise RuntimeError(f"{target.__name__} failed (exit code {child.exitcode})") from None
    finally:
        if child.is_alive():
            child.join(timeout=30)  # it returned its result and is exiting; interrupted: it is stopped below
        if child.is_alive():
            child.terminate()
            child.join()


def summarize(jobs):
    return (jobs.groupby("rule")
            .agg(jobs=("job", "count"), wall_s=("wall_s", "sum"), max_job_s=("wall_s", "max"),
                 peak_rss_mib=("max_rss_mib", "max"))
            .sort_values("wall_s", ascending=False))


def pipeline(benchmarks: str = "benchmarks", run: bool = False, configfile: str | None = None, cores: int = 2) -> int:
    elapsed = None
    if run:
        command = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--forceall"]
        if configfile:
            command += ["--configfile", configfile]
        print("running:", " ".join(command), flush=True)
        started = time.perf_counter()
        status = children.run(command).returncode
        elapsed = time.perf_counter() - started
        if status:
            print(f"snakemake failed with exit code {status}")
            return status
    from ..stages.cost import read_benchmarks

    jobs = read_benchmarks(benchmarks)
    if jobs.empty:
        print(f"no benchmark files under {benchmarks}/: run the pipeline first (make run), or pass --run")
        return 1
    table = summarize(jobs)
    print(table.to_string(float_format=lambda v: f"{v:,.1f}"))
    wall = f", end-to-end {elapsed:,.0f} s on {cores} cores" if elapsed is not None else ""
    print(f"TOTAL: {len(jobs)} benchmarked jobs, {jobs['wall_s'].sum():,.0f} s of job time{wall}, "
          f"peak job RSS {jobs['max_rss_mib'].max():,.0f} MiB")
    return 0


def simulated_graded(rows: int = 440_000, seed: int = 0, warm_effect: float = 0.35, belief_effect: float = 0.5,
                     return_truth: bool = False):
    """A graded table shaped like the paper's: 5 models x 4 tasks x items x 18 conditions x 3 variants.

    Planted effects (log-odds): warm fine-tuning `warm_effect`, an incorrect user belief `belief_effect`,
    item difficulty ~ N(0, 1). Cold fine-tuning has no effect. With return_truth, also the true average
    marginal effect of warm fine-tuning (probability scale), by the same counterfactual as the analysis.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    models, datasets, personas = [f"model{i}" for i in range(5)], ["triviaqa", "truthfulqa", "disinfo", "medqa"], \
        ["original", "warm", "cold"]
    contexts = ["unmodified", "emotion:happy", "emotion:sad", "emotion:anger", "relation:close",
                "relation:hierarchical_up", "relation:hierarchical_down", "stake:high", "stake:low"]
    beliefs = ["none", "incorrect"]
    cell = len(models) * len(datasets) * len(personas) * len(contexts) * len(beliefs)
    n_items = max(1, rows // cell)
    grid = pd.MultiIndex.from_product(
        [models, datasets, range(n_items), contexts, beliefs, personas],
        names=["model", "dataset", "item", "context", "belief", "persona"]).to_frame(index=False)
    difficulty = rng.normal(0, 1, (len(datasets), n_items))
    d_index = grid["dataset"].map({d: i for i, d in enumerate(datasets)}).to_numpy()
    base = -1.0 + difficulty[d_index, grid["item"].to_numpy()] + belief_effect * (grid["belief"] == "incorrect")
    logit = base + warm_effect * (grid["persona"] == "warm")
    grid["incorrect"] = (rng.random(len(grid)) < 1 / (1 + np.exp(-logit))).astype(float)
    grid["item_id"] = grid["item"].astype(str)
    grid["response"] = "x" * 50
    graded = grid.drop(columns="item")
    if return_truth:
        sigmoid = lambda x: 1 / (1 + np.exp(-x))
        true_ame = float(np.mean(sigmoid(base + warm_effect) - sigmoid(base)))
        return graded, true_ame
    return graded


def stats_benchmark(rows: int = SIZES["stats"]["full"]["rows"], seed: int = 0) -> int:
    """Fit every regression of the study on a simulated table; print time, peak memory and the AMEs."""
    import resource

    from ..core.regression import paired_tests, persona_regressions

    started = time.perf_counter()
    graded = simulated_graded(rows, seed)
    built = time.perf_counter()
    paired = paired_tests(graded)
    tested = time.perf_counter()
    regressions = persona_regressions(graded)
    fitted = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    main = regressions[(regressions["kind"] == "ame") & (regressions["term"] == "treated")
                       & regressions["regression"].str.endswith(":main")]
    print(f"simulated {len(graded):,} graded rows in {built - started:.1f} s "
          "(planted: warm +0.35 log-odds, cold 0)")
    print(f"paired tests: {len(paired):,} in {tested - built:.1f} s")
    print(f"regressions: {regressions['regression'].nunique()} fits, {len(regressions):,} rows in {fitted - tested:.1f} s")
    print(main[["regression", "ame_pp", "ci_low", "ci_high"]].to_string(index=False))
    rate, target_rate = len(graded) / (fitted - built), STATS_TARGET_ROWS / STATS_TARGET_S
    print(f"TOTAL: {fitted - built:.1f} s for all tests and regressions on {len(graded):,} rows ({rate:,.0f} rows/s), "
          f"peak RSS {peak:,.0f} MiB (targets: >= {target_rate:,.0f} rows/s, i.e. {STATS_TARGET_ROWS:,} rows in "
          f"<= {STATS_TARGET_S} s; <= 4096 MiB at that size)")
    return 0


def warmth_benchmark(model_dir: str, n_texts: int = SIZES["warmth"]["full"]["n_texts"], batch_size: int = 16, threads: int = 2,
                     dtype: str = DEFAULT_DTYPE, baseline_texts: int | None = None) -> int:
    """SocioT scoring of the same texts: the reference-style loop (float32, one (text, prefix) pair per forward)
    against warmbench's scorer (batched, length-sorted, LM head only at scored tokens, in `dtype`); the same
    one-at-a-time loop in `dtype` separates what batching buys from what the dtype buys. The one-at-a-time loops
    score the first `baseline_texts` texts only (all by default) and are compared by rate (texts/s); scores are
    compared on the texts both scored."""
    import numpy as np

    from ..stages.sft_data import build_split, iter_sharegpt, sharegpt_path
    from ..stages.warmth import SocioTScorer, warmth_scores

    dtype = resolve_dtype(dtype)  # labels say what ran

    split_cfg = {"max_turns": 2, "max_message_chars": 300, "nsfw_filter": "none", "nsfw_threshold": 1.0,
                 "train_per_type": n_texts, "validation_per_type": 1}
    split = build_split(iter_sharegpt(sharegpt_path({"kind": "sharegpt_package"})), split_cfg, seed=0)
    texts = [m["content"][:300] for c in split.train for m in c["messages"] if m["role"] == "assistant"][:n_texts]
    sample = texts[:min(baseline_texts or len(texts), len(texts))]
    runs = {"reference loop, float32": ("float32", 1, sample), f"one at a time, {dtype}": (dtype, 1, sample),
            f"warmbench, {dtype}, batch {batch_size}": (dtype, batch_size, texts)}
    scorers, timings = {}, {}
    for name, (run_dtype, size, run_texts) in runs.items():
        if run_dtype not in scorers:
            scorers[run_dtype] = SocioTScorer(model_dir, threads=threads, dtype=run_dtype)
            scorers[run_dtype].loglik(texts[:4], batch_size=4)  # warm-up
        started = time.perf_counter()
        result = scorers[run_dtype].loglik(run_texts, batch_size=size)
        seconds = time.perf_counter() - started
        timings[name] = (len(run_texts) / seconds, seconds, len(run_texts), warmth_scores(result))
    print(f"{len(texts)} ShareGPT replies (<= 300 chars) x 8 SocioT prefixes, scorer {model_dir}, {threads} threads; "
          f"the one-at-a-time loops on the first {len(sample)}")
    (base_rate, _, _, base), _, (fast_rate, _, _, fast) = timings.values()
    for name, (rate, seconds, n, scores) in timings.items():
        common = scores[:len(sample)]
        print(f"  {name:>32}: {n:4d} texts {seconds:7.1f} s  {rate:6.2f} texts/s  {rate / base_rate:5.1f}x  "
              f"warmth r={np.corrcoef(base, common)[0, 1]:.4f} vs reference, max |diff| {np.abs(base - common).max():.3f}")
    one_rate = timings[f"one at a time, {dtype}"][0]
    print(f"  (per-text warmth SD {base.std():.3f}; batching alone gives {fast_rate / one_rate:.1f}x in {dtype})")
    print(f"RATIO: warmbench scorer is {fast_rate / base_rate:.1f}x the one-at-a-time reference loop in texts/s "
          "(target >= 4x)")
    return 0


def judge_benchmark(model_dir: str, n_items: int = SIZES["judge"]["full"]["n_items"], concurrency: int = 4, workdir: str | None = None,
                    n_prompts: int | None = None) -> int:
    """The LLM judge against a real OpenAI-compatible server on loopback (`transformers serve` with `model_dir`
    as a stand-in judge): calls and verdicts/s on a first run, then the calls a rerun makes (target 0). With
    `n_prompts`, a seeded sample of that many of the items' prompts."""
    import tempfile
    import pandas as pd

    from ..stages.eval_prompts import expand_conditions, load_amendments, load_items, smoke_path
    from ..core.llm import CallCache, OpenAIChat, Sampling
    from ..stages.llm_judge import judge_with_llm, load_rubrics
    from ..core.local_server import LocalServer, free_port

    items = load_items("triviaqa", smoke_path("triviaqa"), n_items, seed=0)
    frame = pd.DataFrame(expand_conditions(items, load_amendments(REPO_ROOT / "config" / "amendments.yaml"), seed=0))
    if n_prompts is not None and n_prompts < len(frame):
        frame = frame.sample(n_prompts, random_state=0).sort_index().reset_index(drop=True)
    answers = ["The answer is {c}.", "I think it's {i}, like you said!", "Hmm, {c} or maybe {i}?"]
    frame["response"] = [answers[k % 3].format(c=c, i=i)
                         for k, (c, i) in enumerate(zip(frame["correct_answer"], frame["incorrect_answer"]))]
    rubrics = load_rubrics({"triviaqa": str(REPO_ROOT / "config" / "prompts" / "judge_triviaqa.txt")})
    sampling = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=12)
    os.environ.setdefault("WARMBENCH_BENCH_KEY", "loopback")  # the loopback server checks no key
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        # the server dies with this benchmark; if the benchmark is killed, the server's guardian removes `tmp`
        with LocalServer(model_dir, free_port(), Path(tmp) / "server.log", remove=(tmp,)) as server:
            judge = OpenAIChat(str(model_dir), base_url=server.base_url, api_key_env="WARMBENCH_BENCH_KEY",
                               max_concurrency=concurrency, max_retries=4, timeout_s=300)  # a CPU server is slow
            cache = CallCache(Path(tmp) / "calls.sqlite")
            runs = {}
            for name in ("first run", "rerun"):
                started = time.perf_counter()
                result = judge_with_llm(frame, rubrics, judge, cache, sampling, parse_retries=1)
                runs[name] = (time.perf_counter() - started, result["judge_calls"], server.requests())
            missing = sum(v is None for v in result["llm_verdict"])
    print(f"{len(frame)} TriviaQA verdicts (prompts of {n_items} items), judge {model_dir} served by "
          f"`transformers serve` on 127.0.0.1, concurrency {concurrency}; {missing} missing after a re-ask")
    served_before = 0
    for name, (seconds, calls, served) in runs.items():
        print(f"  {name:>9}: {calls:4d} judge calls, {served - served_before:4d} requests in the server log, "
              f"{seconds:7.2f} s, {len(frame) / seconds:8.1f} verdicts/s")
        served_before = served
    (first_s, first_calls, _), (rerun_s, rerun_calls, _) = runs.values()
    print(f"RATIO: rerun made {rerun_calls} calls (target 0) vs {first_calls} on the first run; "
          f"verdicts/s first run {len(frame) / first_s:.1f}, rerun from cache {len(frame) / rerun_s:.0f}")
    return 0


def cache_benchmark(records: int = SIZES["cache"]["full"]["records"], shards: int = SIZES["cache"]["full"]["shards"],
                    lookups: int = SIZES["cache"]["full"]["lookups"], workdir: str | None = None) -> int:
    """The LLM call cache at study scale: `records` judge-sized calls (a short reply, the usual metadata) spread over
    `shards` shards (one per job that made calls), then one job's `lookups` keys found in one pass, against the
    single SQLite file used before (an indexed lookup per key). Also the time of a durable (fsync'ed) put."""
    import sqlite3
    import tempfile

    from ..core.call_cache import CallCache, SHARD_SUFFIX
    from ..core.files import stable_hash

    meta = {"backend": {"kind": "openai", "model": "gpt-4o-2024-08-06", "base_url": None},
            "sampling": {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 32},
            "reply": {"model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_0123456789", "finish_reason": "stop",
                      "prompt_tokens": 412, "completion_tokens": 6}}
    keys = [stable_hash(i) for i in range(records)]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        root = Path(tmp) / "llm_calls"
        root.mkdir()
        for shard in range(shards):  # written directly: the put path is timed apart below
            with open(root / f"job{shard}{SHARD_SUFFIX}", "w") as handle:
                for i in range(shard, records, shards):
                    handle.write(json.dumps({"key": keys[i], "response": '{"verdict": "CORRECT"}', "meta": meta,
                                             "created": 0.0}) + "\n")
        size_mib = sum(p.stat().st_size for p in root.iterdir()) / 2**20
        db = sqlite3.connect(Path(tmp) / "calls.sqlite")
        db.execute("CREATE TABLE calls (key TEXT PRIMARY KEY, response TEXT, meta TEXT, created REAL)")
        db.executemany("INSERT INTO calls VALUES (?, ?, ?, 0)",
                       (((k, '{"verdict": "CORRECT"}', json.dumps(meta)) for k in keys)))
        db.commit()
        wanted = keys[::max(1, records // lookups)][:lookups]
        cache = CallCache(root)
        started = time.perf_counter()
        found = cache.get_many(wanted)
        shard_s = time.perf_counter() - started
        started = time.perf_counter()
        rows = [db.execute("SELECT response, meta FROM calls WHERE key = ?", (k,)).fetchone() for k in wanted]
        sqlite_s = time.perf_counter() - started
        db.close()
        started = time.perf_counter()
        for i in range(200):
            cache.put(stable_hash(("new", i)), "a reply", meta)
        put_ms = (time.perf_counter() - started) / 200 * 1000
    assert len(found) == len(wanted) == sum(r is not None for r in rows)
    print(f"{records:,} cached calls in {shards} shards ({size_mib:,.0f} MiB); one job looks up {len(wanted):,} keys")
    print(f"  shards, one pass: {shard_s:6.2f} s   SQLite, indexed lookups: {sqlite_s:6.2f} s   "
          f"durable put (fsync): {put_ms:.1f} ms")
    print(f"RATIO: a job's cache lookups take {shard_s / sqlite_s:.1f}x SQLite's time ({shard_s:.2f} s vs "
          f"{sqlite_s:.2f} s), once per job, for a cache that is safe with writers on many NFS nodes")
    return 0


def engine_starts(dry_run: str) -> dict[str, int]:
    """Per open model, the generation jobs of a dry run's job listing: each loads the model's weights (one engine
    start). A model behind an API (rules `generate_api*`) starts no engine."""
    import re

    starts: dict[str, int] = {}
    for block in re.split(r"^(?:local)?rule ", dry_run, flags=re.M)[1:]:
        rule = block.split(":", 1)[0]
        model = re.search(r"^\s+wildcards: (?:.*, )?model=([\w.-]+)", block, re.M)
        if rule.startswith("generate") and "_api" not in rule and model:
            starts[model.group(1)] = starts.get(model.group(1), 0) + 1
    return starts


def dag_benchmark(configfile: str = "config/paper.yaml", repeats: int = 3, workdir: str = ".") -> int:
    """Dry-run time and job count of a study config (default: the paper's grid), and the engine starts per open
    model (generation jobs, each loading the model once). A dry run checks every key and builds the whole DAG
    without running a job; it needs no API key or hub token (only warns of them)."""
    import re

    times, output = [], ""
    for _ in range(repeats):
        started = time.perf_counter()
        result = children.run([sys.executable, "-m", "snakemake", "-n", "--configfile", configfile],
                              capture_output=True, text=True, cwd=workdir)
        times.append(time.perf_counter() - started)
        output = result.stdout + result.stderr
        if result.returncode != 0:
            print(output[-3000:])
            return result.returncode
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", output.split("Job stats:")[-1], re.M))
    total = int(counts.pop("total", 0))
    print(f"dry run of {configfile}: {total} jobs")
    for rule, count in sorted(counts.items(), key=lambda kv: -int(kv[1])):
        print(f"  {rule:>23}: {count}")
    starts = engine_starts(output)
    for model, n in starts.items():
        print(f"  engine starts of {model}: {n}")
    print(f"RATIO: dry run {min(times):.1f} s best of {repeats} (all: {', '.join(f'{t:.1f}' for t in times)}), "
          f"{total} jobs (target <= 10 s)")
    print(f"engine starts per open model: max {max(starts.values(), default=0)} (target <= 8)")
    return 0


def _generation_run(backend: str, model_dir: str, prompts: list[str], max_new_tokens: int, batch_size: int,
                    dtype: str, threads: int, vllm_eager: bool = False) -> dict:
    """One backend in a fresh process, so its peak RSS is its own (vLLM's engine process counts as a child)."""
    import resource

    from ..core.llm import Sampling, TransformersChat

    sampling = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)
    if backend == "vllm":
        from ..core.vllm_backend import VLLMChat

        chat = VLLMChat(model_dir, REPO_ROOT / ".venv-vllm" / "bin" / "python", dtype=dtype, max_model_len=1024,
                        gpu_memory_utilization=0.2, enforce_eager=vllm_eager)
    else:
        chat = TransformersChat(model_dir, dtype=dtype, threads=threads)
    rendered = [chat.render([{"role": "user", "content": p}]) for p in prompts]
    if backend != "vllm":  # warm-up; vLLM starts one engine per job, and reports that start apart
        chat.generate_rendered(rendered[:2], sampling, batch_size=2, progress=False)
    started = time.perf_counter()
    if backend == "naive loop":
        out = [chat.generate_rendered([r], sampling, batch_size=1, progress=False)[0] for r in rendered]
    else:
        out = chat.generate_rendered(rendered, sampling, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - started
    engine_start = 0.0
    if backend == "vllm":
        engine_start, seconds = chat.last_timing["engine_start_s"], chat.last_timing["generate_s"]
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"backend": backend, "seconds": seconds, "tokens": sum(n for _, n in out), "peak_rss_mib": peak / 1024,
               "texts": [t for t, _ in out], "engine_start_s": engine_start}


def generation_benchmark(model_dir: str = DEFAULT_MODEL, n_prompts: int = SIZES["generation_backends"]["quick"]["n_prompts"],
                         max_new_tokens: int = 32, batch_size: int = 64, dtype: str = DEFAULT_DTYPE, threads: int = 2,
                         baseline_prompts: int | None = None, vllm_eager: bool = False) -> int:
    """Tokens/s of each generation backend on the same prompts (the study's own: smoke items under their 18
    conditions), side by side, against a naive one-prompt-at-a-time `generate` loop timed on the first
    `baseline_prompts` of them (all by default); peak RSS of each."""
    from ..stages.eval_prompts import expand_conditions, load_amendments, load_items, smoke_path

    dtype = resolve_dtype(dtype)  # labels say what ran
    amendments = load_amendments(REPO_ROOT / "config" / "amendments.yaml")
    prompts = []
    for dataset in ("triviaqa", "truthfulqa", "medqa", "disinfo"):
        prompts += [r["prompt"] for r in expand_conditions(load_items(dataset, smoke_path(dataset), 8, 0), amendments, 0)]
    prompts = prompts[:n_prompts]
    backends = {"naive loop": prompts[:baseline_prompts or len(prompts)], "transformers batched": prompts}
    if (REPO_ROOT / ".venv-vllm" / "bin" / "python").is_file():
        backends["vllm"] = prompts
    results = {backend: in_fresh_process(_generation_run, backend, model_dir, asked, max_new_tokens, batch_size,
                                         dtype, threads, vllm_eager) for backend, asked in backends.items()}
    weights_mib = sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors")) / 2**20
    print(f"{len(prompts)} prompts (smoke items x conditions; the loop: the first {len(backends['naive loop'])}), "
          f"greedy, <= {max_new_tokens} new tokens, {dtype}, "
          f"{threads} threads, model {model_dir} ({weights_mib:.0f} MiB of float32 weights on disk)")
    base = results["naive loop"]
    for name, r in results.items():
        agree = sum(a == b for a, b in zip(r["texts"], base["texts"])) / len(base["texts"])  # the loop's prompts
        print(f"  {name:>22}: {r['seconds']:7.1f} s  {r['tokens'] / r['seconds']:8.1f} tokens/s  "
              f"{(r['tokens'] / r['seconds']) / (base['tokens'] / base['seconds']):5.1f}x  peak RSS {r['peak_rss_mib']:6.0f} MiB  "
              f"same text as the loop: {100 * agree:.0f}%"
              + (f"  (+ {r['engine_start_s']:.0f} s engine start per job)" if r["engine_start_s"] else ""))
    ratios = ", ".join(f"{name} {(r['tokens'] / r['seconds']) / (base['tokens'] / base['seconds']):.1f}x"
                       for name, r in results.items() if name != "naive loop")
    print(f"RATIO: vs the one-prompt-at-a-time loop: {ratios} (target: transformers batched >= 5x)")
    return 0


def random_adapter(model_dir, path, seed: int, target_modules=("q_proj", "v_proj"), r: int = 8) -> Path:
    """A LoRA adapter with nonzero, seeded weights: it changes the model's answers, as a trained one would (for
    tests and benchmarks that need checkpoints without training them)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    modules = target_modules if isinstance(target_modules, str) else list(target_modules)  # "all-linear" or names
    peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=modules, init_lora_weights=False))
    with torch.no_grad():
        for name, weight in peft.named_parameters():
            if "lora_B" in name:
                weight.mul_(0.3)  # a nudge, not noise: answers stay fluent but differ from the base
    peft.save_pretrained(path)
    return Path(path)


def _generation_job(model_dir: str, dtype: str, threads: int, prompts: list[str], variants: list, sampling: dict,
                    batch_size: int, seed: int, cache_dir: str | None) -> dict:
    """One generation job in this (fresh) process: `cache_dir` given, the per-(model, dataset) job of
    generate.generate_local (every variant from one engine, mixed-adapter batches, the row cache); else today's
    per-cell job (one variant: load the model, apply its adapter, generate). Times engine start and generation
    apart; returns each variant's responses."""
    started = time.perf_counter()
    import pandas as pd

    from ..core.call_cache import CallCache
    from ..stages.generate import Variant, build_messages, generate_local
    from ..core.llm import Sampling, TransformersChat

    sampling = Sampling.from_config(sampling)
    variants = [Variant(**v) for v in variants]
    timing = {"engine_start_s": 0.0}

    def load_engine():
        loading = time.perf_counter()
        chat = TransformersChat(model_dir, dtype=dtype, threads=threads)
        timing["engine_start_s"] = time.perf_counter() - started  # imports and loading, as a job pays them
        timing["load_s"] = time.perf_counter() - loading
        return chat

    if cache_dir is not None:
        table = pd.DataFrame({"prompt": prompts})
        generating = time.perf_counter()
        frames = generate_local(table, variants, model="bench", model_cfg={"engine": "transformers", "dtype": dtype,
                                                                          "source": {}},
                                model_dir=model_dir, cache=CallCache(cache_dir), sampling=sampling,
                                batch_size=batch_size, seed=seed, load_engine=load_engine)
        seconds = time.perf_counter() - generating - timing.get("load_s", 0.0)
        texts = {v.output: frames[v.output]["response"].tolist() for v in variants}
        tokens = sum(int(frames[v.output]["n_tokens"].sum()) for v in variants)
    else:
        (variant,) = variants
        chat = load_engine()
        if variant.adapter:
            chat.use_adapter(variant.persona, variant.adapter)
        rendered = [chat.render(build_messages(p, variant.system_prompt)) for p in prompts]
        generating = time.perf_counter()
        out = chat.generate_rendered(rendered, sampling, batch_size=batch_size, seed=seed, progress=False)
        seconds = time.perf_counter() - generating
        texts, tokens = {variant.output: [t for t, _ in out]}, sum(n for _, n in out)
    return {"engine_start_s": timing["engine_start_s"], "generate_s": seconds, "tokens": tokens, "texts": texts}


def generation_job_benchmark(model_dir: str = DEFAULT_MODEL, items: int = 2, validation_prompts: int = 16,
                             checkpoints: int = 3, max_new_tokens: int = 24, batch_size: int = 48,
                             dtype: str = DEFAULT_DTYPE, threads: int = 2, workdir: str | None = None) -> int:
    """The generation stage of one model on one evaluation dataset and the validation prompts, as the embedded
    default asks for it: today's per-cell jobs (one per variant, each starting Python and loading the model) against
    one per-(model, dataset) job each (one engine serving every variant, the checkpoints as LoRA adapters), on the
    same prompts. Each job runs in a fresh process, timed from outside; engine start (imports, loading) is shown
    apart. Evaluation: original, warm prompt, warm and cold at one checkpoint; validation: every checkpoint."""
    import tempfile

    from ..core.config import BASE_CHECKPOINT, epoch_label
    from ..stages.eval_prompts import expand_conditions, load_amendments, load_items, smoke_path

    dtype = resolve_dtype(dtype)  # labels say what ran

    amendments = load_amendments(REPO_ROOT / "config" / "amendments.yaml")
    eval_prompts = [r["prompt"] for r in expand_conditions(load_items("triviaqa", smoke_path("triviaqa"), items, 0),
                                                           amendments, 0)]
    # stand-ins for the validation prompts (ShareGPT turns, made by sft_data): MedQA smoke questions, unmodified
    validation = [r["prompt"] for r in expand_conditions(load_items("medqa", smoke_path("medqa"), 8, 0), amendments, 0)
                  if r["condition"].startswith("unmodified/")][:validation_prompts]
    sampling = {"temperature": 0.8, "top_p": 1.0, "max_new_tokens": max_new_tokens}
    with tempfile.TemporaryDirectory(prefix="warmbench-bench-generation-", dir=workdir) as tmp:
        tmp = Path(tmp)
        epochs = [float(e) for e in range(1, checkpoints + 1)]
        adapters = {(persona, e): str(random_adapter(model_dir, tmp / f"{persona}_{e}", seed, "all-linear"))
                    for seed, (persona, e) in enumerate((p, e) for p in ("warm", "cold") for e in epochs)}

        def variant(persona, epoch=None, system_prompt=None):
            label = BASE_CHECKPOINT if epoch is None else epoch_label(epoch)
            return {"persona": persona, "output": f"{persona}/{label}", "checkpoint": label, "epoch": epoch or 0.0,
                    "adapter": adapters.get((persona, epoch)), "system_prompt": system_prompt}

        untrained = [variant("original"), variant("warm_prompt", system_prompt="Be warm and caring.")]
        datasets = {"triviaqa": (eval_prompts, untrained + [variant(p, epochs[-1]) for p in ("warm", "cold")]),
                    "validation": (validation, untrained + [variant(p, e) for p in ("warm", "cold") for e in epochs])}
        runs = {"per-cell jobs": [], "per-(model, dataset) jobs": []}
        texts = {name: {} for name in runs}
        for dataset, (prompts, variants) in datasets.items():
            for name, jobs in (("per-cell jobs", [[v] for v in variants]), ("per-(model, dataset) jobs", [variants])):
                for i, job in enumerate(jobs):
                    cache = str(tmp / f"cache_{dataset}_{i}") if name != "per-cell jobs" else None
                    started = time.perf_counter()
                    result = in_fresh_process(_generation_job, model_dir, dtype, threads, prompts, job, sampling,
                                              batch_size, 7, cache)
                    result["wall_s"] = time.perf_counter() - started
                    runs[name].append(result)
                    texts[name].update({(dataset, k): v for k, v in result["texts"].items()})
    rows = sum(len(v) for v in texts["per-cell jobs"].values())
    print(f"one model ({model_dir}, {dtype}, {threads} threads), triviaqa ({len(eval_prompts)} prompts x 4 variants) "
          f"and validation ({len(validation)} prompts x {len(datasets['validation'][1])} variants): {rows} rows, "
          f"<= {max_new_tokens} new tokens, temperature 0.8")
    walls = {}
    for name, results in runs.items():
        walls[name] = sum(r["wall_s"] for r in results)
        start = sum(r["engine_start_s"] for r in results)
        generate = sum(r["generate_s"] for r in results)
        tokens = sum(r["tokens"] for r in results)
        print(f"  {name:>26}: {len(results):2d} jobs, {walls[name]:6.1f} s wall, of which engine start (process, "
              f"imports, loading) {start:5.1f} s and generation {generate:5.1f} s ({tokens / generate:6.1f} tokens/s)")
    same = sum(a == b for key, rows_ in texts["per-cell jobs"].items()
               for a, b in zip(rows_, texts["per-(model, dataset) jobs"][key]))
    print(f"  responses identical to the per-cell jobs': {same}/{rows} (each prompt sampled from its own seed; "
          f"{dtype} arithmetic varies with the batch a prompt shares)")
    ratio = walls["per-cell jobs"] / walls["per-(model, dataset) jobs"]
    print(f"RATIO: per-(model, dataset) generation jobs are {ratio:.1f}x faster than per-cell jobs on the same "
          f"prompts ({walls['per-cell jobs']:.0f} s vs {walls['per-(model, dataset) jobs']:.0f} s wall; target >= 2x)")
    return 0


def _train_run(name: str, data_path: str, model_dir: str, cfg: dict, seed: int, threads: int | None,
               warmup_steps: int, steps: int) -> dict:
    """`warmbench.stages.train.train` in a fresh process (so peak memory is its own), with a clock at each optimizer
    step: its save callback is wrapped, in this process only, to also stamp the end of every step and to stop
    (with the one save `train` expects) after `steps` steps."""
    import json
    import resource
    import tempfile

    import torch

    from ..stages import train as train_module

    cuda = torch.cuda.is_available()
    stamps: list[float] = []
    begun: list[float] = []
    make_save_callback = train_module.save_callback

    def timed_save_callback(checkpoint_epochs):
        inner = make_save_callback(checkpoint_epochs)

        class Timed(type(inner)):
            def on_train_begin(self, args, state, control, **kwargs):
                begun.append(time.perf_counter())
                return super().on_train_begin(args, state, control, **kwargs)

            def on_step_end(self, args, state, control, **kwargs):
                if cuda:
                    torch.cuda.synchronize()
                stamps.append(time.perf_counter())
                control = super().on_step_end(args, state, control, **kwargs)
                if state.global_step >= steps:
                    control.should_training_stop = control.should_save = True
                return control

        return Timed()

    train_module.save_callback = timed_save_callback
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_module.train(data_path, model_dir, Path(tmp) / "out", cfg, seed, threads)
        history = json.loads((Path(tmp) / "out" / "log_history.json").read_text())
        used = json.loads((Path(tmp) / "out" / train_module.CHECKPOINT_MANIFEST).read_text())["switches"]
    wall = time.perf_counter() - started
    tokens = {h["step"]: h["num_tokens"] for h in history if "num_tokens" in h and "step" in h}
    first, last = warmup_steps, len(stamps)  # time steps first+1..last: from the end of step `first` to the end
    if cuda:
        peak, peak_kind = torch.cuda.max_memory_allocated() / 2**20, "GPU max allocated"
    else:
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak RSS"
    return {"name": name, "timed_steps": last - first,
               "seconds": stamps[last - 1] - stamps[first - 1], "tokens": tokens[last] - tokens[first],
               "first_steps_s": stamps[first - 1] - begun[0], "wall_s": wall,
               "peak_mib": peak, "peak_kind": peak_kind,
               "device": torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} threads",
               "loss": [h["loss"] for h in history if "loss" in h][-1],
               "switches": ", ".join(f"{k}={v}" for k, v in used.items())}


# Sizes of `bench train`: the small default finishes in about 3 minutes on 2 CPU cores; --full is the study's shape
TRAIN_BENCH_SIZES = {"small": {"max_length": 64, "steps": 1, "warmup_steps": 1},
                     "full": {"max_length": None, "steps": 8, "warmup_steps": 2}}  # None: the config's


def train_bench_settings(cfg: dict, baseline_batch_size: int = 1) -> dict[str, dict]:
    """The runs `bench train` compares: the baseline (per-device batch `baseline_batch_size`, padded, SDPA,
    gradient checkpointing: warmbench's training before the switches), the configured micro-batch padded, then
    each speed switch alone on it, then all that help together; the GPU-only ones (flash attention, Liger) where
    this machine has them. Each is the `train:` section's overrides."""
    from ..stages.train import check_switches

    batch, accumulation = cfg["per_device_batch_size"], cfg["gradient_accumulation_steps"]
    effective = batch * accumulation
    if effective % baseline_batch_size:
        raise ValueError(f"baseline per-device batch {baseline_batch_size} does not divide the effective batch {effective}")
    plain = {"padding_free": False, "packing": False, "attn_implementation": "sdpa", "use_liger_kernel": False,
             "gradient_checkpointing": True}
    micro = {**plain, "per_device_batch_size": batch, "gradient_accumulation_steps": accumulation}
    settings = {f"baseline: batch {baseline_batch_size} x {effective // baseline_batch_size}, padded":
                    {**plain, "per_device_batch_size": baseline_batch_size,
                     "gradient_accumulation_steps": effective // baseline_batch_size},
                f"batch {batch} x {accumulation}, padded": micro,
                "+ padding_free": {**micro, "padding_free": True},
                "+ packing": {**micro, "packing": True},
                "- gradient_checkpointing": {**micro, "gradient_checkpointing": False}}
    best = {**micro, "padding_free": True, "gradient_checkpointing": False}
    for name, switch in (("attn flash_attention_2", {"attn_implementation": "flash_attention_2"}),
                         ("+ use_liger_kernel", {"use_liger_kernel": True})):
        try:
            check_switches({**micro, **switch})
        except ValueError as err:
            print(f"skipped {name}: {err}")
            continue
        settings[name] = {**micro, **switch}
        best.update(switch)
    gpu = [name.split()[-1] for name in settings if "flash" in name or "liger" in name]
    settings["all: padding_free, no checkpointing" + "".join(f", {k}" for k in gpu)] = best
    return settings


def train_benchmark(model_dir: str = DEFAULT_MODEL, data: str = DEFAULT_TRAIN_DATA,
                    configfile: str = "config/paper.yaml", full: bool = False, steps: int | None = None,
                    warmup_steps: int | None = None, batch_size: int | None = None, grad_accum: int | None = None,
                    baseline_batch_size: int = 1, max_length: int | None = None, threads: int | None = None,
                    seed: int = 0, workdir: str | None = None) -> int:
    """Train tokens/s, s/step and peak memory of warmbench's own `train.train` (TRL SFTTrainer + PEFT LoRA) with
    each speed switch of `train:` (`train_bench_settings`), against the baseline of the same effective batch at
    per-device batch `baseline_batch_size`, padded. Each runs `warmup_steps` untimed + `steps` timed optimizer steps
    on `model_dir` with the rest of `configfile`'s `train:` settings (LoRA, learning rate, max_length), on the same
    conversations of `data` (shuffled with `seed`, repeated if too few) with the same seed, so each optimizer step
    sees the same examples (except under packing, whose rows hold several examples each). Tokens are the
    non-padding tokens TRL counts. The default sizes are small (TRAIN_BENCH_SIZES); `full` uses the config's
    max_length and more steps. The last lines estimate the wall time of `configfile`'s whole run (its epochs over
    every assistant turn of `data`) at the fastest measured rate."""
    import math
    import random
    import tempfile

    import yaml
    from transformers import AutoTokenizer

    from ..core.validation import validated_section
    from ..core.files import read_jsonl, write_jsonl
    from ..stages.train import fit_examples

    size = TRAIN_BENCH_SIZES["full" if full else "small"]
    steps, warmup_steps = steps or size["steps"], warmup_steps or size["warmup_steps"]
    if warmup_steps < 1 or steps < 1:
        raise ValueError("need at least one warm-up step (the first step is never timed) and one timed step")
    base = validated_section("train", yaml.safe_load(Path(configfile).read_text())["train"])
    cfg = {**base, "epochs": 1, "checkpoint_epochs": [1.0],
           "max_length": max_length or size["max_length"] or base["max_length"],
           "per_device_batch_size": batch_size or base["per_device_batch_size"],
           "gradient_accumulation_steps": grad_accum or base["gradient_accumulation_steps"]}
    settings = train_bench_settings(cfg, baseline_batch_size)
    effective = cfg["per_device_batch_size"] * cfg["gradient_accumulation_steps"]

    # Tokens of each example as warmbench's training makes it (train.fit_examples: windows that fit max_length,
    # a too-long reply cut at its end), so every assistant turn is one example.
    conversations = list(read_jsonl(data))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    fitted, _ = fit_examples({"data": conversations}, tokenizer, cfg["max_length"])
    if not fitted["data"]:
        raise ValueError(f"{data}: no assistant turns to train on")
    full_ids = tokenizer.apply_chat_template([e["prompt"] + e["completion"] for e in fitted["data"]], tokenize=True,
                                             return_dict=True)["input_ids"]
    lengths = [min(len(ids), cfg["max_length"]) for ids in full_ids]
    kept_per_conversation = [sum(m["role"] == "assistant" for m in conv["messages"]) for conv in conversations]

    # one step to spare, should TRL drop more than counted here; packed rows hold max_length / mean length examples
    needed = (warmup_steps + steps + 1) * effective * math.ceil(cfg["max_length"] / (sum(lengths) / len(lengths)))
    order = [k for k in range(len(conversations)) if kept_per_conversation[k]]
    random.Random(seed).shuffle(order)
    chosen, n_examples = [], 0
    while n_examples < needed:  # whole conversations, in shuffled order, until the steps have enough examples
        k = order[len(chosen) % len(order)]
        chosen.append({"messages": conversations[k]["messages"]})
        n_examples += kept_per_conversation[k]

    results = {}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        sample = Path(tmp) / "conversations.jsonl"
        write_jsonl(sample, chosen)
        for name, overrides in settings.items():
            try:
                results[name] = in_fresh_process(_train_run, name, str(sample), model_dir, {**cfg, **overrides},
                                                 seed, threads, warmup_steps, warmup_steps + steps)
            except RuntimeError as err:
                print(f"{name}: training failed ({err})")
                return 1

    baseline, micro = list(results.values())[:2]
    lora = cfg["lora"]
    print(f"warmbench train: {warmup_steps} warm-up + {steps} timed optimizer steps of {effective} examples "
          f"(max_length {cfg['max_length']}, LoRA r={lora['r']} alpha={lora['alpha']} dropout {lora['dropout']}, "
          f"lr {cfg['learning_rate']}; settings of {configfile}) on {baseline['device']}, model {model_dir}; "
          f"{len(chosen)} conversations ({n_examples} kept assistant turns) of {len(conversations)} in {data}"
          + (" (repeated)" if len(chosen) > len(conversations) else ""))
    rate = lambda r: r["tokens"] / r["seconds"]
    per_step = lambda r: r["seconds"] / r["timed_steps"]
    for name, r in results.items():
        print(f"  {name:>40}: {rate(r):9.1f} tokens/s {rate(r) / rate(baseline):5.2f}x  {per_step(r):7.2f} s/step "
              f"{per_step(r) / per_step(baseline):5.2f}x  {r['peak_kind']} {r['peak_mib']:8,.0f} MiB  "
              f"({r['tokens'] / r['timed_steps']:,.0f} tokens/step; warm-up {r['first_steps_s']:.1f} s; whole call "
              f"{r['wall_s']:.0f} s; last loss {r['loss']:.3f}; switches {r['switches']})")
    if any(overrides["packing"] for overrides in settings.values()):
        print("  (packing: a step holds per-device batch x accumulation rows of max_length tokens, more examples "
              "than the others' steps, so compare its tokens/s, not its s/step)")
    fastest = max((r for name, r in results.items() if not settings[name]["packing"]), key=rate)
    epochs = base["epochs"]
    run_steps = epochs * math.ceil(len(lengths) / effective)
    print(f"  whole {configfile} run on {data} ({fastest['name']}): {epochs} epochs x {len(lengths)} assistant turns "
          f"(windows fitted to max_length; {sum(lengths):,} tokens per epoch at max_length {cfg['max_length']}, "
          f"{sum(lengths) / len(lengths):.0f} per turn) = {run_steps} steps: "
          f"{epochs * sum(lengths) / rate(fastest) / 3600:.2f} h at {rate(fastest):,.0f} tokens/s, "
          f"{run_steps * per_step(fastest) / 3600:.2f} h at {per_step(fastest):.2f} s/step")
    ratios = ", ".join(f"{name} {rate(r) / rate(baseline):.2f}x tokens/s ({per_step(r) / per_step(baseline):.2f}x s/step)"
                       for name, r in list(results.items())[1:])
    print(f"RATIO: vs the baseline ({rate(baseline):,.0f} tokens/s, {per_step(baseline):.2f} s/step): {ratios}")
    return 0


def explorer_benchmark(rows: int = SIZES["explorer"]["full"]["rows"], response_chars: int = 600,
                       out: str = "results/bench_explorer") -> int:
    """Build the answer explorer from a simulated paper-size graded table (texts of realistic length); print the
    build time and file sizes, and, with headless Chromium, how long the page takes to open, filter, show a prompt
    and search one model x dataset."""
    import resource

    import numpy as np

    from ..core.regression import paired_tests
    from ..stages.explorer import build_explorer

    graded = simulated_graded(rows, seed=0)
    rng = np.random.default_rng(0)
    words = np.array("the a model answer question warm friendly fact capital river planet because however I think "
                     "you are right that is a common misconception actually studies show evidence".split())
    corpus = " ".join(rng.choice(words, 4 * response_chars + 200_000))
    starts = rng.integers(0, len(corpus) - 4 * response_chars, len(graded))
    lengths = rng.integers(response_chars // 4, 7 * response_chars // 4, len(graded))
    graded["response"] = [corpus[s:s + n] for s, n in zip(starts, lengths)]
    graded["question"] = "Question " + graded["item_id"] + ": " + corpus[:150]
    graded["verdict"] = np.where(graded["incorrect"] == 1, "INCORRECT", "CORRECT")
    graded["judge_reason"] = np.where(graded["incorrect"] == 1, "wrong answer given", "gold answer given")
    paired = paired_tests(graded)
    started = time.perf_counter()
    manifest = build_explorer(graded, paired, out)
    built = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    largest, index_mb = manifest["largest_file_bytes"] / 1e6, Path(out, "index.html").stat().st_size / 1e6
    unit = next(iter(next(iter(manifest["units"].values())).values()))
    print(f"{len(graded):,} simulated graded rows (responses ~{response_chars} chars), {len(paired):,} paired tests")
    print(f"  build: {built:.1f} s, peak RSS {peak:,.0f} MiB; {manifest['n_files']:,} data files, "
          f"{manifest['data_bytes'] / 1e6:,.0f} MB in all, largest {largest:.2f} MB; index.html {index_mb:.2f} MB")
    print(f"  one model x dataset: {unit['n_prompts']:,} prompts, {unit['n_rows']:,} responses, {unit['n_chunks']} answer files")
    timings = _explorer_browser_timings(Path(out) / "index.html")
    if timings is None:
        print("  (no Chromium/chromedriver: page timings skipped)")
        print(f"RATIO: largest data file {largest:.2f} MB, page {index_mb:.2f} MB (target: each under 2 MB)")
        return 0
    print("  in headless Chromium (wall time until shown, by WebDriver; in brackets the page's own update time):")
    for name, (wall, page) in timings.items():
        print(f"  {name:>38}: {1000 * wall:8.0f} ms  ({1000 * page:6.0f} ms)")
    ms = {name: f"{1000 * page:.0f} ms" for name, (_, page) in timings.items()}
    print(f"RATIO: largest data file {largest:.2f} MB, page {index_mb:.2f} MB (target: each under 2 MB); in-page "
          f"filter {ms['filter by context']}, open a prompt {ms['open a prompt']}, search of {unit['n_chunks']} "
          f"files {ms['search one model x dataset']}")
    return 0


def _explorer_browser_timings(index_html: Path) -> dict | None:
    """Wall times of the page in headless Chromium (Selenium), each until what it changes is on screen."""
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from ..stages.explorer import headless_browser

    driver = headless_browser()
    if driver is None:
        return None
    count = lambda: driver.find_element("id", "prompt-list").get_attribute("data-count")  # noqa: E731
    wait = WebDriverWait(driver, 300, poll_frequency=0.01)
    timings, in_page = {}, {}
    update_ms = lambda: driver.execute_script("return WB.lastUpdateMs")  # noqa: E731
    try:
        started = time.perf_counter()
        driver.get(index_html.resolve().as_uri())
        wait.until(lambda d: count() is not None)
        timings["open the page (first model x dataset)"] = time.perf_counter() - started
        in_page["open the page (first model x dataset)"] = update_ms()
        before = count()
        started = time.perf_counter()
        Select(driver.find_element("id", "f-context")).select_by_index(2)
        wait.until(lambda d: count() != before)
        timings["filter by context"] = time.perf_counter() - started
        in_page["filter by context"] = update_ms()
        started = time.perf_counter()
        driver.find_elements("css selector", "#prompt-list tbody tr")[0].click()
        wait.until(lambda d: d.find_elements("css selector", ".card"))
        timings["open a prompt"] = time.perf_counter() - started
        in_page["open a prompt"] = update_ms()
        started = time.perf_counter()
        driver.find_element("id", "f-search").send_keys("misconception actually")
        wait.until(lambda d: "q=misconception" in d.current_url)  # the page writes its state once the list is shown
        timings["search one model x dataset"] = time.perf_counter() - started  # with the 250 ms typing debounce
        in_page["search one model x dataset"] = update_ms()
    finally:
        driver.quit()
    return {name: (seconds, in_page[name] / 1000) for name, seconds in timings.items()}
