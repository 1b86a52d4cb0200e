"""`yiwang maintain` and the weekly `warehouse_maintenance` job: VACUUM deletes what no version within the
retention reads (files a killed landing left, files an overwrite replaced) and nothing any reader still needs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from ingestion.delta_append import StagedAppend
from ingestion.ledger import append_once
from ingestion.warehouse import Warehouse
from orchestration.cli import app
from orchestration.maintenance import vacuum_warehouse, warehouse_maintenance
from orchestration.resources import PlatformResource
from orchestration.run_lock import LOCKED
from tests.test_faults import HOLDER, REPO

SCHEMA = pa.schema([pa.field("_batch_id", pa.string(), nullable=False), pa.field("n", pa.int64())])
WEEK_AND_A_DAY = 8 * 86400


def _rows(batch: str, *values: int) -> pa.Table:
    return pa.table({"_batch_id": [batch] * len(values), "n": list(values)}, schema=SCHEMA)


def _age(paths: list[Path], seconds: float) -> None:
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def _data_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*.parquet") if "_delta_log" not in p.parts}


@pytest.fixture
def warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Warehouse:
    """bronze/t with two committed batches, the files of a landing killed before its commit (eight days old) and
    of one still in progress (just written); ops/s overwritten once, its replaced file eight days old."""
    monkeypatch.setenv("YIWANG_HOME", str(tmp_path / "home"))
    store = Warehouse.at(tmp_path / "warehouse")
    append_once(store, "bronze/t", _rows("b1", 1, 2), "b1", partition_by=["_batch_id"], schema=SCHEMA)
    append_once(store, "bronze/t", _rows("b2", 3), "b2", partition_by=["_batch_id"], schema=SCHEMA)
    bronze = Path(store.uri("bronze/t"))
    committed = _data_files(bronze)
    killed = StagedAppend(store.uri("bronze/t"), SCHEMA, app_id="b3", partition_by=["_batch_id"])
    killed.write(_rows("b3", 4, 5))
    _age(sorted(_data_files(bronze) - committed), WEEK_AND_A_DAY)
    _age(sorted(committed), WEEK_AND_A_DAY)  # old, but the current version reads them
    in_progress = StagedAppend(store.uri("bronze/t"), SCHEMA, app_id="b4", partition_by=["_batch_id"])
    in_progress.write(_rows("b4", 6))
    ops = Path(store.uri("ops/s"))
    append_once(store, "ops/s", pl.DataFrame({"k": ["a"]}), "v1")
    replaced = _data_files(ops)
    DeltaTable(str(ops)).delete()  # removes the file at version 1 (its tombstone is young: kept)
    _age(sorted(replaced), WEEK_AND_A_DAY)
    return store


def test_vacuum_deletes_what_a_killed_landing_left_and_keeps_what_readers_need(warehouse: Warehouse) -> None:
    bronze = Path(warehouse.uri("bronze/t"))
    before = DeltaTable(str(bronze)).to_pyarrow_table().sort_by("n")
    files = _data_files(bronze)
    assert len(files) == 4  # b1, b2, killed b3, in-progress b4

    dry = vacuum_warehouse(warehouse, dry_run=True)
    assert [(r.table, r.files) for r in dry] == [("bronze/t", 1), ("ops/s", 0)]
    assert _data_files(bronze) == files and dry[0].bytes > 0

    version = DeltaTable(str(bronze)).version()
    done = vacuum_warehouse(warehouse)
    vacuumed = DeltaTable(str(bronze)).version()
    assert [(r.table, r.files) for r in done] == [("bronze/t", 1), ("ops/s", 0)]
    left = _data_files(bronze)
    assert len(left) == 3 and not any("_batch_id=b3" in p.parts for p in left)
    assert DeltaTable(str(bronze)).to_pyarrow_table().sort_by("n").equals(before)
    assert vacuumed > version  # VACUUM's own commits

    quiet = vacuum_warehouse(warehouse)  # nothing left to delete: no new version either
    assert [r.files for r in quiet] == [0, 0]
    assert DeltaTable(str(bronze)).version() == vacuumed


def test_the_command_lists_then_deletes_and_refuses_in_one_line(warehouse: Warehouse) -> None:
    runner = CliRunner()
    where = ["--warehouse", warehouse.root]
    dry = runner.invoke(app, ["maintain", *where, "--dry-run"], prog_name="yiwang")
    assert dry.exit_code == 0, dry.output
    assert "bronze/t: would delete 1 file(s)" in dry.stdout and "2 tables" in dry.stdout
    done = runner.invoke(app, ["maintain", *where], prog_name="yiwang")
    assert done.exit_code == 0 and "bronze/t: deleted 1 file(s)" in done.stdout
    for args, code, words in [
        (["--retention-hours", "1"], 2, "VACUUM refused"),
        (["--retention-hours", "-5"], 2, "--retention-hours"),
    ]:
        result = runner.invoke(app, ["maintain", *where, *args], prog_name="yiwang")
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.exit_code == code and len(lines) == 1 and words in lines[0], result.output
    missing = runner.invoke(app, ["maintain", "--warehouse", warehouse.root + "-nowhere"], prog_name="yiwang")
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    remote = runner.invoke(app, ["maintain", "--warehouse", "s3://bucket/warehouse"], prog_name="yiwang")
    lines = [line for line in remote.stderr.splitlines() if line.strip()]
    assert remote.exit_code == 2 and len(lines) == 1 and "object storage" in lines[0], remote.output
    command = [sys.executable, "-c", HOLDER, warehouse.root]
    holder = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:  # a platform run holds the warehouse
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        locked = runner.invoke(app, ["maintain", *where], prog_name="yiwang")
    finally:
        holder.kill()
        holder.wait()
    assert locked.exit_code == LOCKED and "another run holds the warehouse" in locked.stderr


def test_the_weekly_job_vacuums_through_dagster(warehouse: Warehouse) -> None:
    result = warehouse_maintenance.execute_in_process(
        resources={
            "platform": PlatformResource(
                warehouse=warehouse.root, landing=".", reports_dir=".", key_file="key", models_dir="."
            )
        }
    )
    assert result.success
    (output,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = output.step_output_data.metadata
    assert metadata["files_deleted"].value == 1 and metadata["tables"].value == 2
    assert not any("_batch_id=b3" in p.parts for p in _data_files(Path(warehouse.uri("bronze/t"))))
