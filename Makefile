# One-command workflows. `make lab` sets everything up (first run) and opens the lab on this machine;
# `make test` sets up and runs the test suite. PYTHON picks the interpreter used to make the venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.binlab-lab
TESTED := $(VENV)/.binlab-test

.PHONY: setup lab class test notebooks bench experiments clean-cache

# the lab and the notebooks need binlab and its notebook extras; the tests add pytest, Playwright and Ray
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[notebooks]"
	touch $(STAMP)

$(TESTED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev,notebooks,cluster]"
	touch $(STAMP) $(TESTED)

setup: $(STAMP)

lab: setup
	$(PY) -m binlab.cli app

# a classroom: every address, a teacher token printed at start (BINLAB_TEACHER_TOKEN sets your own)
class: setup
	$(PY) -m binlab.cli app --class

test: $(TESTED)
	$(PY) -m pytest -q

notebooks: setup
	$(VENV)/bin/jupyter lab notebooks/

bench: setup
	$(PY) bench/live_loop.py

experiments: setup
	$(PY) -m binlab.cli experiments run all --preset scratch

clean-cache:
	rm -rf data/cache
