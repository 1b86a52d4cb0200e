"""What the streaming tests share: a warehouse with a sensor registry, consumer processes, and the
expected content of bronze from what a simulator says it sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake

from ingestion.contract import get_contract
from ingestion.silver import silver_table
from ingestion.streaming.settings import KafkaSettings

YIWANG = str(Path(sys.executable).parent / "yiwang")
SENSOR_DEVICES = "yingji.sensor_devices"
IOT_BRONZE = "bronze/stream/iot_sensor_readings"


def registry_rows(water_level: int = 6, other: int = 4) -> list[dict]:
    """Water-level devices (threshold 20 cm) and a few smoke detectors, in grids of district 440605."""
    rows = []
    for index in range(water_level + other):
        water = index < water_level
        rows.append(
            {
                "device_id": f"{'YJWL' if water else 'YJSM'}{index:06d}",
                "device_type": "water_level" if water else "smoke",
                "grid_code": f"44060501100{index % 3 + 1}00{index % 2 + 1}",
                "lon": 113.1 + index * 0.001,
                "lat": 23.0 + index * 0.001,
                "location_name": f"测试点{index}",
                "metric": "water_depth_cm" if water else "smoke_ppm",
                "alert_threshold": 20.0 if water else 300.0,
                "installed_date": date(2024, 1, 1),
                "status": "active",
            }
        )
    return rows


def write_registry(warehouse: Path, rows: list[dict]) -> None:
    """The silver sensor registry, as a batch run would have left it."""
    contract = get_contract(SENSOR_DEVICES)
    now = datetime.now(UTC)
    lineage = {"_batch_id": "test", "_extracted_at": now, "_ingested_at": now}
    table = pa.Table.from_pylist([{**row, **lineage} for row in rows], schema=contract.silver_schema())
    write_deltalake(str(warehouse / silver_table(contract)), table, mode="overwrite")


def consumer_env(home: Path, kafka: KafkaSettings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "YIWANG_HOME": str(home),
            "YIWANG_WAREHOUSE": str(home / "warehouse"),
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "KAFKA_REPLICATION_FACTOR": "1",
        }
    )
    return env


def start_consumer(home: Path, kafka: KafkaSettings, stream: str = "iot", *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [YIWANG, "stream", "run", stream, *args],
        env=consumer_env(home, kafka),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def expected_readings(record: Path) -> pl.DataFrame:
    """What bronze must hold: every valid reading the simulator sent (in time or late), once."""
    rows = []
    with open(record, encoding="utf-8") as handle:
        for line in handle:
            sent = json.loads(line)
            if sent["kind"] in ("valid", "late", "duplicate"):
                value = json.loads(sent["value"])
                rows.append((value["device_id"], value["seq"], value["value"], value["ts"]))
    frame = pl.DataFrame(rows, schema=["device_id", "seq", "value", "ts"], orient="row")
    return frame.unique(["device_id", "seq"]).sort("device_id", "seq")


def malformed_count(record: Path) -> int:
    with open(record, encoding="utf-8") as handle:
        kinds = [json.loads(line)["kind"] for line in handle]
    return sum(kind not in ("valid", "late", "duplicate") for kind in kinds)


def bronze_readings(warehouse: Path) -> pl.DataFrame:
    frame = pl.from_arrow(DeltaTable(str(warehouse / IOT_BRONZE)).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def same_content(bronze: pl.DataFrame, expected: pl.DataFrame) -> bool:
    got = bronze.select(
        "device_id",
        "seq",
        "value",
        pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").alias("ts"),
    ).sort("device_id", "seq")
    return got.equals(expected.select("device_id", "seq", "value", "ts"))
