rule base_model:
    # One plain HF checkpoint per model under resources/, loaded by every later job.
    output:
        directory("resources/models/{model}"),
    log:
        "logs/base_model/{model}.log",
    benchmark:
        "benchmarks/base_model/{model}.tsv"
    conda:
        ENV
    threads: 2
    params:
        stage=stage("base_model"),
        source=lambda wc: config["models"][wc.model]["source"],
        store=MODEL_STORE,
    script:
        STAGE
