"""Detoxify, the paper's NSFW filter, fetched on the submit host and loaded offline by sft_data.

`download_detoxify` (a localrule) saves into one directory everything Detoxify needs, so the sft_data job reads
no network: the release checkpoint as published (`checkpoint.ckpt`; its sha256 checked against the prefix in the
release file name, as torch.hub does) and the transformers config and tokenizer the checkpoint names, in a
folder named as the checkpoint names them (`bert-base-uncased/` for `original`). The config is saved with the
checkpoint's number of labels, so the classifier head matches the weights.

Why the folder is named after the checkpoint's `model_type`: Detoxify 0.5.4 reads the transformers config by that
name from the hub even when `huggingface_config_path` is given (unitaryai/detoxify PR #126, unmerged), which
fails offline. Loaded from inside the directory, that name resolves to the local folder first.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from pathlib import Path

from ..core.files import write_json

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.ckpt"
SOURCE = "source.json"
DEFAULT_DIR = "resources/detoxify"
BATCH_SIZE = 32  # texts per forward pass: Detoxify pads a whole call to its longest text


class DetoxifyError(RuntimeError):
    pass


def detoxify_class():
    try:
        from detoxify import Detoxify
    except ImportError as err:
        raise DetoxifyError("sft_data.nsfw_filter=detoxify needs the `detoxify` package (requirements.txt)") from err
    return Detoxify


def architecture(checkpoint: str | Path) -> dict:
    """The checkpoint's `arch.args`: the transformers model name, model and tokenizer classes, number of labels."""
    import torch

    loaded = torch.load(checkpoint, map_location="cpu", weights_only=False)
    try:
        return dict(loaded["config"]["arch"]["args"])
    except (KeyError, TypeError):
        raise DetoxifyError(f"{checkpoint}: not a Detoxify checkpoint (no config.arch.args)") from None


def save_transformers_files(args: dict, out_dir: str | Path) -> Path:
    """Save the config (with the checkpoint's number of labels) and tokenizer that a checkpoint's `arch.args`
    name into out_dir/<model_type>; they are read from the hub, or from a local folder of that name."""
    import transformers

    target = Path(out_dir) / args["model_type"]
    model_class = getattr(transformers, args["model_name"])
    model_class.config_class.from_pretrained(args["model_type"], num_labels=args["num_classes"]).save_pretrained(target)
    getattr(transformers, args["tokenizer_name"]).from_pretrained(args["model_type"]).save_pretrained(target)
    return target


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(model_type: str, out_dir: str | Path) -> dict:
    """Download Detoxify's `model_type` checkpoint and the transformers files it needs into out_dir."""
    import torch

    detoxify_class()
    from detoxify.detoxify import MODEL_URLS

    if model_type not in MODEL_URLS:
        raise DetoxifyError(f"sft_data.detoxify_model: {model_type!r} is none of {sorted(MODEL_URLS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    url, checkpoint = MODEL_URLS[model_type], out_dir / CHECKPOINT
    # the release names carry the first hex digits of their sha256 (toxic_original-c1212f89.ckpt)
    hash_prefix = re.search(r"-([a-f0-9]+)\.", url.rsplit("/", 1)[-1]).group(1)
    torch.hub.download_url_to_file(url, str(checkpoint), hash_prefix=hash_prefix)
    args = architecture(checkpoint)
    save_transformers_files(args, out_dir)
    return {"model_type": model_type, "url": url, "sha256": sha256(checkpoint),
            "transformers_files": args["model_type"], "architecture": args}


def load(model_type: str, directory: str | Path):
    """Detoxify's own class, on the checkpoint and transformers files in `directory` (see fetch), offline."""
    directory = Path(directory)
    if not (directory / CHECKPOINT).is_file():
        raise DetoxifyError(f"sft_data.detoxify_dir: no Detoxify checkpoint at {directory / CHECKPOINT} "
                            "(the download_detoxify rule fetches it to resources/detoxify)")
    detoxify = detoxify_class()
    transformers_name = architecture(directory / CHECKPOINT)["model_type"]
    if not (directory / transformers_name).is_dir():
        raise DetoxifyError(f"sft_data.detoxify_dir: {directory} lacks the transformers files {transformers_name}/ "
                            "that its checkpoint names (see warmbench.stages.nsfw.fetch)")
    # inside the directory the checkpoint's transformers name is the local folder, not a hub id (module docstring)
    with contextlib.chdir(directory):
        return detoxify(model_type, checkpoint=CHECKPOINT, huggingface_config_path=transformers_name)


def toxicity(model, texts: list[str], batch_size: int = BATCH_SIZE) -> list[float]:
    """Detoxify's `toxicity` probability per text, a batch at a time."""
    scores = []
    for start in range(0, len(texts), batch_size):
        batch = model.predict(texts[start : start + batch_size])["toxicity"]
        scores += batch if isinstance(batch, list) else [batch]  # a one-text batch comes back as a number
    return [float(s) for s in scores]


def run(smk) -> None:
    provenance = fetch(smk.params.model, smk.output[0])
    write_json(Path(smk.output[0]) / SOURCE, provenance)
    log.info("Detoxify %s: %s (sha256 %s) with %s/", provenance["model_type"], provenance["url"],
             provenance["sha256"], provenance["transformers_files"])
