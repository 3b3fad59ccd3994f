"""Snakemake `script:` entry shared by every rule: runs the function the rule's `params.stage` names.

All logic lives in the package; this file only routes the job and sends its logging to the rule's log. The
package is imported from this workflow's own folder (not whatever copy is installed), so a job runs the code
whose hash its rule carries, in any environment (the venv, or a `--sdm conda` environment).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # workflow/, which holds warmbench/

from warmbench.core.stage import run_job  # noqa: E402 - after the path is set

run_job(snakemake)  # noqa: F821 - `snakemake` is injected by the script directive
