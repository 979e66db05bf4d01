# bayespeft — the two commands a new user needs:
#   make demo   create .venv, install bayespeft, run the quickstart on the embedded default (digits)
#   make test   install the development dependencies and run the test suite (what CI runs)
#   make mutate mutation testing of the numeric library code with mutmut (slow; see tests/MUTATION.md)
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

.PHONY: demo test mutate venv dev clean distclean

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

# What `make mutate` mutates: files or packages under src/ (e.g. `make mutate PATHS=src/bayespeft/metrics`), or
# mutmut name globs (`make mutate MUTANTS='bayespeft.train.loop.x__resume*'`). mutmut runs, for each mutant, only
# the tests (from tests/metrics, tests/laplace, tests/sgmcmc, tests/train: [tool.mutmut] in pyproject.toml) that
# call the mutated function, one mutant at a time; results are cached in mutants/ and a rerun skips decided mutants.
ifeq ($(origin PATHS),undefined)
PATHS        = src/bayespeft/metrics src/bayespeft/laplace src/bayespeft/sgmcmc src/bayespeft/train/checkpoint.py
LOOP_RESUME  = 'bayespeft.train.loop.x__resume*' 'bayespeft.train.loop.x__improved*' 'bayespeft.train.loop.x__public*'
endif
MUTANTS ?= $(foreach p,$(PATHS),'$(subst /,.,$(patsubst src/%,%,$(basename $(p)))).*') $(LOOP_RESUME)

mutate: dev
	HF_HUB_OFFLINE=1 $(VENV)/bin/mutmut run --max-children 1 $(MUTANTS)
	@# survivors and timeouts of the mutants run so far (nothing printed: every mutant run was killed)
	$(VENV)/bin/mutmut results | grep -v 'not checked' || true

clean:
	rm -rf runs .pytest_cache mutants "$(BAYESPEFT_CACHE_DIR)/quickstart"
	rmdir "$(BAYESPEFT_CACHE_DIR)" 2>/dev/null || true
	find src tests -type d -name __pycache__ -prune -exec rm -rf {} + 2>/dev/null || true

distclean: clean
	rm -rf $(VENV) build dist src/*.egg-info
