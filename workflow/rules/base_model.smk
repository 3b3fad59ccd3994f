rule base_model:
    # One plain HF checkpoint per model under resources/, loaded by every later job.
    output:
        directory("resources/models/{model}"),
    params:
        stage=stage("base_model"),
        source=lambda wc: config["models"][wc.model]["source"],
    log:
        "logs/base_model/{model}.log",
    benchmark:
        "benchmarks/base_model/{model}.tsv"
    threads: 2
    conda:
        ENV
    script:
        STAGE
