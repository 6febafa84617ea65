# Two commands do all the set-up on a fresh machine:
#   make demo   venv + install + the main job on the embedded defaults (offline)
#   make test   venv + install + the test suite (what CI runs; `make test-all` adds the long scenarios)
PYTHON ?= python3
VENV ?= .venv
# Torch first, pinned to the CPU wheel this project's machines carry; GPU users may override,
# e.g. `make demo TORCH_SPEC=torch` (pyproject keeps the range open). pip compiles bytecode on one
# core; compileall on every core does it in half the time (and with PYTHONDONTWRITEBYTECODE set,
# nothing else would ever write it). Like pip, it skips the few templates that are not Python.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0

.PHONY: setup demo test test-all lint bench clean

$(BIN)/lll: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --no-compile "$(TORCH_SPEC)"
	$(BIN)/pip install --no-compile -e ".[test]"
	$(BIN)/python -m compileall -q -j 0 "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
	touch $@

setup: $(BIN)/lll

demo: setup
	$(BIN)/lll search

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint
	$(BIN)/pytest -q -m "not extended" --durations=15

# Everything, with the long scenarios marked `extended` (a kill-and-resume per sampler, 200 trials,
# the example project end to end, ...): before a release.
test-all: setup lint
	$(BIN)/pytest -q --durations=15

bench: setup
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) mlflow.db mlartifacts optuna.db optuna.journal .pytest_cache
