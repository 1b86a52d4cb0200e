"""The dispatch tables in the warehouse, and the incremental read the dispatch system uses.

- `gold/dispatch/ticket_sources`: every prepared report of every source (one row per source record),
  replaced per source on each feed, so re-running a feed never duplicates a report.
- `gold/dispatch/tickets`: one row per ticket, Delta change data feed enabled. Only tickets whose
  values actually changed are written, so each table version holds exactly the new and changed
  tickets, and `changes_since(N)` returns exactly those. A ticket is never deleted: when none of its
  reports is left in the sources it is closed.
- `ops/dispatch_rejections`: reports that could not become a ticket, with the rule and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake

from ingestion.warehouse import Warehouse
from thematic_libs.dispatch.schema import TICKET_SCHEMA

TICKETS = "gold/dispatch/tickets"
TICKET_SOURCES = "gold/dispatch/ticket_sources"
REJECTIONS = "ops/dispatch_rejections"
CDF = {"delta.enableChangeDataFeed": "true"}
WITHDRAWN_STATUS = "closed"  # a ticket whose every source report is gone


@dataclass(frozen=True)
class TicketWrite:
    version: int  # table version after the write (unchanged when nothing changed)
    inserted: int
    updated: int


def read_table(warehouse: Warehouse, table: str, columns: list[str] | None = None) -> pa.Table | None:
    if not warehouse.exists(table):
        return None
    return warehouse.table(table).to_pyarrow_table(columns=columns)


def replace_source_rows(warehouse: Warehouse, table: str, rows: pa.Table, sources: list[str]) -> None:
    """Replace all rows of `sources` in `table` with `rows`, in one commit (idempotent)."""
    predicate = "source in (" + ", ".join(f"'{source}'" for source in sources) + ")"
    if not warehouse.exists(table):
        write_deltalake(warehouse.uri(table), rows, mode="overwrite", storage_options=warehouse.options())
        return
    write_deltalake(
        warehouse.uri(table),
        rows,
        mode="overwrite",
        predicate=predicate,
        schema_mode="merge",
        storage_options=warehouse.options(),
    )


def _diff(current: pa.Table | None, derived: pa.Table) -> tuple[pa.Table, int, int]:
    """The derived tickets that are new or differ from the current ones, and how many of each."""
    if current is None or current.num_rows == 0:
        return derived, derived.num_rows, 0
    connection = duckdb.connect()
    connection.register("derived", derived)
    connection.register("current", current.select(derived.column_names))
    differs = " or ".join(f'd."{name}" is distinct from c."{name}"' for name in derived.column_names)
    changed = connection.sql(
        f"""
        select d.*, c.ticket_id is null as is_new
        from derived as d left join current as c using (ticket_id)
        where c.ticket_id is null or {differs}
        """
    ).to_arrow_table()
    inserted = int(pa.compute.sum(changed["is_new"].cast(pa.int64())).as_py() or 0)
    # A ticket none of whose reports is left (an IoT incident a late reading withdrew, a case the latest
    # cross-check no longer flags) is closed by its sources, not left open without a source: tickets are never
    # deleted, the dispatch system already holds them.
    withdrawn = connection.sql(
        f"""
        select c.* replace ('{WITHDRAWN_STATUS}' as status, greatest(c.updated_at, now()) as updated_at)
        from current as c anti join derived as d using (ticket_id)
        where c.status is distinct from '{WITHDRAWN_STATUS}'
        """
    ).to_arrow_table()
    changed = changed.drop_columns(["is_new"])
    if withdrawn.num_rows:
        changed = pa.concat_tables([changed, withdrawn.cast(changed.schema)])
    return changed, inserted, changed.num_rows - inserted


def write_tickets(warehouse: Warehouse, derived: pa.Table, run_id: str | None = None) -> TicketWrite:
    """Insert new tickets and update changed ones; nothing is written when nothing changed."""
    uri, options = warehouse.uri(TICKETS), warehouse.options()
    metadata = {"yiwang.run_id": run_id} if run_id else {}
    current = read_table(warehouse, TICKETS)
    changed, inserted, updated = _diff(current, derived)
    if current is None:
        write_deltalake(
            uri,
            derived,
            mode="overwrite",
            configuration=CDF,
            storage_options=options,
            commit_properties=CommitProperties(custom_metadata=metadata),
        )
        return TicketWrite(version=DeltaTable(uri, storage_options=options).version(), inserted=inserted, updated=0)
    table = DeltaTable(uri, storage_options=options)
    if changed.num_rows:
        (
            table.merge(
                changed,
                "t.ticket_id = s.ticket_id",
                source_alias="s",
                target_alias="t",
                commit_properties=CommitProperties(custom_metadata=metadata),
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        table = DeltaTable(uri, storage_options=options)
    return TicketWrite(version=table.version(), inserted=inserted, updated=updated)


def changes_since(warehouse: Warehouse, since_version: int) -> tuple[pa.Table, int]:
    """Tickets inserted or changed after table version `since_version`, latest state of each, and the
    current version (the `--since-version` to pass next time).

    `since_version = -1` returns every ticket, as of the current version.
    """
    if not warehouse.exists(TICKETS):
        return TICKET_SCHEMA.empty_table(), -1
    table = warehouse.table(TICKETS)
    current = table.version()
    if since_version >= current:
        return table.to_pyarrow_table().slice(0, 0).append_column("change_type", pa.array([], pa.string())), current
    feed = pa.table(table.load_cdf(starting_version=since_version + 1, ending_version=current).read_all())
    connection = duckdb.connect()
    connection.register("feed", feed)
    changes = connection.sql(
        """
        select * exclude (_change_type, _commit_version, _commit_timestamp, first_type),
            case when first_type = 'insert' then 'new' else 'changed' end as change_type,
            _commit_version as table_version
        from (
            select *, first_value(_change_type) over (partition by ticket_id order by _commit_version) as first_type
            from feed
            where _change_type in ('insert', 'update_postimage')
        )
        qualify row_number() over (partition by ticket_id order by _commit_version desc) = 1
        order by ticket_id
        """
    ).to_arrow_table()
    return changes, current
