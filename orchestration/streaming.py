"""The streaming side wired to the platform: which consumer writes where, and what runs after a commit.

- `iot.sensor-readings` -> `bronze/stream/iot_sensor_readings`; after each commit the consumer itself
  updates the waterlogging incidents (`gold/emergency/incidents`) and, when an incident opens, closes
  or changes severity, re-derives the IoT tickets. A ticket is visible seconds after the reading.
- `hotline.appeals` -> `bronze/stream/hotline_appeals`; after each commit the consumer rebuilds the
  urban events (classified with the promoted classifier) and re-derives the urban tickets, so a
  streamed appeal and the same appeal delivered in a batch are one event and one ticket.
- `video.frames` -> `bronze/stream/video_frames` (the frames' fields and size, not their bytes); before
  each bronze commit the frames are scored with every algorithm's production model into
  `silver/video/detections` (`orchestration/video_stream.py`).

The nightly batch run recomputes the same incidents from the whole bronze table (`stream_assets`)
and feeds the same derivation, so both paths agree.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import polars as pl

from ingestion.contract import get_contract
from ingestion.settings import Settings
from ingestion.streaming.broker import LocalBroker
from ingestion.streaming.consumer import StreamSpec
from ingestion.streaming.messages import MessageRules
from ingestion.streaming.settings import KafkaSettings
from ingestion.streaming.topics import Topic, load_topics
from ingestion.warehouse import Warehouse

log = logging.getLogger("yiwang.stream")

SENSOR_DEVICES = "yingji.sensor_devices"
# Limits per topic: an IoT reading is a few hundred bytes; an appeal carries free text.
MAX_MESSAGE_BYTES = {"iot": 65_536, "hotline": 262_144, "video": 10_485_760}
MAX_FUTURE = timedelta(minutes=5)
TIME_FIELDS = {"iot": "ts", "hotline": "received_at", "video": "ts"}
# Messages per micro-batch: a video frame is scored by every algorithm's model, a reading is a row.
MAX_BATCH = {"video": 32}
REGISTRY_REFRESH_S = 30.0
DERIVE_EVERY_S = 2.0  # at most one incident write and ticket refresh per this many seconds


def broker_dir(settings: Settings) -> Path:
    return settings.home / "broker"


def local_broker(settings: Settings) -> LocalBroker:
    return LocalBroker(broker_dir(settings))


def kafka_settings(settings: Settings) -> KafkaSettings:
    """KAFKA_BOOTSTRAP_SERVERS, else the running local broker (BrokerUnavailable when neither)."""
    return KafkaSettings.from_env(local_broker(settings))


def read_devices(warehouse: Warehouse) -> pl.DataFrame:
    """The sensor registry as silver holds it (empty with its columns before the first batch)."""
    from thematic_libs.urban.events import read_silver

    columns = [c.name for c in get_contract(SENSOR_DEVICES).columns]
    frame = pl.from_arrow(read_silver(warehouse, SENSOR_DEVICES, columns))
    assert isinstance(frame, pl.DataFrame)
    return frame


@dataclass
class _Registry:
    """The sensor registry, re-read when silver has a new version (checked every 30 s)."""

    warehouse: Warehouse
    devices: pl.DataFrame = field(default_factory=pl.DataFrame)
    metrics: dict[str, str] = field(default_factory=dict)
    version: int | None = None
    checked: float = 0.0

    def refresh(self) -> bool:
        if time.monotonic() - self.checked < REGISTRY_REFRESH_S and self.version is not None:
            return False
        self.checked = time.monotonic()
        from ingestion.silver import silver_table

        table = silver_table(get_contract(SENSOR_DEVICES))
        version = self.warehouse.table(table).version() if self.warehouse.exists(table) else -1
        if version == self.version:
            return False
        self.version = version
        self.devices = read_devices(self.warehouse)
        self.metrics = dict(zip(self.devices["device_id"].to_list(), self.devices["metric"].to_list(), strict=True))
        log.info("sensor registry: %d devices (silver version %d)", len(self.metrics), version)
        return True


class _IncidentWriter(threading.Thread):
    """Writes incident changes and re-derives the IoT tickets off the consumer's loop.

    The tracker decides what changed synchronously (milliseconds); the Delta merge and the ticket
    derivation (about half a second on the demo warehouse) run here, at most one round every
    `DERIVE_EVERY_S`, coalescing whatever piled up meanwhile: during a flood, incidents change with
    every micro-batch, and re-deriving the tickets each time would take the CPU the consumer needs to
    keep up. A ticket is still visible within a round and a refresh of its reading reaching bronze.
    """

    def __init__(self, warehouse: Warehouse) -> None:
        super().__init__(name="incident-writer", daemon=True)
        self.warehouse = warehouse
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._pending: dict[str, dict] = {}  # incident id -> latest row
        self._withdrawn: set[str] = set()
        self._moves = False
        self._idle = threading.Event()
        self._idle.set()
        self.refreshes = 0
        self.failures = 0

    def submit(self, changed: pl.DataFrame, withdrawn: tuple[str, ...], moves: bool) -> None:
        with self._lock:
            for incident in withdrawn:
                self._pending.pop(incident, None)
                self._withdrawn.add(incident)
            for row in changed.iter_rows(named=True):
                self._withdrawn.discard(row["incident_id"])
                self._pending[row["incident_id"]] = row
            self._moves = self._moves or moves
            self._idle.clear()
        self._wake.set()

    def flush(self, timeout: float = 120) -> bool:
        """Wait until everything submitted is written."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """Write what is pending, then stop."""
        self._closing = True
        self._wake.set()
        self.join(timeout=120)

    def run(self) -> None:
        from thematic_libs.dispatch.refresh import feeds_named, refresh_tickets
        from thematic_libs.emergency.alerts import merge_incidents
        from thematic_libs.emergency.incidents import INCIDENT_SCHEMA

        last_round = 0.0
        while True:
            self._wake.wait()
            if not self._closing:
                time.sleep(max(0.0, last_round + DERIVE_EVERY_S - time.monotonic()))
            last_round = time.monotonic()
            self._wake.clear()
            with self._lock:
                pending, withdrawn, moves = self._pending, self._withdrawn, self._moves
                self._pending, self._withdrawn, self._moves = {}, set(), False
            try:
                if pending or withdrawn:
                    rows = pl.DataFrame(list(pending.values()), schema=INCIDENT_SCHEMA | {"change": pl.String})
                    merge_incidents(self.warehouse, rows, tuple(sorted(withdrawn)))
                if moves:
                    refresh_tickets(self.warehouse, feeds_named("iot_alerts"))
                    self.refreshes += 1
            except Exception:  # logged with its traceback; the changes are kept for the next round
                log.exception("writing incidents or IoT tickets failed; retrying with the next batch")
                self.failures += 1
                with self._lock:
                    self._pending = {**pending, **self._pending}
                    self._withdrawn |= withdrawn - set(self._pending)
                    self._moves = self._moves or moves
                time.sleep(1)
                self._wake.set()
                continue
            with self._lock:
                if not (self._pending or self._withdrawn or self._moves):
                    self._idle.set()
            if self._closing and not self._wake.is_set():
                return


class IotAlerts:
    """After each committed micro-batch: incidents, then the IoT tickets when an incident's state moved.

    On start the tracker is seeded from the readings in bronze and every incident it finds is written,
    so a consumer killed between a bronze commit and the incident write leaves nothing out of date.
    """

    def __init__(self, warehouse: Warehouse, registry: _Registry) -> None:
        from thematic_libs.emergency.alerts import stored_readings
        from thematic_libs.emergency.incidents import IncidentTracker
        from thematic_libs.emergency.settings import IncidentConfig

        self.warehouse = warehouse
        self.registry = registry
        registry.refresh()
        self.config = IncidentConfig.load()
        self.tracker = IncidentTracker(registry.devices, self.config)
        self.writer = _IncidentWriter(warehouse)
        self.writer.start()
        self.severities: dict[str, str] = {}  # what the tickets were last derived with
        history = stored_readings(warehouse, self.config)
        if history is not None and history.height:
            known = self.tracker.load(history)
            if known.height:
                self.writer.submit(known, (), moves=True)
                self.severities.update(zip(known["incident_id"].to_list(), known["severity"].to_list(), strict=True))
        self.opened = 0
        self.closed = 0

    def __call__(self, rows: pl.DataFrame) -> dict[str, object]:
        from thematic_libs.emergency.alerts import moves_tickets

        if self.registry.refresh():
            self.tracker.set_devices(self.registry.devices)
        changes = self.tracker.add(rows)
        if changes.changed.height or changes.withdrawn:
            self.writer.submit(changes.changed, changes.withdrawn, moves_tickets(changes, self.severities))
        self.opened += changes.opened
        self.closed += changes.closed
        return {
            "incidents_opened": self.opened,
            "incidents_closed": self.closed,
            "ticket_refreshes": self.writer.refreshes,
        }

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class StreamedAppeals:
    """After each committed micro-batch of appeals: urban events and the urban tickets."""

    def __init__(self, warehouse: Warehouse, settings: Settings) -> None:
        from thematic_libs.urban.classifier import ClassifierConfig
        from thematic_libs.urban.events import ClassifierInUse
        from thematic_libs.urban.model_store import ModelStore

        self.warehouse = warehouse
        config = ClassifierConfig.load()
        version, model = ModelStore(settings.models_dir).promoted_classifier(config)
        self.classifier = ClassifierInUse(version, model, config)
        self.refreshes = 0

    def __call__(self, rows: pl.DataFrame) -> dict[str, object]:
        from thematic_libs.dispatch.derive import DispatchConfig
        from thematic_libs.dispatch.refresh import feeds_named, refresh_tickets
        from thematic_libs.urban.events import write_urban_events

        write_urban_events(self.warehouse, DispatchConfig.load(), self.classifier)
        refresh_tickets(self.warehouse, feeds_named("urban_events"))
        self.refreshes += 1
        return {"event_refreshes": self.refreshes}


def stream_spec(topic: Topic, warehouse: Warehouse, settings: Settings, *, derive: bool = True) -> StreamSpec:
    """The consumer's view of `topic`; `derive=False` writes bronze only (benchmarks of the ingest path)."""
    if topic.short_name == "video":
        from orchestration.video_stream import video_stream_spec

        return video_stream_spec(topic, warehouse, settings, rules=_static_rules(topic), derive=derive)
    contract = get_contract(topic.fields_contract_id)
    registry = _Registry(warehouse) if topic.short_name == "iot" else None

    def rules() -> MessageRules:
        if registry is not None:
            registry.refresh()
        return MessageRules(
            key_field=topic.key_field,
            max_message_bytes=MAX_MESSAGE_BYTES.get(topic.short_name, 1_048_576),
            max_future=MAX_FUTURE,
            time_field=TIME_FIELDS.get(topic.short_name),
            devices=registry.metrics if registry is not None else None,
        )

    after = None
    if derive and registry is not None:
        after = IotAlerts(warehouse, registry)
    elif derive and topic.short_name == "hotline":
        after = StreamedAppeals(warehouse, settings)
    return StreamSpec(
        topic=topic.name,
        short_name=topic.short_name,
        contract=contract,
        bronze_table=topic.bronze_table,
        group=topic.group,
        partitions=topic.partitions,
        dedupe_key=topic.dedupe_key,
        rules=rules,
        after_commit=after,
        close=getattr(after, "close", None),
    )


def _static_rules(topic: Topic) -> MessageRules:
    return MessageRules(
        key_field=topic.key_field,
        max_message_bytes=MAX_MESSAGE_BYTES.get(topic.short_name, 1_048_576),
        max_future=MAX_FUTURE,
        time_field=TIME_FIELDS.get(topic.short_name),
    )


def topic_named(short_name: str) -> Topic:
    topics = load_topics()
    if short_name not in topics:
        raise ValueError(f"unknown stream {short_name!r}; use one of {', '.join(sorted(topics))}")
    return topics[short_name]
