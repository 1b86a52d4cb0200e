"""Replacing a whole table only when its content changed: a rebuild that changes nothing writes no new version.

Gold products and ops reports are rebuilt whole on every run that touches their inputs. A new Delta version per
rebuild that changes nothing would bury the versions that do (someone looks back for when a figure changed),
wake every change-feed reader, and make "nothing new" runs write. Each replacement carries a fingerprint of its
content in the commit's metadata (`yiwang.content`); the next replacement with the same fingerprint is skipped
without reading the table.

The fingerprint is order-independent (the sum of polars' row hashes, with the row count and the schema), because
DuckDB and polars do not promise an order: two runs that give the same rows in another order are the same content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, write_deltalake

from ingestion.warehouse import Warehouse

CONTENT_KEY = "yiwang.content"


def content_fingerprint(rows: pa.Table, ignore: Sequence[str] = ()) -> str:
    """Schema, row count and the sum of the rows' hashes: equal for the same rows in any order.

    `ignore` names columns left out (a `built_at` stamp that changes on every rebuild is not content).
    """
    rows = rows.drop_columns([name for name in ignore if name in rows.column_names])
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    high = low = 0
    if frame.height and frame.width:
        hashes = frame.hash_rows(seed=0).to_frame("h")
        # two sums of 32-bit halves: exact (no overflow below 4 bn rows), unlike one sum of 64-bit hashes
        halves = hashes.select(
            (pl.col("h") // (1 << 32)).sum().alias("high"), (pl.col("h") % (1 << 32)).sum().alias("low")
        ).row(0)
        high, low = int(halves[0]), int(halves[1])
    schema = ",".join(f"{f.name}:{f.type}" for f in rows.schema)
    return hashlib.sha256(f"{schema}|{rows.num_rows}|{high}|{low}".encode()).hexdigest()


def stored_fingerprint(warehouse: Warehouse, table: str) -> str | None:
    """The content fingerprint of the table's last commit, when that commit was a replacement made here."""
    if not warehouse.exists(table):
        return None
    history = warehouse.table(table).history(1)
    return str(history[0].get(CONTENT_KEY)) if history and history[0].get(CONTENT_KEY) else None


def replace_table(
    warehouse: Warehouse, table: str, rows: pa.Table, *, schema_mode: str = "overwrite", ignore: Sequence[str] = ()
) -> bool:
    """Overwrite `table` with `rows` unless it already holds exactly them (the `ignore` columns aside); True when a
    version was written."""
    fingerprint = content_fingerprint(rows, ignore)
    if stored_fingerprint(warehouse, table) == fingerprint:
        return False
    write_deltalake(
        warehouse.uri(table),
        rows,
        mode="overwrite",
        schema_mode=schema_mode,  # type: ignore[arg-type]
        storage_options=warehouse.options(),
        commit_properties=CommitProperties(custom_metadata={CONTENT_KEY: fingerprint}),
    )
    return True
