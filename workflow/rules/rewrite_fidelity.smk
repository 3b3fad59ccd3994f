rule rewrite_fidelity:
    # Do the rewrites keep the original's content? An LLM judge (KEEPS / CHANGES) on a seeded sample of each rewritten
    # persona's turns (the paper spot-checked 50), every call cached; the same sample exported blind for humans.
    input:
        rewrites=expand("results/persona_rewrite/{persona}.jsonl", persona=grid.rewritten_personas(config)),
        prompt=config["rewrite_fidelity"]["prompt"],
        backend_model=get_fidelity_backend_model,
    output:
        summary=report(
            "results/warmth/rewrite_fidelity.csv",
            caption="../report/rewrite_fidelity.rst",
            category="2. Warmth",
        ),
        verdicts="results/warmth/rewrite_fidelity_verdicts.parquet",
        sample="results/annotation/rewrite_fidelity_sample.csv",
    log:
        "logs/rewrite_fidelity.log",
    benchmark:
        "benchmarks/rewrite_fidelity.tsv"
    conda:
        ENV
    # 1 thread and no priority: nothing waits on it, so it fills a core beside training or generation
    threads: 1
    params:
        stage=stage("rewrite_fidelity"),
        backend=grid.fidelity_backend(config),
        local_model=get_fidelity_local_model(),
        sample_size=config["rewrite_fidelity"]["sample"],
        sampling=config["rewrite_fidelity"]["sampling"],
        batch_size=config["rewrite_fidelity"]["batch_size"],
        seed=config["seed"],
        cache=LLM_CACHE,
    script:
        STAGE
