"""Urban events (智慧城管): hotline appeals, grid reports and enterprise appeals as one table of events.

Each event gets an event code (grid workers deliver one; hotline text gets one from the promoted
appeal classifier, or goes to triage (`ops/triage`) when it is not confident; an enterprise appeal's
topic maps to a catalogue item, its text is classified among the 07 items), a place (the grid report's own
grid; the hotline's coordinates, to the containing or nearest grid, else its district; the
enterprise's registered location) and, through the dispatch derivation, its ticket.

Phone numbers and ID numbers that callers dictate into the appeal text are masked before the text
leaves silver: the handling department needs the problem and the place, not the caller's identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa

from ingestion.contract import get_contract
from ingestion.silver import silver_table
from ingestion.warehouse import Warehouse
from thematic_libs.dispatch.derive import DispatchConfig, prepare
from thematic_libs.dispatch.feeds import URBAN_EVENTS
from thematic_libs.dispatch.keys import sql_window_label
from thematic_libs.reference import URBAN_MAJOR_CODES, load_enterprise_appeal_topics, load_event_catalogue
from thematic_libs.urban.classifier import ENTERPRISE_MAJOR_CODES, AppealClassifier, ClassifierConfig

GRID_REGISTRY = "zhengshu.grid_registry"
HOTLINE = "zhengshu.hotline_appeals"
GRID_REPORTS = "chengguan.grid_reports"
ENTERPRISE_APPEALS = "zhengshu.enterprise_appeals"
ENTERPRISES = "shichang.enterprise_registration"
OTHER_ENTERPRISE_APPEAL = "070107"  # the `other` topic: the text's classification may name a better item
TRIAGE = "ops/triage"
# Appeals that arrive on the hotline.appeals topic (bronze: the consumer wrote them exactly once).
STREAMED_HOTLINE = "bronze/stream/hotline_appeals"
HOTLINE_COLUMNS = [
    "appeal_id",
    "received_at",
    "channel",
    "content",
    "address_text",
    "lon",
    "lat",
    "district_code",
    "is_urgent",
]
TRIAGE_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("source_ref", pa.string()),
        pa.field("occurred_at", pa.timestamp("us", tz="UTC")),
        pa.field("district_code", pa.string()),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field(
            "candidates",
            pa.list_(
                pa.struct(
                    [
                        pa.field("event_code", pa.string()),
                        pa.field("event_name", pa.string()),
                        pa.field("confidence", pa.float64()),
                    ]
                )
            ),
        ),
        pa.field("classifier_version", pa.string()),
    ]
)

# Mobile numbers (11 digits from 1[3-9]) and resident ID numbers (18 characters) inside free text.
MASKS = ((r"(^|[^0-9])1[3-9][0-9]{9}([^0-9]|$)", r"\1***********\2"), (r"[1-9][0-9]{16}[0-9Xx]", "******************"))


def read_silver(warehouse: Warehouse, contract_id: str, columns: list[str]) -> pa.Table:
    """The current silver state of a contract (only `columns`); empty when it has not arrived yet."""
    table = silver_table(get_contract(contract_id))
    if warehouse.exists(table):
        return warehouse.table(table).to_pyarrow_table(columns=columns)
    schema = get_contract(contract_id).silver_schema()
    return pa.schema([schema.field(name) for name in columns]).empty_table()


def read_grids(warehouse: Warehouse) -> pa.Table:
    return read_silver(
        warehouse,
        GRID_REGISTRY,
        ["grid_code", "community_code", "street_code", "district_code", "center_lon", "center_lat", "polygon_wkt"],
    )


def read_hotline(warehouse: Warehouse) -> pa.Table:
    """Every hotline appeal, delivered in batches (silver) or streamed (bronze/stream), each once.

    The same appeal arriving both ways is one appeal, so one event and one ticket: the batch delivery
    (the hotline system's record of it) wins. Only the columns events need are read: the caller's
    phone never leaves the restricted stream table.
    """
    delivered = read_silver(warehouse, HOTLINE, HOTLINE_COLUMNS)
    if not warehouse.exists(STREAMED_HOTLINE):
        return delivered
    streamed = warehouse.table(STREAMED_HOTLINE).to_pyarrow_table(columns=HOTLINE_COLUMNS)
    connection = duckdb.connect()
    connection.register("delivered", delivered)
    connection.register("streamed", streamed)
    only_streamed = connection.sql(
        """
        select * from streamed
        where appeal_id not in (select appeal_id from delivered)
        qualify row_number() over (partition by appeal_id order by received_at) = 1
        """
    ).to_arrow_table()
    return pa.concat_tables([delivered, only_streamed.cast(delivered.schema)])


def write_urban_events(
    warehouse: Warehouse, config: DispatchConfig, classifier: ClassifierInUse
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Build the urban events and the triage list and replace both tables; returns what
    `build_urban_events` does."""
    from ingestion.replace import replace_table

    events, rejections, triage = build_urban_events(warehouse, config, classifier)
    for table, rows in ((URBAN_EVENTS, events), (TRIAGE, triage)):
        replace_table(warehouse, table, rows)
    return events, rejections, triage


def _masked(expression: str) -> str:
    for pattern, replacement in MASKS:
        expression = f"regexp_replace({expression}, '{pattern}', '{replacement}', 'g')"
    return expression


@dataclass(frozen=True)
class ClassifierInUse:
    """The promoted classifier version, its model and the abstention settings."""

    version: str
    model: AppealClassifier
    config: ClassifierConfig


def _classified(table: pa.Table, column: str, classifier: ClassifierInUse, majors: tuple[str, ...]) -> pa.Table:
    result = classifier.model.classify(
        table[column], majors, classifier.config.min_confidence, classifier.config.candidates
    )
    return (
        table.append_column("classified_code", result["event_code"])
        .append_column("classifier_code", result["candidate_code"])
        .append_column("classifier_score", result["confidence"])
        .append_column("classifier_runner_up", result["runner_up_code"])
        .append_column("classifier_candidates", result["candidates"])
    )


def event_candidates(warehouse: Warehouse, merge_window_hours: int, classifier: ClassifierInUse) -> pa.Table:
    """One ticket candidate per hotline appeal, grid report and enterprise appeal (CANDIDATE_SCHEMA columns
    plus the classifier's columns and `uscc`).

    Hotline text is classified among the urban items (01-06); below the confidence threshold its
    event code stays empty and the appeal goes to triage. Grid reports keep the code the grid worker
    chose. Enterprise appeals keep the code of their delivered topic; where the topic is `other` or
    unknown, a confident classification of the text among the 07 items replaces it.
    """
    hotline = _classified(read_hotline(warehouse), "content", classifier, URBAN_MAJOR_CODES)
    reports = read_silver(
        warehouse,
        GRID_REPORTS,
        ["report_id", "grid_code", "reported_at", "event_code", "description", "lon", "lat", "photo_uri"],
    )
    appeals = read_silver(
        warehouse, ENTERPRISE_APPEALS, ["appeal_id", "uscc", "submitted_at", "topic", "content", "status"]
    )
    appeals = _classified(appeals, "content", classifier, ENTERPRISE_MAJOR_CODES)
    enterprises = read_silver(warehouse, ENTERPRISES, ["uscc", "name", "lon", "lat", "division_code"])
    connection = duckdb.connect()
    for name, table in {
        "hotline": hotline,
        "reports": reports,
        "appeals": appeals,
        "enterprises": enterprises,
        "topics": load_enterprise_appeal_topics(),
    }.items():
        connection.register(name, table)
    window = sql_window_label("a.submitted_at", merge_window_hours)
    version = classifier.version.replace("'", "")
    return connection.sql(
        f"""
        with coded as (
            select a.*, t.event_code as topic_code,
                case when t.event_code is not null and t.event_code <> '{OTHER_ENTERPRISE_APPEAL}' then 'topic'
                     when a.classified_code is not null then 'model'
                     when t.event_code is not null then 'topic'
                     else 'triage' end as classified_by
            from appeals as a
            left join topics as t on a.topic = t.topic
        )
        select 'hotline' as source, appeal_id as source_ref, classified_code as event_code,
            coalesce('12345热线：' || {_masked("address_text")}, '12345热线诉求') as title,
            {_masked("content")} as description,
            received_at as occurred_at, lon, lat, null as grid_code, null as community_code, district_code,
            is_urgent, null as evidence_uri, null as dedupe_key, null as department_code,
            case when classified_code is null then 'triage' else 'model' end as classified_by,
            classifier_score, classifier_code, classifier_runner_up, '{version}' as classifier_version,
            classifier_candidates, null as uscc
        from hotline
        union all
        select 'grid_report', report_id, event_code, '网格上报', description, reported_at, lon, lat, grid_code,
            null, null, false, photo_uri, null, null, 'delivered', null, null, null, null, null, null
        from reports
        union all
        select 'enterprise_appeal', a.appeal_id, a.event_code, '企业诉求：' || coalesce(e.name, a.uscc),
            {_masked("a.content")}, a.submitted_at, e.lon, e.lat, null, e.division_code, null, false, null,
            'enterprise_appeal|' || a.uscc || '|' || a.event_code || '|' || {window}, null,
            a.classified_by, a.classifier_score, a.classifier_code, a.classifier_runner_up, '{version}',
            a.classifier_candidates, a.uscc
        from (
            select *, case classified_by when 'topic' then topic_code when 'model' then classified_code end
                as event_code
            from coded
        ) as a
        left join enterprises as e on a.uscc = e.uscc
        """
    ).to_arrow_table()


def build_urban_events(
    warehouse: Warehouse, config: DispatchConfig, classifier: ClassifierInUse
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The urban events table (located, classified, with the ticket each one feeds), the rejections, and
    the triage list (appeals the classifier abstained on, with their top candidates).

    An event that cannot become a ticket (no confident event code, an event code outside the catalogue,
    no place) stays in the events table with an empty `ticket_id`; the rejection says why.
    """
    candidates = event_candidates(warehouse, config.merge_window_hours, classifier)
    prepared = prepare(candidates.drop_columns(["classifier_candidates"]), read_grids(warehouse), config)
    catalogue = load_event_catalogue().select(["event_code", "item_name", "major_code", "minor_code"])
    connection = duckdb.connect()
    connection.register("candidates", candidates)
    connection.register("prepared", prepared.rows)
    connection.register("catalogue", catalogue)
    events = connection.sql(
        """
        select c.source || ':' || c.source_ref as event_id, c.source, c.source_ref, c.event_code,
            k.item_name as event_name, k.major_code, k.minor_code, c.title, c.description, c.occurred_at,
            c.lon, c.lat, p.grid_code, coalesce(p.community_code, c.community_code) as community_code,
            p.street_code, coalesce(p.district_code, c.district_code) as district_code,
            coalesce(p.located_by, 'unlocated') as located_by, c.classified_by, c.classifier_score,
            c.classifier_code, c.classifier_runner_up, c.classifier_version,
            c.is_urgent, c.uscc, p.dedupe_key, p.ticket_id
        from candidates as c
        left join prepared as p on c.source = p.source and c.source_ref = p.source_ref
        left join catalogue as k on c.event_code = k.event_code
        order by c.occurred_at, c.source, c.source_ref
        """
    ).to_arrow_table()
    triage = connection.sql(
        """
        with listed as (
            select c.source || ':' || c.source_ref as event_id, c.source, c.source_ref, c.occurred_at,
                c.district_code, c.title, c.description, c.classifier_version,
                unnest(c.classifier_candidates) as candidate
            from candidates as c
            where c.classified_by = 'triage'
        )
        select l.event_id, any_value(l.source) as source, any_value(l.source_ref) as source_ref,
            any_value(l.occurred_at) as occurred_at, any_value(l.district_code) as district_code,
            any_value(l.title) as title, any_value(l.description) as description,
            list({'event_code': l.candidate.event_code, 'event_name': k.item_name,
                  'confidence': l.candidate.confidence} order by l.candidate.confidence desc) as candidates,
            any_value(l.classifier_version) as classifier_version
        from listed as l
        left join catalogue as k on l.candidate.event_code = k.event_code
        group by l.event_id
        order by occurred_at, event_id
        """
    ).to_arrow_table()
    if triage.num_rows == 0:
        triage = TRIAGE_SCHEMA.empty_table()
    return events, prepared.rejections, triage.cast(TRIAGE_SCHEMA)
