# One-command workflows. `make lab` sets everything up (first run) and opens the lab;
# `make test` sets up and runs the test suite. PYTHON picks the interpreter used to make the venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.binlab-installed

.PHONY: setup lab test notebooks bench experiments clean-cache

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev,notebooks,cluster]"
	touch $(STAMP)

setup: $(STAMP)

lab: setup
	$(PY) -m streamlit run app/Home.py

test: setup
	$(PY) -m pytest -q

notebooks: setup
	$(VENV)/bin/jupyter lab notebooks/

bench: setup
	$(PY) bench/live_loop.py

experiments: setup
	$(PY) -m binlab.cli experiments run all --preset scratch

clean-cache:
	rm -rf data/cache
