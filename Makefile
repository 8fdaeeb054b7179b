# The two commands of the README:  make demo   and   make test   (and make lint: ruff and mypy)
# Each one creates .venv on first use and installs everything it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow lint bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned to the CPU build, so no dependency can pull a multi-GB CUDA build
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test,lint]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/forge demo

test: $(STAMP)
	$(VENV)/bin/pytest -m "not slow" -n 2 --timeout 900

test-slow: $(STAMP)
	$(VENV)/bin/pytest -m slow --timeout 3600

# ruff's linter and formatter (check only: `ruff check --fix . && ruff format .` rewrites), then mypy
# on forge_secure/, attacks/ and audits/ (configured in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .forge-cache forge-demo
