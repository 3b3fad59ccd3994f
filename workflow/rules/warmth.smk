# SocioT warmth (per-text log-likelihoods, bootstrap SE) of every checkpoint's validation responses: one job per
# model, loading the scorer once (rules from grid.warmth_rules: `warmth` for local models, `warmth_api` for models
# behind an API, whose checkpoints differ).
for _rule in grid.warmth_rules(config):

    rule:
        name:
            _rule.name
        input:
            generations=variant_paths(
                "results/generations/{{model}}/{persona}/{checkpoint}/validation.parquet", _rule.variants
            ),
            scorer=get_warmth_scorer,
        output:
            scores=variant_paths("results/warmth/{{model}}/{persona}/{checkpoint}.parquet", _rule.variants),
            summaries=variant_paths("results/warmth/{{model}}/{persona}/{checkpoint}.json", _rule.variants),
        log:
            "logs/warmth/{model}.log",
        benchmark:
            "benchmarks/warmth/{model}.tsv"
        wildcard_constraints:
            model=grid.one_of(_rule.models),
        priority: 1  # the checkpoint choice (plateau rule) and so the evaluations wait on it
        conda:
            ENV
        threads: 1
        params:
            stage=stage("warmth"),
            warmth={k: v for k, v in config["warmth"].items() if k != "sampling"},
            seed=config["seed"],
            cache=WARMTH_CACHE,  # each text's log-likelihoods, so a rerun scores only new texts
        script:
            STAGE


rule select_checkpoint:
    # With the plateau rule (evaluation.checkpoint_selection), pick the evaluated checkpoint from warmth.
    input:
        summaries=lambda wc: [
            f"results/warmth/{wc.model}/{wc.persona}/{epoch_label(e)}.json"
            for e in grid.checkpoint_epochs(config, wc.model)
        ],
        original="results/warmth/{model}/original/base.json",
    output:
        "results/warmth/{model}/{persona}/chosen_checkpoint.json",
    log:
        "logs/select_checkpoint/{model}/{persona}.log",
    wildcard_constraints:
        persona=grid.one_of(grid.rewrite_personas(config)),
    conda:
        ENV
    params:
        stage=stage("warmth", "run_select_checkpoint"),
        selection=config["evaluation"]["checkpoint_selection"],
        direction=lambda wc: config["personas"][wc.persona]["direction"],
    script:
        STAGE


rule warmth_validation:
    # Does the metric see the rewrites move the intended way (personas.<name>.direction: warm up, cold down) on the
    # SFT data?
    input:
        rewrites=expand("results/persona_rewrite/{persona}.jsonl", persona=grid.rewritten_personas(config)),
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
    # 1 thread and no priority: nothing waits on it, so it fills a core beside generation or warmth
    threads: 1
    params:
        stage=stage("warmth", "run_validation"),
        warmth={k: v for k, v in config["warmth"].items() if k != "sampling"},
        directions={p: config["personas"][p]["direction"] for p in grid.rewritten_personas(config)},
        cache=WARMTH_CACHE,
    script:
        STAGE
