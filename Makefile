# Two commands do all set-up on a fresh machine:
#   make run   - create .venv, install, train the default task and report the result
#   make test  - create .venv, install the test extras, lint, type-check and run the suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check

.PHONY: run test lint typecheck pytest bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) install -e '.[test]'
	touch $@

run: $(VENV)/.base
	$(PY) -m chronograd train --task evidence --rule bptt --epochs 20 --out runs/default

lint: $(VENV)/.test
	$(PY) -m ruff check src tests benchmarks examples
	$(PY) -m ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.test
	$(PY) -m mypy

pytest: $(VENV)/.test
	$(PY) -m pytest -q

test: lint typecheck pytest

bench: $(VENV)/.base
	$(PY) benchmarks/bench_bptt.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
