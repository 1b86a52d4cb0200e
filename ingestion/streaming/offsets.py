"""Where each topic-partition stands, according to Delta (the only offsets that count).

A streamed bronze table records, in the same commit as a micro-batch's rows, one Delta application
transaction per topic-partition whose version is the last offset the commit covers
(`kafka:<topic>#<epoch>:<partition>`). A consumer resumes from there, so a crash anywhere loses
nothing and writes nothing twice; Kafka's committed group offsets are only a convenience for tools.

The epoch changes only when a data officer accepts that the broker's log was replaced (an ephemeral
broker that came back empty, a topic recreated): `yiwang stream reset` appends a row to
`ops/stream_epochs` with who, when, why and the offsets given up, and consumption starts again from
the broker's beginning under the new epoch. Duplicate detection still runs, so records the new log
repeats are dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable

from ingestion.delta_append import append_frame
from ingestion.warehouse import Warehouse

EPOCHS = "ops/stream_epochs"
EPOCH_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("epoch", pa.int64(), nullable=False),
        pa.field("reset_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("reset_by", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("offsets_before", pa.string(), nullable=False),  # JSON {partition: last offset in Delta}
    ]
)


def app_id(topic: str, epoch: int, partition: int) -> str:
    return f"kafka:{topic}#{epoch}:{partition}"


def current_epoch(warehouse: Warehouse, topic: str) -> int:
    if not warehouse.exists(EPOCHS):
        return 0
    epochs = pl.from_arrow(warehouse.table(EPOCHS).to_pyarrow_table(columns=["topic", "epoch"]))
    assert isinstance(epochs, pl.DataFrame)
    mine = epochs.filter(pl.col("topic") == topic)
    return int(mine["epoch"].max()) if mine.height else 0  # type: ignore[arg-type]


@dataclass(frozen=True)
class PartitionOffsets:
    """The last offset Delta holds per partition (None: nothing consumed in this epoch)."""

    topic: str
    epoch: int
    last: dict[int, int | None]

    def next_offset(self, partition: int) -> int | None:
        last = self.last.get(partition)
        return None if last is None else last + 1


def read_offsets(table: DeltaTable | None, topic: str, epoch: int, partitions: list[int]) -> PartitionOffsets:
    last = {p: (table.transaction_version(app_id(topic, epoch, p)) if table is not None else None) for p in partitions}
    return PartitionOffsets(topic, epoch, last)


def start_new_epoch(
    warehouse: Warehouse, bronze_table: str, topic: str, partitions: int, reset_by: str, reason: str
) -> tuple[int, dict[int, int | None]]:
    """Record that consumption of `topic` restarts from the broker's beginning; returns the new epoch and
    the offsets given up."""
    if not reason.strip():
        raise ValueError("a reset needs a reason (--reason): it is kept in ops/stream_epochs for the audit")
    epoch = current_epoch(warehouse, topic)
    table = warehouse.table(bronze_table) if warehouse.exists(bronze_table) else None
    before = read_offsets(table, topic, epoch, list(range(partitions))).last
    row = pa.Table.from_pylist(
        [
            {
                "topic": topic,
                "epoch": epoch + 1,
                "reset_at": datetime.now(UTC),
                "reset_by": reset_by,
                "reason": reason.strip(),
                "offsets_before": json.dumps({str(p): v for p, v in before.items()}),
            }
        ],
        schema=EPOCH_SCHEMA,
    )
    append_frame(
        warehouse.uri(EPOCHS),
        row,
        EPOCH_SCHEMA,
        app_id=f"{EPOCHS}:{topic}#{epoch + 1}",
        storage_options=warehouse.options(),
    )
    return epoch + 1, before
