"""Waterlogging incidents and early warnings as gold tables, and as IoT tickets.

- `gold/emergency/incidents`: one row per incident (`incidents.INCIDENT_SCHEMA`). The streaming
  consumer upserts the incidents a micro-batch changed; the batch asset recomputes every incident
  from the readings in bronze. Both use `detect_incidents`, so they agree.
- `gold/emergency/warnings`: the early warnings of the latest forecast (`warnings.early_warnings`).
- `read_iot_alerts`: the ticket feed of both (source `iot_alert`): one ticket per device incident
  however many readings it spans (dedupe key = the incident id), P1 when severe, the nearest pumps and
  rescue teams in the description, closed when the incident closes; one ticket per grid warning.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable, write_deltalake

from ingestion.replace import replace_table
from ingestion.warehouse import Warehouse
from thematic_libs.dispatch.derive import conform_candidates
from thematic_libs.emergency.incidents import INCIDENT_SCHEMA, IncidentChanges, detect_incidents
from thematic_libs.emergency.settings import IncidentConfig
from thematic_libs.reference import load_sensor_metric_events

INCIDENTS = "gold/emergency/incidents"
WARNINGS = "gold/emergency/warnings"
RISK = "gold/emergency/waterlogging_risk"
NEAREST_RESOURCES = "gold/emergency/nearest_resources"
STREAMED_READINGS = "bronze/stream/iot_sensor_readings"
READING_COLUMNS = ["device_id", "ts", "seq", "value", "metric", "_kafka_ts"]
SEVERE_PRIORITY = "P1"
ALERT_PRIORITY = "P2"
WARNING_EVENT_CODE = "090103"  # 内涝预警 waterlogging early warning


def incident_arrow_schema() -> pa.Schema:
    return pl.DataFrame(schema=INCIDENT_SCHEMA).to_arrow().schema


def streamed_readings(warehouse: Warehouse, since: datetime | None = None) -> pl.DataFrame | None:
    """The streamed readings (those measured at or after `since`), or None before the first one arrived."""
    if not warehouse.exists(STREAMED_READINGS):
        return None
    dataset = warehouse.table(STREAMED_READINGS).to_pyarrow_dataset()
    condition = ds.field("ts") >= pa.scalar(since) if since is not None else None
    frame = pl.from_arrow(dataset.to_table(columns=READING_COLUMNS, filter=condition))
    assert isinstance(frame, pl.DataFrame)
    return frame


def stored_readings(warehouse: Warehouse, config: IncidentConfig, now: datetime | None = None) -> pl.DataFrame | None:
    """The streamed readings a tracker needs on start: those within twice the longest history_hours."""
    hours = max((rule.history_hours for rule in config.device_types.values()), default=12)
    return streamed_readings(warehouse, (now or datetime.now(UTC)) - timedelta(hours=hours * 2))


def rebuild_incidents(
    warehouse: Warehouse, devices: pl.DataFrame, config: IncidentConfig | None = None
) -> pl.DataFrame:
    """Every incident from every streamed reading, replacing the table (the batch path)."""
    readings = streamed_readings(warehouse)
    now = datetime.now(UTC)
    incidents = (
        detect_incidents(readings, devices, config, now=now)
        if readings is not None
        else pl.DataFrame(schema=INCIDENT_SCHEMA)
    )
    replace_table(warehouse, INCIDENTS, incidents.to_arrow().cast(incident_arrow_schema()))
    return incidents


def merge_incidents(warehouse: Warehouse, changed: pl.DataFrame, withdrawn: tuple[str, ...] = ()) -> None:
    """Upsert the incidents a micro-batch changed, and delete those a late reading withdrew."""
    rows = changed.select(list(INCIDENT_SCHEMA)).to_arrow().cast(incident_arrow_schema())
    uri, options = warehouse.uri(INCIDENTS), warehouse.options()
    if not warehouse.exists(INCIDENTS):
        write_deltalake(uri, rows, mode="overwrite", storage_options=options)
        return
    table = DeltaTable(uri, storage_options=options)
    if withdrawn:
        listed = ", ".join("'" + incident.replace("'", "''") + "'" for incident in withdrawn)
        table.delete(f"incident_id in ({listed})")
    if rows.num_rows:
        (
            table.merge(rows, "t.incident_id = s.incident_id", source_alias="s", target_alias="t")
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )


def moves_tickets(changes: IncidentChanges, severities: dict[str, str]) -> bool:
    """Whether a ticket must change: an incident opened, closed, reopened, was withdrawn or its severity
    changed (`severities`, incident id -> severity last seen, is kept up to date here).

    A new peak or one more reading changes the incident row, not the ticket (no ticket storm)."""
    moved = bool(changes.withdrawn or changes.opened or changes.closed)
    for incident in changes.withdrawn:
        severities.pop(incident, None)
    if changes.changed.height == 0:
        return moved
    moved = moved or bool(changes.changed["change"].is_in(["reopened", "opened", "closed"]).any())
    for incident, severity in changes.changed.select("incident_id", "severity").iter_rows():
        moved = moved or severities.get(incident) != severity
        severities[incident] = severity
    return moved


def write_warnings(warehouse: Warehouse, config: IncidentConfig | None = None) -> pl.DataFrame:
    """The early warnings of the latest forecast, replacing the table."""
    from thematic_libs.emergency.warnings import early_warnings

    config = config or IncidentConfig.load()
    if warehouse.exists(RISK):
        risk = pl.from_arrow(warehouse.table(RISK).to_pyarrow_table())
        assert isinstance(risk, pl.DataFrame)
        warnings = early_warnings(risk, config)
    else:
        warnings = early_warnings(pl.DataFrame(), config)
    write_deltalake(
        warehouse.uri(WARNINGS),
        warnings.to_arrow(),
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=warehouse.options(),
    )
    return warnings


def _resources(warehouse: Warehouse) -> pa.Table:
    columns = ["grid_code", "resource_type", "resource_name", "distance_m", "is_nearest_of_type"]
    if not warehouse.exists(NEAREST_RESOURCES):
        return pa.table({c: pa.array([], pa.float64() if c == "distance_m" else pa.string()) for c in columns[:4]})
    table = warehouse.table(NEAREST_RESOURCES).to_pyarrow_table(columns=columns)
    return table.filter(pa.compute.field("is_nearest_of_type")).drop_columns(["is_nearest_of_type"])


def read_iot_alerts(warehouse: Warehouse) -> pa.Table | None:
    """Ticket candidates of every incident and warning (None before either table exists)."""
    if not warehouse.exists(INCIDENTS) and not warehouse.exists(WARNINGS):
        return None
    incidents_table = (
        warehouse.table(INCIDENTS).to_pyarrow_table()
        if warehouse.exists(INCIDENTS)
        else incident_arrow_schema().empty_table()
    )
    connection = duckdb.connect()
    connection.register("incidents", incidents_table)
    connection.register("resources", _resources(warehouse))
    connection.register("metric_events", load_sensor_metric_events().select(["metric", "event_code"]))
    warnings = warehouse.table(WARNINGS).to_pyarrow_table() if warehouse.exists(WARNINGS) else None
    help_text = """
        (select string_agg(
            case resource_type when 'pump' then '最近泵站' when 'rescue_team' then '最近抢险队' end
            || ' ' || resource_name || ' (' || cast(round(distance_m) as bigint) || ' m)', '; '
            order by resource_type)
         from resources as r
         where r.grid_code = {grid} and r.resource_type in ('pump', 'rescue_team'))
    """
    incidents = connection.sql(
        f"""
        select 'iot_alert' as source, incident_id as source_ref, m.event_code,
            case severity when 'severe' then '严重内涝' else '积水告警' end || '：'
                || coalesce(location_name, device_id) as title,
            '水位传感器 ' || device_id || ' 水深 ' || cast(round(peak_value, 1) as varchar) || ' cm (阈值 '
                || cast(round(threshold, 1) as varchar) || ' cm)，' || strftime(opened_at + interval 8 hour,
                '%Y-%m-%d %H:%M') || ' 起持续超阈值。' || coalesce({help_text.format(grid="i.grid_code")}, '')
                as description,
            opened_at as occurred_at, lon, lat, grid_code, null as community_code, null as district_code,
            severity = 'severe' as is_urgent, null as evidence_uri, 'iot|' || incident_id as dedupe_key,
            null as department_code,
            case severity when 'severe' then '{SEVERE_PRIORITY}' else '{ALERT_PRIORITY}' end as priority,
            closed_at
        from incidents as i
        join metric_events as m using (metric)
        """
    ).to_arrow_table()
    tables = [incidents]
    if warnings is not None and warnings.num_rows:
        connection.register("warnings", warnings)
        tables.append(
            connection.sql(
                f"""
                select 'iot_alert' as source, warning_id as source_ref, '{WARNING_EVENT_CODE}' as event_code,
                    '内涝预警：网格 ' || grid_code as title,
                    reason || '。' || coalesce({help_text.format(grid="w.grid_code")}, '') as description,
                    forecast_issued_at as occurred_at, lon, lat, grid_code, community_code, district_code,
                    false as is_urgent, null as evidence_uri, 'warning|' || warning_id as dedupe_key,
                    null as department_code, null as priority, null as closed_at
                from warnings as w
                """
            ).to_arrow_table()
        )
    return pa.concat_tables([conform_candidates(t) for t in tables])
