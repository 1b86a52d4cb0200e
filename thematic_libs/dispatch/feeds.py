"""Ticket feeds: which gold table feeds which ticket sources.

A feed reads the candidates of its sources from a gold table another asset built; the dispatch
asset replaces the feed's rows in `gold/dispatch/ticket_sources`, then re-derives the tickets from
all sources at once, so a grid report and a hotline appeal about the same thing merge into one
ticket whatever feed brought them. A new source (IoT alerts, video AI, the cross-check) adds one
`TicketFeed` here and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from ingestion.warehouse import Warehouse
from thematic_libs.dispatch.schema import CANDIDATE_SCHEMA
from thematic_libs.emergency.alerts import INCIDENTS, NEAREST_RESOURCES, WARNINGS, read_iot_alerts
from thematic_libs.video.events import EVENTS as VIDEO_EVENTS
from thematic_libs.video.tickets import read_video_events

URBAN_EVENTS = "gold/urban/events"


@dataclass(frozen=True)
class TicketFeed:
    name: str
    sources: tuple[str, ...]
    table: str  # the gold table it reads (its Dagster asset key is the path split on "/")
    read: Callable[[Warehouse], pa.Table | None]  # candidates, or None when the table is not built
    also_reads: tuple[str, ...] = ()  # further gold tables it reads (Dagster dependencies)


def _candidate_columns(table: pa.Table) -> pa.Table:
    names = [field.name for field in CANDIDATE_SCHEMA]
    return table.select([name for name in names if name in table.column_names])


def read_urban_events(warehouse: Warehouse) -> pa.Table | None:
    """Urban events that carry an event code (unclassified hotline appeals wait for a person)."""
    if not warehouse.exists(URBAN_EVENTS):
        return None
    events = warehouse.table(URBAN_EVENTS).to_pyarrow_table()
    return _candidate_columns(events.filter(pc.is_valid(events["ticket_id"])))


def read_crosscheck_cases(warehouse: Warehouse) -> pa.Table | None:
    """One candidate per case flagged by the latest cross-check run (case id and rule codes only)."""
    from thematic_libs.social_assistance.gold import REVIEW_TABLE
    from thematic_libs.social_assistance.run import ticket_candidates

    if not warehouse.exists(REVIEW_TABLE):
        return None
    dates = warehouse.table(REVIEW_TABLE).to_pyarrow_table(columns=["as_of"])["as_of"]
    if len(dates) == 0:
        return None
    return ticket_candidates(warehouse, pc.max(dates).as_py())


FEEDS: tuple[TicketFeed, ...] = (
    TicketFeed("urban_events", ("hotline", "grid_report", "enterprise_appeal"), URBAN_EVENTS, read_urban_events),
    TicketFeed("crosscheck", ("crosscheck",), "gold/social_assistance/case_review", read_crosscheck_cases),
    TicketFeed(
        "iot_alerts",
        ("iot_alert",),
        INCIDENTS,
        read_iot_alerts,
        also_reads=(WARNINGS, NEAREST_RESOURCES),
    ),
    TicketFeed("video_ai", ("video_ai",), VIDEO_EVENTS, read_video_events),
)
