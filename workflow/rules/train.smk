rule train:
    # LoRA SFT (TRL + PEFT) on the rewritten conversations; one adapter per configured epoch.
    input:
        data="results/persona_rewrite/{persona}.jsonl",
        base_model=get_base_model,
    output:
        directory("results/train/{model}/{persona}"),
    params:
        train=config["train"],
        seed=config["seed"],
    wildcard_constraints:
        persona="warm|cold",
    log:
        "logs/train/{model}/{persona}.log",
    benchmark:
        "benchmarks/train/{model}/{persona}.tsv"
    threads: 2
    script:
        STAGE
