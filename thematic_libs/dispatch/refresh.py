"""Feed candidates into `gold/dispatch/ticket_sources` and re-derive the dispatch table: the one path.

The nightly dispatch asset runs it over every feed; a streaming consumer runs it over its own feed
(IoT alerts, streamed appeals) right after a micro-batch so a ticket is visible within seconds. Both
replace only their feed's rows and re-derive all tickets, so a report merges with the reports of any
other source, whoever wrote last. Two writers at once (a run and a consumer) are serialised by Delta:
a commit that lost the race is retried on the new table version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from deltalake.exceptions import CommitFailedError

from ingestion.warehouse import Warehouse
from thematic_libs.dispatch.derive import DispatchConfig, derive_tickets, prepare
from thematic_libs.dispatch.feeds import FEEDS, TicketFeed
from thematic_libs.dispatch.store import (
    REJECTIONS,
    TICKET_SOURCES,
    TicketWrite,
    read_table,
    replace_source_rows,
    write_tickets,
)

log = logging.getLogger(__name__)

TICKET_OUTCOMES = "zhihui.ticket_outcomes"
OUTCOME_COLUMNS = ["ticket_id", "event_seq", "event", "event_at", "department_code"]
COMMIT_ATTEMPTS = 5


@dataclass
class Refresh:
    tickets: pa.Table | None = None  # every ticket as derived now (None: no feed has rows yet)
    written: TicketWrite | None = None
    fed: dict[str, int] = field(default_factory=dict)  # feed -> reports fed
    not_fed: list[str] = field(default_factory=list)  # feeds whose table is not built yet, and why


def refresh_tickets(
    warehouse: Warehouse,
    feeds: Sequence[TicketFeed] = FEEDS,
    *,
    config: DispatchConfig | None = None,
    run_id: str | None = None,
) -> Refresh:
    """Replace the rows of `feeds` in ticket_sources, re-derive every ticket, write what changed."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            return _refresh(warehouse, feeds, config or DispatchConfig.load(), run_id)
        except CommitFailedError as error:
            if attempt == COMMIT_ATTEMPTS:
                raise
            log.info("dispatch tables changed under us (%s); deriving again (attempt %d)", error, attempt + 1)
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _refresh(warehouse: Warehouse, feeds: Sequence[TicketFeed], config: DispatchConfig, run_id: str | None) -> Refresh:
    from thematic_libs.urban.events import read_grids, read_silver

    grids = read_grids(warehouse)
    result = Refresh()
    for feed in feeds:
        candidates = feed.read(warehouse)
        if candidates is None:
            result.not_fed.append(f"{feed.name} ({feed.table} not built yet; its tickets are left as they are)")
            continue
        prepared = prepare(candidates, grids, config)
        replace_source_rows(warehouse, TICKET_SOURCES, prepared.rows, list(feed.sources))
        replace_source_rows(warehouse, REJECTIONS, prepared.rejections, list(feed.sources))
        result.fed[feed.name] = prepared.rows.num_rows
    sources = read_table(warehouse, TICKET_SOURCES)
    if sources is None:
        return result
    outcomes = read_silver(warehouse, TICKET_OUTCOMES, OUTCOME_COLUMNS)
    result.tickets = derive_tickets(sources, outcomes, config)
    result.written = write_tickets(warehouse, result.tickets, run_id=run_id)
    return result


def feeds_named(*names: str) -> tuple[TicketFeed, ...]:
    known = {feed.name: feed for feed in FEEDS}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown ticket feeds {unknown}; known: {sorted(known)}")
    return tuple(known[name] for name in names)
