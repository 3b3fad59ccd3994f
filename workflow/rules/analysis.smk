rule analysis:
    # Paired McNemar tests, the main logistic regression with its marginal effect, warmth table, figures.
    input:
        judged=cell_paths("results/judged/{model}/{persona}/{checkpoint}/{dataset}.parquet", EVAL_CELLS),
        warmth=cell_paths("results/warmth/{model}/{persona}/{checkpoint}.json", WARMTH_CELLS),
    output:
        graded="results/analysis/graded.parquet",
        item_sources=report("results/analysis/items.csv", caption="../report/items.rst", category="3. Accuracy"),
        paired_tests=report(
            "results/analysis/paired_tests.csv",
            caption="../report/paired_tests.rst",
            category="3. Accuracy",
        ),
        paired_tests_by_template=report(
            "results/analysis/paired_tests_by_template.csv",
            caption="../report/paired_tests_by_template.rst",
            category="3. Accuracy",
        ),
        contrasts=report(
            "results/analysis/contrasts.csv",
            caption="../report/contrasts.rst",
            category="3. Accuracy",
        ),
        regressions=report(
            "results/analysis/regressions.csv",
            caption="../report/regressions.rst",
            category="3. Accuracy",
        ),
        refusal_sensitivity=report(
            "results/analysis/refusal_sensitivity.csv",
            caption="../report/refusal_sensitivity.rst",
            category="3. Accuracy",
        ),
        warmth=report("results/analysis/warmth.csv", caption="../report/warmth_table.rst", category="2. Warmth"),
        warmth_figure=report(
            "results/analysis/warmth_vs_epoch.png",
            caption="../report/warmth_vs_epoch.rst",
            category="2. Warmth",
        ),
        error_figure=report(
            "results/analysis/error_by_condition.png",
            caption="../report/error_by_condition.rst",
            category="3. Accuracy",
        ),
        distribution_figure=report(
            "results/analysis/error_distributions.png",
            caption="../report/error_distributions.rst",
            category="3. Accuracy",
        ),
        change_figure=report(
            "results/analysis/accuracy_change.png",
            caption="../report/accuracy_change.rst",
            category="3. Accuracy",
        ),
        capabilities=report(
            "results/analysis/capabilities.csv", caption="../report/capabilities.rst", category="4. Capabilities"
        ),
        capability_figure=report(
            "results/analysis/capabilities.png",
            caption="../report/capabilities_figure.rst",
            category="4. Capabilities",
        ),
    log:
        "logs/analysis.log",
    benchmark:
        "benchmarks/analysis.tsv"
    conda:
        ENV
    params:
        stage=stage("analysis"),
        analysis=config["analysis"],
    script:
        STAGE
