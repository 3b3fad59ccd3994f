"""Which code each rule runs: named in the rule (params.stage), hashed so that editing it reruns that rule only."""
import importlib
import re
import shutil

import pytest

from conftest import REPO
from warmbench import stage

RULE_BLOCK = re.compile(r"^rule (\w+):\n(.*?)(?=^\S|\Z)", re.M | re.S)


def rule_blocks():
    for path in sorted((REPO / "workflow/rules").glob("*.smk")):
        yield from RULE_BLOCK.findall(path.read_text())


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of the warmbench package whose files a test may edit."""
    shutil.copytree(REPO / "workflow/warmbench", tmp_path / "warmbench", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(stage, "PACKAGE_ROOT", tmp_path)
    stage.code_hash.cache_clear()
    yield tmp_path / "warmbench"
    stage.code_hash.cache_clear()


def edit(path):
    path.write_text(path.read_text() + "\n# edited\n")
    stage.code_hash.cache_clear()


def test_the_code_hash_follows_what_a_stage_imports_and_nothing_else(package):
    before = {m: stage.code_hash(m) for m in ("judge", "eval_prompts", "generate", "analysis")}
    edit(package / "llm_judge.py")  # imported by judge, so by analysis (which reads judge's sensitivity column)
    after = {m: stage.code_hash(m) for m in before}
    assert after["judge"] != before["judge"] and after["analysis"] != before["analysis"]
    assert after["eval_prompts"] == before["eval_prompts"] and after["generate"] == before["generate"]
    edit(package / "text.py")  # answer normalisation: the reference judge's and the wrong-answer check's
    again = {m: stage.code_hash(m) for m in before}
    assert again["judge"] != after["judge"] and again["eval_prompts"] != after["eval_prompts"]
    assert again["generate"] == after["generate"]


def test_every_rule_names_the_function_it_runs_and_its_environment():
    rules = dict(rule_blocks())
    assert {"judge", "generate", "analysis", "download_scorer", "select_checkpoint"} <= set(rules)
    for name, body in rules.items():
        if "script:" not in body:
            continue
        found = re.search(r"stage=stage\(\"(\w+)\"(?:, \"(\w+)\")?\)", body)
        assert found, f"rule {name} has no params.stage"
        module, function = found.group(1), found.group(2) or "run"
        assert callable(getattr(importlib.import_module(f"warmbench.{module}"), function)), name
        assert "conda:\n        ENV" in body, f"rule {name} names no environment"


def test_a_job_without_a_stage_param_fails_naming_its_rule():
    class Job:
        rule, params = "mystery", object()

    with pytest.raises(RuntimeError, match=r"rule mystery has no params\.stage"):
        stage.entrypoint(Job())


def test_an_unknown_stage_module_is_refused_when_the_workflow_is_parsed():
    with pytest.raises(ValueError, match=r"no stage module warmbench\.nosuch"):
        stage.stage("nosuch")
