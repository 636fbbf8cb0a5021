# Two commands do all the set-up on a fresh machine:
#   make lab    JupyterLab on the tutorials, with the extension installed
#   make test   the whole test suite (unit, magics, notebooks under nbval, browser)
# Both create .venv and install the pinned development dependencies first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
PORT ?= 8888

.PHONY: install lab test test-fast bench binder-check clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(ROOT_FLAG) --port $(PORT) notebooks/01_quickstart.ipynb

test: $(STAMP)
	$(VENV)/bin/pytest

test-fast: $(STAMP)
	$(VENV)/bin/pytest tests --ignore=tests/browser

bench: $(STAMP)
	$(PY) bench/overhead.py

# Binder: a fresh venv from binder/requirements.txt alone + binder/postBuild, then every tutorial
# executed in it (in a temporary copy; nothing is written to the checkout). Run in CI by .ci/run.
# BINDER_CHECK_ARGS: e.g. --keep, --notebooks 'notebooks/01_*.ipynb', --requirements FILE.
binder-check:
	$(PYTHON) binder/check.py $(BINDER_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache screenshots
