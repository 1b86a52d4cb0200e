"""Video events as dispatch candidates (source `video_ai`), read by the `video_ai` ticket feed.

One candidate per event of `gold/video/events`, with the frames' URIs as evidence. Its dedupe key is
`video|<camera_id>|<event_code>|<merge window>` (the dispatch config's `merge_window_hours`, aligned to local
midnight as for every source): the events one camera raises for one problem within a window, however many, and
however often the feed runs, are one ticket (`merged_count` counts them). Two cameras in one grid raise two
tickets; an event code the catalogue or the matrix does not know is rejected by the derivation, with the reason.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pyarrow as pa

from ingestion.keys import window_label
from ingestion.warehouse import Warehouse
from thematic_libs.dispatch.derive import DispatchConfig, conform_candidates
from thematic_libs.dispatch.schema import CANDIDATE_SCHEMA
from thematic_libs.video.events import read_events

SOURCE = "video_ai"
CST = ZoneInfo("Asia/Shanghai")


def dedupe_key(camera_id: str, event_code: str, first_seen, window_hours: int) -> str:
    """One open ticket per camera and event code within a merge window."""
    return f"video|{camera_id}|{event_code}|{window_label(first_seen, window_hours)}"


def _description(row: dict) -> str:
    first = row["first_seen"].astimezone(CST)
    last = row["last_seen"].astimezone(CST)
    label = row["algorithm_label"] or row["algorithm"]
    return (
        f"{label}：摄像头 {row['camera_id']} 于 {first:%Y-%m-%d %H:%M}–{last:%H:%M} 检出 {row['detections']} 次"
        f"（{row['frames']} 帧，类别 {row['class_names']}，最高置信度 {row['max_score']:.2f}，模型版本 "
        f"{row['model_versions']}）。证据帧见 evidence_uri。"
    )


def read_video_events(warehouse: Warehouse, config: DispatchConfig | None = None) -> pa.Table | None:
    """Ticket candidates of every video event that has an event code (None before `gold/video/events` exists)."""
    events = read_events(warehouse)
    if events is None:
        return None
    hours = (config or DispatchConfig.load()).merge_window_hours
    rows = [row for row in events.iter_rows(named=True) if row["event_code"]]
    candidates = {
        "source": [SOURCE] * len(rows),
        "source_ref": [row["event_id"] for row in rows],
        "event_code": [row["event_code"] for row in rows],
        "title": [f"{row['algorithm_label'] or row['algorithm']}：摄像头 {row['camera_id']}" for row in rows],
        "description": [_description(row) for row in rows],
        "occurred_at": [row["first_seen"] for row in rows],
        "lon": [row["lon"] for row in rows],
        "lat": [row["lat"] for row in rows],
        "grid_code": [row["grid_code"] for row in rows],
        "is_urgent": [False] * len(rows),
        "evidence_uri": [row["evidence_uris"] for row in rows],
        "dedupe_key": [dedupe_key(row["camera_id"], row["event_code"], row["first_seen"], hours) for row in rows],
    }
    schema = pa.schema([f for f in CANDIDATE_SCHEMA if f.name in candidates])
    return conform_candidates(pa.table(candidates, schema=schema))
