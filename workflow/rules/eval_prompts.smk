rule eval_prompts:
    # Items of one task expanded into the 18 conditions (9 contexts x user belief absent/present).
    input:
        amendments=config["evaluation"]["amendments"],
    output:
        "results/prompts/{dataset}.parquet",
    params:
        items_per_dataset=config["evaluation"]["items_per_dataset"],
        seed=config["seed"],
    wildcard_constraints:
        dataset="|".join(config["evaluation"]["datasets"]),
    log:
        "logs/eval_prompts/{dataset}.log",
    script:
        STAGE
