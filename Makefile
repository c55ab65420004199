# The command index. `make demo` and `make test` set everything up on a fresh machine.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
EXTRAS ?= orchestration,tracking,ui,dev,distributed
# Test files run on this many pytest-xdist workers (a file stays on one worker: its fixtures and caches are
# shared); torch threads are split among them (tests/conftest.py). TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2
PYTEST_PAR := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: setup demo test test-system test-all lint format bench screenshots clean browser

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: the project's range keeps it (a bare `torch` pulls CUDA).
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv with everything the demo and the tests need

demo: setup  ## pretrain (cached) and run a few sleep cycles end to end on the built-in world
	$(BIN)/sleepcycle demo

test: setup  ## the default test tier: unit, integration against local servers, browser (CONTRIBUTING.md)
	$(BIN)/python -m pytest $(PYTEST_PAR)

test-system: setup  ## whole sleep cycles on a Prefect server, 2-process DeepSpeed runs (CI runs it after `test`)
	$(BIN)/python -m pytest $(PYTEST_PAR) -m "system and not gpu"

test-all: setup  ## every tier runnable here, including the system tier and slow science checks
	$(BIN)/python -m pytest $(PYTEST_PAR) -m "not gpu"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: setup  ## the continual-learning bench and the distillation throughput bench (JSON + tables under bench/results)
	$(BIN)/python bench/run_all.py
	$(BIN)/python bench/distill_throughput.py

screenshots: setup  ## a PNG of every dashboard page in docs/ (headless Chromium on a made-up lineage)
	$(BIN)/python -m dashboard.screenshots

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
