rule cost:
    # The ledger of the run, last: API tokens and cost per stage and model (the LLM call cache, whose records name
    # their rule and usage; the API fine-tunes' manifests) and job hours per rule (the benchmark files).
    input:
        get_final_output(),
        trained=get_trained_dirs(),  # their manifests: what each API fine-tune trained
    output:
        api=report("results/cost/api_calls.csv", caption="../report/cost_api_calls.rst", category="7. Cost"),
        jobs=report("results/cost/job_hours.csv", caption="../report/cost_job_hours.rst", category="7. Cost"),
    log:
        "logs/cost.log",
    conda:
        ENV
    params:
        stage=stage("cost"),
        cache=LLM_CACHE,
        benchmarks="benchmarks",
        prices=price_table(config),
        models=config["models"],
    script:
        STAGE
