"""Video events: at least K event-class detections on one camera within W minutes, then a cooldown.

The rule of each algorithm is data (ml/algorithms.yaml `event_rule`: min_detections K, window_minutes W,
cooldown_minutes C; its classes say which are event classes). For one camera and algorithm, with its event-class
detections at or above the algorithm's score threshold in time order:

- a detection *triggers* when the detections in the closed window [t - W, t] number at least K (the detections
  of one frame share its capture time, so one frame with K objects is enough);
- the first trigger raises an event; a later trigger raises the next one only once C minutes have passed since
  the last event's trigger (so one incident seen in many frames is one event, not a stream of them);
- an event holds the detections from its trigger's window start up to its cooldown's end (or up to the trigger
  when C is 0), unless a later event's window starts before them: first/last seen, detections, frames, the best
  score, the frames' URIs as evidence.

A frame scored twice (delivered in batch and on the stream, or scored by two runs) counts once: only its first
scoring is kept. Everything is polars over whole columns; the cooldown is resolved in rounds (one round per
event of the busiest camera), never row by row.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import polars as pl
import pyarrow as pa

from ingestion.warehouse import Warehouse
from thematic_libs.video.detections import read_detections

EVENTS = "gold/video/events"
VIDEO_CAMERAS = "silver/zhengshu/video_cameras"
MAX_EVIDENCE = 10  # frame URIs kept as an event's evidence (the first ones: those that raised it)
EVENT_ID_PREFIX = "VE"
_UTC = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("camera_id", pa.string(), nullable=False),
        pa.field("algorithm", pa.string(), nullable=False),
        pa.field("algorithm_label", pa.string()),  # title_zh of the algorithm
        pa.field("event_code", pa.string()),  # reference/video_algorithm_events.csv
        pa.field("grid_code", pa.string()),  # where the camera stands (silver zhengshu.video_cameras)
        pa.field("lon", pa.float64()),
        pa.field("lat", pa.float64()),
        pa.field("first_seen", _UTC, nullable=False),
        pa.field("last_seen", _UTC, nullable=False),
        pa.field("triggered_at", _UTC, nullable=False),  # capture time of the detection that made it an event
        pa.field("detections", pa.int64(), nullable=False),
        pa.field("frames", pa.int64(), nullable=False),
        pa.field("max_score", pa.float64(), nullable=False),
        pa.field("class_names", pa.string(), nullable=False),  # comma-separated event classes seen
        pa.field("evidence_uris", pa.string(), nullable=False),  # space-separated frame URIs, in time order
        pa.field("model_versions", pa.string(), nullable=False),  # comma-separated model versions
        pa.field("min_detections", pa.int64(), nullable=False),  # the rule that raised it
        pa.field("window_minutes", pa.float64(), nullable=False),
        pa.field("cooldown_minutes", pa.float64(), nullable=False),
    ]
)


@dataclass(frozen=True)
class EventRule:
    """One algorithm's event rule, as the event code applies it."""

    algorithm: str
    event_classes: tuple[str, ...]
    min_detections: int
    window_minutes: float
    cooldown_minutes: float
    score_threshold: float = 0.0
    label: str | None = None


def rules_from_algorithms(names: Sequence[str] | None = None) -> dict[str, EventRule]:
    """The event rules of ml/algorithms.yaml (every algorithm unless `names` are given)."""
    from ml.algorithms import load_algorithms

    algorithms = load_algorithms()
    chosen = names if names is not None else list(algorithms)
    return {
        name: EventRule(
            algorithm=name,
            event_classes=tuple(algorithms[name].event_classes),
            min_detections=algorithms[name].event_rule.min_detections,
            window_minutes=algorithms[name].event_rule.window_minutes,
            cooldown_minutes=algorithms[name].event_rule.cooldown_minutes,
            score_threshold=algorithms[name].score_threshold,
            label=algorithms[name].title_zh,
        )
        for name in chosen
    }


def algorithm_event_codes() -> dict[str, str]:
    """algorithm -> event code (thematic_libs/reference/video_algorithm_events.csv)."""
    from thematic_libs.reference import load_video_algorithm_events

    table = load_video_algorithm_events()
    return dict(zip(table["algorithm_code"].to_pylist(), table["event_code"].to_pylist(), strict=True))


def _duration(minutes: float) -> timedelta:
    return timedelta(microseconds=round(minutes * 60_000_000))


def event_id(camera_id: str, algorithm: str, triggered_at_us: int) -> str:
    """`VE` + 16 hex digits of SHA-256(camera|algorithm|trigger time in epoch microseconds): the same detections
    give the same id on every rebuild."""
    digest = hashlib.sha256(f"{camera_id}|{algorithm}|{triggered_at_us}".encode()).hexdigest()
    return EVENT_ID_PREFIX + digest[:16].upper()


def first_scoring(detections: pl.DataFrame) -> pl.DataFrame:
    """Each frame's detections by one algorithm from its first scoring only (earliest `scored_at`, then source,
    then model version): a frame delivered twice, or scored again, is counted once."""
    scoring = pl.struct("scored_at", "source", "model_version")
    keys = ["camera_id", "frame_seq", "algorithm"]
    ranked = detections.with_columns(scoring.rank("dense").over(keys).alias("_scoring"))
    return ranked.filter(pl.col("_scoring") == 1).drop("_scoring")


def _triggers(rows: pl.DataFrame, rule: EventRule) -> pl.DataFrame:
    """(camera_id, triggered_at) of every event of one algorithm: candidate triggers, then the cooldown in rounds."""
    window = _duration(rule.window_minutes)
    counted = rows.rolling(index_column="captured_at", period=window, closed="both", group_by="camera_id").agg(
        pl.len().alias("_in_window")
    )
    candidates = (
        counted.filter(pl.col("_in_window") >= rule.min_detections)
        .select("camera_id", pl.col("captured_at").alias("triggered_at"))
        .unique()
        .sort("camera_id", "triggered_at")
    )
    cooldown = _duration(rule.cooldown_minutes)
    chosen: list[pl.DataFrame] = []
    while candidates.height:
        first = candidates.group_by("camera_id").agg(pl.col("triggered_at").min())
        chosen.append(first)
        candidates = (
            candidates.join(first.rename({"triggered_at": "_last"}), on="camera_id")
            .filter((pl.col("triggered_at") > pl.col("_last")) & (pl.col("triggered_at") >= pl.col("_last") + cooldown))
            .drop("_last")
        )
    if not chosen:
        return candidates
    return pl.concat(chosen).sort("camera_id", "triggered_at")


def _events_of(rows: pl.DataFrame, rule: EventRule) -> pl.DataFrame:
    rows = rows.sort("camera_id", "captured_at", "frame_seq")
    triggers = _triggers(rows, rule)
    if triggers.height == 0:
        return pl.DataFrame()
    window, cooldown = _duration(rule.window_minutes), _duration(rule.cooldown_minutes)
    starts = triggers.with_columns((pl.col("triggered_at") - window).alias("_start")).sort("_start")
    members = (
        rows.sort("captured_at")
        .join_asof(
            starts,
            left_on="captured_at",
            right_on="_start",
            by="camera_id",
            strategy="backward",
            check_sortedness=False,  # both sides are sorted on the time; polars cannot check that with `by`
        )
        .filter(
            pl.col("triggered_at").is_not_null()
            & (
                (pl.col("captured_at") <= pl.col("triggered_at"))
                | (pl.col("captured_at") < pl.col("triggered_at") + cooldown)
            )
        )
        .sort("camera_id", "triggered_at", "captured_at", "frame_seq")
    )
    return members.group_by("camera_id", "triggered_at", maintain_order=True).agg(
        pl.col("captured_at").min().alias("first_seen"),
        pl.col("captured_at").max().alias("last_seen"),
        pl.len().cast(pl.Int64).alias("detections"),
        pl.col("frame_seq").n_unique().cast(pl.Int64).alias("frames"),
        pl.col("score").max().alias("max_score"),
        pl.col("class_name").unique().sort().str.join(",").alias("class_names"),
        pl.col("frame_uri").unique(maintain_order=True).head(MAX_EVIDENCE).str.join(" ").alias("evidence_uris"),
        pl.col("model_version").unique().sort().cast(pl.String).str.join(",").alias("model_versions"),
    )


def detect_events(
    detections: pl.DataFrame,
    rules: Mapping[str, EventRule],
    cameras: pl.DataFrame | None = None,
    event_codes: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Events from detections (columns of `silver/video/detections`), one per camera, algorithm and trigger.

    `rules` by algorithm (`rules_from_algorithms()`); detections of other algorithms are ignored. `cameras`
    (camera_id, grid_code, lon, lat) places each event; `event_codes` (algorithm -> event code) classifies it.
    Returns EVENTS_SCHEMA's columns, by camera, algorithm and trigger time.
    """
    kept = first_scoring(detections)
    parts: list[pl.DataFrame] = []
    for rule in rules.values():
        rows = kept.filter(
            (pl.col("algorithm") == rule.algorithm)
            & pl.col("class_name").is_in(list(rule.event_classes))
            & (pl.col("score") >= rule.score_threshold)
        )
        if rows.height == 0:
            continue
        found = _events_of(rows, rule)
        if found.height == 0:
            continue
        parts.append(
            found.with_columns(
                pl.lit(rule.algorithm).alias("algorithm"),
                pl.lit(rule.label, dtype=pl.String).alias("algorithm_label"),
                pl.lit((event_codes or {}).get(rule.algorithm), dtype=pl.String).alias("event_code"),
                pl.lit(rule.min_detections, dtype=pl.Int64).alias("min_detections"),
                pl.lit(float(rule.window_minutes)).alias("window_minutes"),
                pl.lit(float(rule.cooldown_minutes)).alias("cooldown_minutes"),
            )
        )
    empty = pl.DataFrame(schema=events_schema())
    if not parts:
        return empty
    events = pl.concat(parts, how="diagonal_relaxed")
    ids = [
        event_id(camera, algorithm, micros)
        for camera, algorithm, micros in zip(
            events["camera_id"].to_list(),
            events["algorithm"].to_list(),
            events["triggered_at"].dt.epoch("us").to_list(),
            strict=True,
        )
    ]
    events = events.with_columns(pl.Series("event_id", ids, dtype=pl.String))
    places = (
        cameras.select("camera_id", "grid_code", "lon", "lat").unique("camera_id", keep="last")
        if cameras is not None and cameras.height
        else pl.DataFrame(schema={"camera_id": pl.String, "grid_code": pl.String, "lon": pl.Float64, "lat": pl.Float64})
    )
    events = events.join(places, on="camera_id", how="left")
    return events.select(empty.columns).cast(dict(empty.schema)).sort("camera_id", "algorithm", "triggered_at")  # type: ignore[arg-type]


def events_schema() -> pl.Schema:
    return pl.Schema(pl.from_arrow(EVENTS_SCHEMA.empty_table()).schema)  # type: ignore[union-attr]


def read_cameras(warehouse: Warehouse) -> pl.DataFrame | None:
    """camera_id, grid_code, lon, lat of the camera registry (silver), or None before it lands."""
    if not warehouse.exists(VIDEO_CAMERAS):
        return None
    frame = pl.from_arrow(
        warehouse.table(VIDEO_CAMERAS).to_pyarrow_table(columns=["camera_id", "grid_code", "lon", "lat"])
    )
    assert isinstance(frame, pl.DataFrame)
    return frame


def write_events(warehouse: Warehouse, rules: Mapping[str, EventRule] | None = None) -> pl.DataFrame:
    """Recompute `gold/video/events` from every detection (overwrite: the same detections give the same events)."""
    from ingestion.replace import replace_table

    columns = ["camera_id", "captured_at", "frame_seq", "frame_uri", "algorithm", "class_name", "score",
               "model_version", "source", "scored_at"]  # fmt: skip
    events = detect_events(
        read_detections(warehouse, columns),
        rules if rules is not None else rules_from_algorithms(),
        read_cameras(warehouse),
        algorithm_event_codes(),
    )
    replace_table(warehouse, EVENTS, events.to_arrow().cast(EVENTS_SCHEMA))
    return events


def read_events(warehouse: Warehouse) -> pl.DataFrame | None:
    if not warehouse.exists(EVENTS):
        return None
    frame = pl.from_arrow(warehouse.table(EVENTS).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame
