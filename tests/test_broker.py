"""The broker layer: a loopback-only local Tansu, the project topics, Kafka settings from the environment, kcat."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

from ingestion.streaming.broker import (
    BrokerError,
    BrokerState,
    LocalBroker,
    TopicError,
    ensure_topics,
    wait_until_ready,
)
from ingestion.streaming.kcat import KcatUnavailable, kcat_command
from ingestion.streaming.settings import BrokerUnavailable, KafkaSettings
from ingestion.streaming.topics import load_topics, topic_by_name
from tests.kafka_kit import S3_STORAGE, moto_s3_server, running_broker

IOT = "iot.sensor-readings"
EXPECTED_PARTITIONS = {"iot.sensor-readings": 6, "hotline.appeals": 3, "video.frames": 4}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listeners(pid: int) -> set[tuple[str, int]]:
    """The (address, port) pairs that `pid` listens on, read from /proc (TCP over IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            address_hex, port_hex = local.split(":")
            address = socket.inet_ntoa(bytes.fromhex(address_hex)[::-1]) if width == 8 else address_hex
            found.add((address, int(port_hex, 16)))
    return found


def _consume(settings: KafkaSettings, topic: str, count: int, timeout_s: float = 15.0) -> list:
    """Read `count` records from the start of every partition, without a group."""
    consumer = KafkaConsumer(topic, **settings.client_options(), auto_offset_reset="earliest", consumer_timeout_ms=1000)
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            records.extend(consumer)
    finally:
        consumer.close()
    return records


def _produce(settings: KafkaSettings, topic: str, messages: list[tuple[str, dict]]) -> None:
    producer = KafkaProducer(**settings.client_options(), acks="all")
    try:
        for key, value in messages:
            producer.send(topic, key=key.encode(), value=json.dumps(value).encode())
        producer.flush(timeout=10)
    finally:
        producer.close()


def _reading(device: str, seq: int) -> dict:
    return {"device_id": device, "ts": "2026-11-01T08:00:00+08:00", "metric": "water_level", "value": 1.5, "seq": seq}


# --- topics.yaml ---


def test_topics_are_config_checked_against_the_contracts():
    topics = load_topics()
    assert set(topics) == {"iot", "hotline", "video"}
    assert {t.name: t.partitions for t in topics.values()} == EXPECTED_PARTITIONS
    iot = topic_by_name(IOT)
    assert iot.dedupe_key == ("device_id", "seq")
    assert iot.group == "yiwang-iot"
    assert topics["hotline"].fields_contract_id == "zhengshu.hotline_appeals"
    assert topics["video"].key_field == "camera_id"
    with pytest.raises(KeyError, match=r"unknown topic 'nope'"):
        topic_by_name("nope")


# --- the local broker ---


def test_local_broker_listens_on_loopback_only_and_stops(tmp_path):
    broker = LocalBroker(tmp_path / "state")
    assert broker.status() is None
    try:
        state = broker.start()
        assert _listeners(state.pid) == {("127.0.0.1", state.port)}
        assert broker.status() == state
        assert broker.start().pid == state.pid
        # another command reading the same state dir finds the same broker
        assert LocalBroker(tmp_path / "state").start() == state
        recorded = json.loads(broker.state_file.read_text())
        assert recorded["ephemeral"] is True and recorded["pid"] == state.pid and recorded["started_at"]
        assert "ready" in broker.log_file.read_text()
    finally:
        assert broker.stop() is True
    assert not Path(f"/proc/{state.pid}").exists()
    assert not broker.state_file.exists()
    assert broker.status() is None
    assert broker.stop() is False


def test_kill_leaves_a_stale_state_file_that_status_clears(tmp_path):
    broker = LocalBroker(tmp_path)
    try:
        state = broker.start()
        assert broker.kill() is True
        assert not Path(f"/proc/{state.pid}").exists()
        assert broker.state_file.exists()
        assert broker.status() is None
        assert not broker.state_file.exists()
    finally:
        broker.stop()


def test_stop_never_signals_a_process_that_is_not_the_recorded_broker(tmp_path):
    """A recycled pid in the state file must survive `stop`."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        broker = LocalBroker(tmp_path)
        state = BrokerState(pid=other.pid, port=_free_port(), storage="memory://tansu/", started_at="x", binary="tansu")
        broker.state_file.write_text(json.dumps(state.__dict__))
        assert broker.stop() is False
        assert broker.kill() is False
        assert other.poll() is None
        assert not broker.state_file.exists()
    finally:
        other.kill()
        other.wait()


def test_start_refuses_storage_this_tansu_cannot_run(tmp_path):
    with pytest.raises(BrokerError, match=r"postgres://.*not supported"):
        LocalBroker(tmp_path).start(storage="postgres://postgres@localhost")


def test_start_refuses_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=rf"port {port} on 127.0.0.1 is in use"):
            LocalBroker(tmp_path).start(port=port)
    assert not (tmp_path / "broker.json").exists()


# --- topics on a broker ---


def test_ensure_topics_creates_the_project_topics_once(tmp_path):
    with running_broker(tmp_path) as (_broker, settings):
        consumer = KafkaConsumer(**settings.client_options())
        try:
            assert {name: len(consumer.partitions_for_topic(name)) for name in EXPECTED_PARTITIONS} == (
                EXPECTED_PARTITIONS
            )
        finally:
            consumer.close()
        assert ensure_topics(settings) == []


def test_ensure_topics_refuses_a_topic_with_too_few_partitions(tmp_path):
    broker = LocalBroker(tmp_path)
    try:
        broker.start()
        settings = KafkaSettings.from_env(broker, environ={})
        admin = KafkaAdminClient(**settings.client_options())
        try:
            admin.create_topics([NewTopic(IOT, 2, 1)])
        finally:
            admin.close()
        with pytest.raises(TopicError, match=r"topic iot.sensor-readings has 2 partitions, the project expects 6"):
            ensure_topics(settings)
    finally:
        broker.stop()


def test_wait_until_ready(tmp_path):
    with running_broker(tmp_path) as (_broker, settings):
        wait_until_ready(settings, timeout=5.0)
    gone = KafkaSettings(bootstrap_servers=(f"127.0.0.1:{_free_port()}",), ephemeral=True, replication_factor=1)
    with pytest.raises(BrokerUnavailable, match=r"did not answer within 0.5 s: run `yiwang broker start`"):
        wait_until_ready(gone, timeout=0.5)


def test_ensure_topics_without_a_broker_says_where_it_looked():
    settings = KafkaSettings.from_env(environ={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{_free_port()}"})
    with pytest.raises(BrokerUnavailable, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+ .*KAFKA_BOOTSTRAP_SERVERS"):
        ensure_topics(settings, timeout=1.0)


# --- settings ---


def test_settings_reject_an_unknown_protocol():
    env = {"KAFKA_BOOTSTRAP_SERVERS": "kafka:9092", "KAFKA_SECURITY_PROTOCOL": "TLS"}
    with pytest.raises(ValueError, match=r"^KAFKA_SECURITY_PROTOCOL='TLS' is not one of PLAINTEXT, SSL"):
        KafkaSettings.from_env(environ=env)


def test_settings_without_servers_or_local_broker(tmp_path):
    with pytest.raises(BrokerUnavailable, match=r"set KAFKA_BOOTSTRAP_SERVERS.*yiwang broker start"):
        KafkaSettings.from_env(None, environ={})
    with pytest.raises(BrokerUnavailable, match=r"set KAFKA_BOOTSTRAP_SERVERS.*yiwang broker start"):
        KafkaSettings.from_env(LocalBroker(tmp_path), environ={})


def test_settings_pass_sasl_through_and_never_print_the_password():
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9093, kafka-2:9093",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "yiwang",
        "KAFKA_SASL_PASSWORD": "s3cret-pw",
    }
    settings = KafkaSettings.from_env(environ=env)
    assert not settings.ephemeral and settings.replication_factor == 3
    assert settings.client_options() == {
        "bootstrap_servers": ["kafka-1:9093", "kafka-2:9093"],
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "yiwang",
        "sasl_plain_password": "s3cret-pw",
    }
    assert settings.librdkafka_options()["sasl.password"] == "s3cret-pw"
    assert settings.librdkafka_options()["bootstrap.servers"] == "kafka-1:9093,kafka-2:9093"
    assert "Kafka cluster" in settings.describe()
    assert "s3cret-pw" not in settings.describe()
    assert "s3cret-pw" not in repr(settings)


def test_settings_name_the_variable_that_is_wrong():
    with pytest.raises(ValueError, match=r"KAFKA_BOOTSTRAP_SERVERS entry 'kafka' is not host:port"):
        KafkaSettings.from_env(environ={"KAFKA_BOOTSTRAP_SERVERS": "kafka"})
    with pytest.raises(ValueError, match=r"needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        KafkaSettings.from_env(
            environ={
                "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "PLAIN",
            }
        )
    with pytest.raises(ValueError, match=r"KAFKA_SSL_CAFILE=/nonexistent/ca.pem is not a readable file"):
        KafkaSettings.from_env(
            environ={
                "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
                "KAFKA_SECURITY_PROTOCOL": "SSL",
                "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem",
            }
        )


def test_settings_fall_back_to_the_running_local_broker(tmp_path):
    broker = LocalBroker(tmp_path)
    try:
        state = broker.start()
        settings = KafkaSettings.from_env(broker, environ={})
        assert settings.bootstrap_servers == (f"127.0.0.1:{state.port}",)
        assert settings.ephemeral and settings.replication_factor == 1
        assert "ephemeral local broker" in settings.describe()
        # servers set: the cluster wins over the local broker
        assert not KafkaSettings.from_env(broker, environ={"KAFKA_BOOTSTRAP_SERVERS": "k:9092"}).ephemeral
    finally:
        broker.stop()


# --- kcat ---


def _kcat(settings: KafkaSettings, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    argv, env = kcat_command()
    return subprocess.run(
        [*argv, "-b", settings.bootstrap, *args], input=stdin, env=env, capture_output=True, text=True, timeout=30
    )


def test_kcat_command_says_what_is_missing(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(KcatUnavailable, match=r"^kcat is not installed: apt-get install -y kcat"):
        kcat_command()


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (`make setup` installs it)")
def test_kcat_and_kafka_python_read_each_others_messages(tmp_path):
    with running_broker(tmp_path) as (_broker, settings):
        sent = [_reading(f"dev-{i}", i) for i in range(3)]
        lines = "".join(f"{r['device_id']}:{json.dumps(r)}\n" for r in sent)
        produced = _kcat(settings, ["-P", "-t", IOT, "-K:"], stdin=lines)
        assert produced.returncode == 0, produced.stderr
        records = _consume(settings, IOT, 3)
        assert sorted((r.key.decode(), json.loads(r.value)["seq"]) for r in records) == [
            ("dev-0", 0),
            ("dev-1", 1),
            ("dev-2", 2),
        ]

        other = "hotline.appeals"
        _produce(settings, other, [(f"A{i}", {"appeal_id": f"A{i}", "content": "路灯不亮"}) for i in range(3)])
        # Tansu makes JoinGroup wait half the session timeout: keep it short.
        group = ["-G", "kcat-test", "-X", "auto.offset.reset=earliest", "-X", "session.timeout.ms=3000"]
        group += ["-X", "heartbeat.interval.ms=1000"]
        consumed = _kcat(settings, [*group, "-c", "3", "-e", "-q", "-J", other])
        assert consumed.returncode == 0, consumed.stderr
        envelopes = [json.loads(line) for line in consumed.stdout.splitlines() if line.strip()]
        assert sorted(e["key"] for e in envelopes) == ["A0", "A1", "A2"]
        assert {json.loads(e["payload"])["content"] for e in envelopes} == {"路灯不亮"}


# --- s3:// storage survives a crash ---


def test_broker_on_s3_storage_keeps_messages_across_a_kill(tmp_path):
    with moto_s3_server() as env, running_broker(tmp_path, storage=S3_STORAGE, env=env) as (broker, settings):
        port = broker.status().port
        _produce(settings, IOT, [("dev-9", _reading("dev-9", 42))])
        assert broker.kill() is True
        restarted = broker.start(port=port, storage=S3_STORAGE, env=env)
        assert restarted.port == port
        assert ensure_topics(settings) == []  # the topics survived too
        records = _consume(settings, IOT, 1)
        assert [(r.key, json.loads(r.value)["seq"]) for r in records] == [(b"dev-9", 42)]
