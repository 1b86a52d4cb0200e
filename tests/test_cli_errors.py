"""Every command's expected errors are one red line on stderr and a non-zero exit code, never a traceback:
a missing warehouse, a bad date, a bad version, an unknown format, an out-of-range value. Tables fit 80 columns
and times are in China Standard Time."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ingestion.warehouse import Warehouse
from orchestration.cli import app
from tests.test_dispatch import GRID_A, derive, local, report
from thematic_libs.dispatch.store import write_tickets


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("YIWANG_WAREHOUSE", "YIWANG_LANDING", "YIWANG_AS_OF", "YIWANG_PSEUDONYM_KEY", "YIWANG_MODELS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("YIWANG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "80")
    return tmp_path / "home"


@pytest.fixture
def tickets(home: Path) -> Warehouse:
    """A warehouse whose dispatch table is at version 0: two tickets."""
    warehouse = Warehouse.at(home / "warehouse")
    rows = [
        report("R1", "010101", local(16, 9), grid_code=GRID_A),
        report("R2", "020101", local(16, 10), grid_code=GRID_A),
    ]
    assert write_tickets(warehouse, derive(rows)).version == 0
    return warehouse


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), prog_name="yiwang")


def refused(args: list[str], code: int, *words: str) -> str:
    """Run `yiwang ARGS`: it must exit `code` with one line on stderr that names the problem (`words`)."""
    result = invoke(*args)
    assert result.exit_code == code, (args, result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (args, lines[0])
    return lines[0]


def test_a_missing_warehouse_is_one_line_on_every_reading_command(home: Path) -> None:
    for args in (
        ["ledger"],
        ["ledger", "--rejected"],
        ["tickets", "changes"],
        ["tickets", "changes", "--format", "table"],
        ["triage"],
        ["crosscheck", "--as-of", "2026-11-15"],
        ["batches", "confirm", "minzheng.assistance_cases", "20261101T000000", "--reason", "x"],
        ["batches", "rerun", "minzheng.assistance_cases/20261101T000000"],
        ["catalog", "list"],
        ["share", "list"],
        ["stream", "status"],
    ):
        refused(args, 2, "does not exist", "yiwang run")


def test_bad_dates_formats_and_values_are_one_line(home: Path) -> None:
    refused(["crosscheck", "--as-of", "2026-13-45"], 2, "--as-of '2026-13-45' is not a date", "YYYY-MM-DD")
    refused(["run", "--as-of", "2026-13-45"], 2, "--as-of '2026-13-45' is not a date")
    refused(["crosscheck", "--as-of", "2026-11-15", "--engine", "oracle"], 2, "--engine 'oracle'", "duckdb, spark")
    refused(["ledger", "--format", "xml"], 2, "--format 'xml'", "table, json, csv")
    refused(["run", "--reject-share", "2"], 2, "--reject-share", "between 0 and 1")
    refused(["run", "--demo-scale", "0"], 2, "--demo-scale must be above 0")
    refused(["run", "--demo-scale", "0.02"], 2, "--demo-scale must be at least 0.025")
    refused(["run", "--landing", str(home / "nowhere")], 2, "landing zone", "does not exist")
    refused(["demo-data", "--out", str(home / "demo"), "--scale", "-1"], 2, "--scale must be above 0")
    refused(["demo-data", "--out", str(home / "demo"), "--defect-rate", "3"], 2, "--defect-rate")
    # what click checks itself (a range, an unknown option, a missing option) is one line too, with the help to see
    refused(["triage", "--limit", "0"], 2, "--limit", "yiwang triage --help")
    refused(["classifier", "tune", "--folds", "1"], 2, "--folds")
    refused(["ledger", "--no-such-option"], 2, "--no-such-option")
    refused(["crosscheck"], 2, "--as-of")
    assert not (home / "demo").exists()


def test_ticket_versions_and_formats(tickets: Warehouse) -> None:
    root = tickets.root
    refused(["tickets", "changes", "--since-version", "-2", "--warehouse", root], 2, "--since-version -2", "-1")
    refused(
        ["tickets", "changes", "--since-version", "5", "--warehouse", root], 2, "after the table's current version 0"
    )
    refused(["tickets", "changes", "--format", "xml", "--warehouse", root], 2, "jsonl, json, csv, table")
    current = invoke("tickets", "changes", "--since-version", "0", "--warehouse", root)
    assert current.exit_code == 0 and "0 ticket(s); next --since-version: 0" in current.stderr

    jsonl = invoke("tickets", "changes", "--warehouse", root)
    rows = [json.loads(line) for line in jsonl.stdout.splitlines()]
    assert len(rows) == 2 and all(row["due_at"].endswith("+08:00") for row in rows)

    as_csv = invoke("tickets", "changes", "--format", "csv", "--warehouse", root)
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert as_csv.exit_code == 0 and len(parsed) == 2 and parsed[0]["due_at"].endswith("+08:00")
    assert {r["ticket_id"] for r in parsed} == {r["ticket_id"] for r in rows}

    table = invoke("tickets", "changes", "--format", "table", "--warehouse", root)
    assert table.exit_code == 0 and "due (CST)" in table.stdout
    assert all(len(line) <= 80 for line in table.stdout.splitlines()), table.stdout
    for row in rows:  # whole ids, due times in CST
        assert row["ticket_id"] in table.stdout
        assert row["due_at"][:16].replace("T", " ") in table.stdout


def test_the_ledger_fits_80_columns_without_cutting_ids(home: Path) -> None:
    from datetime import UTC, datetime

    import pyarrow as pa
    from deltalake import write_deltalake

    from ingestion.ledger import LEDGER_SCHEMA

    warehouse = Warehouse.at(home / "warehouse")
    row = {name: None for name in LEDGER_SCHEMA.names}
    row |= {
        "contract_id": "shichang.enterprise_registration",
        "batch_id": "20261115T020000",
        "status": "rejected",
        "rows_loaded": 0,
        "rows_quarantined": 0,
        "rule": "row_count",
        "reason": "part-00000.csv holds 81 records but the manifest says 82: the file is incomplete; resend it",
        "processed_at": datetime(2026, 11, 15, 1, 0, tzinfo=UTC),
        "batch_ordinal": 1,
    }
    write_deltalake(warehouse.uri("ops/batch_ledger"), pa.Table.from_pylist([row], schema=LEDGER_SCHEMA))
    result = invoke("ledger", "--rejected")
    assert result.exit_code == 0
    assert all(len(line.rstrip()) <= 80 for line in result.stdout.splitlines()), result.stdout
    assert "shichang.enterprise_registration 20261115T020000 rejected" in result.stdout
    assert "resend it" in result.stdout
    as_json = json.loads(invoke("ledger", "--format", "json").stdout)
    assert as_json[0]["processed_at"] == "2026-11-15T09:00:00+08:00"
    refused(["ledger", "--contract", "no.such_contract"], 2, "no.such_contract", "catalog list")


def test_an_unexpected_error_is_one_line_naming_its_log_and_debug_shows_the_traceback(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchestration.cli as cli

    def broken(frame) -> None:
        raise RuntimeError("the ledger printer broke\nsecond line")

    monkeypatch.setattr(cli, "_print_ledger", broken)
    (home / "warehouse").mkdir(parents=True)
    line = refused(["ledger"], 1, "unexpected RuntimeError: the ledger printer broke", "errors.log")
    assert "second line" not in line
    assert "Traceback" in (home / "logs" / "errors.log").read_text()
    debug = invoke("--debug", "ledger")
    assert isinstance(debug.exception, RuntimeError)


def test_a_crosscheck_that_cannot_run_is_one_line(home: Path) -> None:
    (home / "warehouse").mkdir(parents=True)
    refused(["crosscheck", "--as-of", "2026-11-15"], 1, "no loaded batch of", "as-of")


def test_help_still_works() -> None:
    result = invoke("--help")
    assert result.exit_code == 0 and "ledger" in result.stdout and "--debug" not in result.stdout
    assert invoke().exit_code == 2  # no command: the help, as before
