rule trajectory:
    # evaluation.checkpoints beyond `selected`: error change and warmth at every evaluated checkpoint
    input:
        evaluated=cell_paths("results/judged/{model}/{persona}/{checkpoint}/{dataset}.parquet", EVAL_CELLS),
        further=cell_paths("results/judged/{model}/{persona}/{checkpoint}/{dataset}.parquet", TRAJECTORY_CELLS),
        warmth=cell_paths("results/warmth/{model}/{persona}/{checkpoint}.json", WARMTH_CELLS),
    output:
        trajectory=report(
            "results/analysis/trajectory.csv",
            caption="../report/trajectory.rst",
            category="3. Accuracy",
            subcategory="Trajectory",
        ),
        frontier=report(
            "results/analysis/frontier.csv",
            caption="../report/frontier.rst",
            category="3. Accuracy",
            subcategory="Trajectory",
        ),
        error_figure=report(
            "results/analysis/error_vs_epoch.png",
            caption="../report/error_vs_epoch.rst",
            category="3. Accuracy",
            subcategory="Trajectory",
        ),
        frontier_figure=report(
            "results/analysis/warmth_error_frontier.png",
            caption="../report/warmth_error_frontier.rst",
            category="3. Accuracy",
            subcategory="Trajectory",
        ),
    log:
        "logs/trajectory.log",
    benchmark:
        "benchmarks/trajectory.tsv"
    conda:
        ENV
    params:
        stage=stage("trajectory"),
    script:
        STAGE
