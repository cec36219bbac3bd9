# Two commands on a fresh clone:  `make demo`  and  `make test`.
PYTHON ?= $(shell command -v python3.13 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

# `make deploy-check`: SAM in an environment of its own (it pins its own dependencies)
SAM_VENV := .sam-venv
SAM_BIN := $(SAM_VENV)/bin
CHECKOV_VENV := .checkov-venv
CHECKOV_BIN := $(CHECKOV_VENV)/bin
SAM := SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(SAM_BIN)/sam

.PHONY: demo serve test bench lint typecheck unit integration e2e deploy-check lock clean

$(BIN)/.installed: requirements.txt functions/requirements.txt functions/requirements-imaging.txt
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

$(SAM_BIN)/.installed: infra/sam-requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 13), "Python 3.13 builds the Lambda bundles, found " + sys.version'
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_BIN)/pip install --quiet --upgrade pip
	$(SAM_BIN)/pip install --quiet -r infra/sam-requirements.txt
	@touch $@

# checkov in an environment of its own too (its pins fight the SAM CLI's)
$(CHECKOV_BIN)/.installed: infra/checkov-requirements.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_BIN)/pip install --quiet --upgrade pip
	$(CHECKOV_BIN)/pip install --quiet -r infra/checkov-requirements.txt
	@touch $@

# Deployable: the template passes SAM's lint and checkov (every finding fixed or skipped on
# its resource with a stated reason: Metadata checkov skip), builds for arm64 as deployed (fetching wheels
# from the package index: functions/Makefile), and every function is within its size budget
# (infra/size_budget.py). The bundles are built by this environment's Python 3.13.
deploy-check: $(SAM_BIN)/.installed $(CHECKOV_BIN)/.installed
	$(SAM) validate --lint
	$(CHECKOV_BIN)/checkov --quiet --compact --skip-download --framework cloudformation --file template.yaml
	PATH="$(CURDIR)/$(SAM_BIN):$$PATH" $(SAM) build
	$(SAM_BIN)/python -m infra.size_budget

# The functions' requirements locked with hashes for Lambda's platform (functions/*.lock):
# run after changing a functions/requirements*.txt, and commit the locks with it.
lock: $(BIN)/.installed
	$(BIN)/python -m infra.lock

clean:
	rm -rf $(VENV) $(SAM_VENV) $(CHECKOV_VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
