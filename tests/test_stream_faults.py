"""Exactly once under faults: consumers SIGKILLed at random points, a broker killed and restarted, two
consumers of one group with one killed, a broker that comes back empty. In every case bronze ends
holding every valid message the simulator sent, once, with its content; every malformed one is in
quarantine once."""

from __future__ import annotations

import itertools
import json
import random
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from ingestion.streaming.simulate import Device, IotProfile, IotSimulator, produce
from tests.kafka_kit import S3_STORAGE, moto_s3_server, running_broker
from tests.stream_kit import (
    YIWANG,
    bronze_readings,
    consumer_env,
    expected_readings,
    malformed_count,
    registry_rows,
    same_content,
    start_consumer,
    write_registry,
)

PROFILE = IotProfile(duplicate_share=0.05, late_share=0.03, malformed_share=0.04, quiet_share=0.0)


def _devices() -> list[Device]:
    return [Device(r["device_id"], r["device_type"], r["metric"], r["alert_threshold"]) for r in registry_rows()]


def _producer(
    kafka, record: Path, rate: float, seconds: float, seed: int, stop: threading.Event | None = None
) -> threading.Thread:
    """A thread sending `seconds` of readings at `rate`, each message recorded as sent; `stop` ends it early."""
    simulator = IotSimulator(_devices(), rate, seconds, seed=seed, time_scale=60, profile=PROFILE)
    messages = simulator.messages()
    if stop is not None:
        messages = itertools.takewhile(lambda _: not stop.is_set(), messages)

    def run() -> None:
        with open(record, "w", encoding="utf-8") as handle:
            produce(kafka.client_options(), "iot.sensor-readings", messages, handle)

    return threading.Thread(target=run, daemon=True)


def _wait_until_writing(home: Path, pid: int, timeout: float = 120) -> None:
    """Until the consumer process `pid` has committed a micro-batch (its row in ops/stream_batches).

    A new consumer first waits for the group to rebalance away from the one just killed; on two loaded cores that
    and its start took over 60 s once (a model training beside the suite)."""
    table = home / "warehouse/ops/stream_batches"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if DeltaTable.is_deltatable(str(table)):
            ids = pl.from_arrow(DeltaTable(str(table)).to_pyarrow_table(columns=["consumer_id"]))["consumer_id"]
            if ids.str.contains(f"-{pid}-").any():
                return
        time.sleep(0.2)
    raise AssertionError(f"consumer {pid} wrote nothing within {timeout} s")


def _produce_now(kafka, record: Path, rate: float, seconds: float, seed: int) -> None:
    producer = _producer(kafka, record, rate, seconds, seed)
    producer.start()
    producer.join(timeout=seconds + 60)


def _drain(home: Path, kafka, seconds: float = 25) -> str:
    done = subprocess.run(
        [YIWANG, "stream", "run", "iot", "--max-seconds", str(seconds), "--no-derive"],
        env=consumer_env(home, kafka),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _assert_exactly_once(home: Path, record: Path) -> None:
    warehouse = home / "warehouse"
    bronze = bronze_readings(warehouse)
    expected = expected_readings(record)
    assert bronze.height == expected.height, (bronze.height, expected.height)
    assert bronze.select("device_id", "seq").is_duplicated().sum() == 0
    assert bronze.select("_partition", "_offset").is_duplicated().sum() == 0
    assert same_content(bronze, expected)
    quarantine = pl.from_arrow(DeltaTable(str(warehouse / "quarantine/messages")).to_pyarrow_table())
    assert quarantine.select("partition", "offset").unique().height == malformed_count(record)
    assert quarantine.select("partition", "offset", "rule").is_duplicated().sum() == 0


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    write_registry(home / "warehouse", registry_rows())
    return home


def test_sigkill_at_random_points_loses_and_doubles_nothing(tmp_path: Path) -> None:
    home = _home(tmp_path)
    record = tmp_path / "sent.jsonl"
    chooser = random.Random(12)
    killed: list[int] = []
    with running_broker(tmp_path) as (_, kafka):
        # sends until the ten kills are done (400 s at most), so that every kill falls while messages flow
        stop = threading.Event()
        producer = _producer(kafka, record, rate=80, seconds=400, seed=3, stop=stop)
        producer.start()
        for _ in range(10):
            consumer = start_consumer(home, kafka, "iot", "--no-derive", "--batch-seconds", "0.2")
            try:  # killed whatever happens: a failed wait must not leave a consumer running after the test
                _wait_until_writing(home, consumer.pid)
                time.sleep(chooser.uniform(0.0, 1.5))  # anywhere in a batch: reading, checking, committing
            finally:
                consumer.send_signal(signal.SIGKILL)
                consumer.wait(timeout=30)
            killed.append(consumer.pid)
        assert producer.is_alive(), "the producer ended before the last kill: give it more seconds"
        stop.set()
        producer.join(timeout=60)
        _drain(home, kafka)
    _assert_exactly_once(home, record)
    batches = pl.from_arrow(DeltaTable(str(home / "warehouse/ops/stream_batches")).to_pyarrow_table())
    # every killed consumer was writing when it died (the draining one writes only if the producer outlived the
    # kills, which depends on how fast the group rebalanced: not part of what this test proves)
    writers = set(batches["consumer_id"].to_list())
    assert all(any(f"-{pid}-" in writer for writer in writers) for pid in killed), (killed, writers)


def test_broker_killed_and_restarted_while_consuming(tmp_path: Path) -> None:
    home = _home(tmp_path)
    record = tmp_path / "sent.jsonl"
    with moto_s3_server() as s3_env, running_broker(tmp_path, storage=S3_STORAGE, env=s3_env) as (broker, kafka):
        state = broker.status()
        assert state is not None
        consumer = start_consumer(home, kafka, "iot", "--no-derive", "--max-seconds", "60")
        producer = _producer(kafka, record, rate=100, seconds=12, seed=5)
        producer.start()
        producer.join(timeout=60)
        time.sleep(2)
        broker.kill()
        time.sleep(3)  # the consumer meets a dead broker: it must retry, not crash
        broker.start(port=state.port, storage=S3_STORAGE, env=s3_env)
        output, _ = consumer.communicate(timeout=120)
        assert consumer.returncode == 0, output
        _drain(home, kafka, seconds=15)
    _assert_exactly_once(home, record)


def test_two_consumers_of_one_group_one_killed(tmp_path: Path) -> None:
    home = _home(tmp_path)
    record = tmp_path / "sent.jsonl"
    with running_broker(tmp_path) as (_, kafka):
        first = start_consumer(home, kafka, "iot", "--no-derive", "--max-seconds", "70")
        second = start_consumer(home, kafka, "iot", "--no-derive", "--max-seconds", "70")
        producer = _producer(kafka, record, rate=120, seconds=30, seed=9)
        producer.start()
        time.sleep(15)
        second.send_signal(signal.SIGKILL)
        second.wait(timeout=30)
        producer.join(timeout=90)
        output, _ = first.communicate(timeout=150)
        assert first.returncode == 0, output
        _drain(home, kafka, seconds=15)
    _assert_exactly_once(home, record)
    batches = pl.from_arrow(DeltaTable(str(home / "warehouse/ops/stream_batches")).to_pyarrow_table())
    assert batches["consumer_id"].n_unique() >= 2  # both members wrote


def test_broker_that_comes_back_empty_is_refused_until_a_reset(tmp_path: Path) -> None:
    home = _home(tmp_path)
    record = tmp_path / "sent.jsonl"
    with running_broker(tmp_path) as (broker, kafka):
        _produce_now(kafka, record, rate=100, seconds=3, seed=1)
        _drain(home, kafka, seconds=12)
        written = bronze_readings(home / "warehouse").height
        state = broker.status()
        assert state is not None
        broker.stop()
        broker.start(port=state.port)  # memory storage: every topic and offset is gone
    with running_broker(tmp_path, port=state.port) as (_, kafka):
        refused = subprocess.run(
            [YIWANG, "stream", "run", "iot", "--max-seconds", "15", "--no-derive"],
            env=consumer_env(home, kafka),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert refused.returncode == 4, refused.stdout + refused.stderr
        message = " ".join((refused.stdout + refused.stderr).split())
        assert "does not hold what was already consumed" in message
        assert "yiwang stream reset iot" in message
        assert bronze_readings(home / "warehouse").height == written  # nothing skipped, nothing written
        reset = subprocess.run(
            [YIWANG, "stream", "reset", "iot", "--reason", "ephemeral broker restarted", "--by", "test"],
            env=consumer_env(home, kafka),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert reset.returncode == 0, reset.stdout + reset.stderr
        second = tmp_path / "second.jsonl"
        _produce_now(kafka, second, rate=100, seconds=3, seed=2)
        _drain(home, kafka, seconds=12)
    epochs = pl.from_arrow(DeltaTable(str(home / "warehouse/ops/stream_epochs")).to_pyarrow_table())
    assert epochs.row(0, named=True)["reason"] == "ephemeral broker restarted"
    expected = pl.concat([expected_readings(record), expected_readings(second)]).unique(["device_id", "seq"])
    assert bronze_readings(home / "warehouse").height == expected.height
    assert json.loads(epochs["offsets_before"][0])  # the offsets given up are kept for the audit
    assert datetime.now(UTC) > epochs["reset_at"][0]


def test_sigterm_stops_cleanly_and_status_shows_no_lag(tmp_path: Path) -> None:
    home = _home(tmp_path)
    record = tmp_path / "sent.jsonl"
    with running_broker(tmp_path) as (_, kafka):
        _produce_now(kafka, record, rate=100, seconds=3, seed=4)
        consumer = start_consumer(home, kafka, "iot", "--no-derive")
        expected = expected_readings(record).height
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            table = home / "warehouse" / "bronze/stream/iot_sensor_readings"
            if DeltaTable.is_deltatable(str(table)) and bronze_readings(home / "warehouse").height == expected:
                break
            time.sleep(1)
        consumer.send_signal(signal.SIGTERM)
        output, _ = consumer.communicate(timeout=30)
        assert consumer.returncode == 0, output
        assert "stopped (signal)" in " ".join(output.split())
        status = subprocess.run(
            [YIWANG, "stream", "status"],
            env={**consumer_env(home, kafka), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stdout + status.stderr
        from ingestion.streaming.status import stream_status
        from ingestion.streaming.topics import load_topics
        from ingestion.warehouse import Warehouse

        rows = stream_status(Warehouse.at(home / "warehouse"), load_topics()["iot"], kafka)
        assert all(row.lag == 0 for row in rows) and sum(row.delta_offset is not None for row in rows) >= 3
        assert "iot.sensor-readings" in status.stdout and "hotline.appeals" in status.stdout
    _assert_exactly_once(home, record)


def test_no_broker_is_retried_with_backoff_then_reported(tmp_path: Path) -> None:
    import socket

    home = _home(tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there
    env = {**consumer_env(home, type("K", (), {"bootstrap": f"127.0.0.1:{port}"})()), "COLUMNS": "200"}
    started = time.monotonic()
    done = subprocess.run(
        [YIWANG, "stream", "run", "iot", "--max-seconds", "12"], env=env, capture_output=True, text=True, timeout=90
    )
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 4, output
    assert "unreachable (attempt 1" in output and "retrying in 1 s" in output and "retrying in 2 s" in output
    assert output.count("unreachable (attempt") <= 5  # backoff, not a busy loop
    assert "Traceback" not in output and time.monotonic() - started < 60
