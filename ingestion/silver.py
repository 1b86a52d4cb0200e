"""Silver: the current state of each dataset, one row per primary key, with sensitive values pseudonymised.

Loaded batches are applied in batch order: a snapshot replaces the state (keys it no longer holds stop
being current), an incremental batch is MERGEd by primary key (a later batch wins). The silver table
remembers the last batch it applied in a Delta application transaction whose version is that batch's
ordinal, so a re-run applies only what is new and a crash between two commits loses nothing. A batch
that arrives late (sorting before one already applied) makes the state be rebuilt from bronze.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

import duckdb
import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from ingestion.bronze import bronze_table
from ingestion.contract import Contract
from ingestion.duckdb_sql import literal, quoted
from ingestion.ledger import latest_decisions, read_ledger
from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse

SILVER_APP = "yiwang.silver"


@dataclass(frozen=True)
class SilverOutcome:
    contract_id: str
    applied_batches: tuple[str, ...]
    action: str  # unchanged | merged | replaced | rebuilt
    rows: int


def silver_table(contract: Contract) -> str:
    return f"silver/{contract.table_path}"


def _applied(warehouse: Warehouse, table: str) -> tuple[int, int]:
    """(ordinal of the last applied batch, how many loaded batches it covered) or (-1, 0)."""
    if not warehouse.exists(table):
        return -1, 0
    dt = warehouse.table(table)
    last = dt.transaction_version(SILVER_APP)
    if last is None:
        return -1, 0
    for commit in dt.history():
        if "yiwang.applied_batches" in commit:
            return int(last), int(commit["yiwang.applied_batches"])
    return int(last), 0


# Rows pseudonymised and written at a time, and DuckDB's memory for the latest-row-per-key query (it spills
# to a temporary folder beyond that). Measured on renshe.social_insurance at scale 10 (2.3 M rows, 2 cores):
# the whole-table polars version held 2.5 GB at its peak (about 12 GB at 1 M residents). At 1 M residents
# (11.7 M rows) in a fresh process, apply_silver held +1.69 GB with 200,000 rows and 1 GB, +1.24-1.39 GB with
# these values, in 33-47 s against 35 s (noisy: DuckDB spills); bench/RESULTS.md, issue 16.
STREAM_ROWS = 50_000
DUCKDB_MEMORY_LIMIT = "768MB"


@contextmanager
def current_rows(
    warehouse: Warehouse, contract: Contract, order: dict[str, int], pseudonymiser: Pseudonymiser
) -> Iterator[tuple[pa.RecordBatchReader, list[int]]]:
    """Per primary key, the bronze row of the latest of the `order`ed batches, as silver rows, streamed.

    DuckDB reads the batches' files and keeps the latest row per key (the batch ordinal, then the file and row
    within it); its result comes over `STREAM_ROWS` at a time, each chunk pseudonymised and cast here, so neither
    the bronze rows nor the silver table is ever whole in memory. Yields the reader and a one-element list that
    holds the row count once the reader is exhausted.
    """
    schema = contract.silver_schema()
    written = [0]
    if not order or not warehouse.exists(bronze_table(contract)):
        yield pa.RecordBatchReader.from_batches(schema, iter(())), written
        return
    bronze = warehouse.table(bronze_table(contract))
    config = {"memory_limit": DUCKDB_MEMORY_LIMIT, "preserve_insertion_order": False}
    with (
        tempfile.TemporaryDirectory(prefix="yiwang-silver-") as spill,
        duckdb.connect(config={**config, "temp_directory": spill}) as connection,
    ):
        files = _batch_files(warehouse, contract, order)
        if files is not None and files.num_rows == 0:  # only batches without rows (a confirmed empty snapshot)
            yield pa.RecordBatchReader.from_batches(schema, iter(())), written
            return
        listed = ", ".join(literal(uri) for uri in files["uri"].to_pylist()) if files is not None else ""
        if files is not None and not _has_columns(connection, listed, contract):
            files = None  # files written before the contract gained a column: the Arrow dataset fills it with nulls
        if files is not None:
            # DuckDB's own Parquet reader (faster, and within its memory limit); the batch id is a partition
            # value, kept in the Delta log (a file may or may not repeat it), so each file is joined to its batch
            connection.register("batch_order", files)
            delivered = f"read_parquet([{listed}], union_by_name = true)"
            files_read = (
                "select columns(lambda c: c != '_batch_id') "
                f"from read_parquet([{listed}], filename = true, union_by_name = true)"
            )
            ordered = f"select * exclude (filename, uri) from ({files_read}) b join batch_order o on b.filename = o.uri"
        else:  # an object store or a table DuckDB cannot read file by file: through deltalake's Arrow dataset
            connection.register("bronze", bronze.to_pyarrow_dataset())
            connection.register("batch_order", pa.table({"_batch_id": list(order), "_ord": list(order.values())}))
            listed = ", ".join(literal(batch) for batch in order)
            delivered = f"(select * from bronze where _batch_id in ({listed}))"
            ordered = (
                f"select b.*, o._ord from bronze b join batch_order o using (_batch_id) where b._batch_id in ({listed})"
            )
        query = _latest_per_key(connection, ordered, delivered, contract.primary_key)
        query = _with_pseudonyms(connection, query, delivered, contract, pseudonymiser)
        chunks = connection.sql(query).to_arrow_reader(STREAM_ROWS)

        def silver_batches() -> Iterator[pa.RecordBatch]:
            for chunk in chunks:
                frame = pl.from_arrow(chunk)
                assert isinstance(frame, pl.DataFrame)
                rows = _to_silver(frame, contract, pseudonymiser).to_arrow().cast(schema)
                written[0] += rows.num_rows
                yield from rows.to_batches()

        yield pa.RecordBatchReader.from_batches(schema, silver_batches()), written


# Above this share of the rows in keys that more than one row holds, the latest row per key is chosen by a window
# over all rows; at or below it, only those rows go through the window (see `_latest_per_key`).
REPEATED_SHARE_FOR_WINDOW = 0.5


def _latest_per_key(connection: duckdb.DuckDBPyConnection, ordered: str, delivered: str, primary_key: list[str]) -> str:
    """SQL for the latest row per primary key of `ordered` (the batches' rows with their batch ordinal `_ord`):
    the latest batch, then the last file and row within it. `delivered` reads the same rows (their keys counted).

    The keys more than one row holds are found first (an aggregate over the key columns alone, into a temporary
    table). A window over every row sorts all of them; but the keys of a full load of increments are mostly
    distinct (each month's contributions), so the rows of the other keys stream through untouched, and only the
    repeated ones are windowed. With more than `REPEATED_SHARE_FOR_WINDOW` of the rows repeated, one window over
    all is cheaper. renshe.social_insurance at 1 M residents (11.7 M rows, the query alone, 2 cores): window
    14.7-15.8 s, keys first 2.9 s; with a tenth of the keys repeated 20.6 s against 8.0 s, with 46 % of the rows
    repeated 21.9 s against 13.4 s, with 75 % 31.1 s against 39.5 s (bench/RESULTS.md, issue 16 (j)). Keys are
    compared with `is not distinct from`, so null keys group as the window groups them."""
    keys = [quoted(k) for k in primary_key]
    listed = ", ".join(keys)
    connection.execute(
        f"create temporary table repeated_keys as select {listed}, count(*) as copies "
        f"from (select {listed} from {delivered}) group by all having count(*) > 1"
    )
    [(repeated, total)] = connection.execute(
        f"select (select coalesce(sum(copies), 0) from repeated_keys), (select count(*) from {delivered})"
    ).fetchall()
    latest = (
        f"qualify row_number() over (partition by {listed} order by _ord desc, _source_file desc, _row_number desc) = 1"
    )
    if repeated == 0 or repeated > total * REPEATED_SHARE_FOR_WINDOW:
        connection.execute("drop table repeated_keys")  # its memory to the window (the keys of most rows)
        return f"select * exclude (_ord) from ({ordered})" + (f" {latest}" if repeated else "")
    same = " and ".join(f"b.{k} is not distinct from r.{k}" for k in keys)
    return (
        f"select * exclude (_ord) from ({ordered}) b anti join repeated_keys r on {same} union all "
        f"select * exclude (_ord) from (select b.* from ({ordered}) b semi join repeated_keys r on {same}) {latest}"
    )


def _with_pseudonyms(
    connection: duckdb.DuckDBPyConnection, query: str, delivered: str, contract: Contract, pseudonymiser: Pseudonymiser
) -> str:
    """`query` with the pseudonym of each sensitive column beside it (`<column>_key`) where DuckDB writes its values
    as Python's `str` does (text, 64-bit floats and integers); `delivered` reads every row of the batches (the
    distinct values are taken from it, before the latest row per key is chosen).

    Each distinct value is hashed once, in DuckDB (`Pseudonymiser.sql`), into a temporary table that the rows
    join: a person's rows repeat the ID number, 11.7 per resident in renshe.social_insurance, and its 2.33 M rows
    at scale 10 hold 15,030 contribution bases. A float joins on its value and its sign bit (DuckDB's `=` holds
    -0.0 and 0.0 equal; their texts differ). Numbers were hashed in Python chunk by chunk before, 2.3 s of the
    scale-10 run (bench/RESULTS.md, issue 16 (i)); tests/test_pseudonym_key.py holds DuckDB's text of a number to
    Python's. Other sensitive values (dates, booleans) are left to `_to_silver`."""
    in_sql = [c for c in contract.sensitive_columns if _text_as_in_python(c.arrow_type)]
    joins, keys = [], []
    for index, column in enumerate(in_sql):
        name, table = quoted(column.name), f"pseudonyms_{index}"
        signed = pa.types.is_floating(column.arrow_type)
        sign = f", signbit({name}) as sign" if signed else ""
        connection.execute(
            f"create temporary table {table} as "
            f"select *, {pseudonymiser.sql(_python_text('value', column.arrow_type))} as pseudonym "
            f"from (select distinct {name} as value{sign} from {delivered} where {name} is not null)",
            pseudonymiser.sql_parameters(),
        )
        on = f"l.{name} = {table}.value" + (f" and signbit(l.{name}) = {table}.sign" if signed else "")
        joins.append(f"left join {table} on {on}")
        keys.append(f"{table}.pseudonym as {quoted(column.name + '_key')}")
    if not in_sql:
        return query
    return f"select l.*, {', '.join(keys)} from ({query}) l {' '.join(joins)}"


def _text_as_in_python(arrow_type: pa.DataType) -> bool:
    """Whether DuckDB casts values of this type to the text Python's `str` gives them (a float32 widens to another
    decimal text, a boolean is `true` against `True`)."""
    return pa.types.is_string(arrow_type) or pa.types.is_float64(arrow_type) or pa.types.is_integer(arrow_type)


def _python_text(sql: str, arrow_type: pa.DataType) -> str:
    """DuckDB SQL for the text Python's `str` gives the values of `sql` (a NaN with its sign bit set is `-nan` to
    DuckDB, `nan` to Python)."""
    if pa.types.is_string(arrow_type):
        return sql
    if pa.types.is_floating(arrow_type):
        return f"(case when isnan({sql}) then 'nan' else cast({sql} as varchar) end)"
    return f"cast({sql} as varchar)"


def _has_columns(connection: duckdb.DuckDBPyConnection, listed: str, contract: Contract) -> bool:
    """Whether the files (their footers, read together) hold every delivered column of the contract."""
    described = connection.sql(f"describe select * from read_parquet([{listed}], union_by_name = true)").fetchall()
    return set(contract.column_names) <= {row[0] for row in described}


def _batch_files(warehouse: Warehouse, contract: Contract, order: dict[str, int]) -> pa.Table | None:
    """`uri, _batch_id, _ord` of every current data file of the batches, or None when DuckDB cannot read the
    bronze table's files as Delta would (`Warehouse.batch_files`)."""
    files = warehouse.batch_files(bronze_table(contract), order)
    if files is None:
        return None
    batches = [batch_id for batch_id, uris in files.items() for _ in uris]
    columns = {
        "uri": [uri for uris in files.values() for uri in uris],
        "_batch_id": batches,
        "_ord": [order[batch_id] for batch_id in batches],
    }
    return pa.table(columns, schema=pa.schema([("uri", pa.string()), ("_batch_id", pa.string()), ("_ord", pa.int64())]))


def _to_silver(frame: pl.DataFrame, contract: Contract, pseudonymiser: Pseudonymiser) -> pl.DataFrame:
    """The silver columns of bronze rows: each sensitive column's pseudonym (unless the query made it already)."""
    replacements = [
        pseudonymiser.pseudonymise(frame[c.name]).alias(f"{c.name}_key")
        for c in contract.sensitive_columns
        if f"{c.name}_key" not in frame.columns
    ]
    return frame.with_columns(replacements).select(contract.silver_schema().names)


def apply_silver(
    contract: Contract,
    warehouse: Warehouse,
    pseudonymiser: Pseudonymiser,
    as_of: date | None = None,
    *,
    rebuild: bool = False,
) -> SilverOutcome:
    """Bring `silver/<department>/<dataset>` up to the last loaded batch.

    `rebuild`: a batch already applied was landed again (ingestion.pipeline.land_batch), so the state is
    rebuilt from bronze as for a late batch (from the last loaded snapshot on), empty when none is loaded now.
    """
    table = silver_table(contract)
    ledger = latest_decisions(read_ledger(warehouse)).filter(
        (pl.col("contract_id") == contract.id) & (pl.col("status") == "loaded")
    )
    if as_of is not None:
        ledger = ledger.filter(pl.col("extracted_at").dt.convert_time_zone("Asia/Shanghai").dt.date() <= as_of)
    ledger = ledger.sort("batch_ordinal")
    if ledger.height == 0:
        if rebuild and warehouse.exists(table):
            commit = CommitProperties(custom_metadata={"yiwang.applied_batches": "0", "yiwang.action": "rebuilt"})
            _overwrite(warehouse, table, contract.silver_schema().empty_table(), commit)
            return SilverOutcome(contract.id, (), "rebuilt", 0)
        return SilverOutcome(contract.id, (), "unchanged", 0)
    last_applied, covered = _applied(warehouse, table)
    already = ledger.filter(pl.col("batch_ordinal") <= last_applied)
    pending = ledger.filter(pl.col("batch_ordinal") > last_applied)
    late = rebuild or already.height != covered
    if not late and pending.height == 0:
        return SilverOutcome(contract.id, (), "unchanged", 0)

    candidates = ledger if late else pending
    snapshots = candidates.filter(pl.col("mode") == "snapshot")
    if snapshots.height:
        start = snapshots["batch_ordinal"][-1]
        replace_from = candidates.filter(pl.col("batch_ordinal") >= start)
        action = "rebuilt" if late else "replaced"
    elif late:
        replace_from, action = candidates, "rebuilt"
    else:
        replace_from, action = pending, "merged"
    batch_ids = replace_from["batch_id"].to_list()
    order = dict(zip(batch_ids, replace_from["batch_ordinal"].to_list(), strict=True))
    commit = CommitProperties(
        app_transactions=[Transaction(SILVER_APP, int(ledger["batch_ordinal"][-1]))],
        custom_metadata={"yiwang.applied_batches": str(ledger.height), "yiwang.action": action},
    )
    with current_rows(warehouse, contract, order, pseudonymiser) as (data, rows):
        if action == "merged" and warehouse.exists(table):
            # an increment: the pending batches' rows only (delta-rs holds the merge source in memory)
            predicate = " AND ".join(f"t.{k} = s.{k}" for k in _silver_key(contract))
            (
                warehouse.table(table)
                .merge(
                    data.read_all(), predicate=predicate, source_alias="s", target_alias="t", commit_properties=commit
                )
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
        else:
            _overwrite(warehouse, table, data, commit)
    return SilverOutcome(contract.id, tuple(pending["batch_id"].to_list()), action, rows[0])


def _overwrite(
    warehouse: Warehouse, table: str, data: pa.Table | pa.RecordBatchReader, commit: CommitProperties
) -> None:
    """The silver table replaced whole by `data` in one commit."""
    write_deltalake(
        warehouse.uri(table),
        data,
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=warehouse.options(),
        commit_properties=commit,
    )


def silver_key_counts(warehouse: Warehouse, contract: Contract) -> tuple[int, int]:
    """(rows, rows whose primary key another row shares) of the silver table, counted by DuckDB (its Parquet
    reader, or deltalake's Arrow dataset where it cannot read the files exactly): only the key columns are read,
    streamed, within DuckDB's memory limit. Reading them whole into polars held 5.0 GB at 1 M residents
    (renshe.social_insurance, 11.7 M rows); this, 1.0 GB and 2.5 s (bench/RESULTS.md, issue 16)."""
    table = silver_table(contract)
    columns = ", ".join(quoted(name) for name in _silver_key(contract))
    files = warehouse.parquet_files(table)
    with duckdb.connect(config={"memory_limit": DUCKDB_MEMORY_LIMIT}) as connection:
        if not files:  # not readable file by file, or no rows at all
            connection.register("silver_dataset", warehouse.table(table).to_pyarrow_dataset())
        source = f"read_parquet([{', '.join(literal(f) for f in files)}])" if files else "silver_dataset"
        [(rows, duplicates)] = connection.sql(
            "select coalesce(sum(n), 0), coalesce(sum(n) filter (where n > 1), 0) "
            f"from (select count(*) as n from {source} group by {columns})"
        ).fetchall()
    return int(rows), int(duplicates)


def _silver_key(contract: Contract) -> list[str]:
    sensitive = {c.name for c in contract.sensitive_columns}
    return [f"{k}_key" if k in sensitive else k for k in contract.primary_key]
