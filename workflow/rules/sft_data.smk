rule sft_data:
    # ShareGPT -> NSFW filter -> query-type labels -> balanced sample -> train/validation split.
    input:
        detoxify=get_detoxify_dir,
    output:
        train="results/sft_data/train.jsonl",
        validation="results/sft_data/validation.jsonl",
        validation_prompts="results/prompts/validation.parquet",
        summary=report(
            "results/sft_data/summary.csv",
            caption="../report/sft_data.rst",
            category="1. Fine-tuning data",
        ),
    log:
        "logs/sft_data.log",
    benchmark:
        "benchmarks/sft_data.tsv"
    conda:
        ENV
    params:
        stage=stage("sft_data"),
        sft=config["sft_data"],
        seed=config["seed"],
    script:
        STAGE
