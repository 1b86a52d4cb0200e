"""The dbt sources staged in the DuckDB file before every dbt invocation: views over the Delta tables' files.

dbt's sources (models/staging/_sources.yml, generated from the contracts, and models/sources/_gold_sources.yml)
name DuckDB relations `silver.<department>__<dataset>` and `gold_src.<table>`; each carries in its meta the Delta
table it stands for (`delta_table`, relative to the warehouse root) and the columns it has when the table does not
exist yet. `stage_sources` makes those relations, before dbt runs:

- a local Delta table that DuckDB can read exactly from its Parquet files (reader version 1: no deletion vectors or
  column mapping; no partition columns, whose values are not in the files) becomes a VIEW over the files of its
  current version. Nothing is copied: a mart reads only the columns and row groups it needs. Measured on the 1 M
  resident landing zone: the copy of `renshe.social_insurance` alone took 36-69 s, the view 0.1 s
  (bench/pipeline.py);
- any other table (an object store, a partitioned table) is copied into a DuckDB table through deltalake, as
  dbt-duckdb's delta plugin did;
- a table that does not exist yet (a landing zone with only some contracts) is an empty view with the declared
  columns, so that dbt builds the rest; the report names every such table.

A view pins the version it was staged at: the files of later versions are not in it. Every `yiwang run` stages
again before dbt; to run dbt by hand on a newer warehouse, `yiwang dbt-stage` first (README, dbt section).
The warehouse root is a parameter here, never part of the manifest: one parse serves every warehouse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
from deltalake import DeltaTable

from ingestion.duckdb_sql import literal, quoted
from ingestion.warehouse import Warehouse

# The meta keys of a staged source (written by orchestration/dbt_codegen.py and models/sources/_gold_sources.yml).
META_TABLE = "delta_table"
META_COLUMNS = ("silver_columns", "table_columns")


@dataclass
class StageReport:
    """What `stage_sources` made of each source (`schema.identifier`)."""

    views: list[str] = field(default_factory=list)
    copies: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # staged empty: the Delta table does not exist yet


def staged_sources(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The manifest's sources that stand for a Delta table, in name order."""
    sources = [s for s in manifest.get("sources", {}).values() if (s.get("meta") or {}).get(META_TABLE)]
    return sorted(sources, key=lambda s: (s["schema"], s["identifier"]))


def _declared_columns(source: Mapping[str, Any]) -> dict[str, str]:
    meta = source.get("meta") or {}
    for key in META_COLUMNS:
        if meta.get(key):
            return dict(meta[key])
    declared = {name: column.get("data_type") for name, column in (source.get("columns") or {}).items()}
    if not declared or not all(declared.values()):
        raise ValueError(f"source {source['unique_id']} declares no column types: cannot stage it while missing")
    return declared  # type: ignore[return-value]


def _empty_select(columns: Mapping[str, str]) -> str:
    return (
        "select "
        + ", ".join(f"cast(null as {kind}) as {quoted(name)}" for name, kind in columns.items())
        + (" limit 0")
    )


def stage_sources(manifest: Mapping[str, Any], duckdb_path: Path, warehouse: Warehouse) -> StageReport:
    """Create or replace every source relation of the manifest in the DuckDB file (see the module docstring)."""
    report = StageReport()
    sources = staged_sources(manifest)
    with duckdb.connect(str(duckdb_path)) as connection:
        for schema in sorted({s["schema"] for s in sources}):
            connection.execute(f"create schema if not exists {quoted(schema)}")
        for source in sources:
            relation = f"{quoted(source['schema'])}.{quoted(source['identifier'])}"
            name = f"{source['schema']}.{source['identifier']}"
            path = str(source["meta"][META_TABLE])
            connection.execute(f"drop view if exists {relation}")
            connection.execute(f"drop table if exists {relation}")
            if not warehouse.exists(path):
                connection.execute(f"create view {relation} as {_empty_select(_declared_columns(source))}")
                report.missing.append(name)
                continue
            files = warehouse.parquet_files(path)
            if files:
                listed = ", ".join(literal(f) for f in files)
                connection.execute(
                    f"create view {relation} as select * from read_parquet([{listed}], union_by_name = true)"
                )
                report.views.append(name)
            elif files == []:  # a table with no rows has no files
                columns = _table_columns(connection, warehouse.table(path))
                connection.execute(f"create view {relation} as {_empty_select(columns)}")
                report.views.append(name)
            else:
                connection.register("delta_source", warehouse.table(path).to_pyarrow_dataset())
                connection.execute(f"create table {relation} as select * from delta_source")
                connection.unregister("delta_source")
                report.copies.append(name)
    return report


def _table_columns(connection: duckdb.DuckDBPyConnection, table: DeltaTable) -> dict[str, str]:
    """DuckDB types of a Delta table's schema (for an empty table), as DuckDB maps the Arrow schema."""
    connection.register("delta_schema", table.to_pyarrow_dataset().schema.empty_table())
    try:
        return {row[0]: row[1] for row in connection.sql("describe delta_schema").fetchall()}
    finally:
        connection.unregister("delta_schema")
