# Two commands: `make report` (the default report) and `make test` (the test suite).
# Each creates the virtual environment in .venv if it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: report test bench clean

$(BIN)/reportgen: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

report: $(BIN)/reportgen
	$(BIN)/reportgen run

test: $(BIN)/reportgen
	$(BIN)/python -m pytest -q

bench: $(BIN)/reportgen
	$(BIN)/python scripts/benchmark.py

clean: $(BIN)/reportgen
	$(BIN)/reportgen clean --out site
