"""Stage warmth_direction: a warmth direction in each open model's residual stream, from the study's own rewrites.

The base model (resources/models/<model>, not a fine-tune) reads the warm and the cold rewrite of the same training
conversations (persona_rewrite; paired by conversation id, user turns identical); per decoder layer, the mean
activation over each conversation's response tokens (core/steering.py), and the direction is mean(warm) - mean(cold)
(Chen et al. 2025, persona vectors, arXiv 2507.21509, from contrasting responses; here the contrast is the study's own
warm and cold rewrites of the same replies, so only the register differs). The pairs are split in two, seeded: the
direction is fitted on one part and checked on the other, the held-out part (`warmth_direction.held_out`): each
held-out pair's warm minus cold mean activation projected on the fitted unit direction. A direction that is only the
fit part's noise separates the held-out pairs by 0 on average (its norm alone cannot say so: the norm of a noise
difference is positive too); one that is warmth separates them by about its norm.

Why the held-out part is taken from the rewrites, not from a split the fine-tunes never saw: persona_rewrite rewrites
the training split only (sft_data's validation split has no rewrites), and the fine-tunes train on every rewritten
conversation. The direction is read from the base model, which trained on none of them, so no held-out choice could
keep it apart from the fine-tunes' data anyway; what stays disjoint is the evaluation: sft_data's validation prompts
(on which warmth is measured and a steered model would be) share no conversation, no id stem and no first message
with the training split (sft_data.build_split), so the direction never saw a prompt it may be evaluated on. The
held-out ids are recorded, so a later use (a check inside the model) can keep to them.

Config (the optional section `warmth_direction`, schema: workflow/schemas/config.schema.yaml): present, the stage runs
for every model run locally (or those `models` names); absent, it adds no job. Checked when the Snakefile is read,
naming the key: a model behind an API (no activations to read) and a persona without rewrites of its own are refused.

Outputs: results/warmth_direction/<model>.pt (torch.save of a dict: direction [layers, hidden] float32 and its
norms, the layers, the personas), <model>.json (provenance: the model's identity as llm.model_identity records it,
the rewrites' sha256, the pairs used and held out, per-layer norms) and <model>.csv (per layer: the direction's norm,
the mean norm of a response token's activation, and the held-out separation).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from ..core.config import is_api_model
from ..core.grid import local_models, rewritten_personas
from ..core.validation import ConfigError
from ..core.files import DataError, read_jsonl, sha256_file, stable_hash, write_json

log = logging.getLogger(__name__)

SECTION = "warmth_direction"
LAYER_COLUMNS = ["layer", "direction_norm", "mean_token_norm", "relative_norm", "held_out_separation",
                 "held_out_sd", "held_out_z", "held_out_positive_share", "held_out_over_fit", "n_fit", "n_held_out"]


# --- config (read by workflow/rules/warmth_direction.smk when the Snakefile is parsed: nothing heavy here) ----------

def direction_models(config: dict) -> list[str]:
    """The models the stage runs for: warmth_direction.models, else every model run locally; none when the section is
    absent. Raises ConfigError naming the key for a model behind an API, a name that is not a models key, a persona
    without rewrites of its own."""
    section = config.get(SECTION)
    if section is None:
        return []
    rewritten = rewritten_personas(config)
    for k, persona in enumerate(section["personas"]):
        if persona not in rewritten:
            of = config["personas"].get(persona, {}).get("replicate_of")
            why = (f"a replicate (train.seeds) of {of!r}, whose rewrites it trains on: name {of!r}" if of else
                   "not a persona with rewrites of its own (a `rewrite` persona)")
            raise ConfigError(f"{SECTION}.personas[{k}]: {persona!r} is {why}; personas with rewrites: "
                              f"{', '.join(rewritten) or 'none'}")
    named = section.get("models")
    if named is None:
        models = local_models(config)
        if not models:
            raise ConfigError(f"{SECTION}: no model of `models` is run locally; a model behind an API has no "
                              "activations to read")
        return models
    for k, model in enumerate(named):
        if model not in config["models"]:
            raise ConfigError(f"{SECTION}.models[{k}]: {model!r} is not a key of models")
        if is_api_model(config["models"][model]):
            raise ConfigError(f"{SECTION}.models[{k}]: {model!r} is served by an API: it has no activations to "
                              "read (only a model with local weights has a direction)")
    return list(named)


# --- pairs and the split -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pair:
    id: str
    positive: list[dict]  # the warm rewrite's messages
    negative: list[dict]  # the cold rewrite's


def read_pairs(positive_path, negative_path) -> tuple[list[Pair], dict]:
    """The conversations both rewrite files hold, paired by id (in the positive file's order), and what was left out:
    a conversation in which a rewrite came back empty keeps the original turn there (persona_rewrite), so its two
    sides are not a warm and a cold text: it is dropped and counted. Files that disagree on the conversations or their
    user turns are refused, naming both: they must rewrite the same training split."""
    sides = []
    for path in (positive_path, negative_path):
        records = {}
        for record in read_jsonl(path):
            if record["id"] in records:
                raise DataError(f"{path}: conversation {record['id']!r} appears twice")
            records[record["id"]] = record
        sides.append(records)
    positive, negative = sides
    if set(positive) != set(negative):
        only = sorted(set(positive) ^ set(negative))
        raise DataError(f"{positive_path} and {negative_path} hold different conversations ({len(only)} in one only, "
                        f"e.g. {only[0]!r}): they must rewrite the same training split")
    pairs, kept_original = [], 0
    for cid, warm in positive.items():
        cold = negative[cid]
        a, b = warm["messages"], cold["messages"]
        if [m["role"] for m in a] != [m["role"] for m in b] or any(
                x["content"] != y["content"] for x, y in zip(a, b) if x["role"] == "user"):
            raise DataError(f"{positive_path} and {negative_path}: conversation {cid!r} differs outside its assistant "
                            "turns")
        if warm.get("empty_rewrites_kept_original") or cold.get("empty_rewrites_kept_original"):
            kept_original += 1
            continue
        pairs.append(Pair(str(cid), a, b))
    return pairs, {"conversations": len(positive), "dropped_kept_original": kept_original}


def split_pairs(ids: list[str], held_out: float, max_pairs: int | None, seed: int) -> tuple[list[str], list[str]]:
    """(fit, held-out) ids: the conversations ranked by a hash of (seed, id), so the split does not depend on the
    files' order; the first `max_pairs` of that rank are used, `held_out` of them (rounded, at least one on each side)
    held out. Disjoint by construction."""
    rank = sorted(dict.fromkeys(ids), key=lambda cid: stable_hash([seed, SECTION, cid]))
    if max_pairs:
        rank = rank[:max_pairs]
    if len(rank) < 2:
        raise DataError(f"{SECTION}: {len(rank)} usable pair(s) of rewrites; a direction and its held-out check need "
                        f"at least 2 ({SECTION}.max_pairs, sft_data.train_per_type)")
    n_held = min(max(round(len(rank) * held_out), 1), len(rank) - 1)
    return rank[n_held:], rank[:n_held]


# --- the statistics (on [n, layers, hidden] tensors: tested on synthetic activations with a known direction) --------

def held_out_separation(positive, negative, direction) -> dict:
    """Per layer, over held-out pairs (row i of `positive` and `negative` is one conversation's warm and cold mean
    activation, [n, layers, hidden]): the projection of warm minus cold on the unit direction; its mean (the
    separation), standard deviation, z (mean over its standard error; about N(0, 1) where the direction is noise
    independent of these pairs), the share of pairs it separates the right way, and the mean over the direction's
    norm (about 1 where the fitted difference is the held-out pairs' too, about 0 where it was the fit part's noise).
    Lists of floats, one per layer."""
    import torch

    from ..core.steering import projections

    diff = projections(positive, direction) - projections(negative, direction)  # [n, layers]
    n = diff.shape[0]
    mean = diff.mean(0)
    sd = diff.std(0) if n > 1 else torch.full_like(mean, float("nan"))
    z = mean / (sd / math.sqrt(n))
    norms = direction.norm(dim=-1)
    return {"held_out_separation": mean.tolist(), "held_out_sd": sd.tolist(), "held_out_z": z.tolist(),
            "held_out_positive_share": (diff > 0).float().mean(0).tolist(),
            "held_out_over_fit": (mean / norms.clamp(min=1e-12)).tolist(), "n_held_out": n}


# --- the job -------------------------------------------------------------------------------------------------------

def _means(model, tokenizer, conversations, settings):
    """[n, layers, hidden] mean response activations, [n, layers] mean token norms, in the conversations' order."""
    import torch

    from ..core.steering import response_means

    means, norms = [None] * len(conversations), [None] * len(conversations)
    for batch in response_means(model, tokenizer, conversations, batch_size=settings["batch_size"],
                                max_length=settings["max_length"]):
        for row, k in enumerate(batch.indices):
            means[k], norms[k] = batch.means[row], batch.token_norms[row]
    return torch.stack(means), torch.stack(norms)


def usable(pairs: list[Pair], tokenizer, max_length: int) -> tuple[list[Pair], int]:
    """The pairs whose warm and cold sides both have a response token within `max_length` tokens, and how many did
    not (a first reply that starts beyond the window gives no activation to average)."""
    from ..core.steering import response_mask

    def has_response(messages) -> bool:
        return any(response_mask(tokenizer, messages)[1][:max_length])

    kept = [pair for pair in pairs if has_response(pair.positive) and has_response(pair.negative)]
    return kept, len(pairs) - len(kept)


def estimate(model, tokenizer, pairs: list[Pair], settings: dict, seed: int) -> dict:
    """Fit the direction on one part of the pairs and check it on the held-out part (module docstring). Returns the
    direction [layers, hidden], its norms, the mean token norms and the held-out statistics, with the ids of each
    part. Each conversation's means are kept in float32 until its part is done: n x layers x hidden x 4 bytes (the
    fit part of 128 pairs of a 70B model, 80 layers of 8,192: 0.7 GB)."""
    import torch

    from ..core.steering import mean_difference

    by_id = {pair.id: pair for pair in pairs}
    fit, held = split_pairs(list(by_id), settings["held_out"], settings["max_pairs"], seed)
    fit_pairs, held_pairs = [by_id[i] for i in fit], [by_id[i] for i in held]
    log.info("%d pairs: direction from %d, checked on %d held out", len(fit) + len(held), len(fit), len(held))
    warm, warm_norms = _means(model, tokenizer, [p.positive for p in fit_pairs], settings)
    cold, cold_norms = _means(model, tokenizer, [p.negative for p in fit_pairs], settings)
    direction = mean_difference(warm.double(), cold.double())[0].float()
    del warm, cold
    held_warm, _ = _means(model, tokenizer, [p.positive for p in held_pairs], settings)
    held_cold, _ = _means(model, tokenizer, [p.negative for p in held_pairs], settings)
    return {"direction": direction, "norms": direction.norm(dim=-1),
            "mean_token_norm": torch.cat([warm_norms, cold_norms]).mean(0),
            "separation": held_out_separation(held_warm, held_cold, direction), "fit_ids": fit, "held_out_ids": held}


def layer_table(result: dict):
    """One row per layer: LAYER_COLUMNS."""
    import pandas as pd

    norms, token = result["norms"].tolist(), result["mean_token_norm"].tolist()
    separation = result["separation"]
    table = pd.DataFrame({"layer": range(len(norms)), "direction_norm": norms, "mean_token_norm": token,
                          "relative_norm": [n / t if t else float("nan") for n, t in zip(norms, token)],
                          **{k: v for k, v in separation.items() if k != "n_held_out"}})
    table["n_fit"] = len(result["fit_ids"])
    table["n_held_out"] = separation["n_held_out"]
    return table[LAYER_COLUMNS]


def provenance(model_key: str, identity: dict, personas: list[str], rewrites: list[str], settings: dict, seed: int,
               result: dict, counts: dict, layers_read: str) -> dict:
    """The sidecar JSON: what the direction was computed from and how."""
    return {
        "model": model_key, "model_identity": identity,
        "positive": personas[0], "negative": personas[1],
        "rewrites": {persona: {"path": str(path), "sha256": sha256_file(path)} for persona, path in zip(personas, rewrites)},
        "layers": len(result["norms"]), "hidden_size": int(result["direction"].shape[-1]), "layers_read": layers_read,
        "tokens": "response tokens: each assistant turn's text and end-of-turn marker (core/steering.py)",
        "settings": settings, "seed": seed, **counts,
        "n_fit": len(result["fit_ids"]), "n_held_out": len(result["held_out_ids"]),
        "fit_ids_sha256": stable_hash(sorted(result["fit_ids"])), "held_out_ids": sorted(result["held_out_ids"]),
        "norms": [round(n, 6) for n in result["norms"].tolist()],
    }


LAYERS_READ = "output of decoder layer l (model.model.layers[l]): the tensor a steering hook on that layer adds to"


def run(smk) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core.files import atomic_write, write_table
    from ..core.llm import model_identity
    from ..core.local_models import compute_device, torch_dtype

    torch.set_num_threads(smk.threads)
    settings, seed, dtype = smk.params.settings, smk.params.seed, smk.params.dtype
    personas = list(settings["personas"])
    rewrites = [smk.input.positive, smk.input.negative]
    pairs, counts = read_pairs(*rewrites)
    model_dir = smk.input.base_model
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pairs, counts["dropped_no_response_in_window"] = usable(pairs, tokenizer, settings["max_length"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype(dtype)).to(compute_device()).eval()
    result = estimate(model, tokenizer, pairs, settings, seed)
    identity = model_identity("transformers", model_dir, dtype)
    record = provenance(smk.wildcards.model, identity, personas, rewrites, settings, seed, result, counts, LAYERS_READ)
    payload = {"direction": result["direction"].contiguous(), "norms": result["norms"],
               "mean_token_norm": result["mean_token_norm"], "layers": list(range(len(result["norms"]))),
               "model": smk.wildcards.model, "positive": personas[0], "negative": personas[1],
               "n_fit": record["n_fit"], "n_held_out": record["n_held_out"], "layers_read": LAYERS_READ}
    atomic_write(smk.output.direction, lambda tmp: torch.save(payload, tmp))
    write_json(smk.output.provenance, record)
    table = layer_table(result)
    write_table(smk.output.layers, table)
    log.info("%s: %s minus %s over %d layers\n%s", smk.wildcards.model, personas[0], personas[1], len(table),
             table.to_string(index=False))


def load_direction(path) -> dict:
    """A saved direction (torch.load with weights_only: tensors, lists, numbers and strings only)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)
