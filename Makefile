# Two commands on a fresh clone:  `make demo`  and  `make test`.
PYTHON ?= $(shell command -v python3.13 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo serve test bench lint typecheck unit integration e2e clean

$(BIN)/.installed: requirements.txt functions/requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 13), "Python 3.13 is required (see .python-version), found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	@touch $@

demo: $(BIN)/.installed
	$(BIN)/python -m local_emulator demo

serve: $(BIN)/.installed
	$(BIN)/python -m local_emulator serve --allow-private-hosts

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -n auto tests

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit

integration: $(BIN)/.installed
	$(BIN)/pytest tests/integration

e2e: $(BIN)/.installed
	$(BIN)/pytest tests/e2e

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
