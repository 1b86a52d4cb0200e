# The two commands: `make run` and `make test`. Both set up .venv first when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.yiwang/dagster

.PHONY: setup run test lint format bench dagster stream-demo clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@command -v kcat >/dev/null || (apt-get install -y -q kcat >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q kcat >/dev/null)) || echo "kcat could not be installed: the kcat interop test will be skipped"
	@touch $(STAMP)

setup: $(STAMP)

$(DAGSTER_HOME):
	@mkdir -p $(DAGSTER_HOME)

run: $(STAMP) | $(DAGSTER_HOME)
	$(BIN)/yiwang run

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/sqlfluff lint dbt_project/models

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m bench.ingestion
	$(BIN)/python -m bench.crosscheck
	$(BIN)/python -m bench.linkage
	$(BIN)/python -m bench.thematic
	$(BIN)/python -m bench.classifier
	$(BIN)/python -m bench.streaming

stream-demo: $(STAMP)
	$(BIN)/yiwang stream demo

dagster: $(STAMP) | $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf .yiwang
