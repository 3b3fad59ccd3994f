# warmbench: does persona training (warmth) cost accuracy?
# Table of contents; each stage lives in workflow/rules/<stage>.smk + workflow/warmbench/stages/<stage>.py
# + tests/test_<stage>.py.
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless a config is given: `--configfile` would otherwise be merged into it key by
# key, and a study config could never drop the default model.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/base_model.smk"
include: "workflow/rules/sft_data.smk"
include: "workflow/rules/persona_rewrite.smk"
include: "workflow/rules/rewrite_fidelity.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/eval_prompts.smk"
include: "workflow/rules/generate.smk"
include: "workflow/rules/judge.smk"
include: "workflow/rules/warmth.smk"
include: "workflow/rules/warmth_direction.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/trajectory.smk"
include: "workflow/rules/replicates.smk"
include: "workflow/rules/judge_validation.smk"
include: "workflow/rules/judge_comparison.smk"
include: "workflow/rules/explorer.smk"
include: "workflow/rules/cost.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
        rules.cost.output,
