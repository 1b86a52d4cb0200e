"""`ingestion.delta_tables`: one snapshot per table and thread, always at the latest version when handed out."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from ingestion.delta_append import StagedAppend
from ingestion.delta_tables import latest
from ingestion.ledger import append_once
from ingestion.warehouse import Warehouse

SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("n", pa.int64())])


def _rows(*ids: str) -> pa.Table:
    return pa.table({"id": list(ids), "n": list(range(len(ids)))}, schema=SCHEMA)


def _ids(table: DeltaTable) -> list[str]:
    return sorted(table.to_pyarrow_table()["id"].to_pylist())


def test_a_snapshot_is_kept_and_sees_every_later_commit(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    assert latest(uri) is None
    assert latest(str(tmp_path)) is None
    write_deltalake(uri, _rows("a"))
    first = latest(uri)
    assert first is not None
    write_deltalake(uri, _rows("b"), mode="append")  # another writer, not through the snapshot
    again = latest(uri)
    assert again is first
    assert again.version() == 1 and _ids(again) == ["a", "b"]


def test_a_table_made_again_at_the_same_path_is_not_read_from_the_old_snapshot(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    write_deltalake(uri, _rows("old1"))
    for _ in range(3):
        write_deltalake(uri, _rows("old2"), mode="append")
    assert latest(uri).version() == 3  # type: ignore[union-attr]
    shutil.rmtree(uri)  # no open in between: the snapshot of the old table is still kept
    write_deltalake(uri, _rows("new"))
    for _ in range(5):  # more versions than the old table had: update_incremental alone would mix the two
        write_deltalake(uri, _rows("new"), mode="append")
    table = latest(uri)
    assert table is not None and table.version() == 5
    assert _ids(table) == ["new"] * 6 == _ids(DeltaTable(uri))


def test_a_table_swapped_in_by_rename_is_opened_afresh(tmp_path: Path) -> None:
    uri, staging = tmp_path / "t", tmp_path / "staging"
    write_deltalake(str(uri), _rows("old"))
    assert _ids(latest(str(uri))) == ["old"]  # type: ignore[arg-type]
    write_deltalake(str(staging), _rows("new", "newer"))
    shutil.rmtree(uri)
    staging.rename(uri)
    assert _ids(latest(str(uri))) == ["new", "newer"]  # type: ignore[arg-type]


def test_each_thread_has_its_own_snapshot(tmp_path: Path) -> None:
    uri = str(tmp_path / "t")
    write_deltalake(uri, _rows("a"))
    mine = latest(uri)
    theirs: list[DeltaTable | None] = []
    thread = threading.Thread(target=lambda: theirs.append(latest(uri)))
    thread.start()
    thread.join()
    assert theirs[0] is not None and theirs[0] is not mine
    assert latest(uri) is mine


def test_warehouse_table_shares_the_snapshot_and_still_names_a_missing_table(tmp_path: Path) -> None:
    warehouse = Warehouse.at(tmp_path / "warehouse")
    append_once(warehouse, "ops/t", _rows("a"), "app-1", schema=SCHEMA)
    assert warehouse.table("ops/t") is warehouse.table("ops/t")
    with pytest.raises(TableNotFoundError):  # deltalake's own error, as before the snapshots were kept
        warehouse.table("ops/missing")


def test_a_staged_append_does_not_commit_a_batch_that_the_shared_snapshot_shows_committed(tmp_path: Path) -> None:
    """The snapshot moved past another commit of the same app id between the staging and the commit: delta-rs's
    conflict check reads from the snapshot's version, so only the check at the commit stops a duplicate."""
    warehouse = Warehouse.at(tmp_path / "warehouse")
    append_once(warehouse, "bronze/t", _rows("a"), "app-0", schema=SCHEMA)
    staged = StagedAppend(warehouse.uri("bronze/t"), SCHEMA, app_id="app-1")
    staged.write(_rows("b"))
    assert append_once(warehouse, "bronze/t", _rows("b"), "app-1", schema=SCHEMA)
    warehouse.table("bronze/t")  # any opener of the same table in this thread moves the snapshot on
    assert staged.commit() is False
    assert _ids(DeltaTable(warehouse.uri("bronze/t"))) == ["a", "b"]
    written = {a.path for a in staged.actions}
    assert not written, "the staged files are removed when the commit is skipped"
    on_disk = {p.name for p in Path(warehouse.uri("bronze/t")).rglob("*.parquet")}
    assert len(on_disk) == 2
