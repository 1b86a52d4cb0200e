"""Where each stream stands: per topic-partition, the offset Delta holds, the broker's end, the lag, and
what was quarantined in the last hour. Read by `yiwang stream status` and by the Dagster observation
of the streamed tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow.dataset as ds

from ingestion.streaming.consumer import QUARANTINE_MESSAGES
from ingestion.streaming.offsets import current_epoch, read_offsets
from ingestion.streaming.settings import KafkaSettings
from ingestion.streaming.topics import Topic
from ingestion.warehouse import Warehouse

log = logging.getLogger("yiwang.stream")


@dataclass(frozen=True)
class PartitionStatus:
    topic: str
    partition: int
    epoch: int
    delta_offset: int | None  # last offset written (None: nothing yet in this epoch)
    broker_end: int | None  # the broker's next offset (None: broker not reachable)
    quarantined_last_hour: int

    @property
    def lag(self) -> int | None:
        if self.broker_end is None:
            return None
        return max(self.broker_end - (self.delta_offset + 1 if self.delta_offset is not None else 0), 0)


def broker_end_offsets(settings: KafkaSettings, topic: Topic, timeout_ms: int = 5_000) -> dict[int, int] | None:
    """The broker's end offset per partition, or None when it cannot be reached."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(
            request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms, **settings.client_options()
        )
    except KafkaError as error:
        log.info("broker unreachable: %s", error)
        return None
    try:
        partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        ends = consumer.end_offsets(partitions, timeout_ms=timeout_ms)
        return {tp.partition: offset for tp, offset in ends.items()}
    except KafkaError as error:
        log.info("end offsets of %s unavailable: %s", topic.name, error)
        return None
    finally:
        consumer.close(autocommit=False)


def quarantined_since(warehouse: Warehouse, topic: str, since: datetime) -> dict[int, int]:
    if not warehouse.exists(QUARANTINE_MESSAGES):
        return {}
    dataset = warehouse.table(QUARANTINE_MESSAGES).to_pyarrow_dataset()
    rows = dataset.to_table(
        columns=["partition", "offset"],
        filter=(ds.field("topic") == topic) & (ds.field("quarantined_at") >= since),
    )
    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    counted = frame.unique().group_by("partition").len()
    return dict(zip(counted["partition"].to_list(), counted["len"].to_list(), strict=True))


def stream_status(
    warehouse: Warehouse, topic: Topic, settings: KafkaSettings | None, now: datetime | None = None
) -> list[PartitionStatus]:
    now = now or datetime.now(UTC)
    epoch = current_epoch(warehouse, topic.name)
    table = warehouse.table(topic.bronze_table) if warehouse.exists(topic.bronze_table) else None
    offsets = read_offsets(table, topic.name, epoch, list(range(topic.partitions)))
    ends = broker_end_offsets(settings, topic) if settings is not None else None
    quarantined = quarantined_since(warehouse, topic.name, now - timedelta(hours=1))
    return [
        PartitionStatus(
            topic=topic.name,
            partition=p,
            epoch=epoch,
            delta_offset=offsets.last[p],
            broker_end=ends.get(p) if ends is not None else None,
            quarantined_last_hour=quarantined.get(p, 0),
        )
        for p in range(topic.partitions)
    ]
