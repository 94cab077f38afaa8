# Two commands on a fresh machine (python3 + make + the package registry):
#   make demo   - the example DAGs against the local SageMaker async backend
#   make test   - lint, type check and the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install test lint typecheck pytest test-oldest test-py313 test-platforms package-check docs docs-serve demo demo-ui bench bench-quick bench-batch soak soak-celery soak-short-local constraints constraints-oldest clean

$(STAMP): pyproject.toml constraints.txt
	@echo ">> creating $(VENV) and installing airflow-sagemaker-async[test,bench] (pinned by constraints.txt)"
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt -e ".[test,bench]"
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -m "not soak_local"

test: lint typecheck pytest

# The fast tests (not e2e, not slow) on the oldest supported set (constraints-oldest.txt), in a venv of their own.
# tests/local is left out: the local backend imports no Airflow, and moto / aiohttp are the same in both sets.
OLDEST := .venv-oldest
$(OLDEST)/.installed-stamp: pyproject.toml constraints-oldest.txt | $(STAMP)
	@echo ">> creating $(OLDEST) with the oldest supported set (constraints-oldest.txt), with uv"
	rm -rf $(OLDEST)
	$(BIN)/uv venv --quiet --python "$$($(PYTHON) -c 'import sys; print(sys.executable)')" $(OLDEST)
	$(BIN)/uv pip install --quiet --python $(OLDEST)/bin/python -c constraints-oldest.txt -e ".[test]"
	@touch $@

test-oldest: $(OLDEST)/.installed-stamp
	$(OLDEST)/bin/pytest -m "not e2e and not slow" --ignore=tests/local --durations=10

# The fast tests on Python 3.13 (constraints.txt), in a venv of their own. The interpreter is the cached one
# (/opt/ci-python/3.13), else pyenv's, else built from Debian 13's source package (.ci/python-build, ~4-8 min).
PY313 := .venv-py313
test-py313: install
	rm -rf $(PY313)
	$(BIN)/uv venv --quiet --python "$$(.ci/python-build 3.13)" $(PY313)
	$(BIN)/uv pip install --quiet --python $(PY313)/bin/python -c constraints.txt -e ".[test]"
	$(PY313)/bin/pytest -m "not e2e and not slow" --durations=10

# The plugin installed with each platform's own package set as its users would, then its fast tests
# (.ci/platform-test; the sets are the folders of platforms/). Every set runs; any failure fails the target.
# The demo runs in the PLATFORM_DEMO set.
PLATFORMS ?= mwaa-3.3.1 mwaa-3.2.1
PLATFORM_DEMO ?= mwaa-3.3.1
test-platforms: install
	@failed=""; for platform in $(PLATFORMS); do \
	  PLATFORM_DEMO=$(PLATFORM_DEMO) .ci/platform-test $$platform || failed="$$failed $$platform"; done; \
	if [ -n "$$failed" ]; then echo ">> test-platforms failed:$$failed"; exit 1; fi

# Build the sdist and the wheel, check them, install the wheel alone into a fresh venv (.ci/package-check).
package-check: install
	.ci/package-check

# The documentation site (mkdocs.yml, docs/): the docs extra installed into .venv once (uv, seconds), then a
# strict build into site/: a broken link, anchor or cross-reference, or a public name missing from the
# reference (docs/hooks.py), fails it. docs-serve rebuilds on change and listens on 127.0.0.1 only.
DOCS_STAMP := $(VENV)/.docs-stamp
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
$(DOCS_STAMP): pyproject.toml constraints.txt | $(STAMP)
	$(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e ".[docs]"
	@touch $@

docs: $(DOCS_STAMP)
	$(MKDOCS) build --strict

docs-serve: $(DOCS_STAMP)
	$(MKDOCS) serve --strict --dev-addr 127.0.0.1:8000

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

# 10,000 inferences through batch and push under combined faults, real Airflow (about 10 minutes).
# The 1,000-item soak on SQLite + LocalExecutor (make test runs the Celery topology's).
soak-short-local: install
	$(BIN)/pytest -m soak_local tests/soak

soak: install
	$(BIN)/python -m tests.soak.soak --items 10000

# The same on the production topology: PostgreSQL, Celery with Redis, two schedulers, workers and triggerers.
soak-celery: install
	$(BIN)/python -m tests.soak.soak --items 10000 --topology celery

# One batch task of 10,000 vs .expand of the single operator under a real Airflow (about 15 minutes).
bench-batch: install
	$(BIN)/python benchmarks/batch.py

constraints: install $(DOCS_STAMP)
	@echo "# Pinned versions CI and \`make\` install (Python 3.11). Regenerate: make constraints" > constraints.txt
	$(PIP) freeze --exclude-editable | grep -v '^airflow-sagemaker-async' >> constraints.txt

constraints-oldest: $(OLDEST)/.installed-stamp
	@head -4 constraints-oldest.txt > constraints-oldest.txt.new
	$(BIN)/uv pip freeze --python $(OLDEST)/bin/python --exclude-editable | grep -v '^airflow-sagemaker-async' >> constraints-oldest.txt.new
	mv constraints-oldest.txt.new constraints-oldest.txt

clean:
	rm -rf $(VENV) $(OLDEST) .airflow .demo .pytest_cache .mypy_cache .ruff_cache site
