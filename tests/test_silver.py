"""Silver current state: snapshot and incremental semantics, late batches, pseudonyms."""

from __future__ import annotations

import polars as pl
import pyarrow as pa
import pytest

from ingestion.bronze import ingest_batch
from ingestion.contract import get_contract
from ingestion.landing import find_batches
from ingestion.silver import apply_silver
from tests.conftest import person, resident_id
from tests.landing_kit import write_batch

HOUSEHOLDS = get_contract("gongan.household_registration")
FUND = get_contract("gongjijin.provident_fund")


def land(landing, warehouse):
    return [ingest_batch(b, warehouse) for b in find_batches(landing)]


def silver(warehouse, contract) -> pl.DataFrame:
    return pl.from_arrow(warehouse.table(f"silver/{contract.table_path}").to_pyarrow_table())


def fund_row(i: int, period: str, **changes) -> dict:
    row = {
        "account_no": f"A{i:04d}",
        "id_number": resident_id(i),
        "name": f"职工{i}",
        "period": period,
        "monthly_deposit_cny": 800.0,
        "balance_cny": 10_000.0 + i,
        "status": "normal",
    }
    row.update(changes)
    return row


def test_snapshot_replaces_the_current_state(landing, warehouse, pseudonymiser):
    write_batch(landing, HOUSEHOLDS.id, "20261001T020000", [person(i) for i in range(10)])
    land(landing, warehouse)
    assert apply_silver(HOUSEHOLDS, warehouse, pseudonymiser).action == "replaced"
    write_batch(landing, HOUSEHOLDS.id, "20261101T020000", [person(i, status="moved_out") for i in range(5, 12)])
    land(landing, warehouse)
    outcome = apply_silver(HOUSEHOLDS, warehouse, pseudonymiser)
    assert outcome.action == "replaced" and outcome.applied_batches == ("20261101T020000",)
    frame = silver(warehouse, HOUSEHOLDS)
    keys = {pseudonymiser.pseudonym(resident_id(i)) for i in range(5, 12)}
    assert set(frame["id_number_key"]) == keys  # 0-4 are no longer current
    assert set(frame["status"]) == {"moved_out"} and set(frame["_batch_id"]) == {"20261101T020000"}


def test_incremental_batches_merge_in_batch_order(landing, warehouse, pseudonymiser):
    write_batch(landing, FUND.id, "20261001T020000", [fund_row(i, "2026-09") for i in range(6)], mode="incremental")
    land(landing, warehouse)
    apply_silver(FUND, warehouse, pseudonymiser)
    write_batch(
        landing,
        FUND.id,
        "20261101T020000",
        [fund_row(1, "2026-09", name="一"), fund_row(1, "2026-10")],
        mode="incremental",
    )
    write_batch(landing, FUND.id, "20261102T020000", [fund_row(1, "2026-09", name="二")], mode="incremental")
    land(landing, warehouse)
    outcome = apply_silver(FUND, warehouse, pseudonymiser)
    assert outcome.action == "merged" and outcome.applied_batches == ("20261101T020000", "20261102T020000")
    frame = silver(warehouse, FUND)
    assert frame.height == 7
    row = frame.filter((pl.col("account_no") == "A0001") & (pl.col("period") == "2026-09")).row(0, named=True)
    assert row["name"] == "二" and row["_batch_id"] == "20261102T020000"
    assert apply_silver(FUND, warehouse, pseudonymiser).action == "unchanged"


def test_late_batch_rebuilds_in_order(landing, warehouse, pseudonymiser):
    write_batch(landing, FUND.id, "20261102T020000", [fund_row(1, "2026-09", name="二")], mode="incremental")
    land(landing, warehouse)
    apply_silver(FUND, warehouse, pseudonymiser)
    # An older batch arrives afterwards: it must not overwrite the newer value.
    write_batch(
        landing,
        FUND.id,
        "20261101T020000",
        [fund_row(1, "2026-09", name="一"), fund_row(2, "2026-09")],
        mode="incremental",
    )
    land(landing, warehouse)
    assert apply_silver(FUND, warehouse, pseudonymiser).action == "rebuilt"
    frame = silver(warehouse, FUND).sort("account_no")
    assert frame["name"].to_list() == ["二", "职工2"]


def test_incremental_after_snapshot_then_new_snapshot(landing, warehouse, pseudonymiser):
    write_batch(landing, HOUSEHOLDS.id, "20261001T020000", [person(i) for i in range(4)])
    write_batch(landing, HOUSEHOLDS.id, "20261002T020000", [person(9)], mode="incremental")
    land(landing, warehouse)
    apply_silver(HOUSEHOLDS, warehouse, pseudonymiser)
    assert silver(warehouse, HOUSEHOLDS).height == 5
    write_batch(
        landing,
        HOUSEHOLDS.id,
        "20261003T020000",
        [person(i, name="新") for i in range(4)],
        mode="incremental",
    )
    write_batch(landing, HOUSEHOLDS.id, "20261004T020000", [person(1), person(2)])
    land(landing, warehouse)
    apply_silver(HOUSEHOLDS, warehouse, pseudonymiser)
    frame = silver(warehouse, HOUSEHOLDS)
    assert frame.height == 2 and "新" not in frame["name"].to_list()


def test_sensitive_values_never_reach_silver(landing, warehouse, pseudonymiser):
    write_batch(landing, FUND.id, "20261001T020000", [fund_row(i, "2026-09") for i in range(6)], mode="incremental")
    land(landing, warehouse)
    apply_silver(FUND, warehouse, pseudonymiser)
    frame = silver(warehouse, FUND)
    assert "id_number" not in frame.columns
    # Incomes and balances are sensitive too: only their keyed form leaves bronze.
    assert {"monthly_deposit_cny_key", "balance_cny_key"} <= set(frame.columns)
    assert "monthly_deposit_cny" not in frame.columns and "balance_cny" not in frame.columns
    text = frame.write_csv()
    assert not any(resident_id(i) in text for i in range(6))
    # The same person gets the same key wherever the number appears, and only with the same key.
    assert frame.sort("account_no")["id_number_key"][0] == pseudonymiser.pseudonym(resident_id(0))
    # A number's key is the pseudonym of its text as Python writes it (hashed in DuckDB: silver._python_text).
    first = frame.sort("account_no").row(0, named=True)
    assert first["balance_cny_key"] == pseudonymiser.pseudonym(str(10_000.0))
    assert first["monthly_deposit_cny_key"] == pseudonymiser.pseudonym("800.0")


def test_a_number_key_is_the_pseudonym_of_its_text_also_for_negative_zero(landing, warehouse, pseudonymiser):
    """DuckDB's `=` holds -0.0 equal to 0.0; Python writes them apart, and so do their keys."""
    rows = [fund_row(0, "2026-09", balance_cny=0.0), fund_row(1, "2026-09", balance_cny=-0.0), fund_row(2, "2026-09")]
    write_batch(landing, FUND.id, "20261001T020000", rows, mode="incremental")
    land(landing, warehouse)
    apply_silver(FUND, warehouse, pseudonymiser)
    keys = silver(warehouse, FUND).sort("account_no")["balance_cny_key"].to_list()
    assert keys == [pseudonymiser.pseudonym(text) for text in ("0.0", "-0.0", "10002.0")]


def test_duckdb_file_reader_and_arrow_dataset_give_the_same_rows(landing, warehouse, pseudonymiser, monkeypatch):
    """The latest row per key comes from DuckDB's Parquet reader on a local table and from deltalake's Arrow
    dataset elsewhere (an object store): both give the same silver rows, the later batch winning."""
    import ingestion.silver as silver_module

    deliveries = (("20261001T020000", "normal", 8), ("20261002T020000", "sealed", 4), ("20261003T020000", "closed", 4))
    for day, status, accounts in deliveries:
        rows = [fund_row(i, "2026-09", status=status) for i in range(accounts)]
        write_batch(landing, FUND.id, day, rows, mode="incremental")
    land(landing, warehouse)
    order = {"20261001T020000": 0, "20261002T020000": 1, "20261003T020000": 2}

    def read() -> pl.DataFrame:
        with silver_module.current_rows(warehouse, FUND, order, pseudonymiser) as (reader, count):
            frame = pl.from_arrow(reader.read_all())
        assert count == [frame.height]
        return frame.sort("account_no")

    by_files = read()
    monkeypatch.setattr(silver_module, "_batch_files", lambda warehouse, contract, order: None)
    by_dataset = read()
    assert by_files.equals(by_dataset)
    assert by_files.height == 8
    latest = {row["account_no"]: (row["status"], row["_batch_id"]) for row in by_files.iter_rows(named=True)}
    assert latest["A0000"] == ("closed", "20261003T020000") and latest["A0007"] == ("normal", "20261001T020000")


@pytest.mark.parametrize("by_dataset", [False, True])
def test_the_latest_row_per_key_is_the_same_whether_repeated_keys_are_windowed_apart_or_all_rows_are(
    landing, warehouse, pseudonymiser, monkeypatch, by_dataset
):
    """`_latest_per_key` windows only the rows of repeated keys when they are at most half of the rows, all rows
    otherwise, and none when no key repeats: each way gives the latest row of every key, in both readers."""
    import ingestion.silver as silver_module

    deliveries = (("20261001T020000", "normal", range(10)), ("20261002T020000", "sealed", (2, 3, 10)))
    deliveries += (("20261003T020000", "closed", (3,)),)
    for day, status, accounts in deliveries:
        write_batch(
            landing, FUND.id, day, [fund_row(i, "2026-09", status=status) for i in accounts], mode="incremental"
        )
    land(landing, warehouse)
    if by_dataset:
        monkeypatch.setattr(silver_module, "_batch_files", lambda warehouse, contract, order: None)

    def read(order: dict[str, int], share: float) -> pl.DataFrame:
        monkeypatch.setattr(silver_module, "REPEATED_SHARE_FOR_WINDOW", share)
        with silver_module.current_rows(warehouse, FUND, order, pseudonymiser) as (reader, count):
            frame = pl.from_arrow(reader.read_all())
        assert count == [frame.height]
        return frame.sort("account_no")

    order = {day: ordinal for ordinal, (day, _, _) in enumerate(deliveries)}
    apart, all_rows = read(order, 1.0), read(order, 0.0)  # 5 of 14 rows repeat: apart by default
    assert apart.equals(all_rows) and apart.equals(read(order, silver_module.REPEATED_SHARE_FOR_WINDOW))
    latest = {row["account_no"]: (row["status"], row["_batch_id"]) for row in apart.iter_rows(named=True)}
    assert len(latest) == apart.height == 11
    assert latest["A0002"] == ("sealed", "20261002T020000") and latest["A0003"] == ("closed", "20261003T020000")
    assert latest["A0010"] == ("sealed", "20261002T020000") and latest["A0009"] == ("normal", "20261001T020000")
    assert apart.columns == all_rows.columns == FUND.silver_schema().names
    first = read(dict(list(order.items())[:1]), 0.0)  # no key repeats: every row as it is
    assert first.height == 10 and set(first["status"]) == {"normal"}


def test_the_key_check_counts_rows_that_share_a_key(landing, warehouse, pseudonymiser, monkeypatch):
    """`silver_key_counts` (the primary_key_unique check) finds a duplicated key, through DuckDB's Parquet reader
    and through the Arrow dataset alike."""
    from deltalake import write_deltalake

    from ingestion.silver import silver_key_counts

    write_batch(landing, FUND.id, "20261001T020000", [fund_row(i, "2026-09") for i in range(5)], mode="incremental")
    land(landing, warehouse)
    apply_silver(FUND, warehouse, pseudonymiser)
    assert silver_key_counts(warehouse, FUND) == (5, 0)
    table = f"silver/{FUND.table_path}"
    write_deltalake(warehouse.uri(table), warehouse.table(table).to_pyarrow_table().slice(0, 2), mode="append")
    assert silver_key_counts(warehouse, FUND) == (7, 4)
    monkeypatch.setattr(type(warehouse), "parquet_files", lambda self, table: None)
    assert silver_key_counts(warehouse, FUND) == (7, 4)


def test_a_confirmed_empty_snapshot_empties_silver(landing, warehouse, pseudonymiser):
    """A snapshot without rows (its shrink confirmed by the sender) leaves bronze without a file for it: silver
    becomes empty, and its key check counts nothing."""
    from ingestion.silver import silver_key_counts

    write_batch(landing, HOUSEHOLDS.id, "20261001T020000", [person(i) for i in range(3)])
    land(landing, warehouse)
    apply_silver(HOUSEHOLDS, warehouse, pseudonymiser)
    write_batch(landing, HOUSEHOLDS.id, "20261101T020000", [], manifest_overrides={"confirm_shrink": True})
    assert land(landing, warehouse)[-1].status == "loaded"
    outcome = apply_silver(HOUSEHOLDS, warehouse, pseudonymiser)
    assert (outcome.action, outcome.rows) == ("replaced", 0)
    assert silver(warehouse, HOUSEHOLDS).height == 0
    assert silver_key_counts(warehouse, HOUSEHOLDS) == (0, 0)


def test_files_without_a_column_of_the_contract_go_through_the_arrow_dataset(tmp_path):
    """Bronze files written before the contract gained a column lack it. Beside newer files DuckDB's reader fills
    it with nulls (`union_by_name`); when every file lacks it the table is read through deltalake's dataset,
    which does the same from the Delta schema."""
    import duckdb
    import pyarrow.parquet as pq

    from ingestion.silver import _has_columns

    full = {name: ["x"] for name in FUND.column_names}
    pq.write_table(pa.table(full), tmp_path / "new.parquet")
    pq.write_table(pa.table({k: v for k, v in full.items() if k != "status"}), tmp_path / "old.parquet")
    with duckdb.connect() as connection:
        assert _has_columns(connection, f"'{tmp_path / 'new.parquet'}'", FUND)
        both = f"'{tmp_path / 'new.parquet'}', '{tmp_path / 'old.parquet'}'"
        assert _has_columns(connection, both, FUND)
        statuses = connection.sql(f"select status from read_parquet([{both}], union_by_name = true)").fetchall()
        assert sorted(statuses, key=str) == [("x",), (None,)]
        assert not _has_columns(connection, f"'{tmp_path / 'old.parquet'}'", FUND)
