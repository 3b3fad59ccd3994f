# Everything that is not a rule: config validation, the job grid, input functions, wildcard constraints.
# Kept cheap: every SLURM job re-parses this file, so nothing heavy (torch, pandas) is imported here.
import sys
from pathlib import Path

from snakemake.logging import logger

# warmbench from this workflow's own folder, as its jobs import it (workflow/scripts/run_stage.py), not whatever copy
# is installed: the code hashes in each rule's params.stage are then hashes of the code its jobs will run
sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from warmbench.core import checks, extra_data, grid, hub_sources, validation
from warmbench.core.accounting import price_table
from warmbench.core.config import (
    SELECTED_CHECKPOINT,
    VALIDATION_DATASET,
    epoch_label,
    is_api_model,
    job_resources,
    smoke_records_sha256,
)
from warmbench.core.files import UserInputError, read_mapping
from warmbench.core.locks import running_copies
from warmbench.core.model_store import MODEL_STORE
from warmbench.core.stage import stage
from warmbench.tools.plan import TRAIN_CACHE, generation_priorities, jobs_from_dag, start_plan

try:
    # Snakemake's own loader keeps the last of two equal keys; the strict one names both (workflow.configfiles: the
    # embedded default or every --configfile)
    for _configfile in workflow.configfiles:
        read_mapping(_configfile)
    # the schema (workflow/schemas/config.schema.yaml), with errors that name the field, then what it cannot express
    validation.validate(config)
    # sorted keys: reordering a YAML file must not rerun jobs; train.seeds' further runs become personas
    _canonical = validation.canonical(grid.with_replicates(config))
    config.clear()
    config.update(_canonical)
    checks.check(config, root=Path.cwd())  # paths in config are relative to the working directory
    if workflow.exec_mode.name == "DEFAULT":  # not again in every cluster job: the training job checks it too
        extra_data.check_personas(config, root=Path.cwd())  # no evaluated item in a persona's extra training data
except UserInputError as err:
    raise WorkflowError(f"Invalid config:\n{err}")

# the longest generation jobs first (their estimated tokens): short ones fill the end of the run
GENERATION_PRIORITY = generation_priorities(config, Path.cwd())

# Secrets (API keys, the hub token) come from the environment, and some jobs need software beyond the clone (vLLM's
# environment, detoxify). A dry run, --lint, --list-rules, --report or `warmbench plan` needs none of them: a missing
# one is a warning here, and a real run stops on it in `onstart`, after the DAG is built and before any job starts.
# (Snakemake parses this file before it knows which of those it is doing: workflow.dryrun is set only when
# execution begins.)
MISSING_SECRETS = checks.missing_secrets(config)
MISSING_NEEDS = checks.missing_runtime_needs(
    config,
    root=Path.cwd(),
    jobs_in_conda="CONDA" in {m.name for m in workflow.deployment_settings.deployment_method},
)
if workflow.exec_mode.name == "DEFAULT":  # not again in every cluster job
    if MISSING_SECRETS:
        logger.warning(
            f"warmbench: {checks.secrets_message(MISSING_SECRETS)}. A dry run, --lint, --list-rules and "
            "--report work without them; a real run stops before any job starts."
        )
    for _need in MISSING_NEEDS:
        logger.warning(
            f"warmbench: {_need}. A dry run, --lint, --list-rules and --report work without it; "
            "a real run stops before any job starts."
        )


onstart:
    # before any job starts (a real run only: snakemake skips this hook for dry runs and inside cluster jobs)
    if (MISSING_SECRETS or MISSING_NEEDS) and not workflow.touch:
        _missing = []
        if MISSING_SECRETS:
            _missing.append(
                f"Missing secrets: {checks.secrets_message(MISSING_SECRETS)}. Set them in the environment "
                "(never in the config) and run again."
            )
        if MISSING_NEEDS:
            _missing.append("Missing run-time needs:\n" + "\n".join(MISSING_NEEDS))
        raise WorkflowError("\n".join(_missing))
    # a job still running from an earlier snakemake (killed alone, then --unlock): snakemake would delete its
    # outputs and log before starting it again
    _running = running_copies((job.rule.name, list(job.output)) for job in workflow.dag.needrun_jobs())
    if _running:
        raise WorkflowError(
            "These jobs are still running from an earlier run; wait for them or stop them first:\n"
            + "\n".join(_running)
        )
    # the plan of what is about to run (`warmbench plan`); over budget.api_usd or budget.gpu_hours (new GPU work) it
    # stops here unless WARMBENCH_FORCE=1
    if not workflow.touch:
        _over_budget = start_plan(jobs_from_dag(workflow.dag), config, Path.cwd(), logger=logger)
        if _over_budget:
            raise WorkflowError(f"Over budget: {_over_budget}")


STAGE = "../scripts/run_stage.py"  # relative to each rule file
ENV = "../../envs/warmbench.yaml"  # every rule's software, for --sdm conda (envs/README.md)
LLM_CACHE = "results/cache/llm_calls"  # the LLM call cache: a directory of append-only shards (call_cache.py)
GENERATION_CACHE = "results/cache/generations"  # local models' generated rows, in the same kind of shards
# TRAIN_CACHE (from plan.py, which looks there): finished fine-tunes by content key (train.reuse_or_fine_tune)
WARMTH_CACHE = "results/cache/warmth"  # SocioT log-likelihoods per text, in the call cache's shards (warmth.py)
EVAL_CELLS = grid.eval_cells(config)
WARMTH_CELLS = grid.warmth_cells(config)
TRAJECTORY_CELLS = grid.trajectory_cells(config)  # empty unless evaluation.checkpoints asks for more than `selected`


wildcard_constraints:
    model="|".join(config["models"]),
    persona=grid.one_of(grid.evaluated_personas(config)),
    checkpoint=r"base|selected|epoch\d+(\.\d+)?",
    dataset="|".join(config["evaluation"]["datasets"] + [VALIDATION_DATASET]),


def cell_paths(pattern, cells):
    return [pattern.format(**vars(cell)) for cell in cells]


def get_final_output():
    return [
        *rules.analysis.output,
        *rules.judge_validation.output,
        rules.warmth_validation.output.summary,
        *(rules.rewrite_fidelity.output if grid.rewritten_personas(config) else []),
        *rules.training_summary.output,
        *rules.explorer.output,
        *rules.explorer_screenshot.output,
        *get_judge_comparison_output(),
        *(rules.trajectory.output if TRAJECTORY_CELLS else []),
        *(rules.replicates.output if grid.replicate_groups(config) else []),
        *WARMTH_DIRECTION_OUTPUT,  # warmth_direction.smk: none unless the config asks for it
    ]


def get_trained_dirs():
    # every fine-tune (LoRA or through the OpenAI API) of every model, for the training summary
    return [
        f"results/train/{model}/{persona}"
        for model in config["models"]
        for persona in grid.trained_personas(config, model)
    ]


def get_base_model(wildcards):
    # a model behind an API has no local weights
    if is_api_model(config["models"][wildcards.model]):
        return []
    return [f"resources/models/{wildcards.model}"]


def get_rewrite_backend_model(wildcards):
    return [f"resources/models/{key}" for key in grid.backend_model_keys(config)]


# Optional inputs are lists (empty when absent), so rules can always index them as input.<name>[0].
def get_rewrite_model_dtype():
    keys = grid.backend_model_keys(config)
    return config["models"][keys[0]]["dtype"] if keys else "auto"


# A model rule (generation, warmth) serves several variants (persona, checkpoint) per job; these give its files.
def variant_paths(pattern, variants):
    return [pattern.format(persona=persona, checkpoint=checkpoint) for persona, checkpoint in variants]


def trained_dirs(variants):
    # the trained personas' LoRA checkpoints (or API fine-tunes); the original model and system-prompt personas read none
    personas = list(dict.fromkeys(p for p, _ in variants if grid.is_trained(config, p)))
    return lambda wildcards: [f"results/train/{wildcards.model}/{persona}" for persona in personas]


def selection_files(variants):
    # `selected`: the plateau rule's choice, made by select_checkpoint from the warmth trajectory
    personas = [p for p, checkpoint in variants if checkpoint == SELECTED_CHECKPOINT]
    return lambda wildcards: [
        f"results/warmth/{wildcards.model}/{persona}/chosen_checkpoint.json" for persona in personas
    ]


def system_prompt_files(variants):
    # each system-prompt persona's file, in the order of its variants (generate pairs them up)
    return [config["personas"][p]["system_prompt"] for p, _ in variants if p in grid.prompted_personas(config)]


def persona_file(key):
    # a persona's file under `key` (rewrite, train_system_prompt, extra_data): a list, empty where it has none
    return lambda wildcards: [path for k, path in config["personas"][wildcards.persona].items() if k == key]


def get_training_rewrites(wildcards):
    # a persona's own rewrites; a replicate's (train.seeds) are its persona's
    return f"results/persona_rewrite/{grid.data_persona(config, wildcards.persona)}.jsonl"


def get_window_rewrites(wildcards):
    # the rewrites whose examples share windows with this persona's (train.shared_windows; else its own alone)
    return [f"results/persona_rewrite/{p}.jsonl" for p in grid.window_group(config, wildcards.persona)]


def get_window_system_prompts(wildcards):
    # train_system_prompt of each persona in the window group that has one: the windows make room for it
    group = grid.window_group(config, wildcards.persona)
    return {
        p: config["personas"][p]["train_system_prompt"] for p in group if "train_system_prompt" in config["personas"][p]
    }


def get_leak_check_records(wildcards):
    # a persona with extra_data is checked at training time against every evaluation dataset's source file: the
    # hub downloads as inputs; the smoke sets are read by the job from the package (get_leak_check_smoke), not given
    # by their absolute, installed path, so a study can move
    if "extra_data" not in config["personas"][wildcards.persona]:
        return []
    return [
        str(extra_data.records_path(config, d))
        for d in config["evaluation"]["datasets"]
        if hub_sources.downloaded(config, d)
    ]


def get_leak_check_smoke(wildcards):
    # dataset -> content hash of each smoke set the job reads for the leak check (a changed set reruns the job)
    if "extra_data" not in config["personas"][wildcards.persona]:
        return {}
    return {
        d: smoke_records_sha256(d) for d in config["evaluation"]["datasets"] if not hub_sources.downloaded(config, d)
    }


def get_prompts(wildcards):
    if wildcards.dataset == VALIDATION_DATASET:
        return rules.sft_data.output.validation_prompts
    return f"results/prompts/{wildcards.dataset}.parquet"


def get_dataset_records(wildcards):
    # the real dataset as download_dataset saved it; warmbench's smoke set is read by the job from the package, not
    # given by its (absolute, installed) path, so a study can move: get_smoke_records_sha256 identifies it instead
    if hub_sources.downloaded(config, wildcards.dataset):
        return rules.download_dataset.output.records
    return []


def get_dataset_provenance(wildcards):
    # what download_dataset read (id, config, split, revision, wheel): each item says where it comes from
    if hub_sources.downloaded(config, wildcards.dataset):
        return rules.download_dataset.output.provenance
    return []


def get_smoke_records_sha256(wildcards):
    # the smoke set's content: a changed set reruns the job as a changed input file would
    if hub_sources.downloaded(config, wildcards.dataset):
        return None
    return smoke_records_sha256(wildcards.dataset)


def _writes_wrong_answers(wildcards):
    return wildcards.dataset == "triviaqa" and hub_sources.downloaded(config, "triviaqa")


def get_wrong_answer_config(wildcards):
    return config["data"]["wrong_answers"] if _writes_wrong_answers(wildcards) else None


def get_wrong_answer_prompt(wildcards):
    return [config["data"]["wrong_answers"]["prompt"]] if _writes_wrong_answers(wildcards) else []


def get_wrong_answer_model(wildcards):
    if not _writes_wrong_answers(wildcards):
        return []
    backend = config["data"]["wrong_answers"]["backend"]
    return [f"resources/models/{backend['model']}"] if backend["kind"] == "transformers" else []


def get_sampling(wildcards):
    return grid.sampling_for(config, wildcards.dataset)


# The judges (judge.judges, or the single judge block): the primary writes results/judged/, the others
# results/judged_by/<judge>/ (judge.smk, judge_comparison.smk).
JUDGES = grid.judges(config)
PRIMARY_JUDGE = grid.primary_judge(config)
OTHER_JUDGES = [name for name in JUDGES if name != PRIMARY_JUDGE]


def judge_of(wildcards):
    return JUDGES[getattr(wildcards, "judge", PRIMARY_JUDGE)]


def get_judge_rubrics(wildcards):
    spec = judge_of(wildcards)
    return [grid.judge_rubric(spec, wildcards.dataset)] if grid.judged_by_llm(spec, wildcards.dataset) else []


def get_judge_model(wildcards):
    # a judge that is a `models:` key runs from its converted checkpoint
    spec = judge_of(wildcards)
    key = grid.judge_model_key(spec)
    return [f"resources/models/{key}"] if key and grid.judged_by_llm(spec, wildcards.dataset) else []


def get_judge_local_model(wildcards):
    # how a local judge runs: its engine (transformers or vllm), dtype and vllm settings; None for an endpoint
    key = grid.judge_model_key(judge_of(wildcards))
    return {k: config["models"][key][k] for k in ("engine", "dtype", "vllm")} if key else None


def get_other_judged(wildcards):
    # each other judge's cells, in the primary's cell order (the analysis stage's)
    return [
        path
        for judge in OTHER_JUDGES
        for path in cell_paths(
            f"results/judged_by/{judge}/{{model}}/{{persona}}/{{checkpoint}}/{{dataset}}.parquet", EVAL_CELLS
        )
    ]


def get_judge_comparison_output():
    return list(rules.judge_comparison.output) if OTHER_JUDGES else []


def get_annotations(wildcards):
    # human verdicts for the annotation sample, once someone has filled it in (judge.annotations)
    path = config["judge"].get("annotations")
    return [path] if path else []


def get_warmth_scorer(wildcards):
    # a `models` key (its converted checkpoint), a local directory (read as is), or a hub id (downloaded)
    scorer = config["warmth"]["scorer"]
    if scorer in config["models"]:
        return [f"resources/models/{scorer}"]
    return [] if Path(scorer).is_dir() else ["resources/scorer"]


def get_detoxify_dir(wildcards):
    # Detoxify's files when it filters: a local directory (read as is) or resources/detoxify (download_detoxify)
    sft = config["sft_data"]
    if sft["nsfw_filter"] != "detoxify":
        return []
    return [sft["detoxify_dir"] or "resources/detoxify"]


def get_fidelity_backend_model(wildcards):
    # the rewrite-fidelity judge's converted checkpoint, when it runs locally (rewrite_fidelity.backend)
    key = grid.fidelity_model_key(config)
    return [f"resources/models/{key}"] if key else []


def get_fidelity_local_model():
    # how a local fidelity judge runs (engine, dtype, vllm), as a local LLM judge does; None for an endpoint
    key = grid.fidelity_model_key(config)
    return {k: config["models"][key][k] for k in ("engine", "dtype", "vllm")} if key else None
