import json

import pytest

from warmbench.io import write_jsonl
from warmbench.train import (MANIFEST, accumulation_steps, batch_plan, completion_examples, launch, train,
                             training_manifest)


def test_one_example_per_assistant_turn_with_the_conversation_so_far():
    conv = {"messages": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
                         {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]}
    examples = completion_examples([conv])
    assert [e["completion"][0]["content"] for e in examples] == ["a1", "a2"]
    assert examples[1]["prompt"] == conv["messages"][:3]


@pytest.mark.slow
def test_lora_training_saves_a_checkpoint_per_configured_epoch(tmp_path, tiny_model_dir):
    from peft import PeftConfig

    data = [{"id": str(i), "messages": [{"role": "user", "content": f"Tell me about {w}."},
                                        {"role": "assistant", "content": f"Oh, {w} is lovely, friend!"}]}
            for i, w in enumerate(["cats", "rain", "tea", "maps", "jazz", "moss", "kites", "soup"])]
    write_jsonl(tmp_path / "warm.jsonl", data)
    cfg = {"epochs": 2, "checkpoint_epochs": [0.5, 1, 2], "learning_rate": 1e-3, "max_length": 64,
           "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
    out = tmp_path / "train"
    manifest = train(tmp_path / "warm.jsonl", tiny_model_dir, out, cfg, seed=0, threads=2)
    assert [m["checkpoint"] for m in manifest] == ["epoch0.5", "epoch1", "epoch2"]
    assert [m["epoch"] for m in manifest] == pytest.approx([0.5, 1.0, 2.0])  # real epochs, from trainer_state
    assert [m["global_step"] for m in manifest] == [2, 4, 8]
    for m in manifest:
        assert PeftConfig.from_pretrained(out / m["path"]).r == 4
        assert json.loads((out / m["path"] / "trainer_state.json").read_text())["global_step"] == m["global_step"]
    assert json.loads((out / MANIFEST).read_text())["n_examples"] == 8
    assert not (out / "_trainer").exists()

    # the adapter really changes the model: logits differ from the base on a prompt
    import torch

    from warmbench.llm import TransformersChat

    chat = TransformersChat(tiny_model_dir, threads=2)
    ids = chat.tokenizer(chat.render([{"role": "user", "content": "Tell me about cats."}]), return_tensors="pt")
    with torch.inference_mode():
        base = chat.model(**ids).logits
        chat.use_adapter("warm", out / "epoch2")
        tuned = chat.model(**ids).logits
    assert (tuned - base).abs().max() > 1e-3


@pytest.mark.parametrize("per_device, accumulation, processes, expected", [
    (4, 4, 1, 4), (4, 4, 2, 2), (4, 4, 4, 1), (4, 4, 3, 1), (1, 16, 3, 5), (2, 8, 2, 4)])
def test_accumulation_keeps_the_effective_batch_across_gpus(per_device, accumulation, processes, expected):
    cfg = {"per_device_batch_size": per_device, "gradient_accumulation_steps": accumulation}
    assert accumulation_steps(cfg, processes) == expected  # 16 over 3 GPUs: nearest is 12 (4 x 3) or 15 (1 x 3 x 5)


def test_an_unreachable_effective_batch_is_said_and_recorded():
    cfg = {"per_device_batch_size": 4, "gradient_accumulation_steps": 4}
    plan = batch_plan(cfg, 3)  # the paper's 16 on the 70B's 3 GPUs
    assert (plan.configured, plan.accumulation, plan.effective) == (16, 1, 12)
    assert "16" in plan.note and "3 GPUs" in plan.note and "12" in plan.note
    assert batch_plan(cfg, 2).note is None and batch_plan(cfg, 2).effective == 16
    manifest = training_manifest("base", "data.jsonl", 10, cfg, plan, processes=3, checkpoints=[])
    assert manifest["effective_batch"] == 12 and manifest["configured_effective_batch"] == 16
    assert manifest["effective_batch_note"] == plan.note and manifest["processes"] == 3


@pytest.mark.slow
def test_launched_training_runs_the_module_entry_point_and_writes_the_manifest(tmp_path, tiny_model_dir):
    # the multi-GPU path's plumbing (accelerate launch -> python -m warmbench.train -> manifest), on one CPU
    # process: FSDP itself needs GPUs (accelerate refuses it on CPU)
    data = [{"id": str(i), "messages": [{"role": "user", "content": f"Tell me about {w}."},
                                        {"role": "assistant", "content": f"Oh, {w} is lovely, friend!"}]}
            for i, w in enumerate(["cats", "rain", "tea", "maps"])]
    write_jsonl(tmp_path / "warm.jsonl", data)
    cfg = {"epochs": 1, "checkpoint_epochs": [1], "learning_rate": 1e-3, "max_length": 64,
           "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}
    arguments = {"data_path": str(tmp_path / "warm.jsonl"), "base_model_dir": str(tiny_model_dir),
                 "out_dir": str(tmp_path / "out"), "cfg": cfg, "seed": 0}
    launch(arguments, 1, config={"distributed_type": "NO", "use_cpu": True, "mixed_precision": "no",
                                 "num_machines": 1, "machine_rank": 0})
    written = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert [m["checkpoint"] for m in written["checkpoints"]] == ["epoch1"]
    assert written["processes"] == 1 and written["effective_batch"] == 2 == written["configured_effective_batch"]
    assert written["effective_batch_note"] is None
    assert not (tmp_path / "out" / "_launch").exists()
