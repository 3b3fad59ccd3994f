rule warmth:
    # SocioT warmth of one checkpoint's validation responses (per-text log-likelihoods, bootstrap SE).
    input:
        generations="results/generations/{model}/{persona}/{checkpoint}/validation.parquet",
        scorer=get_warmth_scorer,
    output:
        scores="results/warmth/{model}/{persona}/{checkpoint}.parquet",
        summary="results/warmth/{model}/{persona}/{checkpoint}.json",
    log:
        "logs/warmth/{model}/{persona}/{checkpoint}.log",
    benchmark:
        "benchmarks/warmth/{model}/{persona}/{checkpoint}.tsv"
    conda:
        ENV
    threads: 1
    params:
        stage=stage("warmth"),
        warmth={k: v for k, v in config["warmth"].items() if k != "sampling"},
        seed=config["seed"],
    script:
        STAGE


rule select_checkpoint:
    # With the plateau rule (evaluation.checkpoint_selection), pick the evaluated checkpoint from warmth.
    input:
        summaries=lambda wc: [
            f"results/warmth/{wc.model}/{wc.persona}/{wb.epoch_label(e)}.json"
            for e in wb.checkpoint_epochs(config, wc.model)
        ],
        original="results/warmth/{model}/original/base.json",
    output:
        "results/warmth/{model}/{persona}/chosen_checkpoint.json",
    log:
        "logs/select_checkpoint/{model}/{persona}.log",
    wildcard_constraints:
        persona="warm|cold",
    conda:
        ENV
    params:
        stage=stage("warmth", "run_select_checkpoint"),
        selection=config["evaluation"]["checkpoint_selection"],
    script:
        STAGE


rule warmth_validation:
    # Does the metric see the rewrites move the intended way (warm up, cold down) on the SFT data?
    input:
        rewrites=expand("results/persona_rewrite/{persona}.jsonl", persona=config["persona_rewrite"]["personas"]),
        scorer=get_warmth_scorer,
    output:
        summary=report(
            "results/warmth/rewrite_validation.csv",
            caption="../report/rewrite_validation.rst",
            category="2. Warmth",
        ),
        scores="results/warmth/rewrite_validation_scores.parquet",
    log:
        "logs/warmth_validation.log",
    benchmark:
        "benchmarks/warmth_validation.tsv"
    conda:
        ENV
    threads: 2
    params:
        stage=stage("warmth", "run_validation"),
        warmth={k: v for k, v in config["warmth"].items() if k != "sampling"},
    script:
        STAGE
