"""Emergency incidents from IoT readings (hysteresis, late readings, the streaming tracker), early
waterlogging warnings and the emergency settings."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thematic_libs.config import ENV_VAR, ConfigError
from thematic_libs.emergency import (
    INCIDENT_SCHEMA,
    WARNING_SCHEMA,
    IncidentConfig,
    IncidentTracker,
    detect_incidents,
    early_warnings,
)

BASE = datetime(2026, 7, 1, 8, 0, tzinfo=UTC)
THRESHOLD = 30.0  # cm; default margin 5, so "clear" is below 25
COMPARED = [name for name in INCIDENT_SCHEMA if name != "quiet_since"]


@pytest.fixture(autouse=True)
def _no_district_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def water_level(overrides: dict | None = None) -> IncidentConfig:
    """Defaults with the water_level settings changed by `overrides`."""
    return IncidentConfig.load({"device_types": {"water_level": overrides}} if overrides else None)


def at(minute: float) -> datetime:
    return BASE + timedelta(minutes=minute)


def registry(*device_ids: str, threshold: float = THRESHOLD, device_type: str = "water_level") -> pl.DataFrame:
    metric = {"water_level": "water_depth_cm", "rain_gauge": "rain_mm_10min"}[device_type]
    count = len(device_ids)
    return pl.DataFrame(
        {
            "device_id": list(device_ids),
            "device_type": [device_type] * count,
            "grid_code": ["440605001001001"] * count,
            "lon": [113.1] * count,
            "lat": [23.0] * count,
            "location_name": ["科学城隧道北口"] * count,
            "metric": [metric] * count,
            "alert_threshold": [threshold] * count,
            "installed_date": ["2024-01-01"] * count,
            "status": ["active"] * count,
        }
    )


def readings(device_id: str, points: list[tuple[float, float]], first_seq: int = 0) -> pl.DataFrame:
    """Readings of one device: (minute after BASE, value), produced 2 s after measurement."""
    ts = [at(minute) for minute, _ in points]
    return pl.DataFrame(
        {
            "device_id": [device_id] * len(points),
            "ts": pl.Series(ts, dtype=pl.Datetime("us", "UTC")),
            "value": [float(value) for _, value in points],
            "seq": pl.Series(range(first_seq, first_seq + len(points)), dtype=pl.Int64),
            "_offset": pl.Series(range(len(points)), dtype=pl.Int64),
            "_partition": [0] * len(points),
            "_kafka_ts": pl.Series([t + timedelta(seconds=2) for t in ts], dtype=pl.Datetime("us", "UTC")),
        }
    )


def every_minute(values: list[float], start: float = 0, step: float = 1) -> list[tuple[float, float]]:
    return [(start + i * step, value) for i, value in enumerate(values)]


def detect(frame: pl.DataFrame, config: IncidentConfig | None = None, **kwargs) -> pl.DataFrame:
    return detect_incidents(frame, registry("WL-1", "WL-2", "WL-3"), config or water_level(), **kwargs)


# --- a plain per-reading state machine, the specification the vectorised detector must match --------------


@dataclass
class _Open:
    start: int
    opened: int
    by: str
    last_not_clear: datetime


def reference(frame: pl.DataFrame, config: IncidentConfig) -> list[dict]:
    """Incidents of one threshold-30 water-level device per reading, the slow obvious way."""
    rule = config.device_types["water_level"]
    rows = sorted(frame.select("ts", "seq", "value").iter_rows())
    clear_below = THRESHOLD - rule.hysteresis_margin
    close_after = timedelta(minutes=rule.close_after_minutes)
    found, current, run_start = [], None, None
    for i, (ts, _, value) in enumerate(rows):
        above = value >= THRESHOLD
        if current is None:
            run_start = (i if run_start is None else run_start) if above else None
            k = rule.rising_trend_readings
            rising = (
                rule.open_on_rising_trend
                and above
                and i >= k - 1
                and all(rows[j][2] < rows[j + 1][2] for j in range(i - k + 1, i))
                and rows[i - 1][2] >= clear_below
            )
            consecutive = above and i - run_start + 1 >= rule.open_after_readings
            if consecutive or rising:
                current = _Open(run_start, i, "consecutive" if consecutive else "rising_trend", ts)
        elif value >= clear_below:
            current.last_not_clear = ts
        elif ts - current.last_not_clear >= close_after:
            found.append((current, current.last_not_clear + close_after))
            current, run_start = None, None
    if current is not None:
        found.append((current, None))
    result = []
    for incident, closed_at in found:
        span = [row for row in rows[incident.start :] if closed_at is None or row[0] <= closed_at]
        peak = max(value for _, _, value in span)
        result.append(
            {
                "opened_at": rows[incident.opened][0],
                "opened_by": incident.by,
                "first_above_at": rows[incident.start][0],
                "last_reading_at": span[-1][0],
                "peak_value": peak,
                "peak_at": next(ts for ts, _, value in span if value == peak),
                "readings": len(span),
                "status": "open" if closed_at is None else "closed",
                "closed_at": closed_at,
            }
        )
    return result


def as_dicts(incidents: pl.DataFrame) -> list[dict]:
    return incidents.select(
        "opened_at",
        "opened_by",
        "first_above_at",
        "last_reading_at",
        "peak_value",
        "peak_at",
        "readings",
        "status",
        "closed_at",
    ).to_dicts()


CONFIGS = {
    "defaults": {},
    "quick": {
        "open_after_readings": 2,
        "rising_trend_readings": 4,
        "close_after_minutes": 10,
        "hysteresis_margin": 0,
    },
    "no_trend": {"open_on_rising_trend": False, "open_after_readings": 1, "close_after_minutes": 0},
}

gaps_and_values = st.lists(
    st.tuples(st.integers(1, 20), st.sampled_from([0, 10, 20, 24, 25, 26, 29, 30, 31, 35, 40, 45, 60])),
    min_size=0,
    max_size=60,
)


@settings(max_examples=120, deadline=None)
@given(points=gaps_and_values, config_name=st.sampled_from(sorted(CONFIGS)), seed=st.integers(0, 2**16))
def test_detector_matches_the_per_reading_state_machine_in_any_order(points, config_name, seed):
    config = water_level(CONFIGS[config_name])
    minute, timeline = 0, []
    for gap, value in points:
        minute += gap
        timeline.append((minute, value))
    frame = readings("WL-1", timeline)
    found = detect(frame, config)
    assert as_dicts(found) == reference(frame, config)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=seed)
    assert detect(shuffled, config).equals(found)


def test_n_consecutive_readings_open_and_n_minus_one_do_not():
    assert detect(readings("WL-1", every_minute([10, 31, 31, 10, 10]))).height == 0
    found = detect(readings("WL-1", every_minute([10, 31, 31, 31, 10])))
    assert found.height == 1
    incident = found.row(0, named=True)
    assert incident["opened_by"] == "consecutive"
    assert incident["opened_at"] == at(3)
    assert incident["first_above_at"] == at(1)
    assert incident["trigger_produced_at"] == at(3) + timedelta(seconds=2)
    assert incident["status"] == "open"
    assert incident["severity"] == "alert"
    assert (
        incident["incident_id"]
        == "WL" + hashlib.sha256(f"WL-1|{at(3).isoformat(timespec='microseconds')}".encode()).hexdigest()[:12]
    )
    assert found.schema == pl.Schema(INCIDENT_SCHEMA)


def test_a_steady_rise_opens_at_once_and_a_spike_does_not():
    rise = detect(readings("WL-1", every_minute([20, 24, 27, 31])))
    assert rise.select("opened_by", "opened_at", "readings").row(0) == ("rising_trend", at(3), 1)
    assert detect(
        readings("WL-1", every_minute([20, 24, 27, 31])), water_level({"open_on_rising_trend": False})
    ).is_empty()
    # strictly increasing into a spike from well below the band: a glitch until 3 readings confirm it
    assert detect(readings("WL-1", every_minute([10, 12, 50, 10, 10]))).is_empty()
    # a rise that stalls at the threshold is no trend
    assert detect(readings("WL-1", every_minute([26, 31, 31, 20]))).is_empty()


def test_oscillating_around_the_threshold_is_one_incident():
    wobble = [31, 31, 31] + [29, 32, 26, 31, 27, 33, 25, 30] * 10
    found = detect(readings("WL-1", every_minute(wobble)))
    assert found.height == 1
    assert found["status"][0] == "open"
    assert found["readings"][0] == len(wobble)
    # short dips below the band (under 30 minutes) keep it open as well
    dips = [31, 31, 31] + ([20] * 20 + [31]) * 4
    found = detect(readings("WL-1", every_minute(dips)))
    assert (found.height, found["status"][0]) == (1, "open")


def test_closes_after_readings_stay_clear_for_the_close_window():
    values = [31, 33, 45, 36, 28] + [20] * 40  # last reading in the band at minute 4
    found = detect(readings("WL-1", every_minute(values)))
    incident = found.row(0, named=True)
    assert incident["status"] == "closed"
    assert incident["closed_at"] == at(4 + 30)
    assert incident["last_reading_at"] == at(34)
    assert incident["readings"] == 35  # minutes 0..34
    assert (incident["peak_value"], incident["peak_at"], incident["severity"]) == (45.0, at(2), "severe")
    # not yet 30 minutes of clear readings: still open
    still_open = detect(readings("WL-1", every_minute(values[:34])))
    assert still_open["status"].to_list() == ["open"]
    # the device comes back above threshold later: a second incident, its own id
    again = detect(readings("WL-1", every_minute([*values, 31, 31, 31])))
    assert again["status"].to_list() == ["closed", "open"]
    assert again["incident_id"].n_unique() == 2


def test_a_quiet_device_keeps_its_incident_open_and_is_flagged():
    # above, then one clear reading 10 minutes later, then nothing: no evidence for 30 minutes clear
    frame = readings("WL-1", [(0, 31), (1, 31), (2, 35), (12, 10)])
    found = detect(frame, now=at(12 + 60))
    incident = found.row(0, named=True)
    assert incident["status"] == "open"
    assert incident["closed_at"] is None
    assert incident["quiet_since"] == at(12)
    assert detect(frame, now=at(12 + 5))["quiet_since"].to_list() == [None]
    assert detect(frame)["quiet_since"].to_list() == [None]
    # when the device speaks again with a clear reading after the window, the close is proven
    back = detect(pl.concat([frame, readings("WL-1", [(95, 8)], first_seq=10)]), now=at(100))
    assert back.select("status", "closed_at", "quiet_since").row(0) == ("closed", at(2 + 30), None)


TAIL = readings("WL-1", [*every_minute([35] * 11), *every_minute([10] * 9, start=15, step=5)])


def with_late(minute: float, value: float) -> pl.DataFrame:
    return pl.concat([TAIL, readings("WL-1", [(minute, value)], first_seq=100)])


def test_late_readings_after_a_close_are_judged_where_their_ts_puts_them():
    """Above until 08:10, clear readings every 5 minutes 08:15..08:55: closed at 08:40 by the reading at 08:40."""
    closed = detect(TAIL).row(0, named=True)
    assert (closed["status"], closed["closed_at"], closed["readings"]) == ("closed", at(40), 17)
    # a late clear reading inside the clear tail: only counted
    late = detect(with_late(12, 12)).row(0, named=True)
    assert {k: v for k, v in late.items() if k != "readings"} == {k: v for k, v in closed.items() if k != "readings"}
    assert late["readings"] == closed["readings"] + 1
    # a late reading in the band inside the tail: the clear window starts again after it
    assert detect(with_late(17, 28)).select("status", "closed_at").row(0) == ("closed", at(47))
    # ... and reopens the incident when no later clear reading covers the new window
    assert detect(with_late(27, 28)).select("status", "closed_at").row(0) == ("open", None)
    # after the proven close, one late high reading extends nothing and opens nothing
    after = detect(with_late(42, 50))
    assert after.height == 1
    assert after.row(0, named=True) == closed


def test_repeated_readings_count_once_whatever_their_order():
    frame = readings("WL-1", every_minute([31, 31, 31, 10]))
    redelivered = frame.slice(2, 1).with_columns(_kafka_ts=pl.col("_kafka_ts") + pl.duration(minutes=5))
    expected = detect(pl.concat([frame, redelivered]))
    assert detect(pl.concat([redelivered, frame])).equals(expected)
    assert expected.select("readings", "trigger_produced_at").row(0) == (4, at(2) + timedelta(seconds=2))
    assert IncidentTracker(registry("WL-1"), water_level()).add(frame.clear()).changed.is_empty()


def test_trigger_produced_at_is_null_without_kafka_and_other_devices_are_ignored():
    batch = readings("WL-1", every_minute([31, 31, 31])).drop("_kafka_ts")
    assert detect(batch)["trigger_produced_at"].to_list() == [None]
    unknown = readings("XX-9", every_minute([31, 31, 31]))
    assert detect(unknown).is_empty()
    other_metric = readings("WL-1", every_minute([31, 31, 31])).with_columns(metric=pl.lit("rain_mm_10min"))
    assert detect(other_metric).is_empty()
    rain = readings("RG-1", every_minute([31, 31, 31]))
    assert detect_incidents(rain, registry("RG-1", device_type="rain_gauge"), water_level()).is_empty()


def test_another_device_type_is_monitored_by_config():
    rain_gauge = {
        "metric": "rain_mm_10min",
        "incident_prefix": "RG",
        "open_after_readings": 2,
        "open_on_rising_trend": False,
        "rising_trend_readings": 3,
        "close_after_minutes": 60,
        "hysteresis_margin": 2,
        "severe_value": 20,
        "history_hours": 6,
        "quiet_after_minutes": 30,
    }
    config = IncidentConfig.load({"device_types": {"rain_gauge": rain_gauge}})
    found = detect_incidents(
        readings("RG-1", every_minute([5, 12, 12])), registry("RG-1", threshold=10, device_type="rain_gauge"), config
    )
    assert found.select("device_type", "metric", "opened_at").row(0) == ("rain_gauge", "rain_mm_10min", at(2))
    assert found["incident_id"][0].startswith("RG")
    with pytest.raises(ValueError, match=r"rain_gauge lacks .*open_after_readings"):
        IncidentConfig.load({"device_types": {"rain_gauge": {"metric": "rain_mm_10min"}}})


# --- the streaming tracker ------------------------------------------------------------------------------


def flood_series(device_id: str, hours: int, rng: random.Random) -> pl.DataFrame:
    """A reading a minute: low water with noise, a few floods rising through the threshold and draining."""
    values, level, flood_left = [], 10.0, 0
    for _ in range(hours * 60):
        if flood_left == 0 and rng.random() < 1 / 150:
            flood_left = rng.randint(20, 90)
        if flood_left:
            level = min(level + rng.uniform(-1, 4), 55)
            flood_left -= 1
        else:
            level = max(level - rng.uniform(0, 3), 8 + rng.uniform(0, 4))
        values.append(round(level + rng.choice([0, 0, 0, 6, -6]), 1))
    return readings(device_id, every_minute(values))


def feed(tracker: IncidentTracker, frame: pl.DataFrame, rng: random.Random, max_late_minutes: int) -> dict[str, dict]:
    """Deliver `frame` in random micro-batches by arrival time (some readings up to max_late_minutes late);
    returns the incidents as reported: the latest row per id, withdrawn ones removed."""
    arrival = [ts + timedelta(minutes=rng.choice([0] * 8 + [rng.uniform(0, max_late_minutes)])) for ts in frame["ts"]]
    delivered = frame.with_columns(arrival=pl.Series(arrival)).sort("arrival").drop("arrival")
    reported: dict[str, dict] = {}
    position = 0
    while position < delivered.height:
        size = rng.randint(1, 400)
        changes = tracker.add(delivered.slice(position, size))
        position += size
        assert changes.refused == 0
        for incident_id in changes.withdrawn:
            del reported[incident_id]
        for row in changes.changed.iter_rows(named=True):
            reported[row["incident_id"]] = row
    return reported


def test_tracker_in_random_micro_batches_equals_the_detector_over_all_readings():
    rng = random.Random(7)
    config = water_level({"history_hours": 1})
    frame = pl.concat([flood_series(device_id, 12, rng) for device_id in ("WL-1", "WL-2", "WL-3")])
    expected = detect(frame, config)
    assert expected["status"].to_list().count("closed") >= 6
    tracker = IncidentTracker(registry("WL-1", "WL-2", "WL-3"), config)
    reported = feed(tracker, frame, rng, max_late_minutes=40)
    got = pl.DataFrame(list(reported.values()), schema={**INCIDENT_SCHEMA, "change": pl.String})
    assert got.select(COMPARED).sort(["device_id", "opened_at"]).equals(expected.select(COMPARED))
    # its memory is about history_hours of readings per device, not the 12 hours fed
    assert tracker.retained_readings < 3 * (60 + 120)
    assert tracker.incidents().height < expected.height


def test_tracker_reports_open_close_reopen_and_withdrawn_ids():
    tracker = IncidentTracker(registry("WL-1"), water_level())
    first = tracker.add(readings("WL-1", [(2, 31), (3, 31), (4, 31)]))
    assert (first.opened, first.closed, first.changed["change"].to_list()) == (1, 0, ["opened"])
    opened_id = first.changed["incident_id"][0]
    # a late reading above just before the run moves the opening: the incident gets a new id
    moved = tracker.add(readings("WL-1", [(1, 31)], first_seq=10))
    assert moved.withdrawn == (opened_id,)
    assert moved.changed.select("change", "opened_at", "first_above_at").row(0) == ("opened", at(3), at(1))
    assert tracker.add(readings("WL-1", [(5, 33)], first_seq=11)).changed["change"].to_list() == ["updated"]
    closing = tracker.add(readings("WL-1", [(20, 10), (40, 10)], first_seq=12))
    assert (closing.closed, closing.changed.select("change", "closed_at").row(0)) == (1, ("closed", at(35)))
    reopened = tracker.add(readings("WL-1", [(30, 28)], first_seq=14))
    assert reopened.changed.select("change", "status").row(0) == ("reopened", "open")
    # nothing new (a repeated reading, a reading of an unknown device): nothing reported
    quiet = tracker.add(pl.concat([readings("WL-1", [(30, 28)], first_seq=14), readings("XX-9", [(30, 50)])]))
    assert (quiet.changed.height, quiet.withdrawn, quiet.ignored) == (0, (), 1)


def test_tracker_load_seeds_without_reporting_and_set_devices_rejudges():
    history = readings("WL-1", every_minute([31, 31, 31, 33]))
    tracker = IncidentTracker(registry("WL-1"), water_level())
    assert tracker.load(history)["status"].to_list() == ["open"]
    assert tracker.add(history).changed.is_empty()
    assert tracker.incidents(now=at(60))["quiet_since"].to_list() == [at(3)]
    raised = tracker.set_devices(registry("WL-1", threshold=40))
    assert raised.changed.is_empty() and len(raised.withdrawn) == 1
    lowered = tracker.set_devices(registry("WL-1", threshold=20))
    assert lowered.changed["opened_at"].to_list() == [at(2)]
    gone = tracker.set_devices(registry("WL-2"))
    assert len(gone.withdrawn) == 1 and tracker.retained_readings == 0


def test_tracker_state_stays_bounded_and_refuses_what_it_cut():
    rng = random.Random(3)
    config = water_level({"history_hours": 2})
    frame = flood_series("WL-1", 72, rng)
    tracker = IncidentTracker(registry("WL-1"), config)
    sizes, closed = [], 0
    for hour in range(72):
        changes = tracker.add(frame.filter(pl.col("ts") >= at(hour * 60), pl.col("ts") < at(hour * 60 + 60)))
        closed += changes.closed
        sizes.append(tracker.retained_readings)
    assert closed >= 5
    # never more than history_hours, the lookback and the longest incident straddling the cut: 72 hours fed
    longest = int(detect(frame, config)["readings"].max())
    assert max(sizes) <= 2 * 60 + 3 + longest < frame.height / 8
    assert tracker.incidents().filter(pl.col("status") == "closed")["closed_at"].min() >= at(72 * 60 - 4 * 60)
    too_late = tracker.add(readings("WL-1", [(30, 50)], first_seq=10**6))
    assert (too_late.refused, too_late.changed.height) == (1, 0)


# --- early warnings -------------------------------------------------------------------------------------


def risk(rows: list[dict]) -> pl.DataFrame:
    defaults = {
        "grid_name": "网格",
        "community_code": "440605001001",
        "street_code": "440605001",
        "district_code": "440605",
        "center_lon": 113.1,
        "center_lat": 23.0,
        "nearest_pump_id": "P1",
        "nearest_pump_distance_m": 300.0,
        "history_events": 5,
        "recent_events": 0,
        "forecast_issued_at": datetime(2026, 7, 1, 2, 0, tzinfo=UTC),
        "max_warning_level": None,
        "risk_score": 40,
        "risk_level": "medium",
        "as_of_date": "2026-07-01",
    }
    return pl.DataFrame([{**defaults, **row} for row in rows])


GRIDS = risk(
    [
        {"grid_code": "440605001001001", "rain_next_24h_mm": 62.0, "history_days_with_events": 3},
        {
            "grid_code": "440605001001002",
            "rain_next_24h_mm": 10.0,
            "max_warning_level": "orange",
            "history_days_with_events": 1,
            "risk_score": 55,
        },
        {"grid_code": "440605001001003", "rain_next_24h_mm": 80.0, "history_days_with_events": 0},
        {
            "grid_code": "440605001001004",
            "rain_next_24h_mm": 10.0,
            "max_warning_level": "yellow",
            "history_days_with_events": 5,
        },
        {
            "grid_code": "440605001001005",
            "rain_next_24h_mm": 90.0,
            "history_days_with_events": 2,
            "forecast_issued_at": None,
        },
        {
            "grid_code": "440605001001006",
            "rain_next_24h_mm": 50.0,
            "history_days_with_events": 1,
            "risk_level": "low",
            "risk_score": 20,
        },
    ]
)


def test_early_warnings_need_the_forecast_level_and_a_flooding_history():
    warned = early_warnings(GRIDS, IncidentConfig.load())
    assert warned.schema == pl.Schema(WARNING_SCHEMA)
    assert warned["grid_code"].to_list() == ["440605001001002", "440605001001001", "440605001001006"]
    assert warned["reason"].to_list() == [
        "预报24小时降雨 10.0 mm (橙色预警), 近一年 1 天发生内涝",
        "预报24小时降雨 62.0 mm, 近一年 3 天发生内涝",
        "预报24小时降雨 50.0 mm, 近一年 1 天发生内涝",
    ]
    assert warned.select("lon", "lat").row(0) == (113.1, 23.0)
    again = early_warnings(GRIDS.reverse(), IncidentConfig.load())
    assert again["warning_id"].to_list() == warned["warning_id"].to_list()
    issued = "2026-07-01T02:00:00.000000+00:00"
    assert warned["warning_id"][1] == "EW" + hashlib.sha256(f"440605001001001|{issued}".encode()).hexdigest()[:12]
    reissued = early_warnings(
        GRIDS.with_columns(forecast_issued_at=pl.col("forecast_issued_at") + pl.duration(hours=6))
    )
    assert set(reissued["warning_id"]).isdisjoint(warned["warning_id"])
    strict = IncidentConfig.load(
        {"early_warning": {"min_risk_level": "medium", "min_history_days": 2, "warning_levels": ["red"]}}
    )
    assert early_warnings(GRIDS, strict)["grid_code"].to_list() == ["440605001001001"]


# --- settings -------------------------------------------------------------------------------------------


def test_district_config_file_overrides_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    defaults = IncidentConfig.load().device_types["water_level"]
    assert (defaults.open_after_readings, defaults.close_after_minutes, defaults.hysteresis_margin) == (3, 30, 5)
    override = tmp_path / "district.yaml"
    override.write_text(
        "emergency:\n  device_types:\n    water_level:\n      close_after_minutes: 10\n      open_after_readings: 2\n"
        "  early_warning:\n    min_rain_next_24h_mm: 30\n",
        encoding="utf-8",
    )
    monkeypatch.setenv(ENV_VAR, str(override))
    config = IncidentConfig.load()
    rule = config.device_types["water_level"]
    assert (rule.close_after_minutes, rule.open_after_readings, rule.hysteresis_margin) == (10, 2, 5)
    assert config.early_warning.min_rain_next_24h_mm == 30
    assert detect_incidents(readings("WL-1", every_minute([31, 31])), registry("WL-1"))["opened_at"].to_list() == [
        at(1)
    ]
    override.write_text(
        "emergency:\n  device_types:\n    water_level:\n      close_after_minutse: 10\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"emergency\.device_types\.water_level\.close_after_minutse is not a known"):
        IncidentConfig.load()
    override.write_text(
        "emergency:\n  device_types:\n    water_levle:\n      close_after_minutes: 10\n", encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"water_levle is not a known setting"):
        IncidentConfig.load()
    override.write_text("emergency:\n  device_types:\n    water_level: null\n", encoding="utf-8")
    assert detect_incidents(readings("WL-1", every_minute([31, 31, 31])), registry("WL-1")).is_empty()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"device_types": {"water_level": {"close_after_minutes": -5}}},
            r"close_after_minutes must be a number >= 0, got -5",
        ),
        ({"device_types": {"water_level": {"open_after_readings": 0}}}, r"open_after_readings must be an integer >= 1"),
        (
            {"device_types": {"water_level": {"rising_trend_readings": 1}}},
            r"rising_trend_readings must be an integer >= 2",
        ),
        ({"device_types": {"water_level": {"hysteresis_margin": "5"}}}, r"hysteresis_margin must be a number"),
        (
            {"device_types": {"water_level": {"open_on_rising_trend": "yes"}}},
            r"open_on_rising_trend must be true or false",
        ),
        ({"device_types": {"water_level": {"metric": "depth"}}}, r"water_level\.metric is 'depth'"),
        ({"device_types": {"pump": {"metric": "x"}}}, r"emergency\.device_types\.pump is not a known setting"),
        ({"early_warning": {"warning_levels": ["purple"]}}, r"warning_levels is \['purple'\]"),
        ({"early_warning": {"min_risk_level": "extreme"}}, r"min_risk_level is 'extreme'"),
        ({"early_warning": {"min_rain_next_24h_mm": -1}}, r"min_rain_next_24h_mm must be a number >= 0"),
    ],
)
def test_invalid_settings_are_one_line_errors(overrides: dict, message: str):
    with pytest.raises(ValueError, match=message) as raised:
        IncidentConfig.load(overrides)
    assert "\n" not in str(raised.value)


def test_the_registry_key_must_be_unique():
    with pytest.raises(ValueError, match="device_id 'WL-1' more than once"):
        detect_incidents(readings("WL-1", every_minute([31])), registry("WL-1", "WL-1"), water_level())
