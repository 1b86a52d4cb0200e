"""Kafka messages checked against their stream contract, with the rule code of the batch path.

A micro-batch of messages becomes the same raw frame of text values a landing-zone file gives
(`ReadResult`), so the one row validator of `ingestion.validation` decides types, required fields,
patterns, allowed values and ranges with the rule codes data officers already know. What only a
message can get wrong is checked first, one rule each:

- `oversized`: the value is longer than the topic allows (nothing of it is parsed);
- `not_utf8`, `not_json`, `not_object`: the value is not a UTF-8 JSON object;
- `type` for a nested JSON value (object or array) where the contract has a scalar;
- `key_mismatch`: the message key is not the record's key field (partitioning, and so duplicate
  detection, rely on it);
- `future_timestamp`: the record's event time is later than the consumer's clock allows;
- then the contract's row rules; and for IoT readings `unknown_device` and `metric_mismatch`
  against the sensor registry.

Video frames are JPEG bytes with their fields in the key and headers: `frames.check_frames` refuses them
with `FRAME_RULES` (`not_jpeg`, `missing_key`, `missing_header`) before the same row rules.

Every refused message becomes one quarantine row per broken rule (`quarantine/messages`), never an
exception: a consumer never stops on what a producer sent.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa

from ingestion.contract import Contract
from ingestion.readers import ROW_NUMBER, SOURCE_FILE, ReadResult
from ingestion.validation import validate

MESSAGE_RULES = (
    "oversized",
    "not_utf8",
    "not_json",
    "not_object",
    "type",
    "key_mismatch",
    "future_timestamp",
    "unknown_device",
    "metric_mismatch",
)
# What only a binary message whose fields are its key and headers can get wrong (video frames, `frames.py`);
# oversized, the contract's row rules and future_timestamp apply to those messages too.
FRAME_RULES = ("not_jpeg", "missing_key", "missing_header")
# Raw values kept in quarantine are cut to this many bytes (an oversized message is the reason).
RAW_KEEP_BYTES = 4_096

# Lineage columns of a streamed bronze row: where in Kafka it came from and when.
STREAM_LINEAGE = (
    pa.field("_topic", pa.string(), nullable=False),
    pa.field("_partition", pa.int64(), nullable=False),
    pa.field("_offset", pa.int64(), nullable=False),
    pa.field("_key", pa.string()),
    pa.field("_kafka_ts", pa.timestamp("us", tz="UTC")),
    pa.field("_ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
    pa.field("_micro_batch", pa.string(), nullable=False),  # the consumer's micro-batch (ops/stream_batches)
)

QUARANTINE_MESSAGES_SCHEMA = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("partition", pa.int64(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("rule", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
        pa.field("raw", pa.string(), nullable=False),
        pa.field("key", pa.string()),
        pa.field("column", pa.string()),
        pa.field("contract_id", pa.string(), nullable=False),
        pa.field("kafka_ts", pa.timestamp("us", tz="UTC")),
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


@dataclass(frozen=True)
class Message:
    """One Kafka record as the consumer received it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None  # the producer's CreateTime
    headers: tuple[tuple[str, bytes | None], ...] = ()  # Kafka record headers (video frames: ts, frame_seq)


@dataclass(frozen=True)
class MessageRules:
    """What a topic's messages must satisfy beyond the contract's columns."""

    key_field: str | None
    max_message_bytes: int
    max_future: timedelta
    time_field: str | None = None
    devices: dict[str, str] | None = None  # device_id -> metric, for IoT readings


@dataclass
class CheckedBatch:
    good: pl.DataFrame  # typed contract columns + STREAM_LINEAGE
    quarantine: pl.DataFrame  # QUARANTINE_MESSAGES_SCHEMA
    refused: int  # messages refused (a message can break several rules)


def bronze_stream_schema(contract: Contract) -> pa.Schema:
    """The typed columns of the records plus the Kafka lineage columns."""
    return pa.schema(list(contract.arrow_schema()) + list(STREAM_LINEAGE))


def _text(value: object) -> str | None:
    """A JSON scalar as the text a landing-zone file would carry."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _raw(value: bytes | None) -> str:
    if value is None:
        return ""
    return value[:RAW_KEEP_BYTES].decode("utf-8", errors="backslashreplace")


def _parse(message: Message, rules: MessageRules) -> tuple[dict | None, str | None, str | None]:
    """The message's JSON object, or None with the broken rule and a detail for a data officer."""
    value = message.value
    if value is None:
        return None, "not_json", "the message has no value (a tombstone); send one JSON object per message"
    if len(value) > rules.max_message_bytes:
        return (
            None,
            "oversized",
            f"the message is {len(value):,} bytes; this topic takes at most {rules.max_message_bytes:,} bytes",
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, "not_utf8", f"bytes at offset {error.start} are not UTF-8; encode the message in UTF-8"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return None, "not_json", f"not JSON ({error.msg} at character {error.pos}); send one JSON object"
    if not isinstance(record, dict):
        return None, "not_object", f"a JSON {type(record).__name__} where one JSON object is expected"
    return record, None, None


def check_messages(
    messages: Sequence[Message], topic: str, contract: Contract, rules: MessageRules, now: datetime | None = None
) -> CheckedBatch:
    """Split a micro-batch into typed good rows and quarantine rows (one per message and broken rule)."""
    now = now or datetime.now(UTC)
    names = contract.column_names
    problems: list[tuple[int, str | None, str, str]] = []  # (index, column, rule, detail)
    kept: list[int] = []
    rows: dict[str, list[str | None]] = {name: [] for name in names}
    for index, message in enumerate(messages):
        record, rule, detail = _parse(message, rules)
        if record is None:
            problems.append((index, None, rule or "not_json", detail or ""))
            continue
        nested = [name for name in names if isinstance(record.get(name), dict | list)]
        for name in nested:
            problems.append((index, name, "type", f"{name} holds a nested JSON value; the contract has a single value"))
        if nested:
            continue
        kept.append(index)
        for name in names:
            rows[name].append(_text(record.get(name)))
    raw = pl.DataFrame(
        {name: pl.Series(name, values, dtype=pl.String) for name, values in rows.items()}
        | {
            ROW_NUMBER: pl.Series(ROW_NUMBER, [messages[i].offset for i in kept], dtype=pl.Int64),
            SOURCE_FILE: pl.Series(SOURCE_FILE, [f"{topic}/{messages[i].partition}" for i in kept], dtype=pl.String),
        }
    )
    # Duplicates in a stream are dropped by the consumer, not refused: validate without the primary key.
    unkeyed = replace(contract, columns=tuple(replace(c, primary_key_position=None) for c in contract.columns))
    validated = validate(ReadResult(frame=raw, malformed=[]), unkeyed)
    for idx, column, rule, detail in validated.violations.frame.iter_rows():
        problems.append((kept[idx], column, rule, detail))
    typed = validated.typed
    problems.extend(_message_rules(messages, kept, typed, rules, now))
    bad = {index for index, *_ in problems}
    keep_rows = [position for position, index in enumerate(kept) if index not in bad]
    good = _with_lineage(typed[keep_rows], [messages[kept[p]] for p in keep_rows], topic, now)
    return CheckedBatch(good=good, quarantine=_quarantine(messages, problems, topic, contract, now), refused=len(bad))


def _message_rules(
    messages: Sequence[Message], kept: list[int], typed: pl.DataFrame, rules: MessageRules, now: datetime
) -> list[tuple[int, str | None, str, str]]:
    """Key, event-time and registry rules over the typed records."""
    found: list[tuple[int, str | None, str, str]] = []
    keys = typed[rules.key_field].to_list() if rules.key_field else None
    times = typed[rules.time_field].to_list() if rules.time_field else None
    devices = typed["device_id"].to_list() if rules.devices is not None else None
    metrics = typed["metric"].to_list() if rules.devices is not None else None
    latest = now + rules.max_future
    for position, index in enumerate(kept):
        message = messages[index]
        if keys is not None and keys[position] is not None:
            key = message.key.decode("utf-8", errors="replace") if message.key is not None else None
            if key != keys[position]:
                found.append(
                    (
                        index,
                        rules.key_field,
                        "key_mismatch",
                        f"message key {key!r} is not the record's {rules.key_field} {keys[position]!r}; key each "
                        f"message by its {rules.key_field}",
                    )
                )
        if times is not None and times[position] is not None and times[position] > latest:
            found.append(
                (
                    index,
                    rules.time_field,
                    "future_timestamp",
                    f"{rules.time_field} {times[position].isoformat()} is more than "
                    f"{int(rules.max_future.total_seconds())} s ahead of the platform's clock; check the device clock",
                )
            )
        if devices is not None and metrics is not None and devices[position] is not None:
            metric = rules.devices.get(devices[position]) if rules.devices is not None else None
            if metric is None:
                found.append(
                    (
                        index,
                        "device_id",
                        "unknown_device",
                        f"device {devices[position]!r} is not in the sensor registry (yingji.sensor_devices); "
                        "register it before it reports",
                    )
                )
            elif metrics[position] is not None and metrics[position] != metric:
                found.append(
                    (
                        index,
                        "metric",
                        "metric_mismatch",
                        f"device {devices[position]!r} reports {metrics[position]!r}, the registry says {metric!r}",
                    )
                )
    return found


def _timestamps(name: str, millis: list[int | None]) -> pl.Series:
    """Kafka record timestamps (epoch milliseconds) as UTC instants."""
    return (pl.Series(name, millis, dtype=pl.Int64) * 1000).cast(pl.Datetime("us", "UTC"))


def _with_lineage(typed: pl.DataFrame, messages: list[Message], topic: str, now: datetime) -> pl.DataFrame:
    return typed.with_columns(
        pl.lit(topic, dtype=pl.String).alias("_topic"),
        pl.Series("_partition", [m.partition for m in messages], dtype=pl.Int64),
        pl.Series("_offset", [m.offset for m in messages], dtype=pl.Int64),
        pl.Series("_key", [_raw(m.key) if m.key is not None else None for m in messages], dtype=pl.String),
        _timestamps("_kafka_ts", [m.timestamp_ms for m in messages]),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("_ingested_at"),
        pl.lit("", dtype=pl.String).alias("_micro_batch"),  # set by the consumer when it writes the batch
    )


def _quarantine(
    messages: Sequence[Message],
    problems: list[tuple[int, str | None, str, str]],
    topic: str,
    contract: Contract,
    now: datetime,
) -> pl.DataFrame:
    problems.sort(key=lambda p: (p[0], p[2]))
    chosen = [messages[index] for index, *_ in problems]
    return pl.DataFrame(
        {
            "topic": [topic] * len(problems),
            "partition": [m.partition for m in chosen],
            "offset": [m.offset for m in chosen],
            "rule": [rule for _, _, rule, _ in problems],
            "detail": [detail for *_, detail in problems],
            "raw": [_raw(m.value) for m in chosen],
            "key": [_raw(m.key) if m.key is not None else None for m in chosen],
            "column": [column for _, column, _, _ in problems],
            "contract_id": [contract.id] * len(problems),
            "kafka_ts": _timestamps("kafka_ts", [m.timestamp_ms for m in chosen]),
            "quarantined_at": pl.Series([now] * len(problems), dtype=pl.Datetime("us", "UTC")),
        },
        schema=pl.from_arrow(QUARANTINE_MESSAGES_SCHEMA.empty_table()).schema,
    )
