# One command each, on a fresh machine:
#   make demo   - set up .venv and run the whole workflow on the embedded synthetic data
#   make test   - set up .venv and run the test suite
#   make bench  - the likelihood bench (config/bench.yaml, ~1.5 h on 2 cores): is the network's
#                 bound the likelihood? Run nothing else that uses torch beside it.
# Variables: PYTHON (interpreter for the venv), CORES, TORCH (pip requirement of torch).

PYTHON ?= python3
VENV   ?= .venv
CORES  ?= 2
# Pinned: an unpinned torch pulls a multi-GB CUDA build. On a Linux laptop without this
# project's local wheel, add PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu to get
# the CPU build; on a GPU cluster use envs/torch.yaml or a CUDA build of the same version.
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export MPLBACKEND := Agg

.PHONY: demo test smoke bench setup clean lint

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[workflow,test]"
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml --report results/demo/report.html
	$(BIN)/python benchmarks/rule_times.py results/demo
	@echo "Done: figures in results/demo/figures, the report in results/demo/report.html"

bench: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/bench.yaml
	$(BIN)/python benchmarks/rule_times.py results/bench
	@echo "Done: the targets in results/bench/inference/targets.csv, figures in results/bench/figures"

smoke: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/smoke.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/snakemake --lint --configfile config/config.yaml

clean:
	rm -rf results .snakemake
