# Two commands do all set-up on a fresh machine:
#   make run   - create .venv, install, train the default task and report the result
#   make test  - create .venv, install the test and docs extras, lint, type-check, run the suite
#                and build the documentation site strictly (make docs)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check

.PHONY: run test lint typecheck pytest docs bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e .
	touch $@

$(VENV)/.test: $(VENV)/.base
	$(PIP) install -e '.[test,docs]'
	touch $@

run: $(VENV)/.base
	$(PY) -m chronograd train --task evidence --rule bptt --epochs 20 --out runs/default

lint: $(VENV)/.test
	$(PY) -m ruff check src tests benchmarks examples tools
	$(PY) -m ruff format --check src tests benchmarks examples tools

typecheck: $(VENV)/.test
	$(PY) -m mypy

pytest: $(VENV)/.test
	$(PY) -m pytest -q

# The site (API reference from the docstrings, tutorials, generated plots) goes to site/;
# --strict fails on any warning, the hook in tools/docs_hooks.py on a missing docstring.
docs: $(VENV)/.test
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

test: lint typecheck pytest docs

bench: $(VENV)/.base
	$(PY) benchmarks/bench_bptt.py

clean:
	rm -rf $(VENV) runs site .pytest_cache .mypy_cache .ruff_cache
