# bayespeft — the two commands a new user needs:
#   make demo   create .venv, install bayespeft, run the quickstart on the embedded default (digits)
#   make test   install the development dependencies and run the test suite (what CI runs)
# and the cleaning ones (they ask nothing and touch only what the project made):
#   make clean      remove runs/, .pytest_cache, src/tests __pycache__ and the quickstart's cached upstream model
#                   ($BAYESPEFT_CACHE/quickstart, default ~/.cache/bayespeft/quickstart); keeps .venv
#   make distclean  make clean, plus .venv and the build/install leftovers (build/, dist/, src/*.egg-info)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
OUT    ?= runs/quickstart
# the bayespeft cache as the code resolves it (a private name: an unrelated CACHE variable must not redirect rm)
BAYESPEFT_CACHE_DIR := $(or $(BAYESPEFT_CACHE),$(HOME)/.cache/bayespeft)

.PHONY: demo test venv dev clean distclean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

venv: $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .

dev: $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'

demo: venv
	HF_HUB_OFFLINE=1 $(VENV)/bin/bayespeft quickstart --out $(OUT)

test: dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache "$(BAYESPEFT_CACHE_DIR)/quickstart"
	rmdir "$(BAYESPEFT_CACHE_DIR)" 2>/dev/null || true
	find src tests -type d -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true

distclean: clean
	rm -rf $(VENV) build dist src/*.egg-info
