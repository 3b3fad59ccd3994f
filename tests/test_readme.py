"""README's commands, and those of every docs/*.md page, as written, from a clean clone: every one that can run
offline runs and must exit 0, so a documented command never fails at the door. Which commands run is decided by RULES (first match); a documented
command that no rule matches fails test_every_readme_command_is_run_or_skipped_for_a_stated_reason. Skipped ones are listed,
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
    (r"^warmbench bench dag$", SKIP, "times dry runs of config/paper.yaml: tests/test_bench.py runs it on every test run"),
    (r"^make ", SKIP, "installs environments and runs the whole study or test suite (minutes to hours)"),
    (r"^export ", SKIP, "sets secrets"),
    (r"^snakemake\b.*--report\b", SKIP, "reports a finished run"),
    (r"^snakemake\b", SKIP, "a real run: its jobs train and generate (minutes on a laptop, days on a cluster)"),
    (r"^warmbench bench\b", SKIP, "a benchmark (minutes of CPU)"),
    (r"^warmbench calibrate\b", SKIP, "simulates hundreds of studies (minutes of CPU)"),
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


def pages() -> list[Path]:
    """The documentation whose commands are tested: README.md, then every docs/*.md page."""
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """(page, command) for every page's commands, in pages()' order."""
    return [(page.relative_to(REPO).as_posix(), command) for page in pages() for command in readme_commands(page)]


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
    concrete = [c for _, command in documented_commands() for c in expanded(command)]
    params = []
    for command in dict.fromkeys(concrete):  # once each, in the pages' order
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
    commands = [command for _, command in documented_commands()]
    assert any(c.startswith("snakemake -n") for c in commands) and any("warmbench plan" in c for c in commands)
    unclassified = [f"{page}: {c}" for page, c in documented_commands() if rule_for(c) is None]
    assert not unclassified, f"documented commands no rule in tests/test_readme.py decides to run or skip: {unclassified}"


def test_every_docs_page_with_a_shell_block_is_read():
    """A page's bash block is found (so its commands are tested), and README links every page."""
    read = {page for page, _ in documented_commands()}
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for page in pages()[1:]:
        name = page.relative_to(REPO).as_posix()
        if re.search(r"^```(bash|sh|shell)$", page.read_text(encoding="utf-8"), re.M):
            assert name in read, f"{name} has a shell block but no command was read from it"
        assert f"]({name})" in readme, f"README does not link {name}"
    assert "docs/cluster.md" in read and "docs/performance.md" in read


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_pages_point_at_files_and_headings_that_exist():
    broken = []
    for page in pages():
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):
                continue  # a URL
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and linked.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{page.name}: {target}")
    assert not broken, f"links to no file or heading: {broken}"
    assert slug("The call cache at scale") == "the-call-cache-at-scale"
    assert slug("Running on a shared cluster: what keeps paid calls safe") == (
        "running-on-a-shared-cluster-what-keeps-paid-calls-safe")


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
