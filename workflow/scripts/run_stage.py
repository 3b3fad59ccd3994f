"""Snakemake `script:` entry shared by every rule: hands the job to warmbench.<rule>.run(snakemake).

All logic lives in the package; this file only routes the job and sends its logging to the rule's log.
"""
from warmbench.stage import run_job

run_job(snakemake)  # noqa: F821 - `snakemake` is injected by the script directive
