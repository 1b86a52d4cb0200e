"""From streamed readings to tickets: one ticket per device incident however many readings, P1 when
severe, closed with the incident; early warnings before any sensor fires; a streamed appeal and the
same appeal delivered in a batch are one appeal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

from ingestion.warehouse import Warehouse
from orchestration.streaming import IotAlerts, _Registry
from tests.stream_kit import registry_rows, write_registry
from thematic_libs.dispatch.refresh import feeds_named, refresh_tickets
from thematic_libs.dispatch.store import TICKETS
from thematic_libs.emergency.alerts import INCIDENTS, RISK, STREAMED_READINGS, write_warnings
from thematic_libs.urban.events import STREAMED_HOTLINE, read_hotline

START = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)
GRIDS = ["440605011001001", "440605011002002", "440605011003001", "440605011001002", "440605011002001"]


def _square(lon: float, lat: float) -> str:
    h = 0.0005
    corners = [(lon - h, lat - h), (lon + h, lat - h), (lon + h, lat + h), (lon - h, lat + h), (lon - h, lat - h)]
    return "POLYGON((" + ", ".join(f"{x} {y}" for x, y in corners) + "))"


def _warehouse(tmp_path: Path) -> Warehouse:
    root = tmp_path / "warehouse"
    write_registry(root, registry_rows())
    centres = {row["grid_code"]: (row["lon"], row["lat"]) for row in registry_rows()}
    grids = sorted(set(GRIDS) | set(centres))
    write_deltalake(
        str(root / "silver/zhengshu/grid_registry"),
        pa.table(
            {
                "grid_code": grids,
                "community_code": [g[:12] for g in grids],
                "street_code": [g[:9] for g in grids],
                "district_code": ["440605"] * len(grids),
                "center_lon": [centres.get(g, (113.2, 23.2))[0] for g in grids],
                "center_lat": [centres.get(g, (113.2, 23.2))[1] for g in grids],
                "polygon_wkt": [_square(*centres.get(g, (113.2, 23.2))) for g in grids],
            }
        ),
    )
    return Warehouse.at(root)


def _readings(device: str, values: list[float], start: datetime, seq0: int = 0, minutes: float = 5) -> pl.DataFrame:
    times = [start + timedelta(minutes=minutes * i) for i in range(len(values))]
    return pl.DataFrame(
        {
            "device_id": [device] * len(values),
            "ts": times,
            "metric": ["water_depth_cm"] * len(values),
            "value": values,
            "battery_pct": [90.0] * len(values),
            "seq": list(range(seq0, seq0 + len(values))),
            "_kafka_ts": times,
        },
        schema_overrides={"ts": pl.Datetime("us", "UTC"), "_kafka_ts": pl.Datetime("us", "UTC")},
    )


def _iot_tickets(warehouse: Warehouse) -> pl.DataFrame:
    frame = pl.from_arrow(warehouse.table(TICKETS).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame.filter(pl.col("source") == "iot_alert")


def test_one_ticket_per_incident_severe_is_p1_and_it_closes_with_the_incident(tmp_path: Path) -> None:
    warehouse = _warehouse(tmp_path)
    alerts = IotAlerts(warehouse, _Registry(warehouse))
    flood = [5, 8, 22, 30, 38, 45, 47, 44, 41, 39, 35, 30, 27, 24, 22, 21]  # 16 readings above for an hour
    ebb = [10, 8, 6, 5, 4, 3, 3, 2, 2, 2]  # then below threshold - margin for 50 minutes
    for chunk in range(0, len(flood), 4):  # micro-batches during the flood: many readings, one ticket
        alerts(_readings("YJWL000000", flood[chunk : chunk + 4], START + timedelta(minutes=5 * chunk), chunk))
        alerts(_readings("YJWL000001", [21, 24, 26, 28][: 4 if chunk == 0 else 0], START, 0))
        alerts.flush()
    tickets = _iot_tickets(warehouse)
    assert tickets.height == 2
    severe = tickets.filter(pl.col("title").str.contains("严重内涝")).row(0, named=True)
    alert = tickets.filter(pl.col("title").str.contains("积水告警")).row(0, named=True)
    assert severe["priority"] == "P1" and alert["priority"] == "P2"
    assert severe["status"] == "new" and severe["department_code"] == "shuiwuju"
    assert severe["dedupe_key"].startswith("iot|WL")
    versions_during_flood = warehouse.table(TICKETS).version()
    alerts(_readings("YJWL000000", ebb, START + timedelta(minutes=5 * len(flood)), len(flood)))
    alerts.flush()
    tickets = _iot_tickets(warehouse)
    assert tickets.height == 2
    closed = tickets.filter(pl.col("ticket_id") == severe["ticket_id"]).row(0, named=True)
    assert closed["status"] == "closed"
    assert warehouse.table(TICKETS).version() == versions_during_flood + 1  # one change: the close
    incidents = pl.from_arrow(warehouse.table(INCIDENTS).to_pyarrow_table())
    assert sorted(incidents["status"].to_list()) == ["closed", "open"]
    alerts.close()


def test_a_consumer_killed_before_its_incident_write_catches_up_on_restart(tmp_path: Path) -> None:
    warehouse = _warehouse(tmp_path)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    readings = _readings("YJWL000000", [5, 22, 30, 45, 50, 30, 22], start)  # in bronze, never judged
    write_deltalake(str(Path(warehouse.root) / STREAMED_READINGS), readings.to_arrow())
    restarted = IotAlerts(warehouse, _Registry(warehouse))
    restarted.flush()
    incidents = pl.from_arrow(warehouse.table(INCIDENTS).to_pyarrow_table())
    assert incidents.height == 1 and incidents["severity"][0] == "severe"
    assert _iot_tickets(warehouse)["source_ref"].to_list() == incidents["incident_id"].to_list()
    restarted.close()


def test_early_warning_for_a_grid_with_history_before_any_sensor_fires(tmp_path: Path) -> None:
    warehouse = _warehouse(tmp_path)
    risk = pl.DataFrame(
        {
            "grid_code": GRIDS[:2],
            "grid_name": ["甲", "乙"],
            "community_code": [g[:12] for g in GRIDS[:2]],
            "street_code": [g[:9] for g in GRIDS[:2]],
            "district_code": ["440605"] * 2,
            "center_lon": [113.2, 113.2],
            "center_lat": [23.2, 23.2],
            "nearest_pump_id": [None, None],
            "nearest_pump_distance_m": [None, None],
            "history_events": [4, 0],
            "history_days_with_events": [3, 0],
            "recent_events": [0, 0],
            "last_occurred_at": [START, None],
            "forecast_issued_at": [START, START],
            "max_warning_level": ["orange", "orange"],
            "as_of_date": [START.date(), START.date()],
            "water_level_sensors_active": [0, 0],
            "rain_next_24h_mm": [62.0, 62.0],
            "history_points": [15, 0],
            "recent_points": [0, 0],
            "forecast_points": [25, 25],
            "risk_score": [40, 25],
            "risk_level": ["medium", "low"],
        },
        schema_overrides={"nearest_pump_id": pl.String, "nearest_pump_distance_m": pl.Float64},
    )
    write_deltalake(str(Path(warehouse.root) / RISK), risk.to_arrow())
    warnings = write_warnings(warehouse)
    assert warnings["grid_code"].to_list() == [GRIDS[0]]  # the grid that never flooded is not warned
    refresh_tickets(warehouse, feeds_named("iot_alerts"))
    tickets = _iot_tickets(warehouse)
    assert tickets["event_code"].to_list() == ["090103"]
    assert tickets["grid_code"].to_list() == [GRIDS[0]] and "62.0 mm" in tickets["description"][0]


def test_a_streamed_appeal_and_the_same_appeal_in_a_batch_are_one(tmp_path: Path) -> None:
    warehouse = _warehouse(tmp_path)
    columns = {
        "appeal_id": ["RX1"],
        "received_at": [START],
        "channel": ["phone"],
        "content": ["批次：路灯不亮"],
        "address_text": [None],
        "lon": [None],
        "lat": [None],
        "district_code": ["440605"],
        "is_urgent": [False],
    }
    types = {"address_text": pl.String, "lon": pl.Float64, "lat": pl.Float64}
    batch = pl.DataFrame(columns, schema_overrides=types)
    write_deltalake(str(Path(warehouse.root) / "silver/zhengshu/hotline_appeals"), batch.to_arrow())
    streamed = pl.DataFrame(
        {
            **columns,
            "appeal_id": ["RX1", "RX2", "RX2"],
            "received_at": [START] * 3,
            "channel": ["phone"] * 3,
            "content": ["流：路灯不亮", "流：井盖丢了", "流：井盖丢了"],
            "address_text": [None] * 3,
            "lon": [None] * 3,
            "lat": [None] * 3,
            "district_code": ["440605"] * 3,
            "is_urgent": [False] * 3,
            "caller_phone": ["13800000000"] * 3,
        },
        schema_overrides=types,
    )
    write_deltalake(str(Path(warehouse.root) / STREAMED_HOTLINE), streamed.to_arrow())
    appeals = pl.from_arrow(read_hotline(warehouse)).sort("appeal_id")
    assert appeals["appeal_id"].to_list() == ["RX1", "RX2"]
    assert appeals["content"].to_list() == ["批次：路灯不亮", "流：井盖丢了"]  # the batch delivery wins
    assert "caller_phone" not in appeals.columns  # the phone stays in the restricted stream table
