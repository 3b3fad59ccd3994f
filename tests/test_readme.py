"""README's commands, as written, from a clean clone: every one that can run offline runs and must exit 0, so a
documented command never fails at the door. Which commands run is decided by RULES (first match); a README command
that no rule matches fails test_every_readme_command_is_run_or_skipped_for_a_stated_reason. Skipped ones are listed,
with why, in pytest's skip summary (-rs)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SHARED, require

SAMPLE = SHARED / "reference" / "warm_ai_2025" / "sample_data"
RUN, SKIP = "run", "skip"
# (command pattern, run or skip, why). Commands that run read only the clone (and ../shared where they say so).
RULES = [
    (r"^snakemake\b.*\s(-n|--lint|--list-rules)(\s|$)", RUN, "a dry run: builds the DAG, runs no job"),
    (r"^warmbench plan\b", RUN, "prices a study from its DAG, runs no job"),
    (r"^warmbench (check-prompts|import-paper-outputs|stats|explore)\b", RUN, "reads the released sample (../shared)"),
    (r"^warmbench bench dag$", RUN, "times dry runs of config/paper.yaml"),
    (r"^make ", SKIP, "installs environments and runs the whole study or test suite (minutes to hours)"),
    (r"^export ", SKIP, "sets secrets"),
    (r"^snakemake\b.*--report\b", SKIP, "reports a finished run"),
    (r"^snakemake\b", SKIP, "a real run: its jobs train and generate (minutes on a laptop, days on a cluster)"),
    (r"^warmbench bench\b", SKIP, "a benchmark (minutes of CPU)"),
    (r"^warmbench cost$", SKIP, "reads a finished run"),
]
# Commands slower than a few seconds on a 2-core machine: only in the slow suite (.ci/run runs it).
SLOW = (r"config/(paper|judges|mitigations)\.yaml", r"^warmbench (plan|stats|explore|bench)\b")
PLACEHOLDER_CONFIG = "my_study.yaml"  # README's own config: each shipped config in its place
PLACEHOLDER_SAMPLE = "path/to/sample_data"  # the authors' released sample (../shared)


def readme_commands(readme: Path = REPO / "README.md") -> list[str]:
    """Shell commands in README's code blocks: every line of a bash block, and `$ `-prompted lines of the others;
    comments stripped."""
    commands, language = [], None
    for line in readme.read_text(encoding="utf-8").splitlines():
        fence = re.match(r"^```(\w*)", line)
        if fence:
            language = None if language is not None else fence.group(1) or "text"
            continue
        if language is None:
            continue
        text = line[2:] if line.startswith("$ ") else line if language in ("bash", "sh", "shell") else ""
        command = re.sub(r"\s+#.*$", "", text).strip()
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def rule_for(command: str) -> tuple[str, str] | None:
    for pattern, action, why in RULES:
        if re.search(pattern, command):
            return action, why
    return None


def shipped_configs() -> list[str]:
    """config/*.yaml that are study configs (they name models), as README's placeholder stands for any of them."""
    return sorted(f"config/{p.name}" for p in (REPO / "config").glob("*.yaml")
                  if "models" in (yaml.safe_load(p.read_text(encoding="utf-8")) or {}))


def expanded(command: str) -> list[str]:
    if PLACEHOLDER_CONFIG in command:
        return [command.replace(PLACEHOLDER_CONFIG, config) for config in shipped_configs()]
    return [command.replace(PLACEHOLDER_SAMPLE, str(SAMPLE))]


def cases() -> list:
    concrete = [c for command in readme_commands() for c in expanded(command)]
    params = []
    for command in dict.fromkeys(concrete):  # once each, in README's order
        rule = rule_for(command)
        slow = rule is not None and rule[0] == RUN and any(re.search(pattern, command) for pattern in SLOW)
        params.append(pytest.param(command, id=command.replace(str(SAMPLE), PLACEHOLDER_SAMPLE),
                                   marks=[pytest.mark.slow] if slow else []))
    return params


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The committed state of this checkout, cloned as a newcomer would: no .venv-vllm, no results, no secrets."""
    target = tmp_path_factory.mktemp("readme") / "warmbench"
    subprocess.run(["git", "clone", "-q", str(REPO), str(target)], check=True, timeout=120)
    return target


def clone_env(clone: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "HF_TOKEN")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the shared venv's commands
    env["PYTHONPATH"] = str(clone / "workflow")  # the clone's code, not an installed copy's
    return env


def run_in(clone: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, shell=True, cwd=clone, env=clone_env(clone), capture_output=True, text=True,
                          timeout=600)


def test_every_readme_command_is_run_or_skipped_for_a_stated_reason():
    commands = readme_commands()
    assert any(c.startswith("snakemake -n") for c in commands) and any("warmbench plan" in c for c in commands)
    unclassified = [c for c in commands if rule_for(c) is None]
    assert not unclassified, f"README commands no rule in tests/test_readme.py decides to run or skip: {unclassified}"


def test_the_readme_placeholders_stand_for_every_shipped_config():
    assert shipped_configs() == ["config/config.yaml", "config/judges.yaml", "config/mitigations.yaml",
                                 "config/paper.yaml"]
    assert rule_for("make run")[0] == SKIP and rule_for("snakemake -n --configfile x.yaml")[0] == RUN
    assert rule_for("snakemake --cores 2")[0] == SKIP and rule_for("rm -rf results") is None


@pytest.mark.parametrize("command", cases())
def test_readme_command_works_from_a_clean_clone(command, clone):
    action, why = rule_for(command) or (SKIP, "no rule (test_every_readme_command_... fails on it)")
    if action == SKIP:
        pytest.skip(f"not run: {why}")
    if str(SAMPLE) in command or "paper.parquet" in command:
        require(SAMPLE.is_dir(), "../shared (the authors' released sample) is not present beside this clone")
    if "paper.parquet" in command and "import-paper-outputs" not in command and not (clone / "paper.parquet").exists():
        # README's order: the table is imported first (run alone, this test makes it as README does)
        imported = run_in(clone, f"warmbench import-paper-outputs {SAMPLE} paper.parquet")
        assert imported.returncode == 0, imported.stderr[-3000:]
    result = run_in(clone, command)
    assert result.returncode == 0, f"`{command}` exited {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}"


def test_an_absent_outside_need_skips_locally_and_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium is absent"):
        require(False, "Chromium is absent")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="Chromium is absent"):
        require(False, "Chromium is absent")
    require(True, "present: nothing happens")
