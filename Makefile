# bayespeft — the two commands a new user needs:
#   make demo   create .venv, install bayespeft, run the quickstart on the embedded default (digits)
#   make test   install the development dependencies and run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
OUT    ?= runs/quickstart

.PHONY: demo test venv dev clean

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
	rm -rf $(VENV) runs .pytest_cache
