rule eval_prompts:
    # Items of one task expanded into the 18 conditions (9 contexts x user belief absent/present), as the
    # paper's templates: original, original_neutral (no context only), incorrect, correct (28 prompts per item;
    # an item without a correct or incorrect answer gets no template that needs it).
    input:
        amendments=config["evaluation"]["amendments"],
        records=get_dataset_records,
        provenance=get_dataset_provenance,
        wrong_answer_model=get_wrong_answer_model,
        wrong_answer_prompt=get_wrong_answer_prompt,
    output:
        "results/prompts/{dataset}.parquet",
    log:
        "logs/eval_prompts/{dataset}.log",
    benchmark:
        "benchmarks/eval_prompts/{dataset}.tsv"
    wildcard_constraints:
        dataset="|".join(config["evaluation"]["datasets"]),
    conda:
        ENV
    params:
        stage=stage("eval_prompts"),
        items_per_dataset=config["evaluation"]["items_per_dataset"],
        max_question_chars=lambda w: config["evaluation"]["max_question_chars"].get(w.dataset),
        seed=config["seed"],
        wrong_answers=get_wrong_answer_config,
        smoke_records_sha256=get_smoke_records_sha256,
        cache=LLM_CACHE,
    script:
        STAGE
