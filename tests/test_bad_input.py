"""Bad input is refused before it costs anything: empty files a config names, YAML that a lenient loader would
misread, misspelt model sources, and the `warmbench` command's one-line errors."""
import re
import subprocess
import sys

import pytest
import yaml

from warmbench import config as wb
from conftest import REPO


def default_config() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    wb.validate(cfg)
    return cfg


def empty_file(tmp_path, name="empty.txt", text="") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("point, key", [
    (lambda c, f: c["personas"]["warm"].update(rewrite=f), "personas.warm.rewrite"),
    (lambda c, f: c["personas"]["warm_prompt"].update(system_prompt=f), "personas.warm_prompt.system_prompt"),
    (lambda c, f: c["rewrite_fidelity"].update(prompt=f), "rewrite_fidelity.prompt"),
    (lambda c, f: c["judge"].update(kind="llm", backend={"kind": "transformers", "model": "smollm2"},
                                    rubrics={"triviaqa": f}), "judge.rubrics.triviaqa"),
    (lambda c, f: c["evaluation"].update(amendments=f), "evaluation.amendments"),
])
@pytest.mark.parametrize("text", ["", " \n\n"])
def test_an_empty_file_the_config_names_is_refused_naming_the_key_and_the_file(tmp_path, point, key, text):
    cfg = default_config()
    path = empty_file(tmp_path, text=text)
    point(cfg, path)
    with pytest.raises(wb.ConfigError, match=re.escape(f"{key}: file {path!r} is empty")):
        wb.check(cfg, root=REPO)


@pytest.mark.parametrize("text, message", [
    ("seed: 1\nseed: 2\n", r"x.yaml:2:1: duplicate key 'seed' \(first at line 1, column 1\)"),
    ("train:\n  epochs: 2\n  epochs: 3\n", r"x.yaml:3:3: duplicate key 'epochs' \(first at line 2, column 3\)"),
    ("seed: 1\n  bad: [\n", r"x.yaml:2:6: mapping values are not allowed here"),
    ("seed:\t1\n", r"x.yaml:1:6: .*tab"),
    ("", r"x.yaml: the config file is empty"),
    ("# only a comment\n", r"x.yaml: the config file is empty"),
    ("- seed\n- 1\n", r"x.yaml:1:1: the config file holds a list, not a mapping"),
])
def test_a_config_file_is_read_strictly_naming_the_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(wb.UserInputError, match=message) as caught:
        wb.read_mapping(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("", "the amendments file is empty"),
    ("- a\n", "the amendments file holds a list"),
    ("lead_in: a\nlead_in: b\n", "duplicate key 'lead_in'"),
])
def test_a_bad_amendments_file_is_refused_at_dag_build_naming_the_key(tmp_path, text, message):
    cfg = default_config()
    cfg["evaluation"]["amendments"] = empty_file(tmp_path, "amendments.yaml", text=text or "\n")
    with pytest.raises(wb.ConfigError, match=re.escape("evaluation.amendments: ")):
        wb.check(cfg, root=REPO)
    if text:
        with pytest.raises(wb.ConfigError, match=re.escape(message)):
            wb.check(cfg, root=REPO)


def test_a_duplicate_key_in_a_configfile_stops_the_dry_run_naming_the_line(tmp_path):
    """Snakemake's loader keeps the last `seed:`; the workflow re-reads each config file strictly."""
    text = (REPO / "config" / "config.yaml").read_text() + "\nseed: 7\n"
    path = tmp_path / "config.yaml"
    path.write_text(text)
    first = 1 + text.splitlines().index(next(line for line in text.splitlines() if line.startswith("seed:")))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "Job stats" not in out
    assert f"{path}:{len(text.splitlines())}:1: duplicate key 'seed' (first at line {first}, column 1)" in out, out[-2000:]
