# Two commands for a fresh machine:
#   make run   - create .venv, install the pinned CPU dependencies, run the default job
#   make test  - same set-up, then the test suite
#   make compare - the default job and its frozen-proposer control, and a report comparing them
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Portable llama.cpp build (AVX2/FMA, no -march=native) so a cached wheel runs on any x86-64-v3 CPU.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: run test setup bench compare clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/failforge run

# The default job beside its control: the same loop with the proposer frozen (no DPO),
# same seed and budget, then one report that puts them side by side.
COMPARE_DIR ?= runs/compare-$(shell date +%Y%m%d-%H%M%S)
compare: $(STAMP)
	$(VENV)/bin/failforge run --run-dir $(COMPARE_DIR)/reversegen
	$(VENV)/bin/failforge run --set train.proposer=null --set name=frozen-proposer --run-dir $(COMPARE_DIR)/frozen-proposer
	$(VENV)/bin/failforge report $(COMPARE_DIR)/reversegen $(COMPARE_DIR)/frozen-proposer -o $(COMPARE_DIR)/compare.html

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
