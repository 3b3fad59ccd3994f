rule warmth:
    # SocioT warmth of one checkpoint's validation responses (per-text log-likelihoods, bootstrap SE).
    input:
        generations="results/generations/{model}/{persona}/{checkpoint}/validation.parquet",
        scorer=get_warmth_scorer,
    output:
        scores="results/warmth/{model}/{persona}/{checkpoint}.parquet",
        summary="results/warmth/{model}/{persona}/{checkpoint}.json",
    params:
        warmth={k: v for k, v in config["warmth"].items() if k != "sampling"},
        seed=config["seed"],
    log:
        "logs/warmth/{model}/{persona}/{checkpoint}.log",
    benchmark:
        "benchmarks/warmth/{model}/{persona}/{checkpoint}.tsv"
    threads: 1
    script:
        STAGE
