"""`yiwang docs` (what `make docs` runs): the dbt docs and the quality Data Docs, with no set-up, and where they are.

- dbt docs: `dbt docs generate --static` on the project's DuckDB file (the models and tests the last run built)
  into `<reports>/dbt_docs/`; `static_index.html` carries the manifest and catalog inside it, so it opens from
  the file, with no server and no network. The variables dbt's profile reads are set here, from the settings.
  Before any run there is no DuckDB file: the docs are built with an empty catalog (no column types).
- Data Docs: the static pages over `ops/quality_results` (quality/docs.py), rebuilt from the warehouse.

dbt's own output goes to `<home>/logs/docs-<CST time>.log`; a failure is one line naming it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import typer
from rich.console import Console

from orchestration.cli_output import fail

console = Console()


def docs(warehouse: str | None = typer.Option(None, "--warehouse", help="Warehouse root (default: the settings).")):
    """Build the dbt docs and the quality Data Docs, then say where they are."""
    from ingestion.settings import Settings

    settings = Settings.from_env().with_overrides(warehouse=warehouse)
    reports = Path(settings.reports_dir)
    log_path = _log_path(settings.home)
    with console.status("dbt docs generate…"):
        dbt_index = build_dbt_docs(settings, reports / "dbt_docs", log_path)
    console.print(f"[green]✓[/] dbt docs: {dbt_index}", highlight=False)
    from ingestion.warehouse import Warehouse

    store = Warehouse.at(settings.warehouse)
    if store.is_local and not Path(store.root).is_dir():
        console.print(
            f"[yellow]-[/] Data Docs: no warehouse at {store.root} yet: `make run` first, then `make docs`",
            highlight=False,
        )
        return
    from quality.docs import build_data_docs

    with console.status("Data Docs…"):
        index = build_data_docs(store, reports / "data_docs")
    console.print(f"[green]✓[/] Data Docs (quality): {index}", highlight=False)
    scorecard = reports / "quality_scorecard.png"
    if scorecard.is_file():
        console.print(f"  quality scorecard: {scorecard}", highlight=False)
    console.print(f"[dim]open them in a browser (file://…); dbt's output: {log_path}[/]", highlight=False)


def _log_path(home: Path) -> Path:
    from datetime import datetime

    from orchestration.cli_output import CST

    path = Path(home) / "logs" / f"docs-{datetime.now(CST).strftime('%Y%m%dT%H%M%S')}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def build_dbt_docs(settings, target: Path, log_path: Path) -> Path:
    """`dbt docs generate --static` into `target`, with the profile's variables from the settings; the page."""
    from orchestration.dbt_assets import DBT_PROJECT_DIR, _dbt_executable, dbt_vars

    environment = {**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}
    database = Path(settings.duckdb_path).resolve()  # the settings' file, as a run uses it
    command = [_dbt_executable(), "docs", "generate", "--static", "--target-path", str(target), *dbt_vars(database)]
    if not database.is_file():
        command.append("--empty-catalog")  # nothing built yet: the docs of the project, without column types
    target.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log:
        done = subprocess.run(command, cwd=DBT_PROJECT_DIR, env=environment, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise fail(f"dbt docs generate failed (exit {done.returncode}): {_last_error(log_path)}; see {log_path}", 1)
    page = target / "static_index.html"
    return page if page.is_file() else target / "index.html"


def _last_error(log_path: Path) -> str:
    lines = [line.strip() for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or [line for line in lines if line] or ["no output"])[-1][:200]
