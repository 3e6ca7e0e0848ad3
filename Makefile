# The two commands: `make demo` runs the whole lifecycle, `make test` runs lint, types and tests.
# Both set up what they need first (virtual env, Delta jars); a second run skips what is there.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Two test processes, each module kept on one, the slowest modules first (tests/conftest.py);
# the 30 slowest tests are listed at the end. The cluster demo has a target of its own.
PYTEST_ARGS ?= -n 2 --dist loadfile --no-loadscope-reorder --durations=30 -m "not cluster"
export PYSPARK_PYTHON := $(abspath $(BIN)/python)
export PYSPARK_DRIVER_PYTHON := $(abspath $(BIN)/python)

.PHONY: setup jars demo test test-unit test-cluster lint typecheck pytest format clean help

help:
	@echo "make demo   run the whole lifecycle on embedded defaults (state in \$$LAKEHOUSE_HOME, default ~/.lakehouse)"
	@echo "make test   lint, type-check and run the test suite"
	@echo "make test-unit  the tests that need no JVM (under a minute)"
	@echo "make test-cluster  the demo on a local cluster with SeaweedFS, PostgreSQL, MLflow and Redis against a local demo (about 10 minutes)"
	@echo "make setup  create $(VENV) and resolve Delta Lake's jars (both idempotent)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (found %d.%d); set PYTHON=python3.11" % sys.version_info[:2])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) jars

jars: $(STAMP)
	@$(BIN)/python -m lakehouse.platform.jars

demo: setup
	$(BIN)/lakehouse demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The demo on the cluster profile (a standalone master and two workers, SeaweedFS, PostgreSQL,
# mlflow server, Redis, all started by the test) against a local demo of the same seed, with
# the tests of the local cluster, the object store and the shared services.
test-cluster: setup
	$(BIN)/pytest -m cluster

# The pure logic (settings, URIs, gate decisions, contracts, datagen): no JVM, no MLflow store.
test-unit: $(STAMP)
	LAKEHOUSE_TEST_TIER=unit $(BIN)/pytest -m "not jvm and not mlflow" -n 2

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
