"""Traffic generators for the stream topics, by their contracts: what the field sends, warts included.

`IotSimulator` drives the devices of the sensor registry: each reports in turn so that the whole
fleet sends `rate` messages per second. Values are a per-device baseline with noise; during a rain
event the water depth of some water-level devices rises past their threshold and falls back. Some
devices go quiet; a share of readings is sent twice (the copy later, as a retrying gateway does),
held back (late and out of order), or malformed in one of the ways the consumer must refuse.

Simulated time may run faster than the wall clock (`time_scale`): readings then carry event times
that start `duration x time_scale` seconds in the past and end now, so a one-minute demo shows an
hour of rain, incidents opening and closing, without any event time in the future.

`HotlineSimulator` sends appeals written like the hotline's (the caller passes the texts: the labelled
corpus's training split, `demo_data.events.corpus_texts`), keyed by `appeal_id`.

Both record what they sent (`record`: one JSON line per message with its kind) so that tests and
benchmarks can say what bronze must hold.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import IO

import polars as pl

# Kinds of malformed message, each refused by one rule of the consumer.
MALFORMED_KINDS = (
    "not_json",
    "not_utf8",
    "not_object",
    "wrong_type",
    "missing_field",
    "unknown_device",
    "future_timestamp",
    "oversized",
)
OVERSIZED_BYTES = 80_000
Headers = Sequence[tuple[str, bytes | None]]  # Kafka record headers, as kafka-python sends them


@dataclass(frozen=True)
class Device:
    device_id: str
    device_type: str
    metric: str
    threshold: float


@dataclass
class IotProfile:
    """Shares of the warts, per message."""

    duplicate_share: float = 0.01
    late_share: float = 0.01
    malformed_share: float = 0.005
    quiet_share: float = 0.02  # devices that stop reporting at some point
    rain_share: float = 0.3  # water-level devices that flood during a rain event
    rain_start: float = 0.15  # when the rain starts, as a share of the run
    rain_length: float = 0.5  # how long flooding lasts, as a share of the run


@dataclass
class SimulationStats:
    sent: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.sent += 1
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


def load_devices(frame: pl.DataFrame) -> list[Device]:
    """Active devices of the registry (silver yingji.sensor_devices), in device order."""
    active = frame.filter(pl.col("status") == "active").sort("device_id")
    return [
        Device(row["device_id"], row["device_type"], row["metric"], float(row["alert_threshold"]))
        for row in active.select("device_id", "device_type", "metric", "alert_threshold").iter_rows(named=True)
    ]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class IotSimulator:
    """Readings of `devices` at `rate` messages per second for `duration` seconds."""

    def __init__(
        self,
        devices: list[Device],
        rate: float,
        duration: float,
        *,
        seed: int = 0,
        time_scale: float = 1.0,
        profile: IotProfile | None = None,
        start: datetime | None = None,
    ) -> None:
        if not devices:
            raise ValueError("no active device in the sensor registry: load yingji.sensor_devices first (yiwang run)")
        if rate <= 0 or duration <= 0 or time_scale <= 0:
            raise ValueError("rate, duration and time scale must be positive")
        self.devices = devices
        self.rate = rate
        self.duration = duration
        self.time_scale = time_scale
        self.profile = profile or IotProfile()
        self.random = random.Random(seed)
        now = start or datetime.now(UTC)
        self.event_start = now - timedelta(seconds=duration * time_scale)
        self.seq = {d.device_id: 0 for d in devices}
        water = [d for d in devices if d.device_type == "water_level"]
        self.flooding = {d.device_id for d in water if self.random.random() < self.profile.rain_share}
        if water and not self.flooding:
            self.flooding = {water[0].device_id}
        self.quiet_at = {
            d.device_id: self.random.uniform(0.2, 0.9)
            for d in devices
            if self.random.random() < self.profile.quiet_share
        }
        self.baseline = {d.device_id: d.threshold * self.random.uniform(0.1, 0.4) for d in devices}
        self.held: deque[tuple[float, bytes, bytes, str]] = deque()  # (send at, key, value, kind)
        self.sent_values: deque[tuple[bytes, bytes]] = deque(maxlen=2_000)

    def _value(self, device: Device, progress: float) -> float:
        base = self.baseline[device.device_id]
        noise = self.random.gauss(0, max(device.threshold * 0.03, 0.1))
        if device.device_id in self.flooding:
            start, length = self.profile.rain_start, self.profile.rain_length
            phase = (progress - start) / length
            if 0 <= phase <= 1:
                peak = device.threshold * self.random.uniform(1.3, 2.2) if device.threshold else 10
                return round(max(0.0, base + (peak - base) * math.sin(math.pi * phase) + noise), 2)
        return round(max(0.0, base + noise), 2)

    def _reading(self, device: Device, progress: float, event_time: datetime) -> dict[str, object]:
        seq = self.seq[device.device_id]
        self.seq[device.device_id] = seq + 1
        return {
            "device_id": device.device_id,
            "ts": _iso(event_time),
            "metric": device.metric,
            "value": self._value(device, progress),
            "battery_pct": round(max(5.0, 100 - progress * 3 - self.random.random()), 1),
            "seq": seq,
        }

    def _malformed(self, reading: dict[str, object], event_time: datetime) -> tuple[str, bytes, bytes]:
        kind = self.random.choice(MALFORMED_KINDS)
        key = str(reading["device_id"]).encode()
        if kind == "not_json":
            return kind, key, b'{"device_id": "' + key + b'", "value": 1'
        if kind == "not_utf8":
            return kind, key, json.dumps(reading).encode("utf-8")[:-1] + b"\xff\xfe}"
        if kind == "not_object":
            return kind, key, json.dumps([reading]).encode()
        if kind == "wrong_type":
            return kind, key, json.dumps({**reading, "value": "high"}).encode()
        if kind == "missing_field":
            return kind, key, json.dumps({k: v for k, v in reading.items() if k != "seq"}).encode()
        if kind == "unknown_device":
            ghost = f"GHOST{self.random.randrange(10**6):06d}"
            return kind, ghost.encode(), json.dumps({**reading, "device_id": ghost}).encode()
        if kind == "future_timestamp":
            return kind, key, json.dumps({**reading, "ts": _iso(event_time + timedelta(days=2))}).encode()
        return kind, key, json.dumps({**reading, "note": "x" * OVERSIZED_BYTES}).encode()

    def messages(self, clock: Callable[[], float] = time.monotonic) -> Iterator[tuple[bytes, bytes, str]]:
        """(key, value, kind) at the pace of `rate`; kind is valid, duplicate, late or a malformed kind."""
        started = clock()
        total = int(self.rate * self.duration)
        order = list(self.devices)
        for index in range(total):
            due = started + index / self.rate
            while self.held and self.held[0][0] <= clock():
                _, key, value, kind = self.held.popleft()
                yield key, value, kind
            wait = due - clock()
            if wait > 0:
                time.sleep(wait)
            progress = index / total
            device = order[index % len(order)]
            quiet = self.quiet_at.get(device.device_id)
            if quiet is not None and progress >= quiet:
                continue
            event_time = self.event_start + timedelta(seconds=(index / self.rate) * self.time_scale)
            reading = self._reading(device, progress, event_time)
            draw = self.random.random()
            share = self.profile
            if draw < share.malformed_share:
                kind, key, value = self._malformed(reading, event_time)
                yield key, value, kind
                continue
            key, value = device.device_id.encode(), json.dumps(reading, ensure_ascii=False).encode()
            if draw < share.malformed_share + share.late_share:
                self.held.append((clock() + self.random.uniform(1.0, 5.0), key, value, "late"))
                continue
            yield key, value, "valid"
            self.sent_values.append((key, value))
            if draw < share.malformed_share + share.late_share + share.duplicate_share and self.sent_values:
                old_key, old_value = self.random.choice(self.sent_values)
                yield old_key, old_value, "duplicate"
        while self.held:
            _, key, value, kind = self.held.popleft()
            yield key, value, kind


class HotlineSimulator:
    """Appeals as the hotline receives them, `rate` per second for `duration` seconds."""

    def __init__(
        self,
        grids: pl.DataFrame,
        district_code: str,
        rate: float,
        duration: float,
        *,
        texts: Mapping[str, Sequence[str]],
        seed: int = 0,
    ) -> None:
        """`texts`: appeal texts by event code."""
        if grids.height == 0:
            raise ValueError("the grid registry is empty: load zhengshu.grid_registry first (yiwang run)")
        self.grids = grids.select("grid_code", "center_lon", "center_lat").rows()
        self.texts = [(code, text) for code, code_texts in sorted(texts.items()) for text in code_texts]
        self.district_code = district_code
        self.rate = rate
        self.duration = duration
        self.random = random.Random(seed)
        self.prefix = f"RS{datetime.now(UTC):%Y%m%d%H%M%S}"

    def messages(self, clock: Callable[[], float] = time.monotonic) -> Iterator[tuple[bytes, bytes, str]]:
        started = clock()
        sent: list[tuple[bytes, bytes]] = []
        for index in range(int(self.rate * self.duration)):
            wait = started + index / self.rate - clock()
            if wait > 0:
                time.sleep(wait)
            _, text = self.random.choice(self.texts)
            _, lon, lat = self.random.choice(self.grids)
            appeal_id = f"{self.prefix}{index:06d}"
            appeal = {
                "appeal_id": appeal_id,
                "received_at": _iso(datetime.now(UTC)),
                "channel": self.random.choice(["phone", "app", "wechat", "web"]),
                "caller_phone": f"13{self.random.randrange(10**9):09d}",
                "content": text,
                "address_text": None,
                "lon": round(lon + self.random.uniform(-0.002, 0.002), 6) if lon is not None else None,
                "lat": round(lat + self.random.uniform(-0.002, 0.002), 6) if lat is not None else None,
                "district_code": self.district_code,
                "is_urgent": self.random.random() < 0.05,
            }
            value = json.dumps(appeal, ensure_ascii=False).encode()
            yield appeal_id.encode(), value, "valid"
            sent.append((appeal_id.encode(), value))
            if self.random.random() < 0.02:
                yield (*self.random.choice(sent), "duplicate")


def produce(
    producer_options: dict[str, object],
    topic: str,
    messages: Iterator[tuple[bytes, bytes, str]] | Iterator[tuple[bytes | None, bytes, str, Headers]],
    record: IO[str] | None = None,
) -> SimulationStats:
    """Send every message (acks from all replicas, idempotent producer) and count them by kind.

    A message is (key, value, kind), or (key, value, kind, headers) for binary values (video frames): those
    are recorded with their headers and size instead of their bytes."""
    from kafka import KafkaProducer

    producer = KafkaProducer(acks="all", linger_ms=5, enable_idempotence=True, **producer_options)
    stats = SimulationStats()
    try:
        for key, value, kind, *extra in messages:
            headers: Headers | None = extra[0] if extra else None
            producer.send(topic, key=key, value=value, headers=list(headers) if headers is not None else None)
            stats.count(kind)
            if record is not None:
                text = key.decode(errors="replace") if key is not None else None
                if headers is None:
                    line = {"kind": kind, "key": text, "value": _text(value)}
                else:
                    shown = {name: _text(raw) for name, raw in headers if raw is not None}
                    line = {"kind": kind, "key": text, "headers": shown, "bytes": len(value or b"")}
                record.write(json.dumps(line))
                record.write("\n")
        producer.flush()
    finally:
        producer.close()
    return stats


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="backslashreplace")
