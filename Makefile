# Two commands for a fresh machine:
#   make run   - create .venv, install the pinned CPU dependencies, run the default job
#   make test  - same set-up, then the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Portable llama.cpp build (AVX2/FMA, no -march=native) so a cached wheel runs on any x86-64-v3 CPU.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF

.PHONY: run test setup bench clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/failforge run

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
