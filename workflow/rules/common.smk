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
    return [*rules.analysis.output, rules.warmth_validation.output.summary]


def get_base_model(wildcards):
    return f"resources/models/{wildcards.model}"


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


def get_sampling(wildcards):
    section = "warmth" if wildcards.dataset == wb.VALIDATION_DATASET else "evaluation"
    return config[section]["sampling"]


def get_judge_rubrics(wildcards):
    if config["judge"]["kind"] != "llm":
        return []
    return [config["judge"]["rubrics"].get(wildcards.dataset, f"config/prompts/judge_{wildcards.dataset}.txt")]


def get_warmth_scorer(wildcards):
    scorer = config["warmth"]["scorer"]
    return [f"resources/models/{scorer}"] if scorer in config["models"] else []
