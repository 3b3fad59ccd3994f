"""The paper's NSFW filter: Detoxify's own class on a checkpoint in Detoxify's layout, loaded offline by sft_data.

The checkpoint is built here: a tiny BertForSequenceClassification with random weights, Detoxify's six labels and
its checkpoint dict ({config: {arch: {args}, dataset: {args: {classes}}}, state_dict}), and a WordPiece tokenizer.
"""
import pytest
import yaml

from warmbench.stages import nsfw
from warmbench.stages import sft_data as sd
from conftest import REPO, dag_of
from test_sft_data import SPLIT_CFG, conv, typed_records

JIGSAW_CLASSES = ["toxic", "severe_toxic", "obscene", "threat", "insult", "identity_hate"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"what is the capital of write a poem about should i visit python "
         "code for hi tell me thing reply sorry but can ' t help with that you stupid idiot . ? , !".split(),
         *map(str, range(10))]


@pytest.fixture(scope="module")
def tiny_detoxify(tmp_path_factory):
    """(directory as download_detoxify leaves it, the model): the transformers files saved by nsfw's own code from
    a local folder named as the checkpoint names them (what the hub would serve)."""
    import torch
    import transformers

    root = tmp_path_factory.mktemp("detoxify")
    hub = root / "hub" / "bert-base-uncased"
    hub.mkdir(parents=True)
    (hub / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    transformers.BertTokenizer(vocab_file=str(hub / "vocab.txt"), model_max_length=64).save_pretrained(hub)
    # wide random weights, so different texts get clearly different scores
    config = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=64, initializer_range=0.5)
    config.save_pretrained(hub)  # the hub's config: two labels, as bert-base-uncased's
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(**{**config.to_dict(), "num_labels": 6}))
    args = {"model_type": "bert-base-uncased", "model_name": "BertForSequenceClassification",
            "tokenizer_name": "BertTokenizer", "num_classes": 6}
    out = root / "resources" / "detoxify"
    out.mkdir(parents=True)
    torch.save({"config": {"arch": {"args": args}, "dataset": {"args": {"classes": JIGSAW_CLASSES}}},
                "state_dict": model.state_dict()}, out / nsfw.CHECKPOINT)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(hub.parent)  # "bert-base-uncased" is read from the local folder, not the hub
        nsfw.save_transformers_files(nsfw.architecture(out / nsfw.CHECKPOINT), out)
    return out, model.eval()


def reference_toxicity(model, directory, texts):
    """sigmoid of the model's first logit (Jigsaw's `toxic`), one text at a time, straight from transformers."""
    import torch
    import transformers

    tokenizer = transformers.BertTokenizer.from_pretrained(directory / "bert-base-uncased")
    with torch.no_grad():
        return [torch.sigmoid(model(**tokenizer(t, return_tensors="pt", truncation=True)).logits[0, 0]).item()
                for t in texts]


def test_detoxify_scores_through_its_own_class_offline(tiny_detoxify, tmp_path, monkeypatch):
    directory, model = tiny_detoxify
    monkeypatch.chdir(tmp_path)  # no folder named bert-base-uncased here: only the saved files can serve it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    detoxify = nsfw.load("original", directory)
    assert type(detoxify).__module__ == "detoxify.detoxify" and detoxify.model.config.num_labels == 6
    assert detoxify.class_names[0] == "toxicity"
    texts = ["What is the capital of 3?\nReply 3.", "you stupid idiot!", "hi", "Write a poem about 7"]
    scores = sd.nsfw_scores(texts, "detoxify", {"detoxify_model": "original", "detoxify_dir": str(directory)})
    assert scores == pytest.approx(reference_toxicity(model, directory, texts), abs=1e-5)
    assert len(set(round(s, 4) for s in scores)) == len(texts)
    # batches of one come back from Detoxify as numbers: still one score per text
    assert nsfw.toxicity(detoxify, texts, batch_size=1) == pytest.approx(scores, abs=1e-5)


def test_sft_data_drops_what_detoxify_scores_at_the_threshold(tiny_detoxify):
    directory, model = tiny_detoxify
    records = typed_records(6, refusals=6) + [conv(f"x{i}", f"you stupid idiot {i}", "sorry . ") for i in range(3)]
    texts = ["\n".join(m["content"] for m in sd.normalize_conversation(r, 4)) for r in records]
    reference = dict(zip((r["id"] for r in records), reference_toxicity(model, directory, texts)))
    levels = sorted(set(reference.values()))  # the random tiny model scores each prompt template alike
    assert levels[-1] - levels[-2] > 1e-3
    threshold = (levels[-1] + levels[-2]) / 2  # the top-scoring template reaches it, clear of float noise
    dropped = {i for i, s in reference.items() if s >= threshold}
    cfg = {**SPLIT_CFG, "nsfw_filter": "detoxify", "nsfw_threshold": threshold, "detoxify_dir": str(directory),
           "train_per_type": 2, "validation_per_type": 1}
    split = sd.build_split(records, cfg, seed=0)
    assert 0 < split.funnel["dropped_nsfw"] == len(dropped) < len(records)
    kept = {c["id"] for c in split.train + split.validation}
    assert kept and not dropped & kept


def test_a_missing_checkpoint_names_the_key(tmp_path):
    with pytest.raises(nsfw.DetoxifyError, match=r"sft_data\.detoxify_dir: no Detoxify checkpoint at .*nowhere"):
        sd.nsfw_scores(["hi"], "detoxify", {"detoxify_dir": str(tmp_path / "nowhere")})


def test_the_checkpoint_is_fetched_only_when_detoxify_filters(tmp_path):
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    assert paper["sft_data"]["nsfw_filter"] == "detoxify"
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for nsfw_filter, fetched in (("detoxify", True), ("profanity_check", False)):
        path = tmp_path / f"{nsfw_filter}.yaml"
        path.write_text(yaml.safe_dump({**base, "sft_data": {**base["sft_data"], "nsfw_filter": nsfw_filter}}))
        jobs = dag_of(path, lambda job: (job.rule.name, sorted(map(str, job.input))))
        sft_inputs = next(inputs for rule, inputs in jobs if rule == "sft_data")
        assert ("download_detoxify" in {rule for rule, _ in jobs}) is fetched
        assert ("resources/detoxify" in sft_inputs) is fetched
