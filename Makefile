# The two commands: `make run` and `make test`. Both set up .venv first when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The official Delta Sharing client pins pyarrow <= 23: it gets an environment of its own, as a department's would.
SHARE_CLIENT := .venv-share-client
SHARE_CLIENT_STAMP := $(SHARE_CLIENT)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.yiwang/dagster

.PHONY: setup run test lint format bench dagster stream-demo clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@command -v kcat >/dev/null || (apt-get install -y -q kcat >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q kcat >/dev/null)) || echo "kcat could not be installed: the kcat interop test will be skipped"
	@command -v chromium >/dev/null || (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) || echo "chromium could not be installed: the browser tests will be skipped"
	@touch $(STAMP)

$(SHARE_CLIENT_STAMP):
	@test -x $(SHARE_CLIENT)/bin/python || $(PYTHON) -m venv $(SHARE_CLIENT)
	$(SHARE_CLIENT)/bin/python -m pip install -q delta-sharing==1.4.2
	@touch $(SHARE_CLIENT_STAMP)

setup: $(STAMP) $(SHARE_CLIENT_STAMP)

$(DAGSTER_HOME):
	@mkdir -p $(DAGSTER_HOME)

run: $(STAMP) | $(DAGSTER_HOME)
	$(BIN)/yiwang run

test: $(STAMP) $(SHARE_CLIENT_STAMP)
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
	$(BIN)/python -m bench.sharing
	$(BIN)/python -m bench.video

stream-demo: $(STAMP)
	$(BIN)/yiwang stream demo

dagster: $(STAMP) | $(DAGSTER_HOME)
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf .yiwang
