"""Metering (接口调用): every request to the sharing server, refusals included, in `ops/share_access_log`,
and the daily usage per order and per department built from it (`gold/sharing/usage_daily`).

The server records a request in memory and a background thread appends what has gathered about once a
second in one Delta commit: a commit per request would cap the server at the speed of the commit
(tens per second) and bury the table in tiny files. `close()` writes what is left, so a server that
stops cleanly loses nothing; a killed server loses at most the last second.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

from ingestion.delta_append import append_frame
from ingestion.warehouse import Warehouse

ACCESS_LOG = "ops/share_access_log"
USAGE_DAILY = "gold/sharing/usage_daily"
log = logging.getLogger(__name__)

ACCESS_SCHEMA = pa.schema(
    [
        pa.field("at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("department", pa.string()),  # null when the token was refused
        pa.field("token_id", pa.string()),
        pa.field("method", pa.string(), nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),  # list_shares, metadata, query, changes, file, web, ...
        pa.field("path", pa.string(), nullable=False),
        pa.field("share", pa.string()),
        pa.field("schema", pa.string()),
        pa.field("table", pa.string()),
        pa.field("order_id", pa.string()),
        pa.field("dataset_id", pa.string()),
        pa.field("status", pa.int64(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),  # ok | refused | error
        pa.field("reason", pa.string()),
        pa.field("files", pa.int64(), nullable=False),
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("duration_ms", pa.float64(), nullable=False),
        pa.field("client", pa.string()),
    ]
)
# The endpoints whose answer lists files (and their rows) for a client to fetch.
LISTING_ENDPOINTS = ("query", "changes")
_DEFAULTS = {"files": 0, "rows": 0, "bytes": 0, "duration_ms": 0.0}


class AccessLog:
    """Buffered, thread-safe writer of `ops/share_access_log`."""

    def __init__(self, warehouse: Warehouse, flush_seconds: float = 1.0, max_rows: int = 5_000) -> None:
        self.warehouse = warehouse
        self.flush_seconds = flush_seconds
        self.max_rows = max_rows
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, **fields: object) -> None:
        """One request; `at`, `request_id` and the counters default when not given."""
        row = {name: None for name in ACCESS_SCHEMA.names} | _DEFAULTS | fields
        row["at"] = row["at"] or datetime.now(UTC)
        row["request_id"] = row["request_id"] or uuid.uuid4().hex
        with self._lock:
            self._rows.append(row)
            full = len(self._rows) >= self.max_rows
        if full:
            self.flush()

    def flush(self) -> int:
        """Append what has gathered in one commit; returns how many rows were written."""
        with self._write_lock:
            with self._lock:
                rows, self._rows = self._rows, []
            if not rows:
                return 0
            try:
                append_frame(
                    self.warehouse.uri(ACCESS_LOG),
                    pa.Table.from_pylist(rows, schema=ACCESS_SCHEMA),
                    ACCESS_SCHEMA,
                    app_id=f"{ACCESS_LOG}:{uuid.uuid4().hex}",
                    storage_options=self.warehouse.options(),
                )
            except Exception:  # keep the rows for the next try: metering must not be lost to a hiccup
                log.exception("could not append %d access-log rows; will retry", len(rows))
                with self._lock:
                    self._rows = rows + self._rows
                return 0
            return len(rows)

    def start(self) -> AccessLog:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="share-access-log", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()


def read_access_log(warehouse: Warehouse) -> pl.DataFrame:
    if not warehouse.exists(ACCESS_LOG):
        return pl.DataFrame(pl.from_arrow(ACCESS_SCHEMA.empty_table()))
    return pl.DataFrame(pl.from_arrow(warehouse.table(ACCESS_LOG).to_pyarrow_table()))


def usage_daily(access: pl.DataFrame) -> pl.DataFrame:
    """Calls per day (China Standard Time), department and order: 接口调用次数, refusals, files, rows, bytes."""
    day = pl.col("at").dt.convert_time_zone("Asia/Shanghai").dt.date().alias("day")
    return (
        access.with_columns(day, pl.col("department").fill_null("(anonymous)"))
        .group_by("day", "department", "order_id", "dataset_id")
        .agg(
            pl.len().cast(pl.Int64).alias("calls"),
            (pl.col("outcome") == "ok").sum().cast(pl.Int64).alias("ok_calls"),
            (pl.col("outcome") == "refused").sum().cast(pl.Int64).alias("refused_calls"),
            (pl.col("outcome") == "error").sum().cast(pl.Int64).alias("error_calls"),
            # rows as the queries listed them (a client may fetch a file more than once); bytes as downloaded
            pl.col("files").filter(pl.col("endpoint").is_in(LISTING_ENDPOINTS)).sum().alias("files_served"),
            pl.col("rows").filter(pl.col("endpoint").is_in(LISTING_ENDPOINTS)).sum().alias("rows_served"),
            pl.col("bytes").filter(pl.col("endpoint") == "file").sum().alias("bytes_served"),
            pl.col("duration_ms").median().alias("median_ms"),
        )
        .sort("day", "department", "order_id", nulls_last=True)
    )


def write_usage(warehouse: Warehouse, usage: pl.DataFrame) -> int | None:
    """Replace `gold/sharing/usage_daily` when its content changed; returns the table version (None: none yet)."""
    uri, options = warehouse.uri(USAGE_DAILY), warehouse.options()
    if warehouse.exists(USAGE_DAILY):
        table = warehouse.table(USAGE_DAILY)
        current = pl.DataFrame(pl.from_arrow(table.to_pyarrow_table()))
        if current.columns == usage.columns and current.equals(usage):
            return table.version()
    elif usage.is_empty():
        return None
    write_deltalake(uri, usage.to_arrow(), mode="overwrite", schema_mode="overwrite", storage_options=options)
    return warehouse.table(USAGE_DAILY).version()
