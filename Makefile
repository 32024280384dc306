# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch/torchvision are pinned to the builds this project is tested with (they also install offline on our CI machines).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

# The demo reads CIFAR-10 from the shared JPEG archive when it is there, else torchvision downloads it.
CIFAR_TAR := ../shared/data/cifar10-jpg.tar.gz
DEMO_DATA := $(if $(wildcard $(CIFAR_TAR)),data.path=$(CIFAR_TAR),data.path=cifar10 data.download=true)

.PHONY: install install-dev demo test bench gpu-check lint clean experiment

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	$(BIN)/mocokit pretrain demo $(DEMO_DATA) $(ARGS)

# One of the MoCo papers' experiments at its small scale: make experiment NAME=momentum (see docs/experiments.md).
NAME ?= list
experiment: install
	$(BIN)/mocokit experiment $(NAME) $(if $(filter list,$(NAME)),,$(DEMO_DATA)) $(ARGS)

# The suite in TEST_WORKERS processes (pytest-xdist), a test file per process at a time so that a file's shared
# fixtures run once; each process gets its share of the cores (tests/conftest.py). TEST_WORKERS=0: one process.
# PYTEST_ARGS: more pytest options, e.g. PYTEST_ARGS=--durations=20 (the slowest tests) or PYTEST_ARGS="-k knn".
TEST_WORKERS ?= 2
PYTEST_ARGS ?=
test: install-dev
	$(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS)

# Step throughput against a plain eager MoCo, FLOP/s, peak memory, an end-to-end epoch: a table, and
# benchmarks/results.json (about 12 minutes on 2 CPU cores; ARGS="--tiny" checks in seconds that it runs).
bench: install
	$(BIN)/python benchmarks/run.py $(ARGS)

# One CUDA GPU, at most 8 minutes: fp32/bf16/channels_last/compiled steps checked against fp32 eager and timed, and a
# short CIFAR-10 pretraining with kNN; writes benchmarks/gpu_check.json (ARGS="--tiny": the same at a tiny size, as
# without CUDA).
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py --data $(CIFAR_TAR) $(ARGS)

lint: install-dev
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
