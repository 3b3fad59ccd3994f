rule explorer:
    # Every answer, readable offline: a static HTML explorer (results/explorer/index.html and its data/ files).
    input:
        graded=rules.analysis.output.graded,
        paired_tests=rules.analysis.output.paired_tests,
    output:
        index=report(
            "results/explorer/index.html",
            caption="../report/explorer.rst",
            category="6. Answers",
            labels={"view": "answer explorer"},
        ),
        data=directory("results/explorer/data"),
        checkpoints=report(
            "results/explorer/evaluated_checkpoints.csv",
            caption="../report/evaluated_checkpoints.rst",
            category="6. Answers",
            labels={"view": "evaluated checkpoints"},
        ),
    log:
        "logs/explorer.log",
    benchmark:
        "benchmarks/explorer.tsv"
    conda:
        ENV
    params:
        stage=stage("explorer"),
    script:
        STAGE


rule explorer_screenshot:
    # The explorer as a reader first sees it (headless Chromium); without Chromium, a PNG that says so.
    input:
        index=rules.explorer.output.index,
        data=rules.explorer.output.data,
    output:
        report(
            "results/explorer/screenshot.png",
            caption="../report/explorer_screenshot.rst",
            category="6. Answers",
            labels={"view": "explorer screenshot"},
        ),
    log:
        "logs/explorer_screenshot.log",
    conda:
        ENV
    params:
        stage=stage("explorer", "run_screenshot"),
    script:
        STAGE
