# One-command workflows. `make lab` sets everything up (first run) and opens the lab on this machine;
# `make test` sets up and runs the test suite. PYTHON picks the interpreter used to make the venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.binlab-lab
TESTED := $(VENV)/.binlab-test

.PHONY: setup lab class test notebooks bench experiments evidence clean-cache

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

# the seeded tables the statistics need (hours on 2 cores; resumable: a killed run picks up from the results
# store, and each table's files land in docs/results when it finishes): T9 with 3 seeds on scratch; on
# minilm-l2 3 seeds for fp32 and the two best W1A1 recipes by validation (BiPFT-style, BiT in one step) with
# their matched controls, the other rows keeping one seed.
evidence: setup
	$(PY) -m binlab.cli experiments run T8 --preset lm --seeds 3 --threads 2
	$(PY) -m binlab.cli experiments datasize --preset scratch --seeds 3 --sizes 2000,4000,8000,all --threads 2
	$(PY) -m binlab.cli experiments run T9 --preset scratch --seeds 3 --threads 2
	$(PY) -m binlab.cli experiments run T9 --preset minilm-l2 --seeds 3 --only 0,6,9 --threads 2

clean-cache:
	rm -rf data/cache
