"""Append a frame to a Delta table in one commit, writing the Parquet files with polars.

Why not `write_deltalake`: it encodes every column on one thread, and at a million rows the bronze commit
cost more than half of the whole validated ingestion. polars writes the same Parquet in parallel; the
Delta file statistics (`numRecords`, `minValues`, `maxValues`, `nullCount`) are computed here in the
format delta-rs writes for the same data, so data skipping, `get_add_actions()` and every reader see a
table that cannot be told apart from one `write_deltalake` wrote. The commit itself goes through
delta-rs (`create_table_with_add_actions` / `create_write_transaction`) with the caller's application
transaction, which is what makes a re-run after a crash idempotent.

Crash safety: data files are written first and are invisible until the commit that adds them; a
process killed before the commit leaves only unreferenced files (removed by VACUUM, `yiwang maintain`), and a
second call with the same `app_id` after a successful commit writes nothing.

Object stores (`s3://...`) and column types outside the contracts' set (string, int64, float64, bool,
date32, timestamp[us, UTC]) go through `write_deltalake` with the same checks and the same transaction.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake import Schema as DeltaSchema
from deltalake.transaction import AddAction, create_table_with_add_actions

from ingestion.delta_tables import latest

# parquet-rs (which delta-rs writes with) truncates string statistics to 64 bytes.
STATS_TRUNCATE_BYTES = 64
# delta.dataSkippingNumIndexedCols when the table does not set it.
DEFAULT_NUM_INDEXED_COLS = 32
# Above this many rows a partition's data is split over several files of even size.
DEFAULT_MAX_ROWS_PER_FILE = 4_000_000
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
# The Parquet footer key where Arrow writers record the Arrow schema of the file.
ARROW_SCHEMA_KEY = "ARROW:schema"

# The Arrow types this module writes itself, and their polars equivalents.
_POLARS_TYPES: dict[pa.DataType, pl.DataType] = {
    pa.string(): pl.String(),
    pa.large_string(): pl.String(),
    pa.int64(): pl.Int64(),
    pa.float64(): pl.Float64(),
    pa.bool_(): pl.Boolean(),
    pa.date32(): pl.Date(),
    pa.timestamp("us", tz="UTC"): pl.Datetime("us", "UTC"),
}
_PARTITION_TYPES = {pa.string(), pa.large_string(), pa.int64(), pa.bool_(), pa.date32(), pa.timestamp("us", tz="UTC")}
_EPOCH = datetime(1970, 1, 1)


class DeltaAppendError(ValueError):
    """Data or a target table that an append must not go ahead with; nothing was committed."""


def append_frame(
    uri: str,
    frame: pl.DataFrame | pa.Table,
    schema: pa.Schema,
    *,
    app_id: str,
    partition_by: Sequence[str] | None = None,
    storage_options: Mapping[str, str] | None = None,
    max_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
) -> bool:
    """Append `frame`, cast to `schema`, to the Delta table at `uri` in one commit carrying `app_id`.

    Creates the table (with `schema` and `partition_by`) when there is none. Returns False, writing
    nothing, when the table already holds the application transaction `app_id`. Raises
    `DeltaAppendError` before writing anything when a non-nullable column holds nulls, when columns are
    missing or extra, or when the existing table has another schema or partitioning.
    """
    staged = StagedAppend(
        uri,
        schema,
        app_id=app_id,
        partition_by=partition_by,
        storage_options=storage_options,
        max_rows_per_file=max_rows_per_file,
    )
    if staged.done:
        return False
    staged.write(frame)
    return staged.commit()


class StagedAppend:
    """An append whose rows arrive in pieces and are committed once: each `write` puts its piece in data files
    that no reader sees, `commit` adds them all in one commit carrying `app_id`, `discard` removes them. A crash
    before either leaves only unreferenced files (removed by VACUUM, `yiwang maintain`).

    It is what lets ingestion land a large batch part by part with memory for one part, and still keep one
    commit per batch. Object stores and column types this module does not write itself keep the pieces in
    memory and hand them to `write_deltalake` at the commit.
    """

    def __init__(
        self,
        uri: str,
        schema: pa.Schema,
        *,
        app_id: str,
        partition_by: Sequence[str] | None = None,
        storage_options: Mapping[str, str] | None = None,
        max_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
    ) -> None:
        self.uri, self.app_id, self.max_rows_per_file = uri, app_id, max_rows_per_file
        self.options = dict(storage_options) if storage_options else None
        self.table = latest(uri, self.options)
        self.read_version = self.table.version() if self.table is not None else -1
        #: the table already holds `app_id`: nothing is written and `commit` does nothing
        self.done = self.table is not None and self.table.transaction_version(app_id) is not None
        self.schema, self.partitions = schema, list(partition_by or [])
        self.actions: list[AddAction] = []
        self.pieces: list[pl.DataFrame] = []
        if self.done:
            return
        if self.table is not None:
            self.schema, self.partitions = _reconcile(uri, self.table, schema, partition_by)
        else:
            _check_partition_columns(uri, schema, self.partitions)
        self.writes_itself = _writes_itself(uri, self.schema, self.partitions)

    def write(self, frame: pl.DataFrame | pa.Table) -> None:
        """Check one piece against the schema (`conform`) and write it, uncommitted. Raises `DeltaAppendError`
        before writing anything when the piece does not fit the schema."""
        if self.done:
            return
        data = conform(frame, self.schema, uri=self.uri)
        if not self.writes_itself:
            self.pieces.append(data)
            return
        self.actions += write_data_files(
            self.uri,
            data,
            self.schema,
            partition_by=self.partitions,
            stats_columns=_stats_columns(self.table, self.schema, self.partitions),
            max_rows_per_file=self.max_rows_per_file,
        )

    def discard(self) -> None:
        """Remove the files written so far: no commit names them, so no reader has seen them."""
        if self.done:
            return
        for action in self.actions:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.uri, action.path))
        self.actions, self.pieces = [], []

    def commit(self) -> bool:
        """Add every written piece in one commit; False when the table already held `app_id`."""
        if self.done:
            return False
        moved = self.table is not None and self.table.version() != self.read_version
        if moved and self.table.transaction_version(self.app_id) is not None:  # type: ignore[union-attr]
            # The snapshot is shared with this thread's other openers (`delta_tables`): one of them moved it past
            # a commit of `app_id` made since `__init__`, which delta-rs's conflict check can then no longer see.
            self.discard()
            self.done = True
            return False
        if not self.writes_itself:
            data = pl.concat(self.pieces) if self.pieces else conform(self.schema.empty_table(), self.schema)
            _append_with_writer(self.uri, data, self.schema, self.app_id, self.partitions, self.options)
        else:
            commit_files(
                self.uri,
                self.actions,
                self.schema,
                app_id=self.app_id,
                partition_by=self.partitions,
                table=self.table,
                storage_options=self.options,
            )
        self.done = True
        return True


def append_transactions(
    uri: str,
    frame: pl.DataFrame | pa.Table,
    schema: pa.Schema,
    *,
    transactions: Mapping[str, int],
    table: DeltaTable | None,
    storage_options: Mapping[str, str] | None = None,
    custom_metadata: Mapping[str, str] | None = None,
) -> None:
    """Append `frame` (possibly empty) to the table in one commit recording every application transaction.

    The streaming consumers record each Kafka partition's last consumed offset this way, in the same commit
    as its rows. `table` is the snapshot the caller read the previous versions from (None: no table yet):
    a concurrent commit of one of the same app ids makes delta-rs refuse this one (`CommitFailedError`),
    so two writers of one partition can never both land. An empty frame commits only the transactions.
    """
    options = dict(storage_options) if storage_options else None
    data = conform(frame, schema, uri=uri)
    if not _writes_itself(uri, schema, []):
        properties = CommitProperties(
            app_transactions=[Transaction(app, version) for app, version in transactions.items()],
            custom_metadata=dict(custom_metadata) if custom_metadata else None,
        )
        write_deltalake(
            uri, data.to_arrow().cast(schema), mode="append", storage_options=options, commit_properties=properties
        )
        return
    actions = (
        write_data_files(uri, data, schema, stats_columns=_stats_columns(table, schema, [])) if data.height else []
    )
    commit_files(
        uri,
        actions,
        schema,
        transactions=transactions,
        table=table,
        storage_options=options,
        custom_metadata=custom_metadata,
    )


def arrow_schema_of(frame: pl.DataFrame | pa.Table) -> pa.Schema:
    """The schema a frame is appended with when the caller names none: its own, strings as `string`.

    polars hands strings to Arrow as `large_string` or `string_view`; Delta has one string type, and
    `string` keeps this module's own writer in use.
    """
    if isinstance(frame, pa.Table):
        return frame.schema
    fields = frame.clear().to_arrow().schema
    return pa.schema(
        [f.with_type(pa.string()) if f.type in (pa.large_string(), pa.string_view()) else f for f in fields]
    )


def conform(frame: pl.DataFrame | pa.Table, schema: pa.Schema, *, uri: str = "the table") -> pl.DataFrame:
    """`frame` with exactly the columns of `schema`, in its order and types; nulls only where allowed.

    Arrow input is cast with Arrow's rules (as `write_deltalake` callers did), polars input with polars'
    strict cast. A failed cast or a null in a non-nullable column raises before anything is written.
    """
    names = list(frame.column_names if isinstance(frame, pa.Table) else frame.columns)
    missing = [n for n in schema.names if n not in names]
    extra = [n for n in names if n not in schema.names]
    if missing or extra:
        raise DeltaAppendError(
            f"the data for {uri} does not have the columns of its schema (missing: {missing or 'none'}, "
            f"not in the schema: {extra or 'none'}); nothing was written. Select or add the columns "
            "before appending."
        )
    if isinstance(frame, pa.Table):
        # A non-nullable field in the target would make Arrow's cast reject the table without naming
        # the column; nulls are checked below with a clear message instead.
        loose = pa.schema([f.with_nullable(True) for f in schema])
        converted = pl.from_arrow(frame.select(schema.names).cast(loose))
        assert isinstance(converted, pl.DataFrame)
        data = converted
    else:
        data = frame.select(schema.names)
        targets = {f.name: _POLARS_TYPES.get(f.type) for f in schema}
        if all(t is not None for t in targets.values()):
            data = data.cast(targets, strict=True)  # type: ignore[arg-type]
        else:
            converted = pl.from_arrow(data.to_arrow().cast(pa.schema([f.with_nullable(True) for f in schema])))
            assert isinstance(converted, pl.DataFrame)
            data = converted
    _check_nulls(data, schema, uri)
    return data


def write_data_files(
    uri: str,
    data: pl.DataFrame,
    schema: pa.Schema,
    *,
    partition_by: Sequence[str] = (),
    stats_columns: Sequence[str] | None = None,
    max_rows_per_file: int = DEFAULT_MAX_ROWS_PER_FILE,
) -> list[AddAction]:
    """Write `data` (already conformed to `schema`) as Parquet under the local table root `uri`.

    Returns one `AddAction` per file, with delta-rs-compatible statistics; commits nothing, so until
    `commit_files` runs no reader sees these files.
    """
    partitions = list(partition_by)
    data_columns = [n for n in schema.names if n not in partitions]
    if stats_columns is None:
        stats_columns = data_columns[:DEFAULT_NUM_INDEXED_COLS]
    hint = {ARROW_SCHEMA_KEY: arrow_schema_hint(schema, data_columns)}
    actions: list[AddAction] = []
    for values, piece in _partitions(data, partitions):
        directory = "/".join(f"{col}={_encode_partition_value(v)}" for col, v in zip(partitions, values, strict=True))
        os.makedirs(os.path.join(uri, directory), exist_ok=True)
        partition_values = {col: _partition_value(v) for col, v in zip(partitions, values, strict=True)}
        for number, chunk in enumerate(_chunks(piece.select(data_columns), max_rows_per_file)):
            name = f"part-{number:05d}-{uuid.uuid4()}-c000.snappy.parquet"
            relative = f"{directory}/{name}" if directory else name
            path = os.path.join(uri, relative)
            chunk.write_parquet(path, compression="snappy", statistics=True, metadata=hint)
            stat = os.stat(path)
            footer = pq.read_metadata(path)
            actions.append(
                AddAction(
                    path=relative,
                    size=stat.st_size,
                    partition_values=partition_values,
                    modification_time=stat.st_mtime_ns // 1_000_000,
                    data_change=True,
                    stats=file_stats(chunk, stats_columns, footer=footer),
                )
            )
    return actions


def arrow_schema_hint(schema: pa.Schema, columns: Sequence[str]) -> str:
    """The `ARROW:schema` footer entry for a data file: the table's own Arrow types.

    polars records its in-memory types there (`large_string` for strings), and Arrow-based readers that
    trust the hint refuse to read such a file as the table's `string` (Sail: "Cannot cast column from
    LargeUtf8 (physical) to Utf8 (logical)"). The Parquet column types are the same either way. Every
    field is nullable, as polars writes every column optional.
    """
    fields = [schema.field(name).with_nullable(True) for name in columns]
    return base64.b64encode(pa.schema(fields).serialize().to_pybytes()).decode("ascii")


def commit_files(
    uri: str,
    actions: list[AddAction],
    schema: pa.Schema,
    *,
    app_id: str | None = None,
    transactions: Mapping[str, int] | None = None,
    partition_by: Sequence[str] = (),
    table: DeltaTable | None = None,
    storage_options: dict[str, str] | None = None,
    custom_metadata: Mapping[str, str] | None = None,
) -> None:
    """Add the written files to the table in one commit that also records the application transactions:
    `app_id` (version 1), or every `transactions` entry (app id -> version, e.g. a Kafka partition's offset).

    `table` is the snapshot the caller checked the transactions against; committing on that snapshot lets
    delta-rs' conflict check reject a concurrent commit of the same transaction.
    """
    recorded = dict(transactions or {})
    if app_id is not None:
        recorded[app_id] = 1
    properties = CommitProperties(
        app_transactions=[Transaction(app, version) for app, version in recorded.items()],
        custom_metadata=dict(custom_metadata) if custom_metadata else None,
    )
    if table is None:
        create_table_with_add_actions(
            uri,
            DeltaSchema.from_arrow(schema),
            actions,
            mode="error",
            partition_by=list(partition_by) or None,
            storage_options=storage_options,
            commit_properties=properties,
        )
    else:
        table.create_write_transaction(
            actions,  # type: ignore[arg-type]
            mode="append",
            schema=table.schema(),
            partition_by=list(partition_by) or None,
            commit_properties=properties,
        )


def file_stats(data: pl.DataFrame, columns: Sequence[str], *, footer: pq.FileMetaData | None = None) -> str:
    """The `stats` JSON of an add action for a file holding `data`, as delta-rs writes it.

    delta-rs reads these from the Parquet footer parquet-rs wrote, which gives: NaN left out of float
    bounds (a column of only NaN has none), a zero minimum written as -0.0 and a zero maximum as 0.0,
    infinities as null, timestamps floored to the millisecond (with `.mmm` only when the value has a
    fractional second), strings cut to 64 bytes (the maximum's last character then incremented).

    `footer`, the metadata of the file polars wrote for `data`, saves scanning the data: its row-group
    statistics hold the exact bounds (NaN already left out) wherever polars did not cut a string, so only
    string columns holding a value longer than 64 bytes, and columns whose footer lacks statistics, are
    aggregated from `data`.
    """
    bounds = _footer_bounds(data, columns, footer) if footer is not None else {}
    scanned = [name for name in columns if name not in bounds]
    bounds.update(_scanned_bounds(data, scanned))
    minimums: dict[str, Any] = {}
    maximums: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in columns:
        dtype = data.schema[name]
        nulls[name], low, high = bounds[name]
        for bound, target, is_max in ((low, minimums, False), (high, maximums, True)):
            present, value = _stat_value(bound, dtype, is_max)
            if present:
                target[name] = value
    stats = {"numRecords": data.height, "minValues": minimums, "maxValues": maximums, "nullCount": nulls}
    return json.dumps(stats, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


# (null count, minimum, maximum) of a column, in the form `_stat_value` takes: dates as `YYYY-MM-DD`
# text, timestamps as epoch microseconds, other types as their Python value; None where there is none.
_Bounds = tuple[int, Any, Any]


def _scanned_bounds(data: pl.DataFrame, columns: Sequence[str]) -> dict[str, _Bounds]:
    """Bounds aggregated from the data itself (one polars pass over the columns)."""
    exprs: list[pl.Expr] = []
    for name in columns:
        col = pl.col(name)
        dtype = data.schema[name]
        if dtype == pl.Date:
            low, high = col.min().dt.strftime("%Y-%m-%d"), col.max().dt.strftime("%Y-%m-%d")
        elif isinstance(dtype, pl.Datetime):
            low, high = col.min().dt.epoch("us"), col.max().dt.epoch("us")
        else:
            low, high = col.min(), col.max()
        exprs += [col.null_count().alias(f"{name}\0n"), low.alias(f"{name}\0lo"), high.alias(f"{name}\0hi")]
    row = data.select(exprs).row(0, named=True) if exprs else {}
    return {name: (row[f"{name}\0n"], row[f"{name}\0lo"], row[f"{name}\0hi"]) for name in columns}


def _footer_bounds(data: pl.DataFrame, columns: Sequence[str], footer: pq.FileMetaData) -> dict[str, _Bounds]:
    """Bounds read from the row-group statistics of the file polars wrote, for the columns they are exact for.

    polars cuts string bounds longer than 64 bytes in its own way (not parquet-rs'), so a string column
    with such a value is left out; so is any column whose statistics are missing in some row group.
    """
    strings = [name for name in columns if data.schema[name] == pl.String]
    lengths = data.select(pl.col(strings).str.len_bytes().max()).row(0, named=True) if strings and data.height else {}
    positions = {footer.schema.column(i).path: i for i in range(footer.num_columns)}
    groups = [footer.row_group(g) for g in range(footer.num_row_groups)]
    bounds: dict[str, _Bounds] = {}
    for name in columns:
        if (lengths.get(name) or 0) > STATS_TRUNCATE_BYTES or name not in positions:
            continue
        found = _column_footer_bounds(groups, positions[name], data.schema[name])
        if found is not None:
            bounds[name] = found
    return bounds


def _column_footer_bounds(groups: list[pq.RowGroupMetaData], position: int, dtype: pl.DataType) -> _Bounds | None:
    """One column's bounds over all row groups, or None when a row group has no statistics to go on."""
    nulls = 0
    low: Any = None
    high: Any = None
    for group in groups:
        statistics = group.column(position).statistics
        if statistics is None or not statistics.has_null_count:
            return None
        nulls += statistics.null_count
        if not statistics.has_min_max:
            if statistics.null_count < group.num_rows and not dtype.is_float():
                return None  # values present but no bounds: statistics were not written
            continue  # only nulls (or, for floats, only NaN)
        group_low, group_high = statistics.min_raw, statistics.max_raw
        low = group_low if low is None else min(low, group_low)
        high = group_high if high is None else max(high, group_high)
    if dtype == pl.String:
        # Byte order, the order polars and parquet-rs compare strings in.
        return nulls, None if low is None else low.decode(), None if high is None else high.decode()
    if dtype == pl.Date:
        if low is None:
            return nulls, None, None
        dates = _date_texts(low, high)
        return None if dates is None else (nulls, *dates)
    return nulls, low, high


def _date_texts(low: int, high: int) -> tuple[str, str] | None:
    """Day numbers as `YYYY-MM-DD`, or None outside Python's years 1-9999 (then polars formats them)."""
    try:
        return (_EPOCH + timedelta(days=low)).date().isoformat(), (_EPOCH + timedelta(days=high)).date().isoformat()
    except OverflowError:
        return None


def _stat_value(value: Any, dtype: pl.DataType, is_max: bool) -> tuple[bool, Any]:
    """(whether the bound is written, the JSON value) for one aggregated minimum or maximum."""
    if value is None:
        return False, None
    if dtype == pl.Float64 or dtype == pl.Float32:
        if math.isnan(value):
            return False, None
        if math.isinf(value):
            return True, None  # serde_json writes non-finite floats as null
        if value == 0:
            return True, 0.0 if is_max else -0.0
        return True, value
    if isinstance(dtype, pl.Datetime):
        return True, _timestamp_stat(value)
    if dtype == pl.String:
        return True, _truncate_max(value) if is_max else _truncate_min(value)
    return True, value


def _timestamp_stat(micros: int) -> str:
    """delta-rs' text for a timestamp bound: floored to the millisecond, `.mmm` only if not a whole second."""
    seconds, fraction = divmod(micros, 1_000_000)
    try:
        text = (_EPOCH + timedelta(seconds=seconds)).isoformat()
    except OverflowError:  # beyond Python's years 1-9999; chrono formats those itself
        text = pl.Series([seconds * 1_000_000], dtype=pl.Datetime("us")).dt.strftime("%Y-%m-%dT%H:%M:%S")[0]
    return f"{text}.{fraction // 1000:03d}Z" if fraction else f"{text}Z"


def _truncate_min(value: str) -> str:
    encoded = value.encode()
    if len(encoded) <= STATS_TRUNCATE_BYTES:
        return value
    return encoded[:STATS_TRUNCATE_BYTES].decode(errors="ignore")


def _truncate_max(value: str) -> str:
    """The longest prefix of at most 64 bytes with its last incrementable character incremented.

    parquet-rs keeps the whole value when no character can be incremented without changing its length.
    """
    encoded = value.encode()
    if len(encoded) <= STATS_TRUNCATE_BYTES:
        return value
    prefix = encoded[:STATS_TRUNCATE_BYTES].decode(errors="ignore")
    for index in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[index]) + 1
        if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            continue
        if len(chr(code).encode()) == len(prefix[index].encode()):
            return prefix[:index] + chr(code)
    return value


def _check_nulls(data: pl.DataFrame, schema: pa.Schema, uri: str) -> None:
    counts = data.null_count().row(0, named=True)
    for field in schema:
        if field.nullable or not counts[field.name]:
            continue
        first = int(data[field.name].is_null().arg_true()[0])
        raise DeltaAppendError(
            f"column {field.name!r} of {uri} may not be empty, but {counts[field.name]} of {data.height} rows "
            f"have no value (the first is row {first} of the data, counting from 0); nothing was written. "
            "Fill the column before appending, or declare it nullable in the schema (the contract)."
        )


def _reconcile(
    uri: str, table: DeltaTable, schema: pa.Schema, partition_by: Sequence[str] | None
) -> tuple[pa.Schema, list[str]]:
    """The schema to write into an existing table: its column order, no column the table forbids nulls in."""
    partitions = list(table.metadata().partition_columns)
    if partition_by is not None and list(partition_by) != partitions:
        raise DeltaAppendError(
            f"{uri} is partitioned by {partitions}, the append asked for {list(partition_by)}; nothing was "
            "written. Appends keep a table's partitioning: pass the table's partition columns."
        )
    existing = {f.name: f for f in table.schema().fields}
    wanted = {f.name: f for f in DeltaSchema.from_arrow(schema).fields}
    differ = sorted(
        name
        for name in set(existing) | set(wanted)
        if name not in existing or name not in wanted or existing[name].type != wanted[name].type
    )
    if differ:
        raise DeltaAppendError(
            f"the schema of the data differs from the schema of {uri} in columns {differ}; nothing was written. "
            "An append does not change a table's schema: cast the data, or migrate the table first."
        )
    fields = [schema.field(name) for name in existing]
    return pa.schema([f.with_nullable(f.nullable and existing[f.name].nullable) for f in fields]), partitions


def _check_partition_columns(uri: str, schema: pa.Schema, partitions: list[str]) -> None:
    unknown = [p for p in partitions if p not in schema.names]
    if unknown:
        raise DeltaAppendError(f"partition columns {unknown} of {uri} are not in its schema {schema.names}")
    if partitions and len(partitions) == len(schema):
        raise DeltaAppendError(f"{uri} needs at least one column that is not a partition column")


def _is_local(uri: str) -> bool:
    return "://" not in uri


def _writes_itself(uri: str, schema: pa.Schema, partitions: list[str]) -> bool:
    """Whether this module writes the files (local table, contract column types) or `write_deltalake` does."""
    return (
        _is_local(uri)
        and all(f.type in _POLARS_TYPES for f in schema)
        and all(schema.field(p).type in _PARTITION_TYPES for p in partitions)
    )


def _stats_columns(table: DeltaTable | None, schema: pa.Schema, partitions: list[str]) -> list[str]:
    """The columns delta-rs collects statistics for: the table's settings, else the first 32."""
    data_columns = [n for n in schema.names if n not in partitions]
    configuration = table.metadata().configuration if table is not None else {}
    listed = configuration.get("delta.dataSkippingStatsColumns")
    if listed:
        chosen = {c.strip().strip("`") for c in listed.split(",")}
        return [c for c in data_columns if c in chosen]
    count = int(configuration.get("delta.dataSkippingNumIndexedCols", DEFAULT_NUM_INDEXED_COLS))
    return data_columns if count < 0 else data_columns[:count]


def _append_with_writer(
    uri: str,
    data: pl.DataFrame,
    schema: pa.Schema,
    app_id: str,
    partitions: list[str],
    options: dict[str, str] | None,
) -> None:
    write_deltalake(
        uri,
        data.to_arrow().cast(schema),
        mode="append",
        partition_by=partitions or None,
        storage_options=options,
        commit_properties=CommitProperties(app_transactions=[Transaction(app_id, 1)]),
    )


def _partitions(data: pl.DataFrame, partitions: list[str]) -> list[tuple[tuple[Any, ...], pl.DataFrame]]:
    """(partition values, rows) per partition; a batch with one value for every key is not copied."""
    if not partitions:
        return [((), data)]
    if data.height == 0:
        return []
    ends = data.select(
        [pl.col(p).first().alias(f"{p}\0first") for p in partitions]
        + [(pl.col(p).ne_missing(pl.col(p).first())).any().alias(f"{p}\0varies") for p in partitions]
    ).row(0, named=True)
    if not any(ends[f"{p}\0varies"] for p in partitions):
        return [(tuple(ends[f"{p}\0first"] for p in partitions), data)]
    groups = data.partition_by(partitions, as_dict=True, maintain_order=True)
    return list(groups.items())


def _chunks(data: pl.DataFrame, max_rows: int) -> list[pl.DataFrame]:
    """Even slices of at most `max_rows` rows (slices share memory with `data`)."""
    if data.height <= max_rows:
        return [data]
    count = -(-data.height // max_rows)
    size = -(-data.height // count)
    return [data.slice(start, size) for start in range(0, data.height, size)]


def _partition_value(value: Any) -> str | None:
    """A partition value as the Delta log stores it (delta-rs' `Scalar::serialize`)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        return naive.isoformat(sep=" ", timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _encode_partition_value(value: Any) -> str:
    """The Hive directory name part: percent-encoded like delta-rs (all but letters, digits and -._~)."""
    text = _partition_value(value)
    return NULL_PARTITION if text is None else quote(text, safe="")
