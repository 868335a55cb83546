# Two commands on a fresh machine: `make demo` and `make test`. Each builds .venv when it is
# missing or older than the dependency files, then runs.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip --disable-pip-version-check
STAMP := $(VENV)/.installed
# Quiet the warnings pip prints for the machine's extra local indexes.
export PIP_NO_WARN_SCRIPT_LOCATION := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

.PHONY: venv test test-all demo bench lint clean

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo ">> installing torch (CPU wheel) first, then the stack pinned by constraints.txt"
	$(PIP) install -q -c constraints.txt torch==2.13.0 2>&1 | { grep -v "is ignored" || true; }
	$(PIP) install -q -c constraints.txt -r requirements.txt 2>&1 | { grep -v "is ignored" || true; }
	$(PIP) install -q -c constraints.txt --no-deps --no-build-isolation -e . 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -c "import torch, serendip; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@touch $(STAMP)

test: venv
	$(BIN)/python -m pytest -q

test-all: venv
	$(BIN)/python -m pytest -q -m "slow or not slow"

demo: venv
	$(BIN)/serendip demo --workdir ./serendip-demo

bench: venv
	$(BIN)/python -m benchmarks.run

lint: venv
	$(BIN)/ruff check serendip components pipelines tests benchmarks

clean:
	rm -rf $(VENV) serendip-demo .pytest_cache build *.egg-info
