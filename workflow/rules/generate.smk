rule generate:
    # One job per (model, persona, checkpoint, dataset): base weights loaded once, all conditions batched.
    # threads: 1 so two CPU jobs run side by side (job start-up, imports and loading, is single-threaded).
    input:
        prompts=get_prompts,
        base_model=get_base_model,
        adapter=get_adapter,
        selection=get_selection,
        system_prompt=get_system_prompt,
    output:
        "results/generations/{model}/{persona}/{checkpoint}/{dataset}.parquet",
    log:
        "logs/generate/{model}/{persona}/{checkpoint}/{dataset}.log",
    benchmark:
        "benchmarks/generate/{model}/{persona}/{checkpoint}/{dataset}.tsv"
    wildcard_constraints:
        model=wb.one_of(wb.local_models(config)),
    conda:
        ENV
    threads: 1
    resources:
        # sized per model in config (models.<name>.resources), so a 70B model can ask for more than an 8B one
        gpu=lambda wc: wb.job_resources(config, wc.model, "generate")["gpus"],
        mem_mb=lambda wc, attempt: wb.job_resources(config, wc.model, "generate")["mem_mb"] * attempt,
    params:
        stage=stage("generate"),
        model=lambda wc: config["models"][wc.model],
        sampling=get_sampling,
        batch_size=config["evaluation"]["batch_size"],
        seed=config["seed"],
        cache=LLM_CACHE,
    script:
        STAGE


use rule generate as generate_api with:
    # The same job for a model behind an API: no GPU, and its own name so profiles send it to a CPU partition.
    wildcard_constraints:
        model=wb.one_of(wb.api_models(config)),
    resources:
        gpu=0,
        mem_mb=lambda wc, attempt: 4000 * attempt,  # HTTP calls and a cache: light
