"""The one derivation path from candidates (any source) to tickets.

1. `prepare`: each candidate is checked, located (grid, else coordinates, else community, else
   district), given its catalogue entry, responsible department, dedupe key and ticket id. Rows that
   cannot become work (an event code outside the catalogue, nowhere to send it) come back as
   rejections naming the record and the rule.
2. `derive_tickets`: the prepared rows of every source (kept in `gold/dispatch/ticket_sources`) are
   grouped by ticket: the earliest report gives the ticket its text and place, the most urgent its
   priority; `merged_count` counts the reports; the SLA of the event code gives `due_at` in working
   days; the dispatch system's latest outcome gives `status`.

Everything is set-based (DuckDB over Arrow), so a million reports derive in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingestion.keys import check_window
from thematic_libs import geo
from thematic_libs.calendar import add_working_days
from thematic_libs.config import load_section
from thematic_libs.dispatch.keys import sql_ticket_id, sql_window_label
from thematic_libs.dispatch.schema import CANDIDATE_SCHEMA, PRIORITIES, SOURCES, TICKET_SCHEMA
from thematic_libs.reference import assign_departments, load_event_catalogue

REJECTION_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string()),
        pa.field("source_ref", pa.string()),
        pa.field("rule", pa.string()),
        pa.field("detail", pa.string()),
    ]
)

PREPARED_COLUMNS = (
    "source",
    "source_ref",
    "event_code",
    "event_name",
    "title",
    "description",
    "occurred_at",
    "lon",
    "lat",
    "grid_code",
    "community_code",
    "street_code",
    "district_code",
    "located_by",
    "department_code",
    "priority",
    "sla_working_days",
    "evidence_uri",
    "dedupe_key",
    "ticket_id",
    "closed_at",
)


@dataclass(frozen=True)
class DispatchConfig:
    merge_window_hours: int
    priority_of_default: dict[str, str]
    urgent_raises_priority: bool
    repeat_raise_at: int
    initial_status: str
    locate_max_distance_m: float

    @classmethod
    def load(cls, overrides: dict[str, Any] | None = None) -> DispatchConfig:
        values = {**load_section("thematic_libs.dispatch", "dispatch"), **(overrides or {})}
        config = cls(**values)
        check_window(config.merge_window_hours)
        unknown = set(config.priority_of_default.values()) - set(PRIORITIES)
        if unknown:
            raise ValueError(f"dispatch.priority_of_default maps to {sorted(unknown)}: priorities are {PRIORITIES}")
        return config


@dataclass(frozen=True)
class Prepared:
    rows: pa.Table  # PREPARED_COLUMNS
    rejections: pa.Table  # REJECTION_SCHEMA


def conform_candidates(candidates: pa.Table) -> pa.Table:
    """The candidates with exactly CANDIDATE_SCHEMA's columns (missing optional ones as nulls)."""
    columns = []
    for field in CANDIDATE_SCHEMA:
        if field.name in candidates.column_names:
            columns.append(candidates[field.name].cast(field.type))
        elif field.nullable:
            columns.append(pa.nulls(candidates.num_rows, field.type))
        else:
            raise ValueError(f"ticket candidates lack the required column {field.name!r}")
    return pa.Table.from_arrays(columns, schema=CANDIDATE_SCHEMA)


def _grid_places(grids: pa.Table) -> pa.Table:
    return grids.select(["grid_code", "community_code", "street_code", "district_code"])


def _located_grid(candidates: pa.Table, grids: pa.Table, max_distance_m: float) -> pa.Array:
    """Grid of each candidate: a known delivered grid code, else the grid its coordinates fall in (or near)."""
    known = pc.fill_null(pc.is_in(candidates["grid_code"], value_set=grids["grid_code"]), False)
    need = pc.and_(pc.invert(known), pc.fill_null(pc.is_valid(candidates["lon"]), False))
    if grids.num_rows == 0 or not pc.any(need).as_py():
        return pc.if_else(known, candidates["grid_code"], pa.scalar(None, pa.string())).combine_chunks()
    index = np.flatnonzero(need.to_numpy(zero_copy_only=False))
    found = geo.locate(candidates["lon"].take(index), candidates["lat"].take(index), grids, max_distance_m)
    located = np.full(candidates.num_rows, None, dtype=object)
    located[index] = found["grid_code"].to_numpy(zero_copy_only=False)
    return pc.if_else(known, candidates["grid_code"], pa.array(located, pa.string())).combine_chunks()


def _raised(priority: str) -> str:
    """DuckDB expression: the priority one level more urgent (P3 -> P2), never above P1."""
    return f"'P' || greatest(cast(substr({priority}, 2) as integer) - 1, 1)"


def prepare(candidates: pa.Table, grids: pa.Table, config: DispatchConfig) -> Prepared:
    """Locate, classify and key every candidate; reject those that cannot become a ticket."""
    candidates = conform_candidates(candidates)
    located_grid = _located_grid(candidates, grids, config.locate_max_distance_m)
    catalogue = load_event_catalogue()
    priority_map = pa.table(
        {"default_priority": list(config.priority_of_default), "priority": list(config.priority_of_default.values())}
    )
    connection = duckdb.connect()
    connection.register("candidates", candidates.append_column("located_grid", located_grid))
    connection.register("grids", _grid_places(grids))
    connection.register("catalogue", catalogue)
    connection.register("priority_map", priority_map)
    connection.register("sources", pa.table({"source": list(SOURCES)}))
    window = sql_window_label("c.occurred_at", config.merge_window_hours)
    raise_urgent = "true" if config.urgent_raises_priority else "false"
    located = connection.sql(
        f"""
        with communities as (
            select distinct community_code, street_code, district_code from grids
        ),
        districts as (
            select distinct district_code from grids
        )
        select
            c.source, c.source_ref, c.event_code, k.item_name as event_name, c.title, c.description,
            c.occurred_at, c.lon, c.lat,
            g.grid_code,
            coalesce(g.community_code, m.community_code) as community_code,
            coalesce(g.street_code, m.street_code) as street_code,
            coalesce(g.district_code, m.district_code, c.district_code) as district_code,
            case
                when g.grid_code is not null and g.grid_code = c.grid_code then 'grid_code'
                when g.grid_code is not null then 'coordinates'
                when m.community_code is not null then 'community'
                when c.district_code is not null then 'district'
            end as located_by,
            c.department_code as given_department,
            case
                when c.priority in (select priority from priority_map) then c.priority
                when c.is_urgent and {raise_urgent} then {_raised("p.priority")}
                else p.priority
            end as priority,
            cast(k.sla_working_days as integer) as sla_working_days,
            c.evidence_uri,
            c.dedupe_key as given_dedupe_key,
            c.closed_at,
            {window} as window_label,
            k.event_code is not null as known_event,
            s.source is not null as known_source,
            (select count(*) from districts) = 0
                or coalesce(g.district_code, m.district_code, c.district_code) in (select district_code from districts)
                as in_jurisdiction
        from candidates as c
        left join catalogue as k on c.event_code = k.event_code
        left join priority_map as p on k.default_priority = p.default_priority
        left join grids as g on c.located_grid = g.grid_code
        left join communities as m on g.grid_code is null and c.community_code = m.community_code
        left join sources as s on c.source = s.source
        """
    ).to_arrow_table()
    connection.register("located", located)
    rejections = connection.sql(
        """
        select source, source_ref,
            case when not known_source then 'unknown_source'
                 when event_code is null then 'unclassified'
                 when not known_event then 'unknown_event_code'
                 when district_code is null then 'unlocated'
                 else 'outside_jurisdiction' end as rule,
            case when not known_source then 'source ' || coalesce(source, 'NULL')
                    || ' is not a ticket source; use one of the dispatch sources'
                 when event_code is null then 'no event code: the classifier was not confident enough; the appeal'
                    || ' waits in ops/triage for a dispatcher (yiwang triage), whose labels retrain the classifier'
                 when not known_event then 'event code ' || event_code
                    || ' is not in the event catalogue; fix the record or add the code to the catalogue'
                 when district_code is null
                    then 'no grid, community or district: the record carries no place the platform knows'
                 else 'district ' || district_code || ' is not in the grid registry: forward the record to that'
                    || ' district''s platform' end as detail
        from located
        where not known_source or not known_event or district_code is null or not in_jurisdiction
        """
    ).to_arrow_table()
    kept = connection.sql(
        "select * from located where known_source and known_event and district_code is not null and in_jurisdiction"
    ).to_arrow_table()
    departments = assign_departments(kept["event_code"], kept["district_code"])
    kept = kept.append_column("matrix_department", departments)
    connection.register("kept", kept)
    rows = connection.sql(
        f"""
        with keyed as (
            select *,
                coalesce(given_dedupe_key,
                    event_code || '|' || coalesce(grid_code, community_code, district_code) || '|' || window_label)
                    as dedupe_key
            from kept
        )
        select source, source_ref, event_code, event_name, title, description, occurred_at, lon, lat,
            grid_code, community_code, street_code, district_code, located_by,
            coalesce(given_department, matrix_department) as department_code,
            priority, sla_working_days, evidence_uri, dedupe_key, {sql_ticket_id("dedupe_key")} as ticket_id,
            closed_at
        from keyed
        order by source, source_ref
        """
    ).to_arrow_table()
    return Prepared(rows=rows, rejections=rejections.cast(REJECTION_SCHEMA))


def derive_tickets(sources: pa.Table, outcomes: pa.Table | None, config: DispatchConfig) -> pa.Table:
    """One row per ticket from the prepared rows of every source and the dispatch system's outcomes.

    `outcomes` has `ticket_id, event_seq, event, event_at, department_code` (silver
    `zhihui.ticket_outcomes`); None or empty means no feedback yet, so every ticket is `new`.
    """
    connection = duckdb.connect()
    if "closed_at" not in sources.column_names:  # a table written before sources could close tickets
        sources = sources.append_column("closed_at", pa.nulls(sources.num_rows, pa.timestamp("us", tz="UTC")))
    connection.register("sources", sources)
    if outcomes is None or outcomes.num_rows == 0:
        connection.execute(
            "create table outcomes (ticket_id varchar, event_seq bigint, event varchar,"
            " event_at timestamptz, department_code varchar)"
        )
    else:
        connection.register("outcomes", outcomes)
    grouped = connection.sql(
        f"""
        with ranked as (
            select *, row_number() over (partition by ticket_id order by occurred_at, source, source_ref) as position
            from sources
        ),
        merged as (
            select ticket_id,
                count(*) as merged_count,
                min(priority) as top_priority,
                max(occurred_at) as last_reported_at,
                -- closed by its sources only when every report of it has ended
                case when count(closed_at) = count(*) then max(closed_at) end as closed_at
            from sources
            group by ticket_id
        ),
        latest_outcome as (
            select ticket_id, event, event_at, department_code
            from outcomes
            qualify row_number() over (partition by ticket_id order by event_seq desc, event_at desc) = 1
        )
        select
            r.ticket_id, r.source, r.source_ref, r.event_code, r.event_name, r.title, r.description,
            r.grid_code, r.community_code, r.street_code, r.district_code, r.lon, r.lat, r.department_code,
            case when m.merged_count >= {config.repeat_raise_at} then {_raised("m.top_priority")}
                else m.top_priority end as priority,
            r.occurred_at as created_at,
            r.sla_working_days,
            r.dedupe_key, m.merged_count, r.evidence_uri,
            case
                when m.closed_at is not null and (o.event_at is null or m.closed_at >= o.event_at) then 'closed'
                else coalesce(o.event, '{config.initial_status}')
            end as status,
            greatest(m.last_reported_at, o.event_at, m.closed_at) as updated_at,
            coalesce(o.department_code, r.department_code) as handling_department_code
        from ranked as r
        join merged as m using (ticket_id)
        left join latest_outcome as o using (ticket_id)
        where r.position = 1
        order by r.ticket_id
        """
    ).to_arrow_table()
    due_at = add_working_days(grouped["created_at"], grouped["sla_working_days"].to_numpy(zero_copy_only=False))
    tickets = grouped.drop_columns(["sla_working_days"])
    tickets = tickets.add_column(tickets.schema.get_field_index("dedupe_key"), "due_at", due_at)
    return conform_tickets(tickets)


def conform_tickets(tickets: pa.Table) -> pa.Table:
    """TICKET_SCHEMA's columns first, in order, then the extension columns."""
    names = [field.name for field in TICKET_SCHEMA]
    extra = [name for name in tickets.column_names if name not in names]
    ordered = tickets.select(names + extra)
    fields = [TICKET_SCHEMA.field(name) for name in names] + [ordered.schema.field(name) for name in extra]
    return ordered.cast(pa.schema(fields))
