# Do the conclusions survive a change of judge? Only with several judges (judge.judges): agreement per dataset
# and judge pair (kappa with its interval, prevalence), against humans where annotated; paired tests and
# marginal effects per judge side by side; each effect's difference between judges (paired on the same answers)
# and the flips called on it; effect per judge.
rule judge_comparison:
    input:
        graded=rules.analysis.output.graded,
        paired_tests=rules.analysis.output.paired_tests,
        regressions=rules.analysis.output.regressions,
        others=get_other_judged,
        annotations=get_annotations,
    output:
        agreement=report(
            "results/analysis/judges/agreement.csv",
            caption="../report/judges_agreement.rst",
            category="5. Judge validation",
        ),
        paired_tests=report(
            "results/analysis/judges/paired_tests.csv",
            caption="../report/judges_paired_tests.rst",
            category="5. Judge validation",
        ),
        ames=report(
            "results/analysis/judges/ames.csv", caption="../report/judges_ames.rst", category="5. Judge validation"
        ),
        flips=report(
            "results/analysis/judges/flips.csv", caption="../report/judges_flips.rst", category="5. Judge validation"
        ),
        differences=report(
            "results/analysis/judges/differences.csv",
            caption="../report/judges_differences.rst",
            category="5. Judge validation",
        ),
        figure=report(
            "results/analysis/judges/effect_by_judge.png",
            caption="../report/judges_effect.rst",
            category="5. Judge validation",
        ),
    log:
        "logs/judge_comparison.log",
    conda:
        ENV
    params:
        stage=stage("judge_comparison"),
        primary=PRIMARY_JUDGE,
        others=OTHER_JUDGES,
        analysis=config["analysis"],
    script:
        STAGE
