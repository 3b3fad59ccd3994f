# One job per (model, dataset): the base weights are loaded once (one engine) and serve every variant that the
# dataset needs, the trained personas' checkpoints as LoRA adapters beside them, writing one table per variant.
# Evaluation datasets need the original model, each system-prompt persona and each trained persona's evaluated
# checkpoint; the validation prompts (warmth) need every checkpoint. Rows already in the generation cache are not
# generated again, and a job whose rows are all cached loads no model. Rules come from grid.generation_rules: local
# models share `generate` and `generate_validation`, models behind an API `generate_api` and
# `generate_api_validation` (no GPU, so profiles send them to a CPU partition).
for _rule in grid.generation_rules(config):

    rule:
        name:
            _rule.name
        input:
            prompts=get_prompts,
            base_model=get_base_model,
            adapters=trained_dirs(_rule.variants),
            selections=selection_files(_rule.variants),
            system_prompt=system_prompt_files(_rule.variants),
        output:
            variant_paths("results/generations/{{model}}/{persona}/{checkpoint}/{{dataset}}.parquet", _rule.variants),
        log:
            "logs/generate/{model}/{dataset}.log",
        benchmark:
            "benchmarks/generate/{model}/{dataset}.tsv"
        wildcard_constraints:
            model=grid.one_of(_rule.models),
            dataset=grid.one_of(_rule.datasets),
        # the validation answers feed warmth and the checkpoint choice, on which evaluations may wait: first;
        # then the datasets by their estimated work, longest first
        # (by its datasets, not its name: a further group's rule is named generate_validation__<model>)
        priority: 1 if _rule.datasets == (VALIDATION_DATASET,) else lambda wc: GENERATION_PRIORITY[wc.dataset]
        conda:
            ENV
        # 1 thread: two CPU jobs run side by side (start-up, imports and loading, is single-threaded)
        threads: 1
        resources:
            # sized per model in config (models.<name>.resources); an API model needs no GPU and little memory
            gpu=lambda wc: job_resources(config, wc.model, "generate")["gpus"],
            mem_mb=lambda wc, attempt: (
                validation.schema_defaults("api_model_job")["mem_mb"]
                if is_api_model(config["models"][wc.model])
                else job_resources(config, wc.model, "generate")["mem_mb"]
            )
            * attempt,
        params:
            stage=stage("generate"),
            model=lambda wc: config["models"][wc.model],
            variants=[list(variant) for variant in _rule.variants],
            sampling=get_sampling,
            batch_size=config["evaluation"]["batch_size"],
            seed=config["seed"],
            # API models' calls go to the LLM call cache (paid calls, kept with the judge's); local models' rows to
            # a cache of their own, so judge jobs never read through generations
            cache=LLM_CACHE if _rule.api else GENERATION_CACHE,
        script:
            STAGE
