"""Urban events and the dispatch table: the Python half of the urban-management library.

`gold/urban/events` classifies and locates every hotline appeal, grid report and enterprise appeal
(the appeals the classifier is not sure of go to `ops/triage` with their candidates);
`gold/dispatch/tickets` replaces each feed's rows in `gold/dispatch/ticket_sources`, re-derives the
tickets from all sources and the dispatch system's outcomes, and writes only what changed (the
table's change data feed is what the dispatch system reads). Business checks guard the table.
"""

# No `from __future__ import annotations`: Dagster inspects the real annotations of assets and checks.
import duckdb
import pyarrow as pa
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from ingestion.contract import get_contract
from ingestion.warehouse import Warehouse
from orchestration.ingestion_assets import silver_key
from orchestration.resources import PlatformResource
from thematic_libs.dispatch.derive import DispatchConfig
from thematic_libs.dispatch.feeds import FEEDS, URBAN_EVENTS
from thematic_libs.dispatch.refresh import TICKET_OUTCOMES, refresh_tickets
from thematic_libs.dispatch.store import TICKETS, read_table
from thematic_libs.sharing.asset_metadata import product_asset_facts
from thematic_libs.urban.classifier import ClassifierConfig
from thematic_libs.urban.events import (
    ENTERPRISE_APPEALS,
    ENTERPRISES,
    GRID_REGISTRY,
    GRID_REPORTS,
    HOTLINE,
    STREAMED_HOTLINE,
    ClassifierInUse,
    read_silver,
    write_urban_events,
)


def table_key(table: str) -> AssetKey:
    return AssetKey(table.split("/"))


def _silver(contract_id: str) -> AssetKey:
    return silver_key(get_contract(contract_id))


def _counts(table: pa.Table, column: str) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    grouped = table.group_by(column).aggregate([([], "count_all")])
    return {str(k): int(v) for k, v in zip(grouped[column].to_pylist(), grouped["count_all"].to_pylist(), strict=True)}


@asset(
    key=table_key(URBAN_EVENTS),
    deps=[
        *(_silver(c) for c in (HOTLINE, GRID_REPORTS, ENTERPRISE_APPEALS, ENTERPRISES, GRID_REGISTRY)),
        table_key(STREAMED_HOTLINE),
    ],
    group_name="urban",
    description="城市事件 Every hotline appeal, grid report and enterprise appeal with event code, grid and ticket.",
    kinds={"delta", "python"},
    **product_asset_facts(URBAN_EVENTS),
)
def urban_events(platform: PlatformResource) -> MaterializeResult:
    warehouse = platform.get_warehouse()
    version, model = platform.appeal_classifier()
    classifier = ClassifierInUse(version, model, ClassifierConfig.load())
    events, rejections, triage = write_urban_events(warehouse, DispatchConfig.load(), classifier)
    located = pa.compute.sum(pa.compute.is_valid(events["grid_code"]).cast(pa.int64())).as_py() or 0
    hotline = events.filter(pa.compute.equal(events["source"], "hotline"))
    classified = pa.compute.sum(pa.compute.is_valid(hotline["event_code"]).cast(pa.int64())).as_py() or 0
    return MaterializeResult(
        metadata={
            "events": events.num_rows,
            "by_source": MetadataValue.json(_counts(events, "source")),
            "located_in_a_grid": located,
            "classifier_version": version,
            "hotline_classified_share": round(classified / hotline.num_rows, 4) if hotline.num_rows else None,
            "sent_to_triage": triage.num_rows,
            "classified_by": MetadataValue.json(_counts(events, "classified_by")),
            "not_ticketed": MetadataValue.json(_counts(rejections, "rule")),
        }
    )


@asset(
    key=table_key(TICKETS),
    deps=[
        *(table_key(table) for feed in FEEDS for table in (feed.table, *feed.also_reads)),
        _silver(TICKET_OUTCOMES),
        _silver(GRID_REGISTRY),
    ],
    group_name="dispatch",
    **product_asset_facts(TICKETS),
    description=(
        "派单工单 The lean dispatch table: one row per ticket from every feed, merged, routed, due in working "
        "days, status from the dispatch system's outcomes. Change data feed on: `yiwang tickets changes`."
    ),
    kinds={"delta", "python"},
)
def dispatch_tickets(context, platform: PlatformResource) -> MaterializeResult:
    refreshed = refresh_tickets(platform.get_warehouse(), FEEDS, run_id=context.run_id)
    for line in refreshed.not_fed:
        context.log.warning(f"feed {line}")
    if refreshed.tickets is None or refreshed.written is None:
        return MaterializeResult(metadata={"tickets": 0, "note": "no feed has any rows yet"})
    tickets, written = refreshed.tickets, refreshed.written
    return MaterializeResult(
        metadata={
            "tickets": tickets.num_rows,
            "reports_fed": MetadataValue.json(refreshed.fed),
            "inserted": written.inserted,
            "updated": written.updated,
            "table_version": written.version,
            "by_status": MetadataValue.json(_counts(tickets, "status")),
            "by_priority": MetadataValue.json(_counts(tickets, "priority")),
            **({"skipped": "feeds " + "; ".join(refreshed.not_fed)} if refreshed.not_fed else {}),
        }
    )


def _ticket_query(warehouse: Warehouse, sql: str) -> list[tuple]:
    tickets = read_table(warehouse, TICKETS)
    if tickets is None:
        return []
    connection = duckdb.connect()
    connection.register("tickets", tickets)
    return connection.sql(sql).fetchall()


@asset_check(asset=table_key(TICKETS), description="Every ticket has a department and a due time after creation.")
def tickets_routed_and_due(platform: PlatformResource) -> AssetCheckResult:
    bad = _ticket_query(
        platform.get_warehouse(),
        "select ticket_id from tickets where department_code is null or department_code = ''"
        " or due_at is null or due_at <= created_at limit 20",
    )
    return AssetCheckResult(passed=not bad, metadata={"examples": MetadataValue.json([row[0] for row in bad])})


@asset_check(asset=table_key(TICKETS), description="No two open tickets share a dedupe key (one problem, one job).")
def open_tickets_unique_dedupe_key(platform: PlatformResource) -> AssetCheckResult:
    bad = _ticket_query(
        platform.get_warehouse(),
        "select dedupe_key, count(*) from tickets where status not in ('resolved', 'closed')"
        " group by dedupe_key having count(*) > 1 limit 20",
    )
    return AssetCheckResult(passed=not bad, metadata={"duplicates": MetadataValue.json([row[0] for row in bad])})


@asset_check(
    asset=table_key(TICKETS),
    description="Outcomes the dispatch system reported refer to tickets of this table.",
    additional_deps=[_silver(TICKET_OUTCOMES)],
)
def outcomes_refer_to_known_tickets(platform: PlatformResource) -> AssetCheckResult:
    warehouse = platform.get_warehouse()
    outcomes = read_silver(warehouse, TICKET_OUTCOMES, ["ticket_id"])
    tickets = read_table(warehouse, TICKETS, columns=["ticket_id"])
    known = tickets["ticket_id"] if tickets is not None else pa.array([], pa.string())
    unknown = pa.compute.unique(
        outcomes.filter(pa.compute.invert(pa.compute.is_in(outcomes["ticket_id"], known)))["ticket_id"]
    )
    return AssetCheckResult(
        passed=len(unknown) == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={"unknown_tickets": len(unknown), "examples": MetadataValue.json(unknown.to_pylist()[:20])},
    )


def dispatch_assets() -> list[AssetsDefinition]:
    return [urban_events, dispatch_tickets]


def dispatch_checks() -> list:
    return [tickets_routed_and_due, open_tickets_unique_dedupe_key, outcomes_refer_to_known_tickets]
