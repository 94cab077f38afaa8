# Two commands on a fresh machine (python3 + make + the package registry):
#   make demo   - the example DAGs against the local SageMaker async backend
#   make test   - lint, type check and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install test lint typecheck pytest demo demo-ui bench bench-quick constraints clean

$(STAMP): pyproject.toml constraints.txt
	@echo ">> creating $(VENV) and installing airflow-sagemaker-async[test,bench] (pinned by constraints.txt)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[test,bench]"
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

test: lint typecheck pytest

demo: install
	$(BIN)/python scripts/run_demo.py

demo-ui: install
	$(BIN)/python scripts/run_demo.py --ui

bench: install
	$(BIN)/python benchmarks/triggerer_capacity.py
	$(BIN)/python benchmarks/airflow_overhead.py
	$(BIN)/python benchmarks/local_backend.py
	$(BIN)/python benchmarks/streaming.py

bench-quick: install
	$(BIN)/python benchmarks/triggerer_capacity.py --quick

constraints: install
	@echo "# Pinned versions CI and \`make\` install (Python 3.11). Regenerate: make constraints" > constraints.txt
	$(PIP) freeze --exclude-editable | grep -v '^airflow-sagemaker-async' >> constraints.txt

clean:
	rm -rf $(VENV) .airflow .demo .pytest_cache .mypy_cache .ruff_cache
