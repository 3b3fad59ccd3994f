"""`snakemake --profile slurm` as researchers type it: `make setup` links profiles/slurm as the named profile slurm in
Snakemake's user folder, and Snakemake adds the workflow profile (profiles/default) by itself, which must leave a
local run as it was."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
import warmbench.tools.site_profile as site_profile
from warmbench.tools.site_profile import install

BIN = Path(sys.executable).parent


def jobs_of(dry_run: str) -> dict[tuple, dict]:
    """{(rule, output): {"threads", "priority", "resources"}} from a dry run's job listing (printed in any order)."""
    jobs = {}
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", dry_run, flags=re.M)[1:]:
        field = dict(re.findall(r"^    (\w+): (.*)$", block, re.M))
        jobs[(block.split(":")[0].split()[-1], field.get("output"))] = {
            "threads": field.get("threads", "1"), "priority": field.get("priority", "0"),
            "resources": dict(kv.split("=", 1) for kv in field.get("resources", "").split(", ") if kv)}
    return jobs


@pytest.fixture(scope="module")
def clean_copy(tmp_path_factory):
    """The repository's files (tracked and untracked, not ignored: no .venv, results or .snakemake), and a HOME of
    its own in which `make slurm-profile` (run by `make setup`) installed the named profile."""
    root = tmp_path_factory.mktemp("site_profile")
    copy, home = root / "warmbench", root / "home"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "SNAKEMAKE_PROFILE", "MAKEFLAGS")}
    env.update(HOME=str(home), OPENAI_API_KEY="dry-run", HF_TOKEN="dry-run")
    for _ in range(2):  # idempotent: the second run finds its own link and says nothing
        made = subprocess.run(["make", "--no-print-directory", "slurm-profile", f"BIN={BIN}"], cwd=copy, env=env,
                              capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stdout + made.stderr
    assert made.stdout == ""
    link = home / ".config" / "snakemake" / "slurm"
    assert link.is_symlink() and link.resolve() == (copy / "profiles" / "slurm").resolve()
    return copy, env


def dry_run(copy, env, *flags):
    result = subprocess.run([str(BIN / "snakemake"), "-n", *flags], cwd=copy, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("profile", ["slurm", "profiles/slurm"])
def test_slurm_profile_from_the_repository_root(clean_copy, profile):
    copy, env = clean_copy
    result = dry_run(copy, env, "--profile", profile)
    assert re.search(f"Using profiles? {profile} and workflow specific profile profiles/default", result.stderr)
    jobs = jobs_of(result.stdout)
    train = next(job["resources"] for (rule, _), job in jobs.items() if rule == "train")
    # the site profile's default resources, the workflow profile's per-rule resources
    assert train["slurm_account"] == "my_account" and train["slurm_partition"] == "gpu" and train["runtime"] == "2880"
    judge = next(job["resources"] for (rule, _), job in jobs.items() if rule == "judge")
    assert judge["slurm_partition"] == "cpu" and judge["runtime"] == "720"


def test_workflow_profile_leaves_a_local_run_as_it_was(clean_copy):
    """`make run` reads profiles/default too: every job keeps its threads, priority and every resource a local run
    schedules by; the profile only adds resources that only a cluster executor reads."""
    copy, env = clean_copy
    with_profile = jobs_of(dry_run(copy, env, "--cores", "2").stdout)
    without = jobs_of(dry_run(copy, env, "--cores", "2", "--workflow-profile", "none").stdout)
    assert with_profile.keys() == without.keys() and len(without) > 20
    cluster_only = {"slurm_partition", "gpu_model", "cpus_per_task", "runtime", "mem_mb", "mem", "mem_mib", "gpu"}
    for key, job in without.items():
        added = with_profile[key]
        assert (added["threads"], added["priority"]) == (job["threads"], job["priority"]), key
        changed = {name for name in added["resources"].keys() | job["resources"].keys()
                   if added["resources"].get(name) != job["resources"].get(name)}
        assert changed <= cluster_only, (key, changed)


def test_install_keeps_a_profile_that_is_not_ours(tmp_path, capsys, monkeypatch):
    source = tmp_path / "clone" / "profiles" / "slurm"
    shutil.copytree(REPO / "profiles" / "slurm", source)
    folder = tmp_path / "config"
    assert install(source, folder=folder) == ("linked", folder / "slurm")
    assert install(source, folder=folder) == ("present", folder / "slurm")
    # another folder of the user's own, or a link elsewhere: never replaced
    other = tmp_path / "theirs"
    other.mkdir()
    (folder / "slurm").unlink()
    (folder / "slurm").symlink_to(other)
    assert install(source, folder=folder)[0] == "kept" and (folder / "slurm").resolve() == other
    (folder / "slurm").unlink()
    (folder / "slurm").mkdir()
    (folder / "slurm" / "config.yaml").write_text("executor: slurm\n")
    assert install(source, folder=folder)[0] == "kept"
    assert (folder / "slurm" / "config.yaml").read_text() == "executor: slurm\n"
    # a link into a clone since deleted holds nothing: replaced
    shutil.rmtree(folder / "slurm")
    (folder / "slurm").symlink_to(tmp_path / "gone" / "profiles" / "slurm")
    assert install(source, folder=folder)[0] == "linked" and (folder / "slurm").resolve() == source.resolve()
    # what `make setup` prints when it leaves one alone
    (folder / "slurm").unlink()
    (folder / "slurm").mkdir()
    monkeypatch.setattr(site_profile, "user_profile_dir", lambda: folder)
    assert site_profile.main([str(source)]) == 0
    assert "left as it is" in capsys.readouterr().out
