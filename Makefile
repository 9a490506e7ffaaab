# unet-lab developer commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Where torch comes from. Empty: pip's default index (on this project's CPU machines a local CPU
# wheel). GPU machines: TORCH_INDEX=https://download.pytorch.org/whl/cu128 (see docs/installing.md).
TORCH_INDEX ?=
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install train test test-fast lint format typecheck lock clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(STAMP) ## create .venv and install unet-lab with its dev tools (once)

train: $(STAMP) ## train the default U-Net on the embedded synthetic data (ARGS="key=value ..." to override)
	$(BIN)/python train.py $(ARGS)

test: $(STAMP) ## run the whole test suite (unit, integration, end-to-end)
	$(BIN)/python -m pytest -n 2 $(ARGS)

test-fast: $(STAMP) ## run the tests not marked slow
	$(BIN)/python -m pytest -m "not slow" $(ARGS)

lint: $(STAMP) ## ruff lint and format check, mypy on the package
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock: $(STAMP) ## rewrite constraints.txt from the installed environment
	{ head -n 3 constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | sed -E 's/^torch==([^+]*)\+.*/torch==\1/'; } > constraints.tmp && mv constraints.tmp constraints.txt

clean: ## remove caches (keeps .venv, runs/ and multirun/)
	rm -rf .pytest_cache .ruff_cache .mypy_cache build *.egg-info
