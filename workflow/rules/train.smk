rule train:
    # LoRA SFT (TRL + PEFT) on the rewritten conversations; one adapter per configured epoch. Every persona's
    # rewrites are read so that warm and cold examples share their windows (fitted to train.max_length).
    input:
        data="results/persona_rewrite/{persona}.jsonl",
        personas=expand("results/persona_rewrite/{p}.jsonl", p=config["persona_rewrite"]["personas"]),
        base_model=get_base_model,
    output:
        directory("results/train/{model}/{persona}"),
    log:
        "logs/train/{model}/{persona}.log",
    benchmark:
        "benchmarks/train/{model}/{persona}.tsv"
    wildcard_constraints:
        model=wb.one_of(wb.local_models(config)),
        persona="warm|cold",
    conda:
        ENV
    threads: 2
    resources:
        # sized per model in config (models.<name>.resources), so a 70B model can ask for more than an 8B one
        gpu=lambda wc: wb.job_resources(config, wc.model, "train")["gpus"],
        mem_mb=lambda wc, attempt: wb.job_resources(config, wc.model, "train")["mem_mb"] * attempt,
    params:
        stage=stage("train"),
        train=config["train"],
        seed=config["seed"],
        personas=config["persona_rewrite"]["personas"],
    script:
        STAGE


# Fine-tuning an API model (GPT-4o) is a wait on OpenAI's servers, not compute: it runs on the submit host,
# which has the internet, and polls. Its job ids are saved outside the output, so a rerun never pays twice.
localrules:
    train_openai,


rule train_openai:
    # The OpenAI fine-tuning API on the rewritten conversations; the jobs' checkpoints at the configured epochs.
    input:
        data="results/persona_rewrite/{persona}.jsonl",
    output:
        directory("results/train/{model}/{persona}"),
    log:
        "logs/train_openai/{model}/{persona}.log",
    benchmark:
        "benchmarks/train_openai/{model}/{persona}.tsv"
    wildcard_constraints:
        model=wb.one_of(wb.api_models(config, fine_tuned=True)),
        persona="warm|cold",
    conda:
        ENV
    params:
        stage=stage("train_openai"),
        model=lambda wc: config["models"][wc.model],
        fine_tune=lambda wc: config["models"][wc.model]["fine_tune"],
        seed=config["seed"],
        state="results/cache/openai_fine_tuning/{model}/{persona}.json",
    script:
        STAGE


rule training_summary:
    # Per trained model x persona: the conversations, examples and assistant tokens each epoch trains on.
    input:
        trained=get_trained_dirs(),
    output:
        report(
            "results/train/summary.csv",
            caption="../report/training_summary.rst",
            category="1. Fine-tuning data",
        ),
    log:
        "logs/training_summary.log",
    conda:
        ENV
    params:
        stage=stage("train", "run_summary"),
    script:
        STAGE
