# Hemei Grid: the two quickstart commands.
#   make run   — create .venv, install Hemei Grid, start the demo at http://127.0.0.1:5000
#   make test  — create .venv, install Hemei Grid with its test tools, run the whole suite
# Both are safe to repeat: the venv is reused and only re-installed when pyproject changes.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 5000

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/hemei serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test
	bash scripts/system-deps.sh --check-or-install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

bench: $(VENV)/.installed-test
	$(BIN)/python bench/locate.py

clean:
	rm -rf $(VENV) instance .pytest_cache
