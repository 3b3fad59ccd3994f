rule judge:
    # Verdict per response: refusal regexes first, then the configured judge (reference: offline matching).
    input:
        "results/generations/{model}/{persona}/{checkpoint}/{dataset}.parquet",
    output:
        "results/judged/{model}/{persona}/{checkpoint}/{dataset}.parquet",
    params:
        judge=config["judge"],
    wildcard_constraints:
        dataset="|".join(config["evaluation"]["datasets"]),
    log:
        "logs/judge/{model}/{persona}/{checkpoint}/{dataset}.log",
    script:
        STAGE
