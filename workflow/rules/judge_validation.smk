rule judge_validation:
    # Can the verdicts be trusted? Judge vs reference judge vs human annotators (kappa, confusion), refusal
    # regexes vs the LLM judge, and the blind, stratified sample to annotate (results/annotation/sample.csv).
    input:
        graded=rules.analysis.output.graded,
        annotations=get_annotations,
    output:
        sample="results/annotation/sample.csv",
        agreement=report(
            "results/analysis/judge_agreement.csv",
            caption="../report/judge_agreement.rst",
            category="5. Judge validation",
        ),
        confusion=report(
            "results/analysis/judge_confusion.csv",
            caption="../report/judge_confusion.rst",
            category="5. Judge validation",
        ),
        refusals=report(
            "results/analysis/refusal_disagreements.csv",
            caption="../report/refusal_disagreements.rst",
            category="5. Judge validation",
        ),
    log:
        "logs/judge_validation.log",
    benchmark:
        "benchmarks/judge_validation.tsv"
    conda:
        ENV
    params:
        stage=stage("judge_validation"),
        sample_size=config["judge"]["annotation_sample"],
        seed=config["seed"],
    script:
        STAGE
