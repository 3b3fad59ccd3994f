"""The mitigation study (config/mitigations.yaml) end to end, in a scratch copy of the repo: every persona, the
two mitigations included, reaches the analysis, the contrasts and the explorer.

It runs at the tests config's sizes (fewer conversations, shorter answers and rewrites: SIZES), everything else as
the file says (personas, mitigations, datasets, epochs, checkpoints, contrasts): at the file's own sizes the run
took 22 of CI's 90 minutes."""
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import REPO, scratch_workflow

pytestmark = pytest.mark.slow
CONFIG = "config/mitigations.yaml"
SIZED = "mitigations_sized.yaml"
# (section, key) taken from the tests config: how much data and how many tokens, nothing about what is compared
SIZES = [("sft_data", "train_per_type"), ("sft_data", "validation_per_type"), ("sft_data", "max_turns"),
         ("sft_data", "max_message_chars"), ("persona_rewrite", "sampling"), ("train", "max_length"),
         ("evaluation", "sampling"), ("evaluation", "dataset_sampling"), ("warmth", "sampling"), ("warmth", "bootstrap")]


def sized_config() -> dict:
    """config/mitigations.yaml with the tests config's sizes."""
    cfg = yaml.safe_load((REPO / CONFIG).read_text())
    small = yaml.safe_load((REPO / "tests/config/config.yaml").read_text())
    for section, key in SIZES:
        cfg[section][key] = small[section][key]
    return cfg


def test_only_sizes_differ_from_the_study_file():
    study, sized = yaml.safe_load((REPO / CONFIG).read_text()), sized_config()
    assert any(sized[section][key] != study[section][key] for section, key in SIZES)
    for section, key in SIZES:
        sized[section][key] = study[section][key]
    assert sized == study


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    work = scratch_workflow(tmp_path_factory.mktemp("mitigations"))
    (work / SIZED).write_text(yaml.safe_dump(sized_config()))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", SIZED], cwd=work,
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-5000:]
    return work


def test_every_persona_reaches_the_analysis_and_the_report(run_dir):
    cfg = sized_config()
    personas = set(cfg["personas"])
    out = run_dir / "results" / "analysis"
    assert set(pd.read_parquet(out / "graded.parquet")["persona"]) == personas | {"original"}
    assert set(pd.read_csv(out / "paired_tests.csv")["persona"]) == personas  # each against the original model
    warmth = pd.read_csv(out / "warmth.csv")
    assert set(warmth["persona"]) == personas | {"original"}
    contrasts = pd.read_csv(out / "contrasts.csv")
    assert set(zip(contrasts["persona"], contrasts["reference"])) == {tuple(pair) for pair in cfg["analysis"]["contrasts"]}
    regressions = pd.read_csv(out / "regressions.csv")
    assert any(r.startswith("warm_honest_vs_warm:") for r in regressions["regression"])
    trained = pd.read_csv(run_dir / "results" / "train" / "summary.csv")
    assert set(trained["persona"]) == {"warm", "cold", "warm_honest", "warm_inoculated"}
    honest, warm = (trained.set_index("persona").loc[p, "examples"] for p in ("warm_honest", "warm"))
    assert honest == warm  # train.match_examples: its kind corrections replace as many rewritten examples
    index = (run_dir / "results" / "explorer" / "index.html").read_text()
    assert all(persona in index for persona in personas)
    # evaluation.checkpoints: [1] beside the evaluated epoch 2, for every trained persona
    frontier = pd.read_csv(out / "frontier.csv")
    assert set(zip(frontier["persona"], frontier["epoch"])) == {(p, e) for p in trained["persona"] for e in (1.0, 2.0)}
    assert frontier.loc[frontier["evaluated"], "epoch"].eq(2.0).all() and frontier["warmth_vs_original"].notna().all()
    assert set(pd.read_csv(out / "trajectory.csv")["dataset"]) == set(cfg["evaluation"]["datasets"])
    for figure in ("error_vs_epoch.png", "warmth_error_frontier.png"):
        assert (out / figure).stat().st_size > 0
