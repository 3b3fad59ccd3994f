rule replicates:
    # train.seeds: each persona's runs together, per seed and pooled (seed as a stratum), and their spread
    input:
        graded=rules.analysis.output.graded,
    output:
        table=report(
            "results/analysis/replicates.csv",
            caption="../report/replicates.rst",
            category="3. Accuracy",
            subcategory="Replicates",
        ),
        regressions=report(
            "results/analysis/replicate_regressions.csv",
            caption="../report/replicate_regressions.rst",
            category="3. Accuracy",
            subcategory="Replicates",
        ),
        figure=report(
            "results/analysis/seed_spread.png",
            caption="../report/seed_spread.rst",
            category="3. Accuracy",
            subcategory="Replicates",
        ),
    log:
        "logs/replicates.log",
    benchmark:
        "benchmarks/replicates.tsv"
    conda:
        ENV
    params:
        stage=stage("replicates"),
        groups={p: {str(s): run for s, run in runs.items()} for p, runs in grid.replicate_groups(config).items()},
    script:
        STAGE
