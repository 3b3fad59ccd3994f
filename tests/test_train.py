import json
from pathlib import Path

import pytest

from warmbench.core.validation import ConfigError, validated_section
from warmbench.core.files import DataError, write_jsonl
from warmbench.core.config import CHECKPOINT_MANIFEST as MANIFEST
from warmbench.stages.train import (batch_plan, check_switches, fit_examples, launch,
                                    persona_examples, sft_trainer, train, trained_counts, training_manifest,
                                    training_summary)


class WordTokenizer:
    """A stand-in tokenizer: one token per word, two per message (role, end) and one for a generation prompt."""

    def apply_chat_template(self, messages, tokenize=True, add_generation_prompt=False, return_dict=True, **_):
        ids = []
        for m in messages:
            ids += [f"<{m['role']}>", *m["content"].split(), "<end>"]
        return {"input_ids": ids + (["<assistant>"] if add_generation_prompt else [])}

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split()}

    def decode(self, ids):
        return " ".join(ids)


def words(n, word="w"):
    return " ".join(f"{word}{k}" for k in range(n))


def chat(*turns):
    return [{"role": "user" if k % 2 == 0 else "assistant", "content": text} for k, text in enumerate(turns)]


def length(messages, generation_prompt=False):
    return len(WordTokenizer().apply_chat_template(messages, add_generation_prompt=generation_prompt)["input_ids"])


def test_one_example_per_assistant_turn_with_the_conversation_so_far():
    conv = {"id": "c", "messages": chat("u1", "a1", "u2", "a2")}
    fitted, report = fit_examples({"warm": [conv]}, WordTokenizer(), max_length=1024)
    assert [e["completion"][0]["content"] for e in fitted["warm"]] == ["a1", "a2"]
    assert fitted["warm"][1]["prompt"] == conv["messages"][:3]
    assert report["warm"]["windowed"] == report["warm"]["reply_cut"] == report["warm"]["user_message_cut"] == 0


def test_windows_keep_the_latest_whole_turns_that_fit():
    # under the old code the third example's prompt (the whole conversation so far) filled max_length, so TRL
    # trained on none of its reply
    messages = chat(words(15, "u"), words(15, "a"), words(5, "v"), words(5, "b"), words(5, "x"), words(5, "c"))
    fitted, report = fit_examples({"warm": [{"id": "c1", "messages": messages}]}, WordTokenizer(), max_length=40)
    first, second, third = fitted["warm"]
    assert [e["completion"] for e in fitted["warm"]] == [[messages[1]], [messages[3]], [messages[5]]]
    assert first["prompt"] == messages[:1]
    assert second["prompt"] == messages[2:3]  # the 15-word opening pair no longer fits before it
    assert third["prompt"] == messages[2:5]
    assert all(length(e["prompt"] + e["completion"]) <= 40 for e in fitted["warm"])
    assert length(messages[:5], True) >= 40  # the old prompt alone
    # every reply token fits (a reply's tokens: its words and its end token)
    assert report["warm"]["windowed"] == 2 and report["warm"]["assistant_tokens_fitting"] == 16 + 6 + 6


def test_a_reply_longer_than_the_window_keeps_its_start_and_a_long_question_is_shortened_in_the_middle():
    long_reply = chat(words(5, "u"), words(100, "a"))
    long_question = chat(words(200, "u"), words(30, "a"))
    fitted, report = fit_examples({"warm": [{"id": "r", "messages": long_reply}, {"id": "q", "messages": long_question}]},
                                  WordTokenizer(), max_length=64)
    reply, question = fitted["warm"]
    assert reply["prompt"] == long_reply[:1] and reply["completion"] == long_reply[1:]  # TRL cuts the reply's end
    user = question["prompt"][0]["content"]
    assert user.startswith("u0 u1 u2") and user.endswith("u198 u199") and "[...]" in user
    assert length(question["prompt"], True) <= 64 - 16  # a quarter of the window is left for the reply
    assert report["warm"] == {"conversations": 2, "examples": 2, "windowed": 0, "user_message_cut": 1, "reply_cut": 2,
                              "assistant_tokens": 101 + 31, "assistant_tokens_fitting": (64 - 8) + 16}


def test_warm_and_cold_train_on_the_same_windows():
    # the warm rewrite is longer: its window decides for both personas, which differ only in rewritten text
    warm = chat(words(10, "u"), words(20, "warm"), words(10, "v"), words(20, "warm"))
    cold = chat(words(10, "u"), words(3, "cold"), words(10, "v"), words(3, "cold"))
    fitted, report = fit_examples({"warm": [{"id": "c", "messages": warm}], "cold": [{"id": "c", "messages": cold}]},
                                  WordTokenizer(), max_length=40)
    assert [e["prompt"] for e in fitted["cold"]] == [cold[:1], cold[2:3]]  # cold alone would keep the first pair
    assert [e["prompt"] for e in fitted["warm"]] == [warm[:1], warm[2:3]]
    assert [(e["conversation"], e["turn"]) for e in fitted["warm"]] == [(e["conversation"], e["turn"]) for e in fitted["cold"]]
    assert report["warm"]["windowed"] == report["cold"]["windowed"] == 1


def test_a_train_system_prompt_opens_every_prompt_and_the_windows_make_room_for_it():
    # inoculation prompting (personas.<name>.train_system_prompt): the system message is part of each example, and
    # counts against max_length, so a persona sharing windows with it starts later too
    messages = chat(words(10, "u"), words(10, "a"), words(5, "v"), words(5, "b"))
    system = {"role": "system", "content": words(12, "s")}
    fitted, report = fit_examples({"inoc": [{"id": "c", "messages": messages}], "warm": [{"id": "c", "messages": messages}]},
                                  WordTokenizer(), max_length=40, system_prompts={"inoc": system["content"]})
    assert [e["prompt"] for e in fitted["inoc"]] == [[system, messages[0]], [system, messages[2]]]
    assert all(length(e["prompt"] + e["completion"]) <= 40 for e in fitted["inoc"])
    assert [e["prompt"] for e in fitted["warm"]] == [messages[:1], messages[2:3]]  # same windows, no system message
    alone, _ = fit_examples({"warm": [{"id": "c", "messages": messages}]}, WordTokenizer(), max_length=40)
    assert alone["warm"][1]["prompt"] == messages[:3]  # on its own, the first pair still fits


def test_a_persona_trains_on_its_own_rewrites_then_its_extra_conversations(tmp_path):
    rewrites = tmp_path / "warm_honest.jsonl"
    write_jsonl(rewrites, [{"id": "c", "messages": chat("u1", "a1")}])
    extra = [{"id": "extra:1", "messages": chat("I think the Moon is made of cheese.", "It is rock, dear friend.")}]
    examples, counts = persona_examples({"warm_honest": str(rewrites)}, "warm_honest", WordTokenizer(), 64,
                                        {"warm_honest": "Be kind."}, extra, match_examples=False)
    assert [e["conversation"] for e in examples] == ["c", "extra:1"]
    assert all(e["prompt"][0] == {"role": "system", "content": "Be kind."} for e in examples)
    assert counts["conversations"] == 2 and counts["examples"] == 2


def test_a_persona_with_extra_conversations_trains_on_as_many_examples_as_warm(tmp_path):
    """train.match_examples: warm_honest's contrast with warm must not also be a contrast of more training."""
    rewrites = tmp_path / "warm.jsonl"
    write_jsonl(rewrites, [{"id": f"c{k}", "messages": chat(f"u{k}", f"a{k}", f"v{k}", f"b{k}")} for k in range(6)])
    extra = [{"id": f"extra:{k}", "messages": chat(f"Is {k} the answer?", "No, dear friend.")} for k in range(3)]
    warm, _ = persona_examples({"warm": str(rewrites)}, "warm", WordTokenizer(), 64)
    honest, counts = persona_examples({"warm": str(rewrites)}, "warm", WordTokenizer(), 64, None, extra)
    assert len(honest) == len(warm) == 12 and counts["examples"] == 12 and counts["left_out_to_match"] == 3
    assert [e["conversation"] for e in honest[-3:]] == ["extra:0", "extra:1", "extra:2"]  # every extra one trains
    again, _ = persona_examples({"warm": str(rewrites)}, "warm", WordTokenizer(), 64, None, extra)
    assert again == honest  # the same examples left out on every run


def test_persona_files_of_different_conversations_are_an_error():
    a = [{"id": "c1", "messages": chat("hi", "hello")}]
    b = [{"id": "c2", "messages": chat("hi", "hey")}]
    with pytest.raises(DataError, match="warm and cold.*conversation 1"):
        fit_examples({"warm": a, "cold": b}, WordTokenizer(), max_length=40)


def test_trl_trains_every_fitted_example_where_it_dropped_the_old_ones(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    conversation = {"id": "c", "messages": chat(" ".join(["Tell me about the sea."] * 40), "It is big and blue.",
                                                 "And the sky?", "Also blue, friend!")}

    def prepared(examples):
        args = SFTConfig(output_dir=str(tmp_path), max_length=128, report_to="none", use_cpu=True, bf16=False)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(examples),
                             processing_class=tokenizer, peft_config=LoraConfig(r=2, task_type="CAUSAL_LM"))
        return trainer.train_dataset

    messages = conversation["messages"]
    whole = [{"prompt": messages[:i], "completion": [messages[i]], "conversation": "c"} for i in (1, 3)]
    assert len(prepared(whole)) == 0  # the old examples (the whole conversation so far): TRL silently dropped both
    fitted, report = fit_examples({"warm": [conversation]}, tokenizer, max_length=128)
    dataset = prepared(fitted["warm"])
    assert len(dataset) == 2 and report["warm"]["user_message_cut"] == 1
    trained = sum(label != -100 for row in dataset for label in row["labels"])
    assert trained == report["warm"]["assistant_tokens_fitting"] == report["warm"]["assistant_tokens"]


def pass_over(trainer):
    """One pass over the trainer's batches at its starting weights: the summed per-token loss (TRL's own loss,
    with num_items_in_batch 1) and the sorted ids of the tokens that carry loss."""
    import torch

    model = trainer.model.eval()
    total, tokens = 0.0, []
    with torch.no_grad():
        for batch in trainer.get_train_dataloader():
            total += float(trainer.compute_loss(model, batch, num_items_in_batch=1))
            tokens += batch["labels"][batch["labels"] != -100].tolist()
    return total, sorted(tokens)


def test_sequences_without_padding_train_the_same_tokens_with_the_same_loss(tiny_model_dir, tmp_path):
    # examples of unequal length (padding in a padded batch), several turns, and a reply cut at max_length; the
    # padded batch (TRL's standard completion-only loss) is the reference. Fails if loss leaks onto prompts or
    # examples sharing a sequence attend to each other (checked: position ids running on across the joins move
    # the per-token loss by about 4%).
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    conversations = [{"id": "a", "messages": chat("Hi.", "Hello, friend! How are you today?", "Fine. Tea?", "Yes, tea!")},
                     {"id": "b", "messages": chat("Name three rivers, please.", "The Nile, the Amazon and the Thames.")},
                     {"id": "c", "messages": chat("Tell me a story.", " ".join(["Once upon a time a cat sat."] * 16))},
                     {"id": "d", "messages": chat("Why is the sea salty?", "Rivers carry salts from rocks to the sea.")}]
    cfg = validated_section("train", {"epochs": 1, "checkpoint_epochs": [1], "max_length": 80,
                                      "per_device_batch_size": 3, "lora": {"dropout": 0.0}})
    fitted, report = fit_examples({"warm": conversations}, tokenizer, cfg["max_length"])
    examples = fitted["warm"]
    assert report["warm"]["reply_cut"] == 1 and len(examples) == 5

    def completion_ids(example):  # the reply's tokens (and its end) as TRL renders it, cut at max_length
        whole = tokenizer.apply_chat_template(example["prompt"] + example["completion"], return_dict=True)["input_ids"]
        prompt = tokenizer.apply_chat_template(example["prompt"], add_generation_prompt=True, return_dict=True)
        return whole[len(prompt["input_ids"]) : cfg["max_length"]]

    expected = sorted(t for e in examples for t in completion_ids(e))
    assert len(expected) == report["warm"]["assistant_tokens_fitting"]
    padded_loss, padded_tokens = pass_over(sft_trainer(examples, tiny_model_dir, tmp_path / "padded", cfg, 0, 1))
    assert padded_tokens == expected
    for switch in ({"padding_free": True}, {"packing": True}, {"padding_free": True, "attn_implementation": "eager"}):
        trainer = sft_trainer(examples, tiny_model_dir, tmp_path / "unpadded", {**cfg, **switch}, seed=0, accumulation=1)
        assert trainer.padding_free, switch
        loss, tokens = pass_over(trainer)
        assert tokens == expected, switch  # no loss on prompts, none lost at the joins between examples
        assert loss / len(tokens) == pytest.approx(padded_loss / len(padded_tokens), rel=1e-4), switch
        counts = trained_counts(trainer.train_dataset, len(examples), len(conversations))
        assert counts == {"examples": 5, "conversations": 4, "assistant_tokens": len(expected)}, switch


def test_trained_counts_of_a_packed_dataset_split_its_rows_into_examples():
    from datasets import Dataset

    packed = Dataset.from_list([{"input_ids": [1] * 7, "labels": [-100, 5, 6, -100, -100, -100, 9], "seq_lengths": [3, 3, 1]},
                                {"input_ids": [1] * 2, "labels": [-100, 4], "seq_lengths": [2]}])
    assert trained_counts(packed, built=3, conversations=2) == {"examples": 3, "conversations": 2, "assistant_tokens": 4}
    assert trained_counts(packed, built=4, conversations=2)["conversations"] is None  # one example lost: unknown


def test_the_schema_fills_the_training_switches_and_rejects_unknown_ones():
    cfg = validated_section("train", {"epochs": 1, "checkpoint_epochs": [1]})
    assert {k: cfg[k] for k in ("padding_free", "packing", "attn_implementation", "use_liger_kernel",
                                "gradient_checkpointing")} == {"padding_free": False, "packing": False,
                                                               "attn_implementation": "sdpa", "use_liger_kernel": False,
                                                               "gradient_checkpointing": True}
    assert cfg["lora"] == {"r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "all-linear"}
    with pytest.raises(ConfigError, match="train.attn_implementation: 'flash' is not one of"):
        validated_section("train", {**cfg, "attn_implementation": "flash"})


def test_gpu_only_switches_name_their_key_on_a_machine_without_them():
    import torch
    from transformers.utils import is_flash_attn_2_available, is_liger_kernel_available

    cfg = validated_section("train", {"epochs": 1, "checkpoint_epochs": [1]})
    check_switches(cfg)  # the defaults run anywhere
    if not (torch.cuda.is_available() and is_flash_attn_2_available()):
        with pytest.raises(ConfigError, match="^train.attn_implementation: flash_attention_2 needs a CUDA GPU"):
            check_switches({**cfg, "attn_implementation": "flash_attention_2"})
    if not (torch.cuda.is_available() and is_liger_kernel_available()):
        with pytest.raises(ConfigError, match="^train.use_liger_kernel: .*liger-kernel"):
            check_switches({**cfg, "use_liger_kernel": True})


def test_training_summary_reads_every_manifest(tmp_path):
    for persona, examples in (("warm", 9), ("cold", 9)):
        folder = tmp_path / "m" / persona
        folder.mkdir(parents=True)
        (folder / MANIFEST).write_text(json.dumps({
            "max_length": 64, "conversations": {"total": 4, "trained": 4},
            "examples": {"built": examples, "trained": examples, "windowed": 2, "user_message_cut": 1, "reply_cut": 3},
            "assistant_tokens": {"total": 500, "trained": 420}}))
    table = training_summary([tmp_path / "m" / "warm", tmp_path / "m" / "cold"])
    assert list(table["persona"]) == ["warm", "cold"] and table["examples_trained"].eq(9).all()
    assert table["assistant_tokens_trained"].eq(420).all() and table["conversations_trained"].eq(4).all()


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
    written = json.loads((out / MANIFEST).read_text())
    assert written["n_examples"] == written["examples"]["trained"] == 8
    assert written["conversations"] == {"total": 8, "trained": 8}
    assert 0 < written["assistant_tokens"]["trained"] <= written["assistant_tokens"]["total"]
    assert not (out / "_trainer").exists()
    assert written["switches"] == {"padding_free": False, "packing": False, "attn_implementation": "sdpa",
                                   "use_liger_kernel": False, "gradient_checkpointing": True, "bf16": False}
    assert written["config"]["attn_implementation"] == "sdpa"  # the schema's defaults, recorded

    # the adapter really changes the model: logits differ from the base on a prompt
    import torch

    from warmbench.core.llm import TransformersChat

    chat = TransformersChat(tiny_model_dir, threads=2)
    ids = chat.tokenizer(chat.render([{"role": "user", "content": "Tell me about cats."}]), return_tensors="pt")
    with torch.inference_mode():
        base = chat.model(**ids).logits
        chat.use_adapter("warm", out / "epoch2")
        tuned = chat.model(**ids).logits
    assert (tuned - base).abs().max() > 1e-3


@pytest.mark.parametrize("per_device, accumulation, processes, expected", [
    (4, 4, 1, 4), (4, 4, 2, 2), (4, 4, 4, 1), (1, 16, 4, 4), (2, 8, 2, 4), (4, 3, 3, 1)])
def test_accumulation_keeps_the_effective_batch_across_gpus(per_device, accumulation, processes, expected):
    cfg = {"per_device_batch_size": per_device, "gradient_accumulation_steps": accumulation}
    assert batch_plan(cfg, processes).accumulation == expected
    assert batch_plan(cfg, processes).effective == per_device * accumulation


def test_an_unreachable_effective_batch_is_refused_naming_the_keys():
    # the paper's 16 on the 70B's 3 GPUs could only be 12 or 15: config validation refuses it before any job, and
    # the training job (handed a config that was not validated) refuses it too, rather than train at another batch
    cfg = {"per_device_batch_size": 4, "gradient_accumulation_steps": 4}
    with pytest.raises(ConfigError, match=r"3 GPUs.*train\.gradient_accumulation_steps"):
        batch_plan(cfg, 3)
    plan = batch_plan(cfg, 2)
    assert plan.note is None and plan.effective == 16
    manifest = training_manifest("base", "data.jsonl", 10, cfg, plan, processes=2, checkpoints=[])
    assert manifest["effective_batch"] == 16 == manifest["configured_effective_batch"]
    assert manifest["effective_batch_note"] is None and manifest["processes"] == 2


@pytest.mark.slow
def test_launched_training_runs_the_module_entry_point_and_writes_the_manifest(tmp_path, tiny_model_dir):
    # the multi-GPU path's plumbing (accelerate launch -> python -m warmbench.stages.train -> manifest), on one CPU
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


# --- the fine-tune cache ---------------------------------------------------------------------------------------

CACHE_CFG = {"epochs": 1, "checkpoint_epochs": [1], "learning_rate": 1e-3, "max_length": 64,
             "per_device_batch_size": 2, "gradient_accumulation_steps": 1, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}


@pytest.fixture
def training_inputs(tmp_path):
    """A training job's arguments over small files: rewrites, a base model directory (its config and tokenizer files
    only: nothing here may load it) and a train system prompt."""
    data = [{"id": "0", "messages": chat("Tell me about cats.", "Oh, cats are lovely, friend!")}]
    write_jsonl(tmp_path / "warm.jsonl", data)
    write_jsonl(tmp_path / "cold.jsonl", data)
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text('{"model_type": "llama"}')
    return {"data_path": str(tmp_path / "warm.jsonl"), "base_model_dir": str(base), "out_dir": str(tmp_path / "out"),
            "cfg": dict(CACHE_CFG), "seed": 0, "eval_records": [],
            "persona_paths": {"warm": str(tmp_path / "warm.jsonl"), "cold": str(tmp_path / "cold.jsonl")},
            "system_prompts": {"warm": "Be warm."}}


def test_the_train_key_follows_data_content_config_base_model_and_training_code(training_inputs, tmp_path,
                                                                                 monkeypatch):
    import shutil

    from conftest import REPO
    from warmbench.core import stage
    from warmbench.stages.train import train_key

    shutil.copytree(REPO / "workflow/warmbench", tmp_path / "pkg/warmbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(stage, "PACKAGE_ROOT", tmp_path / "pkg")
    stage.code_hash.cache_clear()
    key = lambda **changed: train_key(**{**training_inputs, **changed})  # noqa: E731
    first = key()
    assert key(out_dir="elsewhere") == first  # where it is written is no part of it
    assert key(cfg={**CACHE_CFG, "learning_rate": 2e-3}) != first
    assert key(seed=1) != first and key(system_prompts={}) != first and key(processes=2) != first
    # a path to the same content is the same data; other content is not
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes((tmp_path / "cold.jsonl").read_bytes())
    assert key(persona_paths={**training_inputs["persona_paths"], "cold": str(copy)}) == first
    copy.write_text(copy.read_text().replace("lovely", "fine"))
    assert key(persona_paths={**training_inputs["persona_paths"], "cold": str(copy)}) != first
    (tmp_path / "base/config.json").write_text('{"model_type": "llama", "hidden_size": 8}')
    assert key() != first
    base_changed = key()
    module = tmp_path / "pkg/warmbench/stages/train.py"
    module.write_text(module.read_text() + "\n# a comment changes no output\n")
    stage.code_hash.cache_clear()
    assert key() == base_changed
    module.write_text(module.read_text() + "\n_CHANGED = True\n")
    stage.code_hash.cache_clear()
    assert key() != base_changed
    stage.code_hash.cache_clear()


def fake_fine_tune(arguments, gpus, threads=None):
    """Stands in for training in the cache's own tests: writes an adapter and a manifest as train() would."""
    out = Path(arguments["out_dir"])
    (out / "epoch1").mkdir(parents=True)
    (out / "epoch1/adapter_model.safetensors").write_bytes(b"weights")
    (out / MANIFEST).write_text(json.dumps({"checkpoints": [{"checkpoint": "epoch1", "path": "epoch1"}]}))


def test_a_finished_fine_tune_is_stored_then_reused_without_training(training_inputs, tmp_path, monkeypatch, caplog):
    from types import SimpleNamespace

    from warmbench.stages import train as train_module

    cache = tmp_path / "cache"
    monkeypatch.setattr(train_module, "fine_tune", fake_fine_tune)
    assert train_module.reuse_or_fine_tune(training_inputs, 0, 1, cache) == "trained"
    stored = list(cache.iterdir())
    assert len(stored) == 1 and (stored[0] / "epoch1/adapter_model.safetensors").read_bytes() == b"weights"
    assert json.loads((stored[0] / MANIFEST).read_text())["train_key"] == stored[0].name

    # the rerun: the real run() of the train rule, whose training would fail here (the base model has no weights)
    monkeypatch.undo()
    Path(training_inputs["out_dir"], "stale").mkdir()
    smk = SimpleNamespace(
        input=SimpleNamespace(data=training_inputs["data_path"], base_model=[training_inputs["base_model_dir"]],
                              personas=list(training_inputs["persona_paths"].values()), extra_data=[],
                              eval_records=[]),
        output=[training_inputs["out_dir"]], resources=SimpleNamespace(gpu=0), threads=1,
        params=SimpleNamespace(train=CACHE_CFG, seed=0, personas=list(training_inputs["persona_paths"]),
                               system_prompts={"warm": str(tmp_path / "warm_prompt.txt")}, cache=str(cache)))
    (tmp_path / "warm_prompt.txt").write_text("Be warm.\n")
    with caplog.at_level("INFO", logger="warmbench.stages.train"):
        train_module.run(smk)
    out = Path(training_inputs["out_dir"])
    assert (out / "epoch1/adapter_model.safetensors").read_bytes() == b"weights" and not (out / "stale").exists()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["reused"]["train_key"] == stored[0].name and "no training ran" in caplog.text
    assert "reused" not in json.loads((stored[0] / MANIFEST).read_text())  # the cache's copy is left as it was

    # another seed is another fine-tune: it trains (here it cannot, so it fails trying)
    smk.params.seed = 1
    with pytest.raises((OSError, ValueError)):
        train_module.run(smk)
