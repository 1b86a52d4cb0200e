"""Incidents from IoT sensor readings: a hysteresis state machine per device, vectorised.

Semantics (per device, over its readings ordered by ts, ties by seq; settings of its device type):

- *above*: value >= the device's alert_threshold. *clear*: value < alert_threshold - hysteresis_margin.
  Between the two is the hysteresis band: it neither opens nor closes anything.
- **Opening** (no incident open): at the reading that completes open_after_readings consecutive readings
  above (`opened_by = 'consecutive'`), or, with open_on_rising_trend, at a reading above that ends
  rising_trend_readings strictly increasing readings whose previous one is already in the band or above
  (`'rising_trend'`: a steady rise through the threshold; a lone spike from well below needs the
  consecutive readings). `first_above_at` is the first reading of that run above the threshold.
- **Closing**: at the first reading that is clear and at least close_after_minutes after the last reading
  that was not clear (every reading in between is clear, by definition of "last"). `closed_at` = that
  last not-clear reading + close_after_minutes. A dip into the band, or a short dip below it, closes
  nothing, so a level oscillating around the threshold is one incident, not a flapping series.
- **No evidence, no closing**: a device that goes quiet keeps its incident open however long it stays
  quiet; with `now`, `quiet_since` flags an open incident whose last reading is older than
  quiet_after_minutes, so that someone checks the sensor.
- The span of an incident is its readings from `first_above_at` to `closed_at` (to the device's last
  reading while open): `readings`, `peak_value`, `peak_at` (first reading at the peak) and
  `last_reading_at` are over that span.
- **Late readings**: the result is a pure function of the *set* of readings (order of arrival, batch
  boundaries and duplicates of (device_id, ts, seq) change nothing). A late reading is judged where its ts
  puts it: a clear one inside a closed incident's clear tail changes nothing; one at or above the band
  there moves `closed_at` to its ts + close_after_minutes if a later clear reading still covers that, and
  reopens the incident otherwise; one above threshold just before a run can open the incident earlier,
  which gives it another id (the id is the device and the opening reading's ts). After the reading that
  proved a close, a late reading belongs to what follows the incident: it cannot extend or reopen it.
  `IncidentTracker` judges late readings the same way, back to history_hours before the device's newest
  reading; it refuses older ones.

`incident_id` = incident_prefix + the first 12 hex digits of sha256(f"{device_id}|{iso}"), iso being
opened_at in UTC as `isoformat(timespec="microseconds")` (2026-07-01T08:03:00.000000+00:00), so a re-run,
a replay or the batch platform give the streaming consumer's ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from thematic_libs.emergency.settings import IncidentConfig

TS = pl.Datetime("us", "UTC")

INCIDENT_SCHEMA: dict[str, pl.DataType] = {
    "incident_id": pl.String(),
    "device_id": pl.String(),
    "device_type": pl.String(),
    "metric": pl.String(),
    "grid_code": pl.String(),
    "lon": pl.Float64(),
    "lat": pl.Float64(),
    "location_name": pl.String(),
    "threshold": pl.Float64(),
    "opened_at": TS,
    "opened_by": pl.String(),  # consecutive | rising_trend
    "first_above_at": TS,
    "last_reading_at": TS,
    "peak_value": pl.Float64(),
    "peak_at": TS,
    "readings": pl.Int64(),
    "status": pl.String(),  # open | closed
    "closed_at": TS,
    "severity": pl.String(),  # severe | alert
    "trigger_produced_at": TS,  # _kafka_ts of the opening reading
    "quiet_since": TS,  # last_reading_at of an open incident whose device is quiet at `now`
}

# Columns of a reading the detector uses (and the tracker keeps).
_READING_SCHEMA: dict[str, pl.DataType] = {
    "device_id": pl.String(),
    "ts": TS,
    "seq": pl.Int64(),
    "value": pl.Float64(),
    "_kafka_ts": TS,
}
_DEVICE_COLUMNS = ("device_id", "device_type", "grid_code", "lon", "lat", "metric", "alert_threshold")
_MICROS_PER_MINUTE = 60_000_000


def _utc(column: str, frame: pl.DataFrame) -> pl.Expr:
    """`column` as Datetime(us, UTC): an aware timestamp converted, a naive one taken to be UTC."""
    dtype = frame.schema[column]
    if not isinstance(dtype, pl.Datetime):
        raise ValueError(f"readings.{column} must be a timestamp, got {dtype}")
    expr = pl.col(column)
    expr = expr.dt.replace_time_zone("UTC") if dtype.time_zone is None else expr.dt.convert_time_zone("UTC")
    return expr.dt.cast_time_unit("us")


def _conform_readings(readings: pl.DataFrame) -> pl.DataFrame:
    """The reading columns the detector needs, typed; rows that cannot be judged (nulls, NaN) dropped."""
    missing = [name for name in ("device_id", "ts", "value", "seq") if name not in readings.columns]
    if missing:
        raise ValueError(f"readings lack the column(s) {', '.join(missing)}")
    columns = [
        pl.col("device_id").cast(pl.String),
        _utc("ts", readings).alias("ts"),
        pl.col("seq").cast(pl.Int64),
        pl.col("value").cast(pl.Float64),
        _utc("_kafka_ts", readings).alias("_kafka_ts")
        if "_kafka_ts" in readings.columns and readings.schema["_kafka_ts"] != pl.Null
        else pl.lit(None, TS).alias("_kafka_ts"),
    ]
    if "metric" in readings.columns:
        columns.append(pl.col("metric").cast(pl.String))
    required = pl.all_horizontal(pl.col(name).is_not_null() for name in ("device_id", "ts", "seq", "value"))
    return readings.select(columns).filter(required & pl.col("value").is_finite())


def _rules_frame(config: IncidentConfig) -> pl.DataFrame:
    rows = [
        {
            "device_type": rule.device_type,
            "metric": rule.metric,
            "prefix": rule.incident_prefix,
            "open_n": rule.open_after_readings,
            "rising_k": rule.rising_trend_readings if rule.open_on_rising_trend else 0,
            "margin": rule.hysteresis_margin,
            "severe_value": rule.severe_value,
            "close_us": round(rule.close_after_minutes * _MICROS_PER_MINUTE),
            "quiet_us": round(rule.quiet_after_minutes * _MICROS_PER_MINUTE),
            "history_us": round(rule.history_hours * 60 * _MICROS_PER_MINUTE),
            "lookback": rule.lookback_readings,
        }
        for rule in config.device_types.values()
    ]
    schema = {
        "device_type": pl.String,
        "metric": pl.String,
        "prefix": pl.String,
        "open_n": pl.Int64,
        "rising_k": pl.Int64,
        "margin": pl.Float64,
        "severe_value": pl.Float64,
        "close_us": pl.Int64,
        "quiet_us": pl.Int64,
        "history_us": pl.Int64,
        "lookback": pl.Int64,
    }
    return pl.DataFrame(rows, schema=schema)


def monitored_devices(devices: pl.DataFrame, config: IncidentConfig) -> pl.DataFrame:
    """Registry rows the detector judges: a configured device type reporting the configured metric, with a
    finite threshold; with the settings of the type, in device_id order, numbered `_dev`.

    Every status is judged: the registry is a daily snapshot, and a reading is better evidence than it
    that a device works.
    """
    missing = [name for name in _DEVICE_COLUMNS if name not in devices.columns]
    if missing:
        raise ValueError(f"devices lack the column(s) {', '.join(missing)}")
    if devices["device_id"].is_duplicated().any():
        duplicated = devices.filter(pl.col("device_id").is_duplicated())["device_id"].unique().sort()[0]
        raise ValueError(f"devices list device_id {duplicated!r} more than once; the registry key is device_id")
    location = (
        pl.col("location_name").cast(pl.String) if "location_name" in devices.columns else pl.lit(None, pl.String)
    )
    registry = devices.select(
        pl.col("device_id").cast(pl.String),
        pl.col("device_type").cast(pl.String),
        pl.col("grid_code").cast(pl.String),
        pl.col("lon").cast(pl.Float64),
        pl.col("lat").cast(pl.Float64),
        location.alias("location_name"),
        pl.col("metric").cast(pl.String),
        pl.col("alert_threshold").cast(pl.Float64).alias("threshold"),
    )
    return (
        registry.join(_rules_frame(config), on=["device_type", "metric"], how="inner")
        .filter(pl.col("threshold").is_finite())
        .sort("device_id")
        .with_row_index("_dev")
    )


def _prepare(readings: pl.DataFrame, monitored: pl.DataFrame) -> pl.DataFrame:
    """Readings of monitored devices (of their metric, when readings say it) with their device's settings,
    sorted by device, ts, seq, and without repeated (device_id, ts, seq)."""
    settings = monitored.select("device_id", "_dev", "metric", "threshold", "margin", "open_n", "rising_k", "close_us")
    joined = readings.join(settings, on="device_id", how="inner", suffix="_device")
    if "metric_device" in joined.columns:
        joined = joined.filter(pl.col("metric").is_null() | (pl.col("metric") == pl.col("metric_device")))
    ordered = joined.select(*_READING_SCHEMA, "_dev", "threshold", "margin", "open_n", "rising_k", "close_us").sort(
        ["_dev", "ts", "seq"]
    )
    repeat = _repeats(ordered)
    if repeat.any():
        # Which copy of a repeated reading is kept must not depend on the input order.
        ordered = ordered.sort(["_dev", "ts", "seq", "value", "_kafka_ts"], nulls_last=True)
        ordered = ordered.filter(pl.Series(~_repeats(ordered)))
    return ordered


def _repeats(ordered: pl.DataFrame) -> np.ndarray:
    """Rows repeating the (device, ts, seq) of the row before."""
    dev = ordered["_dev"].to_numpy()
    ts = ordered["ts"].dt.epoch("us").to_numpy()
    seq = ordered["seq"].to_numpy()
    repeat = np.zeros(ordered.height, dtype=bool)
    repeat[1:] = (dev[1:] == dev[:-1]) & (ts[1:] == ts[:-1]) & (seq[1:] == seq[:-1])
    return repeat


def _next_true(flag: np.ndarray) -> np.ndarray:
    """For each position i (and len(flag)), the first position >= i where flag holds; len(flag) if none."""
    n = flag.size
    positions = np.where(flag, np.arange(n), n)
    return np.append(np.minimum.accumulate(positions[::-1])[::-1], n)


@dataclass(frozen=True)
class _Analysis:
    """The state machine run over prepared readings: per-row flags and per-incident row positions."""

    dev: np.ndarray  # per row: `_dev`, the device's number in the monitored registry
    starts: np.ndarray  # per device present: its first row
    group: np.ndarray  # per row: index of its device in `starts`
    dev_start: np.ndarray  # per row: first row of its device
    dev_end: np.ndarray  # per row: one past the last row of its device
    ts: np.ndarray  # per row, microseconds
    above: np.ndarray  # per row
    start: np.ndarray  # per incident: first reading of the run above threshold
    opened: np.ndarray  # per incident: opening reading
    closing: np.ndarray  # per incident: reading that proved the close; -1 while open
    last: np.ndarray  # per incident: last reading of the span
    closed_at: np.ndarray  # per incident, microseconds; 0 while open
    by_consecutive: np.ndarray  # per incident: opened by the consecutive rule

    def span_end(self) -> np.ndarray:
        """Per incident, the last row the incident depends on: the closing reading, or the device's last."""
        return np.where(self.closing >= 0, self.closing, self.dev_end[self.opened] - 1)


def _analyse(prepared: pl.DataFrame) -> _Analysis:
    """Run the state machine. Open and close conditions are per-reading flags computed for all readings at
    once; the machine then only hops from an opening to the next close to the next opening, so the Python
    loop runs once per incident of the busiest device, for all devices together."""
    n = prepared.height
    idx = np.arange(n)
    dev = prepared["_dev"].to_numpy()
    ts = prepared["ts"].dt.epoch("us").to_numpy()
    value = prepared["value"].to_numpy()
    threshold = prepared["threshold"].to_numpy()
    clear_below = threshold - prepared["margin"].to_numpy()
    close_us = prepared["close_us"].to_numpy()
    new_dev = np.ones(n, dtype=bool)
    new_dev[1:] = dev[1:] != dev[:-1]
    starts = np.flatnonzero(new_dev)
    ends = np.append(starts[1:], n)
    group = np.cumsum(new_dev) - 1
    dev_start, dev_end = starts[group], ends[group]

    above = value >= threshold
    not_clear = value >= clear_below
    run_start = np.maximum(np.maximum.accumulate(np.where(above, -1, idx)) + 1, dev_start)
    consecutive = above & (idx - run_start + 1 >= prepared["open_n"].to_numpy())
    rising_step = np.zeros(n, dtype=bool)
    rising_step[1:] = (value[1:] > value[:-1]) & ~new_dev[1:]
    rising_steps = idx - np.maximum.accumulate(np.where(rising_step, -1, idx))
    previous_not_clear = np.zeros(n, dtype=bool)
    previous_not_clear[1:] = not_clear[:-1] & ~new_dev[1:]
    rising_k = prepared["rising_k"].to_numpy()
    rising = above & (rising_k > 0) & (rising_steps >= rising_k - 1) & previous_not_clear

    last_not_clear = np.maximum.accumulate(np.where(not_clear, idx, -1))
    last_not_clear_ts = ts[np.maximum(last_not_clear, 0)]
    proves_close = ~not_clear & (last_not_clear >= dev_start) & (ts - last_not_clear_ts >= close_us)
    next_open, next_close = _next_true(consecutive | rising), _next_true(proves_close)

    opened_parts, closing_parts = [], []
    position, end = starts, ends
    while position.size:
        opening = next_open[position]
        alive = opening < end
        opening, end = opening[alive], end[alive]
        if not opening.size:
            break
        closing = next_close[opening + 1]
        shut = closing < end
        opened_parts.append(opening)
        closing_parts.append(np.where(shut, closing, -1))
        position, end = closing[shut] + 1, end[shut]
    opened = np.concatenate(opened_parts) if opened_parts else np.zeros(0, dtype=np.int64)
    closing = np.concatenate(closing_parts) if closing_parts else np.zeros(0, dtype=np.int64)
    order = np.argsort(opened, kind="stable")
    opened, closing = opened[order], closing[order]

    shut = closing >= 0
    proof = np.where(shut, closing, 0)
    closed_at = np.where(shut, last_not_clear_ts[proof] + close_us[proof], 0)
    # Readings between the last not-clear one and the proof all precede closed_at, else an earlier one
    # would have been the proof; the proof itself belongs to the span only when it falls on closed_at.
    last = np.where(shut, np.where(ts[proof] == closed_at, proof, proof - 1), dev_end[opened] - 1)
    return _Analysis(
        dev=dev,
        starts=starts,
        group=group,
        dev_start=dev_start,
        dev_end=dev_end,
        ts=ts,
        above=above,
        start=run_start[opened],
        opened=opened,
        closing=closing,
        last=last,
        closed_at=closed_at,
        by_consecutive=consecutive[opened],
    )


ISO_UTC = "%Y-%m-%dT%H:%M:%S%.6f+00:00"  # isoformat(timespec="microseconds") of a UTC timestamp


def _incident_id(prefix: str, device_id: str, opened_at_iso: str) -> str:
    digest = hashlib.sha256(f"{device_id}|{opened_at_iso}".encode()).hexdigest()
    return f"{prefix}{digest[:12]}"


def _empty_incidents() -> pl.DataFrame:
    return pl.DataFrame(schema=INCIDENT_SCHEMA)


def _incidents(
    prepared: pl.DataFrame, analysis: _Analysis, monitored: pl.DataFrame, now: datetime | None
) -> pl.DataFrame:
    """The incidents of an analysis as rows of INCIDENT_SCHEMA, in device_id, opened_at order."""
    count = analysis.opened.size
    if count == 0:
        return _empty_incidents()
    start, last, opened = analysis.start, analysis.last, analysis.opened
    value = np.append(prepared["value"].to_numpy(), -np.inf)
    bounds = np.empty(2 * count, dtype=np.int64)
    bounds[0::2], bounds[1::2] = start, last + 1
    peak = np.maximum.reduceat(value, bounds)[0::2]
    rows = np.arange(value.size - 1)
    marks = np.zeros(rows.size, dtype=np.int64)
    marks[start] = 1
    segment = np.maximum(np.cumsum(marks) - 1, 0)  # the last incident starting at or before the row
    at_peak = (rows >= start[segment]) & (rows <= last[segment]) & (value[:-1] == peak[segment])
    peak_row = np.minimum.reduceat(np.append(np.where(at_peak, rows, rows.size), rows.size), bounds)[0::2]
    shut = analysis.closing >= 0
    ts = prepared["ts"]
    frame = pl.DataFrame(
        {
            "_dev": prepared["_dev"].gather(opened),
            "opened_at": ts.gather(opened),
            "opened_by": np.where(analysis.by_consecutive, "consecutive", "rising_trend"),
            "first_above_at": ts.gather(start),
            "last_reading_at": ts.gather(last),
            "peak_value": peak,
            "peak_at": ts.gather(peak_row),
            "readings": (last - start + 1).astype(np.int64),
            "status": np.where(shut, "closed", "open"),
            "closed_at": pl.Series(analysis.closed_at).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "trigger_produced_at": prepared["_kafka_ts"].gather(opened),
        }
    ).with_columns(pl.when(pl.col("status") == "closed").then(pl.col("closed_at")).alias("closed_at"))
    frame = frame.join(monitored, on="_dev", how="left")
    opened_iso = frame["opened_at"].dt.to_string(ISO_UTC)
    ids = [
        _incident_id(prefix, device_id, iso)
        for prefix, device_id, iso in zip(frame["prefix"], frame["device_id"], opened_iso, strict=True)
    ]
    quiet = pl.lit(None, TS)
    if now is not None:
        now_us = pl.lit(now).cast(TS)
        stale = (now_us - pl.col("last_reading_at")).dt.total_microseconds() > pl.col("quiet_us")
        quiet = pl.when((pl.col("status") == "open") & stale).then(pl.col("last_reading_at"))
    return frame.with_columns(
        pl.Series("incident_id", ids, pl.String),
        pl.when(pl.col("peak_value") >= pl.col("severe_value"))
        .then(pl.lit("severe"))
        .otherwise(pl.lit("alert"))
        .alias("severity"),
        quiet.alias("quiet_since"),
    ).select([pl.col(name).cast(dtype) for name, dtype in INCIDENT_SCHEMA.items()])


def detect_incidents(
    readings: pl.DataFrame,
    devices: pl.DataFrame,
    config: IncidentConfig | None = None,
    *,
    now: datetime | None = None,
) -> pl.DataFrame:
    """Incidents (INCIDENT_SCHEMA, one row each, by device_id and opened_at) in a set of readings.

    `readings`: device_id, ts, value, seq, optionally _kafka_ts (gives trigger_produced_at) and metric
    (a reading of another metric than its device's is not judged); other columns are ignored. `devices`:
    the yingji.sensor_devices registry; devices without a configured type are not judged. `now` only
    sets `quiet_since`. Semantics in the module docstring; a pure function of the set of readings.
    """
    config = config or IncidentConfig.load()
    monitored = monitored_devices(devices, config)
    prepared = _prepare(_conform_readings(readings), monitored)
    if prepared.height == 0:
        return _empty_incidents()
    return _incidents(prepared, _analyse(prepared), monitored, now)


@dataclass(frozen=True)
class IncidentChanges:
    """What one `add` (or `set_devices`) changed in the incidents the tracker has reported.

    `changed`: INCIDENT_SCHEMA plus `change`: opened (an id not reported before, whatever its status),
    closed, reopened (a late reading undid the close) or updated (peak, readings, last reading, ...).
    `withdrawn`: ids reported before that no longer exist: a late reading moved the opening (the
    incident comes back under its new id in `changed`), or the device left the registry.
    `opened` / `closed`: rows of `changed` that are new ids / now closed (a new id may be both).
    `refused`: readings at or before their device's sealed point (older than history_hours before its
    newest reading), which can no longer be judged. `ignored`: readings not judged: of a device (or metric)
    not monitored, without a value, or repeating a (device_id, ts, seq) of the same batch.
    """

    changed: pl.DataFrame
    withdrawn: tuple[str, ...]
    opened: int
    closed: int
    refused: int = 0
    ignored: int = 0


_COMPARED = [name for name in INCIDENT_SCHEMA if name not in ("incident_id", "quiet_since")]


def _diff(before: pl.DataFrame, after: pl.DataFrame) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """Rows of `after` that are new or differ from `before` (with `change`), and the ids gone."""
    withdrawn = before.join(after.select("incident_id"), on="incident_id", how="anti")["incident_id"].sort()
    old = before.select("incident_id", *[pl.col(name).alias(f"{name}__old") for name in _COMPARED])
    joined = after.join(old, on="incident_id", how="left")
    known = pl.col("status__old").is_not_null()
    same = pl.all_horizontal(pl.col(name).eq_missing(pl.col(f"{name}__old")) for name in _COMPARED)
    change = (
        pl.when(~known)
        .then(pl.lit("opened"))
        .when((pl.col("status") == "closed") & (pl.col("status__old") == "open"))
        .then(pl.lit("closed"))
        .when((pl.col("status") == "open") & (pl.col("status__old") == "closed"))
        .then(pl.lit("reopened"))
        .otherwise(pl.lit("updated"))
    )
    changed = joined.filter(~known | ~same).with_columns(change.alias("change")).select(*INCIDENT_SCHEMA, "change")
    return changed, tuple(withdrawn.to_list())


def _changes(changed: pl.DataFrame, withdrawn: tuple[str, ...], refused: int, ignored: int) -> IncidentChanges:
    return IncidentChanges(
        changed=changed,
        withdrawn=withdrawn,
        opened=int((changed["change"] == "opened").sum()),
        closed=int(((changed["status"] == "closed") & (changed["change"] != "updated")).sum()),
        refused=refused,
        ignored=ignored,
    )


class IncidentTracker:
    """`detect_incidents` for the streaming consumer: feed it micro-batches, get what changed.

    It keeps the readings of each monitored device and, after each `add`, re-runs the detector over the
    devices the batch touched only, and reports the difference with what it reported before. Applied in
    order, its reports give exactly the incidents `detect_incidents` gives over every reading it accepted
    (a test checks this for random micro-batches with late readings), however the readings were batched.

    Bounded memory: after each run a device's readings are cut at the latest point where nothing before
    can matter any more: before it only closed incidents (already reported, then forgotten), and the
    rising_trend_readings - 1 readings kept just before the cut are below threshold and outside every
    incident. The cut never passes history_hours before the device's newest reading, and never enters an
    open incident. So a device keeps about history_hours of readings, plus those of its open incident
    (a sensor stuck above threshold for days keeps its days), plus a few; a device that stops sending
    keeps what it had. The last reading kept before the cut is the device's sealed point: a later reading
    older than it is refused (counted in `refused`), since judging it would need the readings dropped.
    Devices removed by `set_devices` are dropped with their readings.
    """

    def __init__(self, devices: pl.DataFrame, config: IncidentConfig | None = None) -> None:
        self._config = config or IncidentConfig.load()
        self._monitored = monitored_devices(devices, self._config)
        self._history = pl.DataFrame(schema=_READING_SCHEMA)
        self._sealed = pl.DataFrame(schema={"device_id": pl.String, "sealed_ts": TS, "sealed_seq": pl.Int64})
        self._known = _empty_incidents()

    @property
    def retained_readings(self) -> int:
        """Readings held in memory, all devices together."""
        return self._history.height

    def incidents(self, now: datetime | None = None) -> pl.DataFrame:
        """The incidents of the readings held (closed ones are forgotten once their readings are cut);
        with `now`, open ones of quiet devices have `quiet_since`."""
        known = self._known.sort(["device_id", "opened_at"])
        if now is None:
            return known
        quiet_us = self._monitored.select("device_id", "quiet_us")
        stale = (pl.lit(now).cast(TS) - pl.col("last_reading_at")).dt.total_microseconds() > pl.col("quiet_us")
        return (
            known.join(quiet_us, on="device_id", how="left")
            .with_columns(
                pl.when((pl.col("status") == "open") & stale).then(pl.col("last_reading_at")).alias("quiet_since")
            )
            .select(list(INCIDENT_SCHEMA))
        )

    def load(self, history: pl.DataFrame) -> pl.DataFrame:
        """Seed the tracker from stored readings (on start), reporting nothing; returns its incidents."""
        self._ingest(history, now=None)
        return self.incidents()

    def add(self, readings: pl.DataFrame, now: datetime | None = None) -> IncidentChanges:
        """Take a micro-batch of readings; the incidents that are new or changed since the last report."""
        return self._ingest(readings, now=now)

    def set_devices(self, devices: pl.DataFrame) -> IncidentChanges:
        """Replace the registry: readings are re-judged against the new thresholds and types (those already
        cut stay as they were reported); incidents of devices no longer monitored are withdrawn."""
        self._monitored = monitored_devices(devices, self._config)
        kept = self._monitored.select("device_id")
        self._history = self._history.join(kept, on="device_id", how="semi")
        self._sealed = self._sealed.join(kept, on="device_id", how="semi")
        before, self._known = self._known, _empty_incidents()
        self._run(self._history["device_id"].unique(), now=None)
        changed, withdrawn = _diff(before, self._known)
        return _changes(changed, withdrawn, refused=0, ignored=0)

    def _ingest(self, readings: pl.DataFrame, now: datetime | None) -> IncidentChanges:
        conformed = _conform_readings(readings)
        judged = _prepare(conformed, self._monitored).select(list(_READING_SCHEMA))
        ignored = readings.height - judged.height
        sealed = judged.join(self._sealed, on="device_id", how="left")
        late = pl.col("sealed_ts").is_not_null() & (
            (pl.col("ts") < pl.col("sealed_ts"))
            | ((pl.col("ts") == pl.col("sealed_ts")) & (pl.col("seq") <= pl.col("sealed_seq")))
        )
        fresh = sealed.filter(~late).select(list(_READING_SCHEMA))
        fresh = fresh.join(self._history, on=["device_id", "ts", "seq"], how="anti")
        refused = judged.height - sealed.filter(~late).height
        self._history = pl.concat([self._history, fresh])
        touched = fresh["device_id"].unique()
        before = self._known.filter(pl.col("device_id").is_in(touched.implode()))
        after = self._run(touched, now)
        changed, withdrawn = _diff(before, after)
        return _changes(changed, withdrawn, refused=refused, ignored=ignored)

    def _run(self, touched: pl.Series, now: datetime | None) -> pl.DataFrame:
        """Re-detect the touched devices, remember their incidents, cut their history; returns the incidents
        as detected (before the cut forgets the oldest closed ones)."""
        if touched.len() == 0:
            return _empty_incidents()
        in_touched = pl.col("device_id").is_in(touched.implode())
        prepared = _prepare(self._history.filter(in_touched), self._monitored)
        analysis = _analyse(prepared)
        found = _incidents(prepared, analysis, self._monitored, now)
        keep_rows, keep_incidents, sealed = self._cut(prepared, analysis)
        self._history = pl.concat(
            [self._history.filter(~in_touched), prepared.filter(pl.Series(keep_rows)).select(list(_READING_SCHEMA))]
        )
        self._known = pl.concat(
            [
                self._known.filter(~in_touched),
                found.filter(pl.Series(keep_incidents)).with_columns(pl.lit(None, TS).alias("quiet_since")),
            ]
        )
        self._sealed = pl.concat([self._sealed.join(sealed.select("device_id"), on="device_id", how="anti"), sealed])
        return found

    def _cut(self, prepared: pl.DataFrame, analysis: _Analysis) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
        """Per device, where to cut its readings (see the class docstring): rows to keep, incidents to keep,
        and the new sealed points."""
        n = prepared.height
        idx = np.arange(n)
        in_span = np.zeros(n + 1, dtype=np.int64)
        np.add.at(in_span, analysis.start, 1)
        np.add.at(in_span, analysis.span_end() + 1, -1)
        free = ~analysis.above & (np.cumsum(in_span)[:n] == 0)
        free_run = idx - np.maximum(np.maximum.accumulate(np.where(free, -1, idx)), analysis.dev_start - 1)
        lookback = self._monitored["lookback"].to_numpy()[analysis.dev]
        history_us = self._monitored["history_us"].to_numpy()[analysis.dev]
        newest = analysis.ts[analysis.dev_end - 1]
        sealable = free & (free_run >= lookback) & (analysis.ts < newest - history_us)
        starts = analysis.starts
        seal = np.maximum.reduceat(np.where(sealable, idx, -1), starts)
        has_seal = seal >= starts
        first_kept = np.where(has_seal, seal - lookback[np.maximum(seal, 0)] + 1, starts)
        keep_rows = idx >= first_kept[analysis.group]
        keep_incidents = keep_rows[analysis.start] if analysis.start.size else np.zeros(0, dtype=bool)
        sealed_rows = seal[has_seal]
        sealed = prepared[sealed_rows].select(
            "device_id", pl.col("ts").alias("sealed_ts"), pl.col("seq").alias("sealed_seq")
        )
        return keep_rows, keep_incidents, sealed
