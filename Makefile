# Two commands: `make report` (the default report) and `make test` (the test suite).
# Each creates the virtual environment in .venv if it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: report test test-fast golden bench clean

$(BIN)/reportgen: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $@

report: $(BIN)/reportgen
	$(BIN)/reportgen run

test: $(BIN)/reportgen
	$(BIN)/python -m pytest -q

test-fast: $(BIN)/reportgen
	$(BIN)/python -m pytest -q -m "not slow"

golden: $(BIN)/reportgen
	$(BIN)/python -m pytest -q tests/test_golden.py --update-golden

bench: $(BIN)/reportgen
	$(BIN)/python scripts/benchmark.py

clean: $(BIN)/reportgen
	$(BIN)/reportgen clean --out site
