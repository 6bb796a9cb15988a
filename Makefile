# One command each, on a fresh machine:
#   make demo   - set up .venv and run the whole workflow on the embedded synthetic data
#   make test   - set up .venv and run the test suite
#   make bench  - the likelihood bench (config/bench.yaml, ~7 h on 2 cores, 4 of them NUTS):
#                 is the network's bound the likelihood, and how do the cheap scan, NUTS and
#                 NPE compare?
#                 Run nothing else that uses torch beside it.
# demo and test first install TeX Live for the paper's PDF (`make tex`: as root with apt-get;
# elsewhere it says what to install, and the paper rule fails until it is there).
# Variables: PYTHON (interpreter for the venv), CORES, TORCH (pip requirement of torch).

PYTHON ?= python3
VENV   ?= .venv
CORES  ?= 2
# Pinned: an unpinned torch pulls a multi-GB CUDA build. On a Linux laptop without this
# project's local wheel, add PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu to get
# the CPU build; on a GPU cluster use envs/torch.yaml or a CUDA build of the same version.
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
# Snakemake reports a YAML syntax error in a --configfile without file or line: check first.
CHECK   = $(BIN)/python -m cosmodiff check-config
STAMP   = $(VENV)/.installed
EXTRAS  = $(VENV)/.baselines
export PATH := $(abspath $(BIN)):$(PATH)
export MPLBACKEND := Agg

.PHONY: demo test smoke bench setup clean lint tex

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[workflow,test]"
	touch $@

# pyro-ppl and sbi (NUTS on the bound, the neural-posterior baseline): the bench's baselines
# rules and their tests use them
$(EXTRAS): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[baselines]"
	touch $@

# The TeX engine of the paper rule and poppler-utils (the paper tests read the PDF back).
TEX_PACKAGES = latexmk texlive-latex-recommended texlive-fonts-recommended poppler-utils

tex:
	@if command -v latexmk >/dev/null && command -v pdftotext >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing TeX Live for the paper: apt-get install $(TEX_PACKAGES)"; \
	  apt-get update -qq >/dev/null && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEX_PACKAGES) >/dev/null; \
	else \
	  echo "No TeX engine for the paper's PDF. Install: $(TEX_PACKAGES)" >&2; \
	  echo "  (Debian/Ubuntu: sudo apt-get install $(TEX_PACKAGES)), or set paper.pdf: false" >&2; \
	  echo "  in the config. Without it the paper rule fails with this message." >&2; \
	fi

demo: $(STAMP) tex
	$(CHECK) config/config.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml --report results/demo/report.html
	$(BIN)/python benchmarks/rule_times.py results/demo
	@echo "Done: figures in results/demo/figures, the report in results/demo/report.html"

bench: $(STAMP) $(EXTRAS) tex
	$(CHECK) config/bench.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/bench.yaml
	$(BIN)/python benchmarks/rule_times.py results/bench
	@echo "Done: the targets in results/bench/inference/targets.csv, figures in results/bench/figures"

smoke: $(STAMP)
	$(CHECK) config/smoke.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile config/smoke.yaml

test: $(STAMP) $(EXTRAS) tex
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/snakemake --lint --configfile config/config.yaml

clean:
	rm -rf results .snakemake
