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

.PHONY: gpu-check install lab test test-fast lint bench binder-check clean

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

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) bench/overhead.py
bench-peer: $(STAMP)  # against Lightning's Trainer; lightning is bench-only (bench/requirements.txt)
	$(PY) -m pip install --quiet -c constraints.txt -r bench/requirements.txt && $(PY) bench/peer.py

# Where a CUDA GPU is lent: the CUDA tests (CI skips them), then the GPU benchmark, whose figures go in
# bench/README.md with the device and date. GPU_PY: a Python whose torch has CUDA (.venv holds the CPU
# build), e.g. `make gpu-check GPU_PY=python3`; addopts are cleared so nbval need not be installed.
GPU_PY ?= $(PY)
gpu-check:
	PYTHONPATH=. $(GPU_PY) -m pytest -o addopts="" -p no:cacheprovider -v tests/engine/core/test_cuda.py
	PYTHONPATH=. $(GPU_PY) bench/gpu.py

# Binder: a fresh venv from binder/requirements.txt alone + binder/postBuild, then every tutorial
# executed in it (in a temporary copy; nothing is written to the checkout). Run in CI by .ci/run.
# BINDER_CHECK_ARGS: e.g. --keep, --notebooks 'notebooks/01_*.ipynb', --requirements FILE.
binder-check:
	$(PYTHON) binder/check.py $(BINDER_CHECK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache screenshots
