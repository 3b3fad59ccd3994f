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
    params:
        model=lambda wc: config["models"][wc.model],
        sampling=get_sampling,
        batch_size=config["evaluation"]["batch_size"],
        seed=config["seed"],
        cache="results/cache/llm_calls.sqlite",
    log:
        "logs/generate/{model}/{persona}/{checkpoint}/{dataset}.log",
    benchmark:
        "benchmarks/generate/{model}/{persona}/{checkpoint}/{dataset}.tsv"
    threads: 1
    script:
        STAGE
