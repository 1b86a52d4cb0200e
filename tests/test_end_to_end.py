"""The demo landing zone round-trips through ingestion; `yiwang run` (what `make run` calls) end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import polars as pl
import pytest

from ingestion.contract import batch_contracts
from ingestion.ledger import read_ledger, read_quarantine
from ingestion.pipeline import ingest_contract, ingest_unknown
from ingestion.silver import apply_silver
from ingestion.warehouse import Warehouse
from tests.conftest import DemoRun, platform_env

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from demo_data import generate_landing_zone

    root = tmp_path_factory.mktemp("demo")
    summary = generate_landing_zone(root / "landing", scale=0.05, seed=3, progress=False)
    return root, summary


@pytest.fixture(scope="module")
def landed(demo):
    from ingestion.pseudonym import Pseudonymiser

    root, summary = demo
    warehouse = Warehouse.at(root / "warehouse")
    pseudonymiser = Pseudonymiser(b"k" * 32)
    for contract in batch_contracts().values():
        ingest_contract(contract, root / "landing", warehouse)
        apply_silver(contract, warehouse, pseudonymiser)
    ingest_unknown(root / "landing", warehouse)
    return root, summary, warehouse


def test_every_contract_round_trips(landed):
    _, _, warehouse = landed
    ledger = read_ledger(warehouse)
    for contract in batch_contracts().values():
        loaded = ledger.filter((pl.col("contract_id") == contract.id) & (pl.col("status") == "loaded"))
        assert loaded.height >= 1, f"{contract.id} has no loaded batch"
        assert warehouse.table(f"silver/{contract.table_path}").to_pyarrow_table().num_rows > 0, contract.id


def test_bad_batches_are_rejected_whole_and_waiting_ones_wait(landed):
    root, _, warehouse = landed
    expected = pl.read_csv(root / "landing" / "_labels" / "bad_batches.csv", infer_schema=False)
    ledger = read_ledger(warehouse)
    for row in expected.iter_rows(named=True):
        found = ledger.filter((pl.col("contract_id") == row["contract_id"]) & (pl.col("batch_id") == row["batch_id"]))
        if row["expected_status"] == "waiting":
            assert found.height == 0, row
            continue
        assert found["status"].to_list() == ["rejected"], row
        assert found["rows_loaded"].to_list() == [0]
        kind = {"unknown_version": "unknown_version", "row_count": "row_count", "sha256": "sha256"}
        assert found["rule"][0] == kind.get(row["reason_kind"], "too_many_bad_rows"), (row, found["reason"][0])
        bronze = f"bronze/{row['contract_id'].replace('.', '/')}"
        if warehouse.exists(bronze):
            batches = warehouse.table(bronze).to_pyarrow_table(columns=["_batch_id"])["_batch_id"].to_pylist()
            assert row["batch_id"] not in batches


def test_every_planted_defect_is_quarantined_with_its_rule(landed):
    root, _, warehouse = landed
    defects = pl.read_csv(root / "landing" / "_labels" / "defects.csv", infer_schema=False)
    quarantine = read_quarantine(warehouse).select("contract_id", "batch_id", "record_key", "rule")
    found = set(quarantine.iter_rows())
    keys = {(c, b, k) for c, b, k, _ in found}
    bad = defects.filter(pl.col("rule") != "normalisable")
    assert bad.height > 0
    missing = [r for r in bad.iter_rows() if (r[0], r[1], r[2], r[3]) not in found]
    assert not missing, missing[:10]
    normalisable = defects.filter(pl.col("rule") == "normalisable")
    wrongly = [r for r in normalisable.iter_rows() if (r[0], r[1], r[2]) in keys]
    assert not wrongly, wrongly[:10]


def test_no_raw_id_number_outside_bronze(landed):
    _, _, warehouse = landed
    ids: set[str] = set()
    for contract in batch_contracts().values():
        table = f"bronze/{contract.table_path}"
        for column in contract.sensitive_columns:
            if column.identifier_kind == "resident_id" and warehouse.exists(table):
                values = warehouse.table(table).to_pyarrow_table(columns=[column.name])[column.name]
                ids.update(v for v in values.to_pylist() if v)
    assert len(ids) > 100
    for contract in batch_contracts().values():
        frame = pl.from_arrow(warehouse.table(f"silver/{contract.table_path}").to_pyarrow_table())
        text_columns = [c for c, t in frame.schema.items() if t == pl.String]
        values = set(frame.select(text_columns).unpivot()["value"].drop_nulls().to_list()) if text_columns else set()
        assert not (values & ids), contract.id


@pytest.mark.slow
def test_yiwang_run_end_to_end(demo_run: DemoRun, tmp_path: Path) -> None:
    """What `make run` does, on a small demo (the session's demo run): a summary, every layer materialised; then
    the streaming demo beside it, on a copy of that home."""
    output, errors = demo_run.output, demo_run.errors
    assert "yiwang run summary" in output and "Rejected batches" in output
    # the terminal shows a line per stage and the summary; dbt, Dagster and the rest are in the run's log
    assert len((output + errors).splitlines()) < 90, output
    assert "landing → bronze" in output and "dbt models, tests" in output
    assert "dbt build" not in output + errors and "Telemetry" not in output + errors
    logs = [log for log in (demo_run.home / "logs").glob("run-*.log") if log.name in output.replace("\n", "")]
    assert len(logs) == 1 and "dbt build" in logs[0].read_text(encoding="utf-8")  # the summary names its log
    yiwang = Path(sys.executable).parent / "yiwang"
    home = tmp_path / "home"
    shutil.copytree(demo_run.home, home)
    env = platform_env(home, PYTHONUNBUFFERED="1", YIWANG_PSEUDONYM_KEY=demo_run.settings()["YIWANG_PSEUDONYM_KEY"])
    env.pop("DAGSTER_HOME", None)
    assert (home / "reports" / "data_docs" / "index.html").exists()
    assert (home / "reports" / "quality_scorecard.png").stat().st_size > 1000
    with duckdb.connect(str(home / "yiwang.duckdb"), read_only=True) as con:
        rows = con.execute("select count(*) from staging.stg_gongan__household_registration").fetchall()[0][0]
    assert rows > 0
    warehouse = Warehouse.at(home / "warehouse")
    assert read_ledger(warehouse).filter(pl.col("status") == "rejected").height >= 3
    assert warehouse.exists("ops/quality_scorecard") and warehouse.exists("ops/quality_results")
    # the thematic libraries, the dispatch table and the cross-check are built from the same run
    assert "Thematic libraries, tickets and cross-check" in output
    for table in (
        "gold/party/org_tree",
        "gold/enterprises/portraits",
        "gold/emergency/waterlogging_risk",
        "gold/urban/events",
        "gold/urban/hotspots",
        "gold/dispatch/kpis_by_area",
        "gold/dispatch/department_monthly_ranking",
        "gold/social_assistance/crosscheck_flags",
    ):
        assert warehouse.exists(table), table
    # the sharing side: the catalog of every dataset and the open data of the unconditional ones
    catalog = pl.from_arrow(warehouse.table("ops/catalog").to_pyarrow_table())
    assert {"zhengshu.grid_registry", "party.grid_coverage", "stream.iot_sensor_readings"} <= set(catalog["dataset_id"])
    assert (home / "open_data" / "zhengshu.grid_registry" / "data.csv").exists()
    assert "sharing: yiwang catalog list" in output
    from thematic_libs.dispatch.schema import TICKET_SCHEMA

    tickets = pl.from_arrow(warehouse.table("gold/dispatch/tickets").to_pyarrow_table())
    assert set(TICKET_SCHEMA.names) <= set(tickets.columns)
    assert {"hotline", "grid_report", "enterprise_appeal", "crosscheck"} <= set(tickets["source"].to_list())
    assert tickets["ticket_id"].n_unique() == tickets.height
    assert tickets.filter(pl.col("department_code").is_null() | pl.col("due_at").is_null()).height == 0
    assert set(tickets["status"].unique().to_list()) - {"new"}  # outcomes of the demo dispatch system applied
    text = pl.concat_str([pl.col("title").fill_null(""), pl.col("description").fill_null("")])
    personal = tickets.filter(text.str.contains(r"(^|[^0-9])1[3-9][0-9]{9}([^0-9]|$)|[1-9][0-9]{16}[0-9Xx]"))
    assert personal.height == 0, personal.select("ticket_id", "description").head(3)
    # The streaming path beside it (README: `make stream-demo`): broker, simulators, consumers, incidents,
    # IoT tickets, streamed appeals in the urban events; the broker it started is stopped again.
    demo = subprocess.run(
        [str(yiwang), "stream", "demo", "--seconds", "40", "--time-scale", "240"],
        env={**env, "COLUMNS": "200"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "IoT tickets" in demo.stdout and "incidents:" in demo.stdout
    incidents = pl.from_arrow(warehouse.table("gold/emergency/incidents").to_pyarrow_table())
    assert incidents.height >= 1 and "closed" in incidents["status"].to_list()
    iot = pl.from_arrow(warehouse.table("gold/dispatch/tickets").to_pyarrow_table()).filter(
        pl.col("source") == "iot_alert"
    )
    live = iot.filter(pl.col("source_ref").is_in(incidents["incident_id"].implode()))
    assert live.height == incidents.height  # one ticket per incident
    # an incident a late reading withdrew (its opening moved) leaves its ticket closed, never open without a source
    assert iot.join(live, on="ticket_id", how="anti")["status"].eq("closed").all()
    assert "closed" in iot["status"].to_list()
    streamed = warehouse.table("bronze/stream/hotline_appeals").to_pyarrow_table(columns=["appeal_id"])
    events = pl.from_arrow(warehouse.table("gold/urban/events").to_pyarrow_table(columns=["source_ref"]))
    assert streamed.num_rows > 0 and events["source_ref"].is_in(streamed["appeal_id"].to_pylist()).sum() > 0
    assert not (home / "broker" / "broker.json").exists()
