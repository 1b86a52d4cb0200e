"""Landing batches as Dagster partitions of `ops/batch`: a run shows every batch it decided as a partition with
its ledger outcome, and one batch can be landed again (re-run) without duplicating its rows, including a rejected
batch a department fixed in place. Real Dagster (an ephemeral instance), real Delta tables, hand-written batches."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetRecordsFilter, DagsterInstance, materialize
from typer.testing import CliRunner

from ingestion.contract import get_contract
from ingestion.ledger import read_ledger, read_quarantine
from ingestion.warehouse import Warehouse
from orchestration.batch_partitions import BATCH_KEY, LANDING_BATCHES, batch, batch_partition
from orchestration.cli import app
from orchestration.ingestion_assets import build_bronze_asset, build_silver_asset
from orchestration.resources import PlatformResource
from orchestration.run_lock import LOCKED
from tests.conftest import person
from tests.landing_kit import write_batch
from tests.test_faults import HOLDER

HOUSEHOLDS = get_contract("gongan.household_registration")
FIRST, SECOND = "20261001T020000", "20261101T020000"


@pytest.fixture
def platform(tmp_path: Path, landing: Path, warehouse: Warehouse) -> PlatformResource:
    return PlatformResource(
        landing=str(landing),
        warehouse=warehouse.root,
        reports_dir=str(tmp_path / "reports"),
        key_file=str(tmp_path / "key"),
    )


def deliver(landing: Path) -> None:
    """A good snapshot, then a snapshot whose ids are mostly broken (rejected: too many bad rows)."""
    write_batch(landing, HOUSEHOLDS.id, FIRST, [person(i) for i in range(10)])
    broken = [person(i, id_number="not-an-id") if i < 6 else person(i) for i in range(12)]
    write_batch(landing, HOUSEHOLDS.id, SECOND, broken)


def latest(instance: DagsterInstance, contract_id: str, batch_id: str) -> dict:
    """The metadata of the last materialization of a batch's partition."""
    key = batch_partition(contract_id, batch_id)
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=BATCH_KEY, asset_partitions=[key]), limit=1
    ).records
    assert records, key
    materialization = records[0].asset_materialization
    assert materialization is not None and materialization.partition == key
    return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}


def bronze(warehouse: Warehouse) -> pl.DataFrame:
    frame = pl.from_arrow(warehouse.table(f"bronze/{HOUSEHOLDS.table_path}").to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def decisions(warehouse: Warehouse, batch_id: str) -> list[str]:
    ledger = read_ledger(warehouse).filter(pl.col("batch_id") == batch_id).sort("processed_at")
    return ledger["status"].to_list()


def test_a_run_shows_each_batch_as_a_partition_and_one_batch_can_be_rerun(landing, warehouse, platform) -> None:
    deliver(landing)
    instance = DagsterInstance.ephemeral()
    assets = [build_bronze_asset(HOUSEHOLDS), build_silver_asset(HOUSEHOLDS)]
    assert materialize(assets, resources={"platform": platform}, instance=instance).success

    # the run registered both batches as partitions, each with its ledger outcome
    keys = {batch_partition(HOUSEHOLDS.id, b) for b in (FIRST, SECOND)}
    assert set(instance.get_dynamic_partitions(LANDING_BATCHES)) == keys
    first, second = latest(instance, HOUSEHOLDS.id, FIRST), latest(instance, HOUSEHOLDS.id, SECOND)
    assert (first["status"], first["rows_loaded"], first["landed_by"]) == ("loaded", 10, "platform_build")
    assert (second["status"], second["rows_loaded"], second["rows_quarantined"]) == ("rejected", 0, 6)
    assert "break the contract" in second["reason"]
    assert bronze(warehouse).height == 10

    # re-run the loaded batch: its rows are replaced, not added again; the ledger has a second decision
    result = materialize(
        [batch],
        partition_key=batch_partition(HOUSEHOLDS.id, FIRST),
        resources={"platform": platform},
        instance=instance,
    )
    assert result.success
    rows = bronze(warehouse)
    assert rows.height == 10 and set(rows["_batch_id"]) == {FIRST}
    assert rows["id_number"].n_unique() == 10
    assert decisions(warehouse, FIRST) == ["loaded", "loaded"]
    rerun = latest(instance, HOUSEHOLDS.id, FIRST)
    assert (rerun["status"], rerun["rows_loaded"], rerun["landed_by"]) == ("loaded", 10, "land_batches")
    assert rerun["silver_action"] == "rebuilt" and rerun["silver_rows"] == 10

    # the department fixes the rejected batch in place; landing it again loads it and clears its quarantine
    write_batch(landing, HOUSEHOLDS.id, SECOND, [person(i) for i in range(12)])
    result = materialize(
        [batch],
        partition_key=batch_partition(HOUSEHOLDS.id, SECOND),
        resources={"platform": platform},
        instance=instance,
    )
    assert result.success
    assert decisions(warehouse, SECOND) == ["rejected", "loaded"]
    fixed = latest(instance, HOUSEHOLDS.id, SECOND)
    assert (fixed["status"], fixed["rows_loaded"], fixed["rows_quarantined"]) == ("loaded", 12, 0)
    rows = bronze(warehouse)
    assert rows.group_by("_batch_id").len().sort("_batch_id").rows() == [(FIRST, 10), (SECOND, 12)]
    assert read_quarantine(warehouse).filter(pl.col("batch_id") == SECOND).height == 0
    silver = pl.from_arrow(warehouse.table(f"silver/{HOUSEHOLDS.table_path}").to_pyarrow_table())
    assert isinstance(silver, pl.DataFrame)
    assert silver.height == 12 and set(silver["_batch_id"]) == {SECOND}  # the later snapshot is the state

    # a normal run after the re-runs finds nothing new to land and duplicates nothing
    assert materialize(assets, resources={"platform": platform}, instance=instance).success
    assert bronze(warehouse).height == 22


def test_a_loaded_batch_broken_in_place_and_rerun_leaves_bronze_and_silver(landing, warehouse, platform) -> None:
    write_batch(landing, HOUSEHOLDS.id, FIRST, [person(i) for i in range(10)])
    instance = DagsterInstance.ephemeral()
    assert materialize(
        [build_bronze_asset(HOUSEHOLDS), build_silver_asset(HOUSEHOLDS)],
        resources={"platform": platform},
        instance=instance,
    ).success
    write_batch(landing, HOUSEHOLDS.id, FIRST, [person(i, id_number="bad") for i in range(10)])
    key = batch_partition(HOUSEHOLDS.id, FIRST)
    assert materialize([batch], partition_key=key, resources={"platform": platform}, instance=instance).success
    assert decisions(warehouse, FIRST) == ["loaded", "rejected"]
    assert bronze(warehouse).height == 0  # the batch's rows left bronze in the same commit as nothing arrived
    quarantine = read_quarantine(warehouse).filter(pl.col("batch_id") == FIRST)
    assert quarantine["row_number"].n_unique() == 10 and quarantine["quarantined_at"].n_unique() == 1
    assert warehouse.table(f"silver/{HOUSEHOLDS.table_path}").to_pyarrow_table().num_rows == 0


def test_rerunning_an_unchanged_batch_with_bad_rows_replaces_bronze_and_quarantine(
    landing, warehouse, platform
) -> None:
    rows = [person(i, id_number="bad") if i == 0 else person(i) for i in range(40)]
    write_batch(landing, HOUSEHOLDS.id, FIRST, rows)
    instance = DagsterInstance.ephemeral()
    assert materialize([build_bronze_asset(HOUSEHOLDS)], resources={"platform": platform}, instance=instance).success
    before = read_quarantine(warehouse).height
    assert before > 0 and bronze(warehouse).height == 39
    key = batch_partition(HOUSEHOLDS.id, FIRST)
    for _ in range(2):
        assert materialize([batch], partition_key=key, resources={"platform": platform}, instance=instance).success
    assert bronze(warehouse).height == 39 and read_quarantine(warehouse).height == before
    assert decisions(warehouse, FIRST) == ["loaded", "loaded", "loaded"]
    assert set(read_ledger(warehouse)["rows_quarantined"]) == {1}


def test_cli_reruns_a_batch_and_refuses_an_unknown_one(tmp_path, landing, warehouse, platform, monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("YIWANG_HOME", str(tmp_path / "home"))
    deliver(landing)
    assert materialize(
        [build_bronze_asset(HOUSEHOLDS)], resources={"platform": platform}, instance=DagsterInstance.ephemeral()
    ).success
    write_batch(landing, HOUSEHOLDS.id, SECOND, [person(i) for i in range(12)])
    common = ["--landing", str(landing), "--warehouse", warehouse.root]
    result = CliRunner().invoke(
        app, ["batches", "rerun", f"{HOUSEHOLDS.id}/{SECOND}", *common], prog_name="yiwang", env={"COLUMNS": "100"}
    )
    assert result.exit_code == 0, result.output
    assert f"{HOUSEHOLDS.id}/{SECOND}: loaded, 12 rows loaded" in result.output
    assert decisions(warehouse, SECOND) == ["rejected", "loaded"]

    for wrong, words in [
        (f"{HOUSEHOLDS.id}/20991231T000000", "no batch"),
        ("gongan.household_registration", "does not name a batch"),
    ]:
        result = CliRunner().invoke(app, ["batches", "rerun", wrong, *common], prog_name="yiwang")
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and words in lines[0], result.stderr

    # another run holds the warehouse: one line, the lock's exit code, nothing landed
    repo = Path(__file__).resolve().parent.parent
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, warehouse.root], cwd=repo, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(app, ["batches", "rerun", f"{HOUSEHOLDS.id}/{SECOND}", *common], prog_name="yiwang")
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == LOCKED, result.output
    assert "another run holds the warehouse" in result.stderr and result.stderr.strip().count("\n") == 0
    assert decisions(warehouse, SECOND) == ["rejected", "loaded"]


def test_the_sensor_registers_new_batches_as_partitions(landing, warehouse, platform) -> None:
    from dagster import SensorResult, build_sensor_context

    from orchestration.ingestion_assets import new_landing_batches

    deliver(landing)
    with (
        DagsterInstance.ephemeral() as instance,
        build_sensor_context(instance=instance, resources={"platform": platform}) as context,
    ):
        result = new_landing_batches(context)
        assert isinstance(result, SensorResult)
        [request] = result.dynamic_partitions_requests
        assert request.partitions_def_name == LANDING_BATCHES
        assert set(request.partition_keys) == {batch_partition(HOUSEHOLDS.id, b) for b in (FIRST, SECOND)}

        # batches decided by a run on another Dagster instance (or before batches were partitions) are registered
        # by the next evaluation, which starts no run for them
        assert materialize(
            [build_bronze_asset(HOUSEHOLDS)], resources={"platform": platform}, instance=DagsterInstance.ephemeral()
        ).success
        instance.add_dynamic_partitions(LANDING_BATCHES, [batch_partition(HOUSEHOLDS.id, FIRST)])
        with build_sensor_context(instance=instance, resources={"platform": platform}) as context:
            result = new_landing_batches(context)
        assert isinstance(result, SensorResult) and not result.run_requests
        [request] = result.dynamic_partitions_requests
        assert request.partition_keys == [batch_partition(HOUSEHOLDS.id, SECOND)]


def test_the_run_summary_counts_each_batch_once(landing, platform, tmp_path) -> None:
    """The per-batch partition records a bronze step logs do not add to the `yiwang run` stage line."""
    import io

    from dagster import Definitions, define_asset_job, in_process_executor
    from rich.console import Console

    from orchestration.run_report import execute

    deliver(landing)
    job = define_asset_job("planted", executor_def=in_process_executor)
    defs = Definitions(assets=[build_bronze_asset(HOUSEHOLDS)], jobs=[job], resources={"platform": platform})
    out = io.StringIO()
    report = execute(defs.resolve_job_def("planted"), DagsterInstance.ephemeral(), Console(file=out, width=80))
    assert report.success
    assert "1 batches, 1 rejected, 6 rows bad" in out.getvalue(), out.getvalue()
