# A warmth direction per open model (optional section warmth_direction; absent: no job): the base model reads the
# warm and the cold rewrites of the same training conversations, and the mean difference of its residual stream over
# the response tokens, per decoder layer, is saved with its provenance and a held-out check.
from warmbench.stages import warmth_direction as _warmth_direction

try:
    # the models it runs for; a model behind an API or a persona without rewrites is refused here, naming the key
    WARMTH_DIRECTION_MODELS = _warmth_direction.direction_models(config)
except UserInputError as err:
    raise WorkflowError(f"Invalid config:\n{err}")
_WARMTH_DIRECTION = config.get(_warmth_direction.SECTION) or {}
# warmth_direction.personas: [positive, negative], each persona's rewrites
WARMTH_DIRECTION_REWRITES = [f"results/persona_rewrite/{p}.jsonl" for p in _WARMTH_DIRECTION.get("personas", [])]
# the final outputs (common.smk's get_final_output): none unless configured
WARMTH_DIRECTION_OUTPUT = expand(
    "results/warmth_direction/{model}.{ext}",
    model=WARMTH_DIRECTION_MODELS,
    ext=["pt", "json", "csv"],
)


rule warmth_direction:
    input:
        positive=lambda wc: WARMTH_DIRECTION_REWRITES[0],
        negative=lambda wc: WARMTH_DIRECTION_REWRITES[1],
        base_model="resources/models/{model}",
    output:
        direction="results/warmth_direction/{model}.pt",
        provenance="results/warmth_direction/{model}.json",
        layers="results/warmth_direction/{model}.csv",
    log:
        "logs/warmth_direction/{model}.log",
    benchmark:
        "benchmarks/warmth_direction/{model}.tsv"
    wildcard_constraints:
        model=grid.one_of(WARMTH_DIRECTION_MODELS),  # none (matches nothing) unless configured
    conda:
        ENV
    threads: 1
    resources:
        # forward passes only: sized as the model's generation jobs (models.<name>.resources.generate)
        gpu=lambda wc: job_resources(config, wc.model, "generate")["gpus"],
        mem_mb=lambda wc, attempt: job_resources(config, wc.model, "generate")["mem_mb"] * attempt,
    params:
        stage=stage("warmth_direction"),
        # its own settings (not which models: adding one reruns no other model's direction)
        settings={k: v for k, v in _WARMTH_DIRECTION.items() if k != "models"},
        dtype=lambda wc: config["models"][wc.model]["dtype"],
        seed=config["seed"],
    script:
        STAGE
