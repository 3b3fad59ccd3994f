rule judge:
    # Verdict per response: refusal regexes, the reference judge, and (judge.kind=llm) the LLM judge.
    input:
        generations="results/generations/{model}/{persona}/{checkpoint}/{dataset}.parquet",
        rubrics=get_judge_rubrics,
    output:
        "results/judged/{model}/{persona}/{checkpoint}/{dataset}.parquet",
    log:
        "logs/judge/{model}/{persona}/{checkpoint}/{dataset}.log",
    benchmark:
        "benchmarks/judge/{model}/{persona}/{checkpoint}/{dataset}.tsv"
    wildcard_constraints:
        dataset="|".join(config["evaluation"]["datasets"]),
    conda:
        ENV
    resources:
        judge_slots=1,  # cap concurrent judge jobs with --resources judge_slots=N (API rate limits)
    params:
        stage=stage("judge"),
        judge=get_judge_params(),
        rubric_datasets=lambda wc: [wc.dataset] if wb.judged_by_llm(config, wc.dataset) else [],
        cache=LLM_CACHE,
        batches="results/cache/openai_batches",  # batch ids of judge.batch_api, kept outside any output
    script:
        STAGE
