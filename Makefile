# The two commands: `make run` and `make test`. Both set up .venv first when it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The official Delta Sharing client pins pyarrow <= 23: it gets an environment of its own, as a department's would.
SHARE_CLIENT := .venv-share-client
SHARE_CLIENT_STAMP := $(SHARE_CLIENT)/.installed
# Superset pins SQLAlchemy < 2, pandas 2.1, numpy < 2: its own environment too, every package pinned in the lock file
# (duckdb at the main environment's version: the published file is written by one and read by the other).
SUPERSET_VENV := .venv-superset
SUPERSET_STAMP := $(SUPERSET_VENV)/.installed
SUPERSET_REQUIREMENTS := thematic_libs/analytics/superset-requirements.txt
export DAGSTER_HOME ?= $(CURDIR)/.yiwang/dagster

.PHONY: setup run test lint format bench dagster stream-demo clean docs notebooks notebooks-save superset superset-setup

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@command -v kcat >/dev/null || (apt-get install -y -q kcat >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q kcat >/dev/null)) || echo "kcat could not be installed: the kcat interop test will be skipped"
	@command -v chromium >/dev/null || (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) || echo "chromium could not be installed: the browser tests will be skipped"
	@fc-list ':lang=zh' 2>/dev/null | grep -q . || (apt-get install -y -q fonts-wqy-microhei >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q fonts-wqy-microhei >/dev/null)) || echo "fonts-wqy-microhei could not be installed: charts cannot show Chinese names (quality/fonts.py)"
	@touch $(STAMP)

$(SHARE_CLIENT_STAMP):
	@test -x $(SHARE_CLIENT)/bin/python || $(PYTHON) -m venv $(SHARE_CLIENT)
	$(SHARE_CLIENT)/bin/python -m pip install -q delta-sharing==1.4.2
	@touch $(SHARE_CLIENT_STAMP)

$(SUPERSET_STAMP): $(SUPERSET_REQUIREMENTS)
	@test -x $(SUPERSET_VENV)/bin/python || $(PYTHON) -m venv $(SUPERSET_VENV)
	$(SUPERSET_VENV)/bin/python -m pip install -q --upgrade pip
	$(SUPERSET_VENV)/bin/python -m pip install -q -r $(SUPERSET_REQUIREMENTS)
	@touch $(SUPERSET_STAMP)

setup: $(STAMP) $(SHARE_CLIENT_STAMP) $(SUPERSET_STAMP)

superset-setup: $(SUPERSET_STAMP)

# Superset with the six dashboards on the demo warehouse: builds the warehouse first when there is none.
superset: $(STAMP) $(SUPERSET_STAMP) | $(DAGSTER_HOME)
	@if [ -z "$$YIWANG_WAREHOUSE" ] && [ ! -d "$${YIWANG_HOME:-.yiwang}/warehouse" ]; then $(BIN)/yiwang run; fi
	$(BIN)/yiwang superset start

$(DAGSTER_HOME):
	@mkdir -p $(DAGSTER_HOME)

# The instance's settings (telemetry off): copied when missing, so a local edit of the copy stays.
$(DAGSTER_HOME)/dagster.yaml: | $(DAGSTER_HOME)
	@cp orchestration/dagster.yaml $@

# The shipped video models (ml/pretrained) are registered once, so the demo's camera frames are scored.
run: $(STAMP) | $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/yiwang ml import
	$(BIN)/yiwang run

test: $(STAMP) $(SHARE_CLIENT_STAMP) $(SUPERSET_STAMP)
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
	$(BIN)/python -m bench.pipeline --scales 10 50 --repeat 2
	$(BIN)/python -m bench.pipeline --scales 10 50 100 --alone
	$(BIN)/python -m bench.pipeline --scales 10 --repeat 1 --dagster-home
	$(BIN)/python -m bench.large_part --scale 300 --repeat 1
	$(BIN)/python -m bench.fast_paths --repeat 2
	$(BIN)/python -m bench.superset

stream-demo: $(STAMP)
	$(BIN)/yiwang stream demo

# dbt docs and the quality Data Docs, built from the last run's DuckDB file and warehouse; prints where they are.
docs: $(STAMP)
	$(BIN)/yiwang docs

# The notebooks in JupyterLab, from the project's environment, on 127.0.0.1 (they open with their saved pictures).
notebooks: $(STAMP)
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser --allow-root --notebook-dir notebooks

# Re-execute the notebooks on the demo warehouse (`make run` first) and save them with their outputs.
notebooks-save: $(STAMP)
	$(BIN)/python -m orchestration.notebooks

# exec: dagster dev replaces the shell, so Ctrl-C reaches it directly and it stops its webserver, daemon and
# code server before make returns (nothing left listening on :3000).
dagster: $(STAMP) | $(DAGSTER_HOME)/dagster.yaml
	exec $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf .yiwang
