# Verdict per response: refusal regexes, the reference judge, and (kind llm) the LLM judge. Each judge of
# judge.judges is its own job set: the primary writes results/judged/ (what the analysis reads), every other
# judge results/judged_by/<judge>/, so adding a judge runs only its own jobs, and no generation.
JUDGE_PARAMS = dict(
    judge=lambda wc: grid.judge_params(judge_of(wc)),
    name=lambda wc: getattr(wc, "judge", PRIMARY_JUDGE),
    rubric_datasets=lambda wc: [wc.dataset] if grid.judged_by_llm(judge_of(wc), wc.dataset) else [],
    local_model=get_judge_local_model,
    cache=LLM_CACHE,
    batches="results/cache/openai_batches",  # batch ids of judge.batch_api, kept outside any output
)


rule judge:
    # the primary judge
    input:
        generations="results/generations/{model}/{persona}/{checkpoint}/{dataset}.parquet",
        rubrics=get_judge_rubrics,
        judge_model=get_judge_model,
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
        **JUDGE_PARAMS,
        stage=stage("judge"),
    script:
        STAGE


rule judge_other:
    # every other judge of judge.judges, for the comparison of judges (judge_comparison)
    input:
        generations="results/generations/{model}/{persona}/{checkpoint}/{dataset}.parquet",
        rubrics=get_judge_rubrics,
        judge_model=get_judge_model,
    output:
        "results/judged_by/{judge}/{model}/{persona}/{checkpoint}/{dataset}.parquet",
    log:
        "logs/judge_by/{judge}/{model}/{persona}/{checkpoint}/{dataset}.log",
    benchmark:
        "benchmarks/judge_by/{judge}/{model}/{persona}/{checkpoint}/{dataset}.tsv"
    wildcard_constraints:
        dataset="|".join(config["evaluation"]["datasets"]),
        judge=grid.one_of(OTHER_JUDGES),
    conda:
        ENV
    resources:
        judge_slots=1,
    params:
        **JUDGE_PARAMS,
        stage=stage("judge"),
    script:
        STAGE
