"""Every malformed-message class is refused with its rule; duplicates are dropped exactly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from ingestion.contract import get_contract
from ingestion.streaming.dedupe import KeySet, SeqWindows
from ingestion.streaming.messages import MESSAGE_RULES, Message, MessageRules, check_messages

NOW = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
IOT = get_contract("stream.iot_sensor_readings")
HOTLINE = get_contract("zhengshu.hotline_appeals")
RULES = MessageRules(
    key_field="device_id",
    max_message_bytes=2_000,
    max_future=timedelta(minutes=5),
    time_field="ts",
    devices={"YJWL000001": "water_depth_cm", "YJSM000002": "smoke_ppm"},
)


def reading(**changes: object) -> dict:
    return {
        "device_id": "YJWL000001",
        "ts": "2026-12-05T09:59:00Z",
        "metric": "water_depth_cm",
        "value": 12.5,
        "battery_pct": 80,
        "seq": 7,
        **changes,
    }


def message(offset: int, value: bytes | None, key: bytes | None = b"YJWL000001") -> Message:
    return Message(partition=0, offset=offset, key=key, value=value, timestamp_ms=1_796_000_000_000)


def encoded(record: object) -> bytes:
    return json.dumps(record).encode()


CASES = [
    ("not_json", b'{"device_id": "YJWL000001", "value": 1', None),
    ("not_utf8", encoded(reading())[:-1] + b"\xff}", None),
    ("not_object", encoded([reading()]), None),
    ("oversized", encoded(reading(note="x" * 3_000)), None),
    ("type", encoded(reading(value="high")), "value"),
    ("type", encoded(reading(value={"cm": 3})), "value"),
    ("required", encoded({k: v for k, v in reading().items() if k != "seq"}), "seq"),
    ("range", encoded(reading(battery_pct=140)), "battery_pct"),
    ("unknown_device", encoded(reading(device_id="GHOST1")), "device_id"),
    ("metric_mismatch", encoded(reading(metric="smoke_ppm")), "metric"),
    ("future_timestamp", encoded(reading(ts="2026-12-07T10:00:00Z")), "ts"),
]


@pytest.mark.parametrize(("rule", "value", "column"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_each_malformed_class_is_quarantined_with_its_rule(rule: str, value: bytes, column: str | None) -> None:
    key = b"GHOST1" if rule == "unknown_device" else b"YJWL000001"
    batch = [message(1, encoded(reading(seq=1))), message(2, value, key=key), message(3, encoded(reading(seq=3)))]
    checked = check_messages(batch, "iot.sensor-readings", IOT, RULES, now=NOW)
    assert checked.good["_offset"].to_list() == [1, 3]
    refused = checked.quarantine.filter(checked.quarantine["offset"] == 2)
    assert rule in refused["rule"].to_list(), refused.rows()
    row = refused.filter(refused["rule"] == rule).row(0, named=True)
    assert row["column"] == column and row["topic"] == "iot.sensor-readings" and row["partition"] == 0
    assert row["detail"] and row["raw"]


def test_every_message_rule_has_its_case() -> None:
    assert set(MESSAGE_RULES) - {"key_mismatch"} <= {rule for rule, _, _ in CASES}


def test_a_message_keyed_by_another_device_is_refused() -> None:
    checked = check_messages([message(5, encoded(reading()), key=b"YJSM000002")], "t", IOT, RULES, now=NOW)
    assert checked.good.height == 0
    assert checked.quarantine["rule"].to_list() == ["key_mismatch"]


def test_good_rows_are_typed_with_their_kafka_lineage() -> None:
    checked = check_messages([message(9, encoded(reading()))], "iot.sensor-readings", IOT, RULES, now=NOW)
    row = checked.good.row(0, named=True)
    assert row["value"] == 12.5 and row["seq"] == 7 and row["ts"] == datetime(2026, 12, 5, 9, 59, tzinfo=UTC)
    assert (row["_topic"], row["_partition"], row["_offset"], row["_key"]) == (
        "iot.sensor-readings",
        0,
        9,
        "YJWL000001",
    )
    assert row["_kafka_ts"] == datetime.fromtimestamp(1_796_000_000, UTC)


def test_a_repeated_appeal_in_one_batch_is_not_refused_as_a_duplicate_key() -> None:
    appeal = {
        "appeal_id": "RX1",
        "received_at": "2026-12-05T09:00:00+08:00",
        "channel": "phone",
        "content": "路灯不亮",
        "district_code": "440605",
        "is_urgent": False,
    }
    rules = MessageRules("appeal_id", 10_000, timedelta(minutes=5), "received_at")
    batch = [Message(0, 1, b"RX1", encoded(appeal), None), Message(0, 2, b"RX1", encoded(appeal), None)]
    checked = check_messages(batch, "hotline.appeals", HOTLINE, rules, now=NOW)
    assert checked.good.height == 2 and checked.quarantine.height == 0  # the consumer drops the repeat


def test_seq_windows_drop_repeats_and_keep_late_readings() -> None:
    seen = SeqWindows(window=64)
    new, older = seen.admit(["a", "a", "a", "b"], [5, 6, 5, 5])
    assert new == [True, True, False, True] and older == []
    new, _ = seen.admit(["a", "a", "a"], [3, 6, 100])  # 3 arrives late: new; 6 is a repeat
    assert new == [True, False, True]
    new, older = seen.admit(["a", "a", "a"], [40, 70, 70])  # inside the window of 100 (37..100)
    assert new == [True, True, False] and older == []
    new, older = seen.admit(["a"], [30])  # 30 <= 100 - 64: only bronze can tell
    assert new == [False] and older == [0]


def test_seq_windows_seeded_from_bronze_in_any_order() -> None:
    seen = SeqWindows(window=64)
    seen.seed(["a", "a", "a"], [9, 2, 40])
    assert seen.admit(["a", "a", "a", "a"], [2, 9, 10, 41])[0] == [False, False, True, True]


def test_key_set() -> None:
    keys = KeySet()
    keys.seed(["RX1"])
    assert keys.admit(["RX1", "RX2", "RX2"]) == [False, True, False]
