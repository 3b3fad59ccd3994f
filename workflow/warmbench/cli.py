"""The `warmbench` command: benchmarks (more subcommands join as the study grows)."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warmbench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="print performance figures").add_subparsers(dest="what", required=True)
    pipe = bench.add_parser("pipeline", help="wall time and peak memory per rule, from Snakemake benchmark files")
    pipe.add_argument("--benchmarks", default="benchmarks", help="folder of benchmark .tsv files (default: %(default)s)")
    pipe.add_argument("--run", action="store_true", help="run the whole DAG from scratch first (--forceall)")
    pipe.add_argument("--configfile", help="config for --run (default: the embedded default)")
    pipe.add_argument("--cores", type=int, default=2)
    args = parser.parse_args(argv)

    if args.command == "bench" and args.what == "pipeline":
        from .bench import pipeline

        return pipeline(args.benchmarks, args.run, args.configfile, args.cores)
    parser.error("unknown command")
    return 2


if __name__ == "__main__":
    sys.exit(main())
