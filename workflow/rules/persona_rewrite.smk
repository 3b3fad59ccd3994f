rule persona_rewrite:
    # Every assistant turn of the training split rewritten in a persona's style (personas.<name>.rewrite: warm,
    # cold, ...); LLM calls cached by content hash, so two personas with one rewrite prompt pay for it once.
    input:
        train=rules.sft_data.output.train,
        prompt=lambda wc: config["personas"][wc.persona]["rewrite"],
        backend_model=get_rewrite_backend_model,
    output:
        "results/persona_rewrite/{persona}.jsonl",
    log:
        "logs/persona_rewrite/{persona}.log",
    benchmark:
        "benchmarks/persona_rewrite/{persona}.tsv"
    wildcard_constraints:
        persona=grid.one_of(grid.rewritten_personas(config)),
    conda:
        ENV
    # 1 thread: the rewrites run side by side on a 2-core machine (start-up and loading are single-threaded)
    threads: 1
    params:
        stage=stage("persona_rewrite"),
        backend=config["persona_rewrite"]["backend"],
        model_dtype=get_rewrite_model_dtype(),
        sampling=config["persona_rewrite"]["sampling"],
        batch_size=config["persona_rewrite"]["batch_size"],
        max_empty_share=config["persona_rewrite"]["max_empty_share"],
        cache=LLM_CACHE,
    script:
        STAGE
