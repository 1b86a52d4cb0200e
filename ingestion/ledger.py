"""The two operational tables every batch leaves a trace in: `ops/batch_ledger` and `quarantine/rows`.

Their first columns are the interface of ../shared/DESIGN.md; the later ones are extensions that data
officers asked for (which rule rejected a batch, when it was extracted, which line a bad row is on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from ingestion.delta_append import StagedAppend, append_frame, arrow_schema_of, conform
from ingestion.warehouse import BATCH_LEDGER, QUARANTINE_ROWS, Warehouse

LEDGER_SCHEMA = pa.schema(
    [
        pa.field("contract_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # loaded | rejected
        pa.field("reason", pa.string()),
        pa.field("rows_loaded", pa.int64(), nullable=False),
        pa.field("rows_quarantined", pa.int64(), nullable=False),
        pa.field("processed_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("rule", pa.string()),  # the batch-level rule that rejected it, e.g. sha256
        pa.field("contract_version", pa.string()),
        pa.field("source_level", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("extracted_at", pa.timestamp("us", tz="UTC")),
        pa.field("rows_delivered", pa.int64()),
        pa.field("batch_ordinal", pa.int64(), nullable=False),
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("contract_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("record_key", pa.string(), nullable=False),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("raw_record", pa.string(), nullable=False),
        pa.field("column", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("row_number", pa.int64()),
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


@dataclass(frozen=True)
class LedgerEntry:
    contract_id: str
    batch_id: str
    status: str
    reason: str | None
    rows_loaded: int
    rows_quarantined: int
    processed_at: datetime
    rule: str | None = None
    contract_version: str | None = None
    source_level: str | None = None
    mode: str | None = None
    extracted_at: datetime | None = None
    rows_delivered: int | None = None
    batch_ordinal: int = -1


def now_utc() -> datetime:
    return datetime.now(UTC)


def batch_transaction(table: str, contract_id: str, batch_id: str) -> str:
    """The Delta application-transaction id that marks a batch as written to one table."""
    return f"yiwang.ingest/{table}/{contract_id}/{batch_id}"


def already_written(warehouse: Warehouse, table: str, app_id: str) -> bool:
    if not warehouse.exists(table):
        return False
    return warehouse.table(table).transaction_version(app_id) is not None


def append_once(
    warehouse: Warehouse,
    table: str,
    data: pa.Table | pl.DataFrame,
    app_id: str,
    *,
    partition_by: list[str] | None = None,
    schema: pa.Schema | None = None,
) -> bool:
    """Append `data` in one Delta commit unless the commit carrying `app_id` already happened.

    This is what makes a re-run after a crash complete a batch instead of duplicating it. `schema` is
    the table's schema (types and nullability); without it an Arrow table keeps its own schema and a
    polars frame gets the Arrow types of its columns. Returns whether anything was written.
    """
    return append_frame(
        warehouse.uri(table),
        data,
        schema if schema is not None else arrow_schema_of(data),
        app_id=app_id,
        partition_by=partition_by,
        storage_options=warehouse.options(),
    )


def staged_append(
    warehouse: Warehouse, table: str, app_id: str, *, partition_by: list[str] | None = None, schema: pa.Schema
) -> StagedAppend:
    """`append_once` for rows that arrive in pieces: write each with `.write`, then `.commit()` once."""
    return StagedAppend(
        warehouse.uri(table), schema, app_id=app_id, partition_by=partition_by, storage_options=warehouse.options()
    )


def replace_once(
    warehouse: Warehouse,
    table: str,
    data: pa.Table | pl.DataFrame | None,
    app_id: str,
    where: dict[str, str],
    *,
    partition_by: list[str] | None = None,
    schema: pa.Schema | None = None,
) -> bool:
    """Replace the rows matching `where` (column = value, all of them) with `data` (None or empty: delete
    them) in ONE Delta commit carrying `app_id`, unless that commit already happened.

    This is how a batch is landed again (`ingestion.pipeline.land_batch`): its earlier rows go and its new
    rows arrive in the same version, so no reader ever sees the batch twice or not at all, and a re-run
    after a crash finds `app_id` and writes nothing. Returns whether anything was written.
    """
    empty = data is None or (data.num_rows if isinstance(data, pa.Table) else data.height) == 0
    if not warehouse.exists(table):
        if empty:
            return False
        assert data is not None
        return append_once(warehouse, table, data, app_id, partition_by=partition_by, schema=schema)
    current = warehouse.table(table)
    if current.transaction_version(app_id) is not None:
        return False
    predicate = " AND ".join(f"{column} = '{value.replace(chr(39), chr(39) * 2)}'" for column, value in where.items())
    commit = CommitProperties(app_transactions=[Transaction(app_id, 1)])
    if empty:
        current.delete(predicate, commit_properties=commit)
        return True
    assert data is not None
    target = schema if schema is not None else arrow_schema_of(data)
    rows = conform(data, target, uri=warehouse.uri(table)).to_arrow().cast(target)
    write_deltalake(
        current,
        rows,
        mode="overwrite",
        predicate=predicate,
        partition_by=partition_by,
        storage_options=warehouse.options(),
        commit_properties=commit,
    )
    return True


def write_ledger(warehouse: Warehouse, entry: LedgerEntry, attempt: str = "") -> None:
    """Append a batch's ledger row once. `attempt` names a later decision on a batch the ledger already
    holds (a confirmed snapshot), which gets a row of its own."""
    row = {f.name: [getattr(entry, f.name)] for f in LEDGER_SCHEMA}
    table = pa.Table.from_pydict(row, schema=LEDGER_SCHEMA)
    batch = f"{entry.batch_id}#{attempt}" if attempt else entry.batch_id
    append_once(warehouse, BATCH_LEDGER, table, batch_transaction(BATCH_LEDGER, entry.contract_id, batch))


# A data officer's confirmation that a held snapshot (empty, or removing many rows) is right.
CONFIRMATIONS = "ops/batch_confirmations"
CONFIRMATION_SCHEMA = pa.schema(
    [
        pa.field("contract_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        pa.field("confirmed_by", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("confirmed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
SNAPSHOT_SHRINK = "snapshot_shrink"


def write_confirmation(warehouse: Warehouse, contract_id: str, batch_id: str, confirmed_by: str, reason: str) -> None:
    row = {
        "contract_id": [contract_id],
        "batch_id": [batch_id],
        "confirmed_by": [confirmed_by],
        "reason": [reason],
        "confirmed_at": [now_utc()],
    }
    table = pa.Table.from_pydict(row, schema=CONFIRMATION_SCHEMA)
    append_once(warehouse, CONFIRMATIONS, table, batch_transaction(CONFIRMATIONS, contract_id, batch_id))


def read_confirmations(warehouse: Warehouse) -> pl.DataFrame:
    return _read(warehouse, CONFIRMATIONS, CONFIRMATION_SCHEMA)


def write_quarantine(warehouse: Warehouse, contract_id: str, batch_id: str, rows: pl.DataFrame) -> None:
    if rows.height == 0:
        return
    append_once(
        warehouse,
        QUARANTINE_ROWS,
        rows.select(QUARANTINE_SCHEMA.names),
        batch_transaction(QUARANTINE_ROWS, contract_id, batch_id),
        schema=QUARANTINE_SCHEMA,
    )


def _read(warehouse: Warehouse, table: str, schema: pa.Schema) -> pl.DataFrame:
    """An ops table as polars; empty with its schema when it does not exist yet."""
    if not warehouse.exists(table):
        return pl.DataFrame(schema=pl.Schema(pl.from_arrow(schema.empty_table()).schema))
    frame = pl.from_arrow(warehouse.table(table).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def read_ledger(warehouse: Warehouse) -> pl.DataFrame:
    """Every decision on record: a batch landed again (`yiwang batches rerun`, the `ops/batch` partitions) or a
    held snapshot confirmed has one row per decision. `latest_decisions` keeps the one that stands."""
    return _read(warehouse, BATCH_LEDGER, LEDGER_SCHEMA)


def latest_decisions(ledger: pl.DataFrame) -> pl.DataFrame:
    """The last decision on each batch (by `processed_at`): what bronze and silver hold for it now."""
    return ledger.sort("processed_at", maintain_order=True).unique(
        subset=["contract_id", "batch_id"], keep="last", maintain_order=True
    )


def decisions_of(warehouse: Warehouse, contract_id: str, batch_id: str) -> int:
    """How many ledger rows a batch has (0: never decided)."""
    ledger = read_ledger(warehouse)
    return ledger.filter((pl.col("contract_id") == contract_id) & (pl.col("batch_id") == batch_id)).height


def read_quarantine(warehouse: Warehouse) -> pl.DataFrame:
    return _read(warehouse, QUARANTINE_ROWS, QUARANTINE_SCHEMA)
