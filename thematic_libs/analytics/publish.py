"""The published warehouse (发布库): the gold layer Superset reads, as one DuckDB file swapped in whole.

Superset cannot read Delta tables itself (DuckDB's `delta` extension does not load offline) and must never
meet a half-written file or a writer's lock, so after every build the tables below are written to a new
DuckDB file beside the published one and renamed over it (`os.replace`): a reader has either the old file
or the new one open, never a mix, and never waits. The writer and Superset use one pinned duckdb version
(a file written by a newer duckdb does not open in an older one).

What is published is an allow-list, twice over:

- `SOURCES`: the only tables read, each with the only columns read (a column added to a gold table later is
  not published until it is named here). Never bronze, quarantine, `gold/social_assistance/` (the restricted
  cross-check: it appears only through `gold/reports/crosscheck_summary`, its aggregates), a `*_key`
  pseudonym or a lineage column (`_*`); `check_sources` refuses such a source before anything is read.
- `TABLES`: the published tables, built with SQL over those sources only. Person-level rows never leave:
  party members are counted per community, share calls per day and department; cross-check tickets are
  counted in the KPI counts, never listed; a one-person business is named by what it is, not by its owner.

Times are converted to China Standard Time (naive timestamps, `*_at` columns), months are `YYYY-MM` in CST
(a snapshot's month is the month it is as of), and the fact tables carry `district_name`, `street_name` and
`month`, so that a dashboard's three native filters apply to all its charts (a department-level table has no
street: Superset leaves the street filter out of its query). Codes keep their column; Chinese labels sit beside
them (`*_name`). `publish` checks the written file before the swap: a pseudonym or lineage column in any table
fails the publish and leaves the previous file in place.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from ingestion.warehouse import Warehouse

PUBLISHED_FILE = "yiwang_gold.duckdb"
CST = "Asia/Shanghai"
# Layers and folders no published table may read: raw deliveries, rejected records, the restricted cross-check.
RESTRICTED_PREFIXES = ("bronze/", "quarantine/", "gold/social_assistance/", "share/")


class PublishError(RuntimeError):
    """The published warehouse could not be written, or would have published something restricted."""


@dataclass(frozen=True)
class Source:
    """A warehouse table read for publishing: only `columns` (name -> DuckDB type) are read.

    `load` replaces the Delta read where the figures are computed by the platform's own function (share calls,
    order states), so that the published numbers have one definition."""

    name: str
    table: str
    columns: Mapping[str, str]
    load: Callable[[Warehouse], pa.Table] | None = None

    @property
    def view(self) -> str:
        return f"src_{self.name}"


@dataclass(frozen=True)
class Published:
    """One published table: `schema.name`, what it is for (English), the SQL that builds it."""

    schema: str
    name: str
    description: str
    sql: str

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class PublishResult:
    path: Path
    tables: dict[str, int]  # qualified name -> rows
    missing_sources: tuple[str, ...]  # warehouse tables not there yet: their published tables are empty
    seconds: float
    bytes: int


def published_path(home: Path) -> Path:
    """Where the published file lives under the platform's home (settings: YIWANG_HOME)."""
    return Path(home) / "analytics" / PUBLISHED_FILE


# --- labels: Chinese names beside the codes (data, shown in the dashboards) ---------------------------------

SOURCE_NAMES = {
    "hotline": "12345热线",
    "grid_report": "网格上报",
    "enterprise_appeal": "企业诉求",
    "iot_alert": "物联感知告警",
    "video_ai": "视频AI",
    "crosscheck": "救助核查",
}
DEVICE_TYPES = {
    "water_level": "水位计",
    "rain_gauge": "雨量计",
    "manhole_cover": "智能井盖",
    "smoke": "烟感",
    "river_quality": "河道水质",
    "gas": "燃气监测",
}
DEVICE_STATUSES = {"active": "在线", "offline": "离线", "retired": "已退役"}
RESOURCE_TYPES = {
    "pump": "应急抽水泵",
    "shelter": "应急避难场所",
    "rescue_team": "应急救援队",
    "sandbag_depot": "防汛沙袋储备点",
    "generator": "移动发电机组",
    "boat": "冲锋舟",
}
LEVELS = {"high": "高", "medium": "中", "low": "低"}
INCIDENT_STATUSES = {"open": "进行中", "closed": "已结束"}
SEVERITIES = {"severe": "严重", "normal": "一般"}
TICKET_STATUSES = {
    "new": "新建",
    "dispatched": "已派发",
    "accepted": "已签收",
    "transferred": "已转派",
    "returned": "已退回",
    "reopened": "重新办理",
    "resolved": "已办结",
    "closed": "已关闭",
}
BATCH_STATUSES = {"loaded": "已入库", "rejected": "已拒收"}
ORDER_STATES = {
    "requested": "待审批",
    "approved": "已批准",
    "rejected": "已驳回",
    "active": "生效中",
    "revoked": "已撤销",
    "expired": "已过期",
}
ENTERPRISE_STATUSES = {"active": "存续", "in_liquidation": "清算中", "revoked": "吊销", "deregistered": "注销"}


def label(column: str, names: Mapping[str, str], fallback: str | None = None) -> str:
    """SQL: the Chinese label of a code column (the code itself when unknown, `fallback` when null)."""
    cases = " ".join(f"when '{code}' then '{name}'" for code, name in names.items())
    otherwise = f"coalesce({column}, '{fallback}')" if fallback else column
    return f"case {column} {cases} else {otherwise} end"


def cst(column: str) -> str:
    """SQL: a UTC instant as a China Standard Time wall-clock timestamp."""
    return f"timezone('{CST}', {column})"


def cst_month(column: str) -> str:
    return f"strftime(timezone('{CST}', {column}), '%Y-%m')"


# --- what is read --------------------------------------------------------------------------------------------


def _usage(warehouse: Warehouse) -> pa.Table:
    """Share calls per day, department and order: gold/sharing/usage_daily's own definition, computed now
    from ops/share_access_log, so that calls made since the last build count."""
    from thematic_libs.sharing.access_log import read_access_log, usage_daily

    return usage_daily(read_access_log(warehouse)).to_arrow()


def _orders(warehouse: Warehouse) -> pa.Table:
    """Each share order's current state (an order past its date counts as expired), from ops/share_audit."""
    from thematic_libs.sharing.orders import current_orders, read_audit

    orders = current_orders(read_audit(warehouse)).values()
    return pa.table(
        {
            "order_id": [o.order_id for o in orders],
            "dataset_id": [o.dataset_id for o in orders],
            "department": [o.department for o in orders],
            "owner_department": [o.owner_department for o in orders],
            "state": [o.effective_state() for o in orders],
            "requested_at": pa.array([o.requested_at for o in orders], pa.timestamp("us", tz="UTC")),
        }
    )


def columns(spec: str) -> dict[str, str]:
    """`"a b:bigint c:timestamptz"` -> {a: varchar, b: bigint, c: timestamptz}: the columns a source reads."""
    return {name: kind or "varchar" for name, _, kind in (item.partition(":") for item in spec.split())}


SOURCES: tuple[Source, ...] = (
    Source(
        "grids",
        "silver/zhengshu/grid_registry",
        columns(
            "grid_code grid_name community_code community_name street_code street_name district_code district_name"
        ),
    ),
    Source(
        "kpis_monthly",
        "gold/dispatch/kpis_monthly",
        columns(
            "month district_code street_code source event_code event_name department_code tickets:bigint "
            "resolved_tickets:bigint overdue_open_tickets:bigint resolved_on_time_tickets:bigint rated_tickets:bigint "
            "satisfied_tickets:bigint handled_tickets:bigint handling_working_days_total:double hard_tickets:bigint "
            "reports:bigint"
        ),
    ),
    Source(
        "ranking",
        "gold/dispatch/department_monthly_ranking",
        columns(
            "month department_code tickets:bigint resolved_tickets:bigint overdue_open_tickets:bigint "
            "on_time_rate:double satisfaction_rate:double avg_handling_working_days:double hard_tickets:bigint "
            "score:double rank_in_month:bigint departments_in_month:bigint"
        ),
    ),
    Source(
        "hard_tickets",
        "gold/dispatch/hard_tickets",
        columns(
            "ticket_id event_code event_name grid_code street_code district_code routed_department_code "
            "department_code status transfer_count:bigint return_count:bigint reopen_count:bigint "
            "created_at:timestamptz due_at:timestamptz resolved_at:timestamptz overdue_open:boolean"
        ),
    ),
    Source("ticket_sources", "gold/dispatch/tickets", columns("ticket_id source")),
    Source(
        "grid_coverage",
        "gold/party/grid_coverage",
        columns(
            "grid_code as_of_date:date linking_members:bigint links_count:bigint linked_households:bigint "
            "overdue_links:bigint overdue_link_share:double community_registered_households:bigint "
            "community_linked_households:bigint community_link_share:double grid_households_est:double "
            "grid_link_share_est:double"
        ),
    ),
    Source(
        "member_households",
        "gold/party/member_households",
        columns(
            "residence_community_code member_status in_service:boolean households_linked:bigint "
            "min_households_norm:integer is_below_link_norm:boolean links_never_visited:bigint "
            "links_visit_overdue:bigint has_overdue_visit:boolean as_of_date:date"
        ),
    ),
    Source(
        "portraits",
        "gold/enterprises/portraits",
        columns(
            "uscc enterprise_name entity_type industry_section_name status grid_code community_code street_code "
            "district_code credit_rating_latest attention_level attention_score:bigint penalty_points:bigint "
            "fire_hazard_points:bigint revenue_decline_points:bigint credit_points:bigint open_appeal_points:bigint "
            "revenue_wan_cny_latest:double revenue_growth_pct:double penalties_recent_count:bigint "
            "inspections_failed_count:bigint appeals_open_count:bigint as_of_date:date"
        ),
    ),
    Source(
        "grid_rollup",
        "gold/enterprises/grid_rollup",
        columns(
            "grid_code main_industry_section_name enterprises_count:bigint active_enterprises_count:bigint "
            "high_attention_count:bigint medium_attention_count:bigint avg_attention_score:double "
            "max_attention_score:double revenue_declining_count:bigint low_credit_count:bigint "
            "penalties_recent_count:bigint fire_fail_closed_count:bigint appeals_open_count:bigint as_of_date:date"
        ),
    ),
    Source(
        "sensors",
        "gold/emergency/sensor_registry",
        columns(
            "device_id device_type metric status grid_code street_code district_code location_name "
            "alert_threshold:double is_active:boolean installed_date:date as_of_date:date"
        ),
    ),
    Source(
        "incidents",
        "gold/emergency/incidents",
        columns(
            "incident_id device_id device_type metric grid_code location_name status severity threshold:double "
            "peak_value:double opened_at:timestamptz closed_at:timestamptz"
        ),
    ),
    Source(
        "warnings",
        "gold/emergency/warnings",
        columns(
            "warning_id grid_code max_warning_level risk_level reason forecast_issued_at:timestamptz "
            "rain_next_24h_mm:double risk_score:bigint"
        ),
    ),
    Source(
        "risk",
        "gold/emergency/waterlogging_risk",
        columns(
            "grid_code max_warning_level risk_level nearest_pump_id history_events:bigint recent_events:bigint "
            "water_level_sensors_active:bigint history_points:bigint recent_points:bigint forecast_points:bigint "
            "risk_score:bigint rain_next_24h_mm:double nearest_pump_distance_m:double as_of_date:date"
        ),
    ),
    Source(
        "resources",
        "gold/emergency/nearest_resources",
        columns(
            "grid_code resource_id resource_type resource_name owner_department capacity:double distance_m:double "
            "type_rank:bigint is_nearest_of_type:boolean"
        ),
    ),
    Source(
        "crosscheck_summary",
        "gold/reports/crosscheck_summary",
        columns("as_of:date month rule_code rule_name community_code flagged_cases:bigint amount_at_risk_cny:double"),
    ),
    Source(
        "ledger",
        "ops/batch_ledger",
        columns(
            "contract_id status rule source_level extracted_at:timestamptz processed_at:timestamptz "
            "rows_delivered:bigint rows_loaded:bigint rows_quarantined:bigint"
        ),
    ),
    Source(
        "scorecard",
        "ops/quality_scorecard",
        columns(
            "grain department contract_id as_of:date contracts:bigint contracts_on_time:bigint batches_loaded:bigint "
            "batches_rejected:bigint rows_delivered:bigint rows_loaded:bigint rows_quarantined:bigint "
            "completeness:double validity:double timeliness:double overall_score:double "
            "days_since_last_delivery:double"
        ),
    ),
    Source(
        "orders",
        "ops/share_audit",
        columns("order_id dataset_id department owner_department state requested_at:timestamptz"),
        load=_orders,
    ),
    Source(
        "calls",
        "ops/share_access_log",
        columns(
            "day:date department order_id dataset_id calls:bigint ok_calls:bigint refused_calls:bigint "
            "error_calls:bigint rows_served:bigint bytes_served:bigint"
        ),
        load=_usage,
    ),
)

# --- what is published ---------------------------------------------------------------------------------------

# Names of the areas a fact row lies in, joined onto every fact table (from the grid registry, public data).
STREETS = "(select distinct street_code, street_name, district_code, district_name from dims.areas)"
COMMUNITIES = (
    "(select distinct community_code, community_name, street_code, street_name, district_code, district_name "
    "from dims.areas)"
)
DISTRICTS = "(select distinct district_code, district_name from dims.areas)"
UNLOCATED = "（未定位）"
# A business run by one person is named after its owner: its name is personal data, so it is published as what it
# is (the credit code beside it identifies the business), as the thematic-libraries notebook shows it.
PERSONAL_BUSINESS_NAME = (
    "case p.entity_type when 'individual_business' then '（个体工商户）' "
    "when 'sole_proprietor' then '（个人独资企业）' else p.enterprise_name end"
)
# A snapshot's month (as of), so that a dashboard's month filter applies to its snapshot tables too.
AS_OF_MONTH = "strftime({0}.as_of_date, '%Y-%m')"


def _area_columns(alias: str) -> str:
    return (
        f"coalesce({alias}.district_name, '{UNLOCATED}') as district_name, "
        f"coalesce({alias}.street_name, '{UNLOCATED}') as street_name"
    )


TABLES: tuple[Published, ...] = (
    Published(
        "dims",
        "areas",
        "Administrative areas: grid, community, street (town) and district, with their Chinese names.",
        """
        select grid_code, grid_name, replace(grid_name, community_name, '') as grid_label, community_code,
            community_name, street_code, street_name, district_code, district_name
        from src_grids
        """,
    ),
    Published(
        "dims",
        "departments",
        "Departments with their Chinese names and level.",
        "select department_code, department_name, level from ref_departments",
    ),
    Published(
        "dispatch",
        "ticket_kpis",
        "Additive ticket KPI counts per month of creation, street, source, event and handling department "
        "(gold/dispatch/kpis_monthly); ratios are the dataset's metrics. Cross-check tickets are counted, "
        "never listed.",
        f"""
        select k.month, coalesce(s.district_name, dd.district_name, k.district_code, '{UNLOCATED}') as district_name,
            coalesce(s.street_name, '{UNLOCATED}') as street_name, k.district_code, k.street_code,
            k.source, {label("k.source", SOURCE_NAMES)} as source_name,
            k.event_code, k.event_name, coalesce(e.major_name, '其他') as event_class,
            k.department_code, coalesce(d.department_name, k.department_code) as department_name,
            k.tickets, k.resolved_tickets, k.overdue_open_tickets, k.resolved_on_time_tickets, k.rated_tickets,
            k.satisfied_tickets, k.handled_tickets,
            round(k.handling_working_days_total, 4) as handling_working_days_total,
            k.hard_tickets, k.reports
        from src_kpis_monthly as k
        left join {STREETS} as s on k.street_code = s.street_code
        left join {DISTRICTS} as dd on k.district_code = dd.district_code
        left join ref_event_classes as e on left(k.event_code, 2) = e.major_code
        left join ref_departments as d on k.department_code = d.department_code
        """,
    ),
    Published(
        "dispatch",
        "department_ranking",
        "一月一排名: the monthly department ranking (gold/dispatch/department_monthly_ranking).",
        """
        select r.month, r.department_code, coalesce(d.department_name, r.department_code) as department_name,
            r.rank_in_month, r.departments_in_month, r.score, r.tickets, r.resolved_tickets, r.overdue_open_tickets,
            r.on_time_rate, r.satisfaction_rate, r.avg_handling_working_days, r.hard_tickets
        from src_ranking as r
        left join ref_departments as d on r.department_code = d.department_code
        """,
    ),
    Published(
        "dispatch",
        "hard_tickets",
        "多次流转疑难工单: tickets transferred twice or more (gold/dispatch/hard_tickets); cross-check tickets are "
        "left out.",
        f"""
        select h.ticket_id, h.event_code, h.event_name, {_area_columns("s")}, h.grid_code,
            coalesce(a.grid_name, h.grid_code) as grid_name,
            coalesce(d.department_name, h.department_code) as department_name,
            coalesce(rd.department_name, h.routed_department_code) as routed_department_name,
            h.transfer_count, h.return_count, h.reopen_count,
            {label("h.status", TICKET_STATUSES)} as status_name, h.overdue_open,
            {cst("h.created_at")} as created_at, {cst("h.due_at")} as due_at, {cst("h.resolved_at")} as resolved_at,
            {cst_month("h.created_at")} as month
        from src_hard_tickets as h
        left join src_ticket_sources as t on h.ticket_id = t.ticket_id
        left join {STREETS} as s on h.street_code = s.street_code
        left join dims.areas as a on h.grid_code = a.grid_code
        left join ref_departments as d on h.department_code = d.department_code
        left join ref_departments as rd on h.routed_department_code = rd.department_code
        where coalesce(t.source, '') <> 'crosscheck'
        """,
    ),
    Published(
        "party",
        "grid_coverage",
        "民呼党应: household-link coverage by grid (gold/party/grid_coverage), for the grid heat map.",
        f"""
        select a.grid_code, a.grid_name, a.grid_label, a.community_name, {_area_columns("a")}, g.as_of_date,
            {AS_OF_MONTH.format("g")} as month,
            g.linking_members, g.links_count, g.linked_households, g.overdue_links, g.overdue_link_share,
            g.grid_households_est, g.grid_link_share_est, g.community_registered_households,
            g.community_linked_households, g.community_link_share
        from src_grid_coverage as g
        left join dims.areas as a on g.grid_code = a.grid_code
        """,
    ),
    Published(
        "party",
        "members_by_community",
        "Party members per community of residence: how many link fewer households than the norm, how many have a "
        "visit overdue (counted from gold/party/member_households; no member is listed).",
        f"""
        select m.residence_community_code as community_code,
            coalesce(c.community_name, m.residence_community_code) as community_name, {_area_columns("c")},
            max(m.as_of_date) as as_of_date, strftime(max(m.as_of_date), '%Y-%m') as month,
            count(*) as members,
            count(*) filter (where m.in_service) as members_in_service,
            count(*) filter (where m.is_below_link_norm) as members_below_norm,
            count(*) filter (where m.has_overdue_visit) as members_with_overdue_visit,
            sum(m.households_linked) as households_linked,
            sum(m.links_never_visited) as links_never_visited,
            sum(m.links_visit_overdue) as links_visit_overdue
        from src_member_households as m
        left join {COMMUNITIES} as c on m.residence_community_code = c.community_code
        group by all
        """,
    ),
    Published(
        "enterprises",
        "portraits",
        "重点企业: one row per enterprise with its attention score and the score's components "
        "(gold/enterprises/portraits).",
        f"""
        select p.uscc, {PERSONAL_BUSINESS_NAME} as enterprise_name, p.industry_section_name,
            {label("p.status", ENTERPRISE_STATUSES)} as status_name,
            {_area_columns("s")}, p.grid_code, coalesce(a.grid_name, p.grid_code) as grid_name,
            coalesce(a.community_name, p.community_code) as community_name,
            p.attention_score, {label("p.attention_level", LEVELS)} as attention_level,
            p.penalty_points, p.fire_hazard_points, p.revenue_decline_points, p.credit_points, p.open_appeal_points,
            p.revenue_wan_cny_latest, p.revenue_growth_pct, p.credit_rating_latest, p.penalties_recent_count,
            p.inspections_failed_count, p.appeals_open_count, p.as_of_date, {AS_OF_MONTH.format("p")} as month
        from src_portraits as p
        left join {STREETS} as s on p.street_code = s.street_code
        left join dims.areas as a on p.grid_code = a.grid_code
        """,
    ),
    Published(
        "enterprises",
        "grid_attention",
        "Enterprise attention by grid (gold/enterprises/grid_rollup), for the grid heat map.",
        f"""
        select a.grid_code, a.grid_name, a.grid_label, a.community_name, {_area_columns("a")}, r.as_of_date,
            {AS_OF_MONTH.format("r")} as month, r.main_industry_section_name, r.enterprises_count,
            r.active_enterprises_count, r.high_attention_count,
            r.medium_attention_count, r.avg_attention_score, r.max_attention_score, r.revenue_declining_count,
            r.low_credit_count, r.penalties_recent_count, r.fire_fail_closed_count, r.appeals_open_count
        from src_grid_rollup as r
        left join dims.areas as a on r.grid_code = a.grid_code
        """,
    ),
    Published(
        "emergency",
        "sensors",
        "智慧应急: the IoT sensors (gold/emergency/sensor_registry) with their grid and status.",
        f"""
        select x.device_id, x.device_type, {label("x.device_type", DEVICE_TYPES)} as device_type_name, x.metric,
            {label("x.status", DEVICE_STATUSES)} as status_name, x.is_active, x.alert_threshold,
            {_area_columns("s")}, x.grid_code, coalesce(a.grid_name, x.grid_code) as grid_name, x.location_name,
            x.installed_date, x.as_of_date, {AS_OF_MONTH.format("x")} as month
        from src_sensors as x
        left join {STREETS} as s on x.street_code = s.street_code
        left join dims.areas as a on x.grid_code = a.grid_code
        """,
    ),
    Published(
        "emergency",
        "incidents",
        "IoT incidents (gold/emergency/incidents): opened, peak, closed, severity; times in China Standard Time.",
        f"""
        select i.incident_id, i.device_id, {label("i.device_type", DEVICE_TYPES)} as device_type_name, i.metric,
            {_area_columns("a")}, i.grid_code, coalesce(a.grid_name, i.grid_code) as grid_name, i.location_name,
            {label("i.status", INCIDENT_STATUSES)} as status_name, {label("i.severity", SEVERITIES)} as severity_name,
            i.threshold, i.peak_value, {cst("i.opened_at")} as opened_at, {cst("i.closed_at")} as closed_at,
            {cst_month("i.opened_at")} as month
        from src_incidents as i
        left join dims.areas as a on i.grid_code = a.grid_code
        """,
    ),
    Published(
        "emergency",
        "warnings",
        "Early waterlogging warnings of the latest forecast (gold/emergency/warnings).",
        f"""
        select w.warning_id, {_area_columns("a")}, w.grid_code, coalesce(a.grid_name, w.grid_code) as grid_name,
            {cst("w.forecast_issued_at")} as forecast_issued_at, {cst_month("w.forecast_issued_at")} as month,
            w.rain_next_24h_mm, w.max_warning_level, w.risk_score, {label("w.risk_level", LEVELS)} as risk_level,
            w.reason
        from src_warnings as w
        left join dims.areas as a on w.grid_code = a.grid_code
        """,
    ),
    Published(
        "emergency",
        "waterlogging_risk",
        "Waterlogging risk by grid (gold/emergency/waterlogging_risk) with its components, the grid's sensors, "
        "incidents and warnings, and its nearest pump.",
        f"""
        select a.grid_code, a.grid_name, a.grid_label, a.community_name, {_area_columns("a")}, r.as_of_date,
            {AS_OF_MONTH.format("r")} as month, r.risk_score, {label("r.risk_level", LEVELS)} as risk_level,
            r.history_points, r.recent_points,
            r.forecast_points, r.history_events, r.recent_events, r.rain_next_24h_mm,
            coalesce(r.max_warning_level, '无') as max_warning_level, r.water_level_sensors_active,
            coalesce(x.sensors, 0) as sensors, coalesce(x.sensors_active, 0) as sensors_active,
            coalesce(i.incidents, 0) as incidents, coalesce(i.open_incidents, 0) as open_incidents,
            coalesce(w.warnings, 0) as warnings,
            p.resource_name as nearest_pump, round(r.nearest_pump_distance_m, 0) as nearest_pump_distance_m
        from src_risk as r
        left join dims.areas as a on r.grid_code = a.grid_code
        left join (
            select grid_code, count(*) as sensors, count(*) filter (where is_active) as sensors_active
            from src_sensors group by grid_code
        ) as x on r.grid_code = x.grid_code
        left join (
            select grid_code, count(*) as incidents, count(*) filter (where status = 'open') as open_incidents
            from src_incidents group by grid_code
        ) as i on r.grid_code = i.grid_code
        left join (select grid_code, count(*) as warnings from src_warnings group by grid_code) as w
            on r.grid_code = w.grid_code
        left join (select distinct resource_id, resource_name from src_resources) as p
            on r.nearest_pump_id = p.resource_id
        """,
    ),
    Published(
        "emergency",
        "nearest_resources",
        "The nearest emergency resources of each grid (gold/emergency/nearest_resources), distances in metres.",
        f"""
        select a.grid_code, a.grid_name, a.community_name, {_area_columns("a")},
            {label("n.resource_type", RESOURCE_TYPES)} as resource_type_name, n.resource_name,
            coalesce(d.department_name, n.owner_department) as owner_department_name,
            n.capacity, round(n.distance_m, 0) as distance_m, n.type_rank, n.is_nearest_of_type
        from src_resources as n
        left join dims.areas as a on n.grid_code = a.grid_code
        left join ref_departments as d on n.owner_department = d.department_code
        """,
    ),
    Published(
        "crosscheck",
        "summary",
        "社会救助核查: the cross-check's aggregates only (gold/reports/crosscheck_summary): flagged cases and the "
        "amount at risk per rule, community and month. No case, person or flag is published.",
        f"""
        select x.month, x.as_of, x.rule_code, x.rule_name, x.community_code,
            coalesce(c.community_name, x.community_code) as community_name, {_area_columns("c")},
            x.flagged_cases, x.amount_at_risk_cny
        from src_crosscheck_summary as x
        left join {COMMUNITIES} as c on x.community_code = c.community_code
        """,
    ),
    Published(
        "quality",
        "batches",
        "Batches loaded and rejected per month of extraction, department and contract (ops/batch_ledger).",
        f"""
        select {cst_month("coalesce(l.extracted_at, l.processed_at)")} as month,
            split_part(l.contract_id, '.', 1) as department_code,
            coalesce(d.department_name, split_part(l.contract_id, '.', 1)) as department_name,
            l.contract_id, l.source_level, l.status, {label("l.status", BATCH_STATUSES)} as status_name,
            coalesce(l.rule, '') as rule,
            count(*) as batches, sum(l.rows_delivered) as rows_delivered, sum(l.rows_loaded) as rows_loaded,
            sum(l.rows_quarantined) as rows_quarantined
        from src_ledger as l
        left join ref_departments as d on split_part(l.contract_id, '.', 1) = d.department_code
        group by all
        """,
    ),
    Published(
        "quality",
        "scorecard",
        "Quality scorecards per department and per contract: completeness, validity, timeliness "
        "(ops/quality_scorecard).",
        """
        select q.grain, q.department as department_code, coalesce(d.department_name, q.department) as department_name,
            q.contract_id, q.as_of, strftime(q.as_of, '%Y-%m') as month, q.overall_score, q.completeness,
            q.validity, q.timeliness,
            q.days_since_last_delivery, q.contracts, q.contracts_on_time, q.batches_loaded, q.batches_rejected,
            q.rows_delivered, q.rows_loaded, q.rows_quarantined
        from src_scorecard as q
        left join ref_departments as d on q.department = d.department_code
        """,
    ),
    Published(
        "sharing",
        "orders",
        "Share orders per month requested, department, dataset and current state (ops/share_audit).",
        f"""
        select {cst_month("o.requested_at")} as month, o.department as department_code,
            coalesce(d.department_name, o.department) as department_name, o.owner_department as owner_department_code,
            coalesce(od.department_name, o.owner_department) as owner_department_name, o.dataset_id,
            o.state, {label("o.state", ORDER_STATES)} as state_name, count(*) as orders
        from src_orders as o
        left join ref_departments as d on o.department = d.department_code
        left join ref_departments as od on o.owner_department = od.department_code
        group by all
        """,
    ),
    Published(
        "sharing",
        "calls",
        "接口调用: share calls per day (China Standard Time), department and order, with refusals, rows and bytes "
        "(gold/sharing/usage_daily's definition, computed from ops/share_access_log at publishing).",
        """
        select c.day, strftime(c.day, '%Y-%m') as month, c.department as department_code,
            coalesce(d.department_name, c.department) as department_name, c.order_id, c.dataset_id,
            c.calls, c.ok_calls, c.refused_calls, c.error_calls, c.rows_served, c.bytes_served
        from src_calls as c
        left join ref_departments as d on c.department = d.department_code
        """,
    ),
)


# --- checks ----------------------------------------------------------------------------------------------------


def is_restricted_column(name: str) -> bool:
    """A pseudonym (`*_key`) or lineage (`_*`) column: never published."""
    return name.endswith("_key") or name.startswith("_")


def check_sources(sources: tuple[Source, ...] = SOURCES) -> None:
    """Refuse a source in a restricted area or reading a restricted column, before anything is read."""
    for source in sources:
        if source.table.startswith(RESTRICTED_PREFIXES):
            raise PublishError(f"source {source.name} reads {source.table}: restricted areas are never published")
        bad = [c for c in source.columns if is_restricted_column(c)]
        if bad:
            raise PublishError(
                f"source {source.name} reads {', '.join(bad)}: pseudonyms and lineage are never published"
            )


def restricted_columns(connection: duckdb.DuckDBPyConnection) -> list[str]:
    """`schema.table.column` of every published column that must not be there (pseudonyms, lineage)."""
    rows = connection.execute(
        "select table_schema, table_name, column_name from information_schema.columns where table_catalog = "
        "current_database() order by all"
    ).fetchall()
    return [f"{s}.{t}.{c}" for s, t, c in rows if is_restricted_column(c)]


# --- writing ---------------------------------------------------------------------------------------------------


def _arrow_for(source: Source, warehouse: Warehouse) -> pa.Table | None:
    """The source's declared columns, or None when its table does not exist yet."""
    if source.load is not None:
        return source.load(warehouse).select(list(source.columns))
    if not warehouse.exists(source.table):
        return None
    dataset = warehouse.table(source.table).to_pyarrow_dataset()
    present = set(dataset.schema.names)
    missing = [c for c in source.columns if c not in present]
    if missing:
        raise PublishError(f"{source.table} has no column(s) {', '.join(missing)}: rebuild it (yiwang run)")
    return dataset.to_table(columns=list(source.columns))


def _register_source(connection: duckdb.DuckDBPyConnection, source: Source, table: pa.Table | None) -> None:
    """`src_<name>`: the source with its declared types (empty with those types when the table is missing)."""
    if table is None:
        columns = ", ".join(f"cast(null as {kind}) as {name}" for name, kind in source.columns.items())
        connection.execute(f"create temp view {source.view} as select {columns} where false")
        return
    connection.register(f"arrow_{source.name}", table)
    columns = ", ".join(f"cast({name} as {kind}) as {name}" for name, kind in source.columns.items())
    connection.execute(f"create temp table {source.view} as select {columns} from arrow_{source.name}")
    connection.unregister(f"arrow_{source.name}")


def _register_reference(connection: duckdb.DuckDBPyConnection) -> None:
    """Departments and event classes from the packaged reference data (thematic_libs/reference)."""
    from thematic_libs.reference import load_departments, load_event_catalogue

    departments = load_departments().select(["department_code", "name_zh", "level"])
    connection.register("arrow_departments", departments)
    connection.execute(
        "create temp table ref_departments as select department_code, name_zh as department_name, level "
        "from arrow_departments"
    )
    events = load_event_catalogue().select(["major_code", "major_name"])
    connection.register("arrow_events", events)
    connection.execute(
        "create temp table ref_event_classes as select distinct major_code, major_name from arrow_events"
    )


def publish(
    warehouse: Warehouse,
    out: Path,
    tables: tuple[Published, ...] = TABLES,
    sources: tuple[Source, ...] = SOURCES,
) -> PublishResult:
    """Write every published table to a new file beside `out`, check it, then rename it over `out`; on any error
    the file already published stays as it was."""
    check_sources(sources)
    clock = time.perf_counter()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    missing: list[str] = []
    counts: dict[str, int] = {}
    try:
        connection = duckdb.connect(str(tmp))
        try:
            for source in sources:
                table = _arrow_for(source, warehouse)
                if table is None:
                    missing.append(source.table)
                _register_source(connection, source, table)
            _register_reference(connection)
            for published in tables:
                connection.execute(f"create schema if not exists {published.schema}")
                connection.execute(f"create table {published.qualified} as {published.sql}")
                description = published.description.replace("'", "''")
                connection.execute(f"comment on table {published.qualified} is '{description}'")
                (rows,) = connection.execute(f"select count(*) from {published.qualified}").fetchone() or (0,)
                counts[published.qualified] = rows
            leaked = restricted_columns(connection)
            if leaked:
                raise PublishError(f"restricted column(s) would be published: {', '.join(leaked)}")
            connection.execute("checkpoint")
        finally:
            connection.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}.wal").unlink(missing_ok=True)
    return PublishResult(
        path=out,
        tables=counts,
        missing_sources=tuple(missing),
        seconds=time.perf_counter() - clock,
        bytes=out.stat().st_size,
    )
