"""Benchmark: the IoT stream at city rate, 2,000 messages per second for 10 minutes on 2 cores.

About 71,000 devices reporting every 35 s. The run, all on this machine and all real:

1. a warehouse built by `yiwang run` on the demo (grids, resources, dispatch tables), its sensor
   registry replaced by `--devices` synthetic devices over the demo's grids (5% water-level gauges);
2. the local Tansu broker with the project's topics;
3. one consumer process, `yiwang stream run iot` (incidents and tickets after every micro-batch);
4. the simulator producing at `--rate` for `--seconds`, with its warts (1% duplicates, 1% late,
   0.5% malformed, quiet devices, a rain event over 30% of the water-level gauges);
5. every 10 s: the consumer's resident memory and its lag (broker end offsets minus Delta's).

Figures: sustained ingest rate (rows written over the time the producer ran), lag over time,
produce->bronze latency of every row (its micro-batch's commit time minus the producer's timestamp),
produce->ticket latency of every IoT ticket opened (the ticket's commit in the change feed minus the
producer's timestamp of the reading that opened the incident), memory over time.

Run: `python -m bench.streaming [--rate 2000] [--seconds 600] [--devices 71000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from deltalake import write_deltalake

from bench.crosscheck import rss_mb
from ingestion.contract import get_contract
from ingestion.silver import silver_table
from ingestion.streaming.broker import LocalBroker, ensure_topics
from ingestion.streaming.settings import KafkaSettings
from ingestion.streaming.simulate import IotSimulator, load_devices, produce
from ingestion.streaming.status import stream_status
from ingestion.streaming.topics import load_topics
from ingestion.warehouse import Warehouse

ROOT = Path(__file__).resolve().parent.parent
HOME = ROOT / ".yiwang" / "bench" / "stream"
YIWANG = str(Path(sys.executable).parent / "yiwang")
TYPES = (  # device type, metric, threshold, share of the fleet
    ("water_level", "water_depth_cm", 25.0, 0.05),
    ("smoke", "smoke_ppm", 300.0, 0.45),
    ("manhole_cover", "tilt_deg", 12.0, 0.30),
    ("gas", "gas_lel_pct", 20.0, 0.15),
    ("river_quality", "cod_mg_l", 40.0, 0.05),
)


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"YIWANG_HOME": str(HOME), "PYTHONUNBUFFERED": "1"})
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return env


def ensure_warehouse() -> Warehouse:
    warehouse = Warehouse.at(HOME / "warehouse")
    if not warehouse.exists("silver/zhengshu/grid_registry"):
        print("building the demo warehouse with `yiwang run` (once)...", flush=True)
        subprocess.run([YIWANG, "run"], env=environment(), check=True, stdout=subprocess.DEVNULL)
    for table in ("bronze/stream", "quarantine/messages", "ops/stream_batches", "gold/emergency/incidents"):
        path = HOME / "warehouse" / table
        if path.exists():
            subprocess.run(["rm", "-rf", str(path)], check=True)
    return warehouse


def write_fleet(warehouse: Warehouse, devices: int, seed: int = 7) -> pl.DataFrame:
    """`devices` active sensors over the demo's grids, as the registry's silver table."""
    grids = pl.from_arrow(
        warehouse.table("silver/zhengshu/grid_registry").to_pyarrow_table(
            columns=["grid_code", "center_lon", "center_lat"]
        )
    )
    assert isinstance(grids, pl.DataFrame)
    rng = np.random.default_rng(seed)
    kinds = rng.choice(len(TYPES), size=devices, p=[t[3] for t in TYPES])
    grid = rng.integers(grids.height, size=devices)
    now = datetime.now(UTC)
    frame = pl.DataFrame(
        {
            "device_id": [f"BX{TYPES[k][0][:2].upper()}{i:07d}" for i, k in enumerate(kinds.tolist())],
            "device_type": [TYPES[k][0] for k in kinds.tolist()],
            "grid_code": grids["grid_code"].gather(grid),
            "lon": grids["center_lon"].gather(grid).to_numpy() + rng.normal(0, 0.002, devices),
            "lat": grids["center_lat"].gather(grid).to_numpy() + rng.normal(0, 0.002, devices),
            "location_name": [f"监测点{i}" for i in range(devices)],
            "metric": [TYPES[k][1] for k in kinds.tolist()],
            "alert_threshold": [TYPES[k][2] for k in kinds.tolist()],
            "installed_date": [date(2025, 1, 1)] * devices,
            "status": ["active"] * devices,
            "_batch_id": ["bench"] * devices,
            "_extracted_at": [now] * devices,
            "_ingested_at": [now] * devices,
        }
    )
    contract = get_contract("yingji.sensor_devices")
    write_deltalake(
        warehouse.uri(silver_table(contract)),
        frame.to_arrow().cast(contract.silver_schema()),
        mode="overwrite",
        schema_mode="overwrite",
    )
    return frame


def sample(pid: int, warehouse: Warehouse, kafka: KafkaSettings, stop: threading.Event, out: list) -> None:
    topic = load_topics()["iot"]
    started = time.monotonic()
    while not stop.wait(10):
        rows = stream_status(warehouse, topic, kafka)
        lags = [r.lag for r in rows if r.lag is not None]
        out.append(
            {"t_s": round(time.monotonic() - started), "rss_mb": rss_mb(pid), "lag": sum(lags) if lags else None}
        )
        print(f"  t={out[-1]['t_s']:>4}s rss={out[-1]['rss_mb']:.0f} MB lag={out[-1]['lag']}", flush=True)


def latencies(warehouse: Warehouse) -> dict[str, float]:
    bronze = pl.from_arrow(
        warehouse.table("bronze/stream/iot_sensor_readings").to_pyarrow_table(columns=["_kafka_ts", "_micro_batch"])
    )
    batches = pl.from_arrow(
        warehouse.table("ops/stream_batches").to_pyarrow_table(
            columns=["micro_batch", "committed_at", "messages", "written", "commit_ms", "after_commit_ms"]
        )
    )
    assert isinstance(bronze, pl.DataFrame) and isinstance(batches, pl.DataFrame)
    joined = bronze.join(batches, left_on="_micro_batch", right_on="micro_batch")
    ms = joined.select(((pl.col("committed_at") - pl.col("_kafka_ts")).dt.total_microseconds() / 1000).alias("ms"))
    figures = {
        "rows": bronze.height,
        "bronze_p50_ms": ms["ms"].median(),
        "bronze_p99_ms": ms["ms"].quantile(0.99),
        "bronze_max_ms": ms["ms"].max(),
        "batches": batches.height,
        "batch_messages_median": batches["messages"].median(),
        "commit_ms_median": batches["commit_ms"].median(),
        "after_commit_ms_median": batches["after_commit_ms"].median(),
        "after_commit_ms_p99": batches["after_commit_ms"].quantile(0.99),
    }
    first, last = batches["committed_at"].min(), batches["committed_at"].max()
    figures["ingest_rate_per_s"] = bronze.height / max((last - first).total_seconds(), 1e-9)  # type: ignore[operator]
    figures.update(ticket_latencies(warehouse))
    return figures  # type: ignore[return-value]


def ticket_latencies(warehouse: Warehouse) -> dict[str, float]:
    if not warehouse.exists("gold/emergency/incidents"):
        return {"iot_tickets": 0}
    feed = pl.from_arrow(pa.table(warehouse.table("gold/dispatch/tickets").load_cdf(starting_version=0).read_all()))
    incidents = pl.from_arrow(warehouse.table("gold/emergency/incidents").to_pyarrow_table())
    assert isinstance(feed, pl.DataFrame) and isinstance(incidents, pl.DataFrame)
    inserted = feed.filter((pl.col("_change_type") == "insert") & (pl.col("source") == "iot_alert"))
    joined = inserted.join(incidents, left_on="source_ref", right_on="incident_id").filter(
        pl.col("trigger_produced_at").is_not_null()
    )
    ms = joined.select(
        (pl.col("_commit_timestamp").cast(pl.Datetime("us", "UTC")) - pl.col("trigger_produced_at"))
        .dt.total_microseconds()
        .truediv(1000)
        .alias("ms")
    )["ms"]
    return {
        "iot_tickets": joined.height,
        "ticket_p50_ms": ms.median(),
        "ticket_p99_ms": ms.quantile(0.99),
        "ticket_max_ms": ms.max(),
    }  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--devices", type=int, default=71_000)
    args = parser.parse_args()
    HOME.mkdir(parents=True, exist_ok=True)
    warehouse = ensure_warehouse()
    fleet = write_fleet(warehouse, args.devices)
    broker = LocalBroker(HOME / "broker")
    broker.stop()
    broker.start()
    consumer = None
    try:
        kafka = KafkaSettings.from_env(broker, environ={})
        ensure_topics(kafka)
        consumer = subprocess.Popen(
            [YIWANG, "stream", "run", "iot"],
            env={**environment(), "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "KAFKA_REPLICATION_FACTOR": "1"},
            stdout=subprocess.DEVNULL,
        )
        time.sleep(8)  # the consumer joins its group
        samples: list[dict] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample, args=(consumer.pid, warehouse, kafka, stop, samples), daemon=True)
        sampler.start()
        simulator = IotSimulator(load_devices(fleet), args.rate, args.seconds, seed=1)
        print(f"producing {args.rate:g} msg/s for {args.seconds:g} s from {args.devices:,} devices", flush=True)
        started = time.monotonic()
        stats = produce(kafka.client_options(), "iot.sensor-readings", simulator.messages())
        produced_s = time.monotonic() - started
        drain_started = time.monotonic()
        while time.monotonic() - drain_started < 180:
            lags = [r.lag for r in stream_status(warehouse, load_topics()["iot"], kafka) if r.lag is not None]
            if lags and sum(lags) == 0:
                break
            time.sleep(2)
        drained_s = time.monotonic() - drain_started
        stop.set()
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(timeout=60)
    finally:
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
        broker.stop()
    figures = latencies(warehouse)
    result = {
        "date": datetime.now(UTC).date().isoformat(),
        "rate_target": args.rate,
        "seconds": args.seconds,
        "devices": args.devices,
        "sent": stats.sent,
        "sent_by_kind": stats.by_kind,
        "produce_rate_per_s": stats.sent / produced_s,
        "drain_after_producer_s": drained_s,
        **figures,
        "rss_mb_first_minute": [s["rss_mb"] for s in samples[:6]],
        "rss_mb_last_minute": [s["rss_mb"] for s in samples[-6:]],
        "lag_samples": [s["lag"] for s in samples],
    }
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "streaming.json").write_text(json.dumps(result, indent=2, default=str), encoding="utf-8")
    print(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
