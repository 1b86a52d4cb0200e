"""`make docs` (`yiwang docs`): the dbt docs and the Data Docs with no set-up, and where they are."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from orchestration.cli import app


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("YIWANG_WAREHOUSE", "YIWANG_DUCKDB", "YIWANG_REPORTS", "DBT_PROJECT_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("YIWANG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "home"


def test_docs_build_without_any_variable_and_say_where_they_are(home: Path) -> None:
    (home / "warehouse").mkdir(parents=True)  # an empty warehouse: Data Docs of no results yet
    result = CliRunner().invoke(app, ["docs"], prog_name="yiwang")
    assert result.exit_code == 0, result.output
    page = home / "reports" / "dbt_docs" / "static_index.html"
    assert page.is_file() and page.stat().st_size > 100_000  # manifest and catalog inside: opens from the file
    assert f"dbt docs: {page}" in result.stdout
    assert f"Data Docs (quality): {home / 'reports' / 'data_docs' / 'index.html'}" in result.stdout


def test_docs_before_a_run_and_a_dbt_failure_are_one_line(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestration.dbt_assets as dbt_assets

    monkeypatch.setattr(dbt_assets, "_dbt_executable", lambda: "false")
    failed = CliRunner().invoke(app, ["docs"], prog_name="yiwang")
    assert failed.exit_code == 1
    assert failed.stderr.strip().startswith("error: dbt docs generate failed (exit 1)")
    assert len(failed.stderr.strip().splitlines()) == 1 and "logs/docs-" in failed.stderr
