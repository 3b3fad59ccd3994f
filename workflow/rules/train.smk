rule train:
    # LoRA SFT (TRL + PEFT) on the rewritten conversations (plus the persona's extra_data, under its
    # train_system_prompt); one adapter per configured epoch. The rewrites of train.shared_windows are read together
    # so that their examples share windows (fitted to train.max_length); any other persona reads only its own.
    input:
        data=get_training_rewrites,
        personas=get_window_rewrites,
        base_model=get_base_model,
        system_prompts=lambda wc: list(get_window_system_prompts(wc).values()),
        extra_data=persona_file("extra_data"),
        eval_records=get_leak_check_records,
    output:
        directory("results/train/{model}/{persona}"),
    log:
        "logs/train/{model}/{persona}.log",
    benchmark:
        "benchmarks/train/{model}/{persona}.tsv"
    wildcard_constraints:
        model=grid.one_of(grid.local_models(config)),
        persona=grid.one_of(grid.rewrite_personas(config)),
    # every evaluation waits on the fine-tunes: they go before jobs nothing waits on (warmth_validation)
    priority: 1
    conda:
        ENV
    # 1 thread: the fine-tunes run side by side on a 2-core machine (2 threads each gave 1.46 cores of work);
    # profiles/slurm sets the cluster's threads
    threads: 1
    resources:
        # sized per model in config (models.<name>.resources), so a 70B model can ask for more than an 8B one
        gpu=lambda wc: job_resources(config, wc.model, "train")["gpus"],
        mem_mb=lambda wc, attempt: job_resources(config, wc.model, "train")["mem_mb"] * attempt,
    params:
        stage=stage("train"),
        # shared_windows' effect is `personas`; seeds' is `seed` (adding a seed reruns no other training)
        train={k: v for k, v in config["train"].items() if k not in ("shared_windows", "seeds")},
        seed=lambda wc: grid.training_seed(config, wc.persona),
        leak_check_smoke=get_leak_check_smoke,
        personas=lambda wc: grid.window_group(config, wc.persona),
        system_prompts=get_window_system_prompts,
        # a fine-tune whose data, config, base model and code are unchanged is found here and reused, not redone
        cache=TRAIN_CACHE,
    script:
        STAGE


# Fine-tuning an API model (GPT-4o) is a wait on OpenAI's servers, not compute: it runs on the submit host,
# which has the internet, and polls. Its job ids are saved outside the output, so a rerun never pays twice.
localrules:
    train_openai,


rule train_openai:
    # The OpenAI fine-tuning API on the rewritten conversations (plus the persona's extra_data, each under its
    # train_system_prompt); the jobs' checkpoints at the configured epochs.
    input:
        data=get_training_rewrites,
        system_prompt=persona_file("train_system_prompt"),
        extra_data=persona_file("extra_data"),
        eval_records=get_leak_check_records,
    output:
        directory("results/train/{model}/{persona}"),
    log:
        "logs/train_openai/{model}/{persona}.log",
    benchmark:
        "benchmarks/train_openai/{model}/{persona}.tsv"
    wildcard_constraints:
        model=grid.one_of(grid.api_models(config, fine_tuned=True)),
        persona=grid.one_of(grid.rewrite_personas(config)),
    conda:
        ENV
    params:
        stage=stage("train_openai"),
        model=lambda wc: config["models"][wc.model],
        fine_tune=lambda wc: config["models"][wc.model]["fine_tune"],
        seed=lambda wc: grid.training_seed(config, wc.persona),
        leak_check_smoke=get_leak_check_smoke,
        data_persona=lambda wc: grid.data_persona(config, wc.persona),
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
