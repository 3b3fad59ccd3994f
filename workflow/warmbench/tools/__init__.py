"""Commands around the pipeline (cli, plan, bench, calibrate, ...): they may import core and stages; no rule runs
them, so they are in no stage's code hash."""
