# Everything that is not a rule: config validation, the job grid, input functions, wildcard constraints.
# Kept cheap: every SLURM job re-parses this file, so nothing heavy (torch, pandas) is imported here.
from pathlib import Path

from snakemake.utils import validate

from warmbench import config as wb


validate(config, schema="../schemas/config.schema.yaml")
_canonical = wb.canonical(config)  # sorted keys: reordering a YAML file must not rerun jobs
config.clear()
config.update(_canonical)
try:
    wb.check(config, root=Path.cwd())  # paths in config are relative to the working directory
except wb.ConfigError as err:
    raise WorkflowError(f"Invalid config: {err}")

STAGE = "../scripts/run_stage.py"  # relative to each rule file
EVAL_CELLS = wb.eval_cells(config)
WARMTH_CELLS = wb.warmth_cells(config)


wildcard_constraints:
    model="|".join(config["models"]),
    persona="original|warm_prompt|warm|cold",
    checkpoint=r"base|selected|epoch\d+(\.\d+)?",
    dataset="|".join(config["evaluation"]["datasets"] + [wb.VALIDATION_DATASET]),


def cell_paths(pattern, cells):
    return [pattern.format(**vars(cell)) for cell in cells]


def get_final_output():
    return [*rules.analysis.output, *rules.judge_validation.output, rules.warmth_validation.output.summary]


def get_base_model(wildcards):
    # a model behind an API has no local weights
    if wb.is_api_model(config["models"][wildcards.model]):
        return []
    return [f"resources/models/{wildcards.model}"]


def get_rewrite_backend_model(wildcards):
    return [f"resources/models/{key}" for key in wb.backend_model_keys(config)]


# Optional inputs are lists (empty when absent), so rules can always index them as input.<name>[0].
def get_rewrite_model_dtype():
    keys = wb.backend_model_keys(config)
    return config["models"][keys[0]]["dtype"] if keys else "auto"


def get_adapter(wildcards):
    # Trained personas read their LoRA checkpoints; the original model and the warm system prompt read none.
    if wildcards.persona in wb.PERSONAS_TRAINED:
        return [f"results/train/{wildcards.model}/{wildcards.persona}"]
    return []


def get_selection(wildcards):
    # `selected`: the plateau rule's choice, made by select_checkpoint from the warmth trajectory.
    if wildcards.checkpoint == wb.SELECTED_CHECKPOINT:
        return [f"results/warmth/{wildcards.model}/{wildcards.persona}/chosen_checkpoint.json"]
    return []


def get_system_prompt(wildcards):
    if wildcards.persona == "warm_prompt":
        return [config["evaluation"]["warm_system_prompt"]]
    return []


def get_prompts(wildcards):
    if wildcards.dataset == wb.VALIDATION_DATASET:
        return rules.sft_data.output.validation_prompts
    return f"results/prompts/{wildcards.dataset}.parquet"


def get_dataset_records(wildcards):
    # the real dataset as download_dataset saved it, or warmbench's smoke set
    if config["data"]["source"] == "hub":
        return rules.download_dataset.output.records
    return str(wb.SMOKE_DIR / f"{wildcards.dataset}.jsonl")


def _writes_wrong_answers(wildcards):
    return config["data"]["source"] == "hub" and wildcards.dataset == "triviaqa"


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
    if wildcards.dataset == wb.VALIDATION_DATASET:
        return config["warmth"]["sampling"]
    # per-dataset overrides (the paper: temperature 0.2 for MMLU and GSM8K)
    return {**config["evaluation"]["sampling"], **config["evaluation"]["dataset_sampling"].get(wildcards.dataset, {})}


def get_judge_params():
    # the keys a judge job uses: annotation settings (judge_validation's) must not rerun every judge
    keys = ("kind", "backend", "sampling", "parse_retries", "structured_outputs", "batch_api", "batch_poll_s")
    return {k: v for k, v in config["judge"].items() if k in keys}


def get_judge_rubrics(wildcards):
    if not wb.judged_by_llm(config, wildcards.dataset):
        return []
    return [config["judge"]["rubrics"].get(wildcards.dataset, f"config/prompts/judge_{wildcards.dataset}.txt")]


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
