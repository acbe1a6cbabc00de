# satsweep: every target that needs the virtualenv creates it first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SATSWEEP_DATA_DIR ?= $(CURDIR)/data
HOST ?= 127.0.0.1
PORT ?= 5000
OUTPUTS ?= $(or $(SATSWEEP_OUTPUTS),outputs)

.PHONY: setup setup-gpu tensorflow-cuda notebooks train sweep bench bench-quality bench-fidelity bench-hpo ui screenshots server test test-fast lint clean

setup: $(STAMP)

# Reinstalls only when pyproject.toml changes, so `make setup` is fast when nothing did.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	if [ -f $(VENV)/.gpu ]; then $(MAKE) --no-print-directory tensorflow-cuda; fi
	touch $(STAMP)

# NVIDIA GPUs on Linux: TensorFlow's CUDA build (with its CUDA libraries from PyPI)
# in place of the CPU one, at the same version; later reinstalls keep it.
setup-gpu: $(STAMP)
	touch $(VENV)/.gpu
	$(MAKE) --no-print-directory tensorflow-cuda
	$(BIN)/python -c "import tensorflow as tf; print('GPUs:', tf.config.list_physical_devices('GPU'))"

tensorflow-cuda:
	tf=$$($(BIN)/python -c "from importlib.metadata import version as v; print(v('tensorflow-cpu'))" \
		2>/dev/null); \
	if [ -n "$$tf" ]; then \
		$(BIN)/python -m pip uninstall --quiet -y tensorflow-cpu && \
		$(BIN)/python -m pip install --quiet --force-reinstall --no-deps "tensorflow==$$tf" && \
		$(BIN)/python -m pip install --quiet "tensorflow[and-cuda]==$$tf"; \
	fi

notebooks: $(STAMP)  ## the tutorials in JupyterLab on 127.0.0.1 (runs log to $(OUTPUTS))
	$(BIN)/python -m pip install --quiet -e '.[dev,notebooks]'
	SATSWEEP_OUTPUTS=$(abspath $(OUTPUTS)) $(BIN)/jupyter lab --ip $(HOST) --no-browser \
		--notebook-dir docs/tutorials

train: $(STAMP)  ## one run: make train ARGS="model=mlp optimizer.lr=0.01"
	$(BIN)/satsweep train $(ARGS)

sweep: $(STAMP)  ## the main job: the quick sweep on AID
	$(BIN)/satsweep sweep sweep=quick $(ARGS)

bench: $(STAMP)  ## satsweep against bare Keras and its alternatives: ratios, outputs/bench/
	$(BIN)/python -m satsweep.benchmarks $(ARGS)

bench-quality: $(STAMP)  ## test macro F1 on AID: the floor, the old recipe, the new one, make sweep
	$(BIN)/python -m satsweep.benchmarks.quality $(ARGS)

bench-fidelity: $(STAMP)  ## do cheap trials rank like the final fit? ARGS="sweep=quick bench.high=[data.image_size=48]"
	$(BIN)/python -m satsweep.benchmarks.fidelity $(ARGS)

bench-hpo: $(STAMP)  ## Optuna vs KerasTuner on equal budgets: make bench-hpo ARGS="sweep.compare.budget=60"
	$(BIN)/satsweep compare-backends sweep=quick $(ARGS)

ui: $(STAMP)  ## MLflow UI over the same store
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(OUTPUTS))/mlflow.db \
		--host $(HOST) --port $(PORT)

screenshots: $(STAMP)  ## after make sweep: the MLflow UI in headless Chromium, docs/screenshots/
	$(BIN)/python docs/screenshots.py --outputs $(OUTPUTS)

server: $(STAMP)  ## MLflow tracking server on PostgreSQL for many workers
	$(BIN)/satsweep server --host $(HOST) --port $(PORT)

# TEST_WORKERS=N runs the full suite in N processes (pytest-xdist; a worker that finishes
# early takes tests from another); 0 runs it in one. Two, CI's too: three runs in a row
# on two workers passed under two CPU burners on 2 cores (docs/reliability.md).
TEST_WORKERS ?= 2
FAST_WORKERS ?= 2
xdist = -n $(1) $(if $(filter 0,$(1)),,--dist worksteal)

test: $(STAMP)  ## the full suite, as CI runs it
	$(BIN)/python -m pytest $(call xdist,$(TEST_WORKERS)) $(PYTEST_ARGS)

test-fast: $(STAMP)  ## the inner loop: every test not marked slow, in about a minute
	$(BIN)/python -m pytest -m "not slow" $(call xdist,$(FAST_WORKERS)) $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff, then mypy over src/ (settings in pyproject.toml)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy

clean:
	rm -rf $(OUTPUTS) .pytest_cache .ruff_cache build src/*.egg-info
