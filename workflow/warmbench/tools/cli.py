"""The `warmbench` command: analyse graded outputs made anywhere, and print benchmark figures."""
from __future__ import annotations

import argparse
import logging
import sys

from ..core.children import exit_on_signals


def _contrast(text: str) -> tuple[str, str]:
    persona, _, reference = text.partition(":")
    if not persona or not reference or ":" in reference:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PERSONA:REFERENCE, e.g. warm:cold")
    return persona, reference


def _size_help(bench: str, key: str, what: str) -> str:
    from .bench import SIZES

    quick, full = (SIZES[bench][size][key] for size in ("quick", "full"))
    shown = lambda v: "all" if v is None else f"{v:,}"  # noqa: E731
    return f"{what} (default: {shown(quick)}; --full: {shown(full)})"


USER_ERROR = 2  # the exit status of bad input, as argparse's own usage errors


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user's input can cause (a missing or malformed file or table, a bad config): one line, no traceback."""
    from ..core.files import UserInputError

    errors: tuple[type[BaseException], ...] = (UserInputError, FileNotFoundError, IsADirectoryError, PermissionError)
    try:
        from pandas.errors import EmptyDataError, ParserError

        errors += (EmptyDataError, ParserError)
    except ImportError:
        pass
    return errors


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename:
        return f"{err.filename}: {err.strerror}"
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())  # a config's several problems


def main(argv: list[str] | None = None) -> int:
    """`warmbench`: errors a user can cause print one line (the file, column or row) and exit 2; --debug shows the
    traceback."""
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except _user_errors() as err:
        if debug:
            raise
        print(f"warmbench: error: {_one_line(err)}", file=sys.stderr)
        return USER_ERROR


def _main(argv: list[str] | None = None) -> int:
    from .bench import DEFAULT_DTYPE, DEFAULT_MODEL, DEFAULT_TRAIN_DATA  # light: bench imports torch only inside its benches

    parser = argparse.ArgumentParser(prog="warmbench", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not just its one line")
    commands = parser.add_subparsers(dest="command", required=True)

    imp = commands.add_parser("import-paper-outputs",
                              help="graded outputs in the paper's released layout -> a warmbench graded table")
    imp.add_argument("source", help="folder holding {model}/{persona}/{dataset}_{persona}_outputs.csv")
    imp.add_argument("out", help="graded table to write (.parquet)")

    check = commands.add_parser("check-prompts", help="rebuild the prompts of released outputs (the paper's layout) "
                                "with warmbench's templates, and list those that differ (and, apart, the study's "
                                "own defects: rows without the answer their template needs)")
    check.add_argument("source", help="folder holding {model}/{persona}/{dataset}_{persona}_outputs.csv")
    check.add_argument("--amendments", default="config/amendments.yaml", help="templates (default: %(default)s)")

    stats = commands.add_parser("stats", help="paired tests and regressions of a graded table")
    stats.add_argument("graded", help="graded table (.parquet), from the pipeline or import-paper-outputs")
    stats.add_argument("out_dir", help="folder for paired_tests.csv, paired_tests_by_template.csv, contrasts.csv, "
                                       "regressions.csv and refusal_sensitivity.csv")
    stats.add_argument("--fdr-family", choices=["paper", "table", "study"], default="paper",
                       help="Benjamini-Hochberg family: paper = each model x persona (all conditions, test types and "
                            "datasets; the default), table = each model x persona x dataset, study = every test")
    stats.add_argument("--length-control", action="store_true", help="also fit each regression with log length")
    stats.add_argument("--contrast", action="append", default=[], metavar="PERSONA:REFERENCE",
                       type=_contrast,
                       help="also test PERSONA against REFERENCE on identical prompts (repeatable), e.g. warm:cold")

    explore = commands.add_parser("explore", help="a graded table -> the static HTML answer explorer (OUT/index.html)")
    explore.add_argument("graded", help="graded table (.parquet), from the pipeline or import-paper-outputs")
    explore.add_argument("out_dir", help="folder for index.html and its data/ files")
    explore.add_argument("--paired-tests", help="paired_tests.csv to list (default: computed from the table)")

    plan = commands.add_parser("plan", help="per rule of a config's DAG: jobs, LLM requests, tokens, GPU-hours and "
                               "API cost, before running it (plan.py)")
    plan.add_argument("--configfile", default="config/config.yaml", help="default: %(default)s")
    ledger = commands.add_parser("cost", help="what a run spent: API tokens and cost per stage and model (call cache, "
                                 "fine-tune manifests), job hours per rule (benchmarks)")
    ledger.add_argument("--configfile", default="config/config.yaml", help="its prices and GPUs (default: %(default)s)")
    ledger.add_argument("--cache", default="results/cache/llm_calls", help="default: %(default)s")
    ledger.add_argument("--train", default="results/train", help="fine-tune manifests (default: %(default)s)")
    ledger.add_argument("--benchmarks", default="benchmarks", help="default: %(default)s")

    calib = commands.add_parser("calibrate", help="the study's statistics on simulated studies with a known answer: "
                                "type-I error and interval coverage of each (calibrate.py)")
    calib.add_argument("--full", action="store_true", help="more and larger studies (smaller Monte Carlo error)")
    calib.add_argument("--studies", type=int, help="simulated studies per scenario (default: 20; --full: 500)")
    calib.add_argument("--items", type=int, help="items per dataset in each study (default: 40; --full: 60)")
    calib.add_argument("--scenario", action="append", dest="scenarios", metavar="NAME",
                       help="run only this scenario (repeatable): no_effect, belief_only, context_only, seed_noise, "
                            "judges_agree")
    calib.add_argument("--jobs", type=int, default=2, help="worker processes (default: %(default)s)")
    calib.add_argument("--seed", type=int, default=0)
    calib.add_argument("--out", help="also write the table to this CSV")

    bench = commands.add_parser("bench", help="print performance figures").add_subparsers(dest="what", required=True)
    pipe = bench.add_parser("pipeline", help="wall time and peak memory per rule, from Snakemake benchmark files")
    pipe.add_argument("--benchmarks", default="benchmarks", help="folder of benchmark .tsv files (default: %(default)s)")
    pipe.add_argument("--run", action="store_true", help="run the whole DAG from scratch first (--forceall)")
    pipe.add_argument("--configfile", help="config for --run (default: the embedded default)")
    pipe.add_argument("--cores", type=int, default=2)
    bstats = bench.add_parser("stats", help="time and memory of all regressions on a simulated paper-size table")
    bstats.add_argument("--rows", type=int, help=_size_help("stats", "rows", "simulated graded rows"))
    bstats.add_argument("--full", action="store_true", help="the paper-size table")
    bstats.add_argument("--seed", type=int, default=0)

    bwarmth = bench.add_parser("warmth", help="SocioT texts/s, batched vs one at a time, on the same texts")
    bwarmth.add_argument("--model", default=DEFAULT_MODEL, help="scorer checkpoint (default: %(default)s)")
    bwarmth.add_argument("--texts", type=int, help=_size_help("warmth", "n_texts", "texts warmbench's scorer scores"))
    bwarmth.add_argument("--baseline-texts", type=int,
                         help=_size_help("warmth", "baseline_texts", "of those, texts the one-at-a-time loops score"))
    bwarmth.add_argument("--full", action="store_true", help="the full set of texts, every loop on all of them")
    bwarmth.add_argument("--batch-size", type=int, default=16)
    bwarmth.add_argument("--dtype", default=DEFAULT_DTYPE, help="dtype of warmbench's scorer (default: %(default)s)")

    bjudge = bench.add_parser("judge", help="LLM judge calls on a first run and a rerun, and verdicts/s, "
                              "against a loopback OpenAI-compatible server")
    bjudge.add_argument("--model", default=DEFAULT_MODEL, help="stand-in judge (default: %(default)s)")
    bjudge.add_argument("--items", type=int, help=_size_help("judge", "n_items", "TriviaQA smoke items, 28 prompts each"))
    bjudge.add_argument("--prompts", type=int, help=_size_help("judge", "n_prompts", "a seeded sample of their prompts"))
    bjudge.add_argument("--full", action="store_true", help="every prompt of more items")
    bjudge.add_argument("--concurrency", type=int, default=4)

    bgen = bench.add_parser("generation", help="one generation job per (model, dataset) vs one per cell, on the same "
                            "prompts; with --backends: tokens/s of each backend vs a one-prompt-at-a-time loop")
    bgen.add_argument("--backends", action="store_true", help="compare the backends instead of the job shapes")
    bgen.add_argument("--model", default=DEFAULT_MODEL,
                      help="model folder (default: %(default)s; jobs: materialised from the package if absent)")
    bgen.add_argument("--items", type=int, help=_size_help("generation", "items", "jobs: TriviaQA smoke items, 28 prompts each"))
    bgen.add_argument("--validation-prompts", type=int, help=_size_help("generation", "validation_prompts", "jobs: validation prompts"))
    bgen.add_argument("--checkpoints", type=int, help=_size_help("generation", "checkpoints", "jobs: checkpoints per trained persona"))
    bgen.add_argument("--prompts", type=int, help=_size_help("generation_backends", "n_prompts", "--backends: smoke prompts every backend answers"))
    bgen.add_argument("--baseline-prompts", type=int, help=_size_help(
        "generation_backends", "baseline_prompts", "--backends: of those, prompts the one-at-a-time loop answers"))
    bgen.add_argument("--full", action="store_true", help="the larger sizes (--backends: the loop answers every prompt too)")
    bgen.add_argument("--max-new-tokens", type=int, default=None, help="default: 24 (jobs), 32 (--backends)")
    bgen.add_argument("--batch-size", type=int, default=None, help="default: 48 (jobs), 64 (--backends)")
    bgen.add_argument("--dtype", default=DEFAULT_DTYPE)

    btrain = bench.add_parser("train", help="train tokens/s, s/step and peak memory of warmbench's LoRA training "
                              "with each speed switch of train:, vs a padded baseline of the same effective batch")
    btrain.add_argument("--model", default=DEFAULT_MODEL)
    btrain.add_argument("--data", default=DEFAULT_TRAIN_DATA,
                        help="conversations JSONL ({\"messages\": [...]} per line; default: %(default)s)")
    btrain.add_argument("--configfile", default="config/paper.yaml", help="its train: settings (default: %(default)s)")
    btrain.add_argument("--full", action="store_true", help="the large version: the config's max_length, 8 timed "
                        "steps after 2 warm-up steps (default: max_length 64, 1 timed after 1)")
    btrain.add_argument("--steps", type=int, help="timed optimizer steps (default: by size)")
    btrain.add_argument("--warmup-steps", type=int, help="untimed first steps (default: by size)")
    btrain.add_argument("--batch-size", type=int, help="per-device batch (default: the config's)")
    btrain.add_argument("--grad-accum", type=int, help="gradient accumulation steps (default: the config's)")
    btrain.add_argument("--baseline-batch-size", type=int, default=1,
                        help="per-device batch of the baseline, same effective batch (default: %(default)s)")
    btrain.add_argument("--max-length", type=int, help="default: by size")
    btrain.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")

    bexplorer = bench.add_parser("explorer", help="explorer build time and data file sizes on a simulated paper-size "
                                 "table, and page load / filter times in headless Chromium")
    bexplorer.add_argument("--rows", type=int, help=_size_help("explorer", "rows", "simulated graded rows"))
    bexplorer.add_argument("--full", action="store_true", help="the paper-size table")
    bexplorer.add_argument("--response-chars", type=int, default=600, help="mean response length (default: %(default)s)")
    bexplorer.add_argument("--out", default="results/bench_explorer", help="where to build it (default: %(default)s)")

    bcache = bench.add_parser("cache", help="the LLM call cache at study scale: one job's lookups vs SQLite, put time")
    bcache.add_argument("--records", type=int, help=_size_help("cache", "records", "cached calls"))
    bcache.add_argument("--shards", type=int, help=_size_help("cache", "shards", "shards they are spread over"))
    bcache.add_argument("--lookups", type=int, help=_size_help("cache", "lookups", "keys one job looks up"))
    bcache.add_argument("--full", action="store_true", help="the study-size cache")

    bdag = bench.add_parser("dag", help="dry-run time and job count of a study config")
    bdag.add_argument("--configfile", default="config/paper.yaml")
    bdag.add_argument("--repeats", type=int, default=3)

    args = parser.parse_args(argv)
    # SIGTERM (a timeout, a SLURM cancel) unwinds like an exception: servers and workers stop, temporary folders go
    exit_on_signals()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "import-paper-outputs":
        from ..core.files import write_table
        from .paper_import import import_paper_outputs

        graded = import_paper_outputs(args.source)
        write_table(args.out, graded)
        print(f"wrote {len(graded)} graded responses to {args.out}")
        return 0
    if args.command == "check-prompts":
        from .prompt_check import check_prompts

        result = check_prompts(args.source, args.amendments)
        for mismatch in result.mismatches + result.defects:
            print(mismatch)
        print(result.summary())
        return 0 if result.passed else 1
    if args.command == "stats":
        from ..stages.analysis import read_graded, write_stats

        paired, regressions = write_stats(read_graded(args.graded), args.out_dir, args.fdr_family,
                                          args.length_control, args.contrast)
        print(f"wrote {len(paired)} paired tests and {len(regressions)} regression rows to {args.out_dir}")
        return 0
    if args.command == "explore":
        import pandas as pd

        from ..core.regression import paired_tests
        from ..stages.analysis import read_graded
        from ..stages.explorer import build_explorer

        graded = read_graded(args.graded)
        paired = pd.read_csv(args.paired_tests) if args.paired_tests else paired_tests(graded)
        manifest = build_explorer(graded, paired, args.out_dir)
        print(f"wrote {args.out_dir}/index.html: {manifest['n_rows']} responses in {manifest['n_files']} data files")
        return 0
    if args.command == "plan":
        from .plan import cli

        return cli(args)
    if args.command == "cost":
        from ..stages.cost import cli

        return cli(args)
    if args.command == "calibrate":
        from .calibrate import SCENARIOS, main as calibrate

        unknown = sorted(set(args.scenarios or ()) - set(SCENARIOS))
        if unknown:
            parser.error(f"--scenario: unknown {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
        return calibrate(args.full, args.studies, args.items, args.scenarios, args.seed, args.jobs, args.out)
    if args.what == "explorer":
        from .bench import explorer_benchmark, sizes

        return explorer_benchmark(**sizes("explorer", args.full, rows=args.rows), response_chars=args.response_chars,
                                  out=args.out)
    if args.what == "pipeline":
        from .bench import pipeline

        return pipeline(args.benchmarks, args.run, args.configfile, args.cores)
    from .bench import bench_model, bench_train_data

    if args.what == "stats":
        from .bench import stats_benchmark, sizes

        return stats_benchmark(**sizes("stats", args.full, rows=args.rows), seed=args.seed)
    if args.what == "warmth":
        from .bench import warmth_benchmark, sizes

        return warmth_benchmark(bench_model(args.model), batch_size=args.batch_size, dtype=args.dtype,
                                **sizes("warmth", args.full, n_texts=args.texts, baseline_texts=args.baseline_texts))
    if args.what == "generation":
        from .bench import generation_benchmark, sizes

        if args.backends:
            size = sizes("generation_backends", args.full, n_prompts=args.prompts, baseline_prompts=args.baseline_prompts)
            return generation_benchmark(bench_model(args.model), max_new_tokens=args.max_new_tokens or 32,
                                        batch_size=args.batch_size or 64, dtype=args.dtype, **size)
        from .bench import generation_job_benchmark

        size = sizes("generation", args.full, items=args.items, validation_prompts=args.validation_prompts,
                     checkpoints=args.checkpoints)
        return generation_job_benchmark(bench_model(args.model), max_new_tokens=args.max_new_tokens or 24,
                                        batch_size=args.batch_size or 48, dtype=args.dtype, **size)
    if args.what == "train":
        from .bench import train_benchmark

        return train_benchmark(bench_model(args.model), bench_train_data(args.data), args.configfile, args.full,
                               args.steps, args.warmup_steps, args.batch_size, args.grad_accum,
                               args.baseline_batch_size, args.max_length, args.threads)
    if args.what == "cache":
        from .bench import cache_benchmark, sizes

        return cache_benchmark(**sizes("cache", args.full, records=args.records, shards=args.shards,
                                       lookups=args.lookups))
    if args.what == "dag":
        from .bench import dag_benchmark

        return dag_benchmark(args.configfile, args.repeats)
    if args.what == "judge":
        from .bench import judge_benchmark, sizes

        return judge_benchmark(bench_model(args.model), concurrency=args.concurrency,
                               **sizes("judge", args.full, n_items=args.items, n_prompts=args.prompts))
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
