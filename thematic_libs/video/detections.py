"""`silver/video/detections`: one row per object a production model found on a frame, from batch or stream.

Batch scoring (`thematic_libs.video.scoring`) and the streaming consumer of `video.frames` write the same table
with the same schema, through the same two functions: `detections_frame` turns the output of
`ml.score.Detector.detect` into rows, `append_detections` appends them in one Delta commit that also records the
caller's application transactions (a frame batch and algorithm for batch scoring, with the model version as the
transaction's version; the consumed partition offsets for the stream), so that a re-run or a replay writes nothing
twice. The table is not partitioned: both writers only append, and Delta lets concurrent appends through.

A frame delivered both in batch and on the stream is scored twice (`source` tells the rows apart); the event
code (`thematic_libs.video.events`) counts each frame once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from ingestion.delta_append import append_transactions
from ingestion.warehouse import Warehouse

if TYPE_CHECKING:
    from deltalake import DeltaTable

DETECTIONS = "silver/video/detections"
SOURCES = ("batch", "stream")
_UTC = pa.timestamp("us", tz="UTC")

DETECTIONS_SCHEMA = pa.schema(
    [
        pa.field("camera_id", pa.string(), nullable=False),
        pa.field("captured_at", _UTC, nullable=False),
        pa.field("frame_seq", pa.int64(), nullable=False),
        pa.field("frame_uri", pa.string(), nullable=False),  # where the frame can be opened (evidence)
        pa.field("algorithm", pa.string(), nullable=False),  # ml/algorithms.yaml
        pa.field("class_name", pa.string(), nullable=False),
        pa.field("label_zh", pa.string(), nullable=False),
        pa.field("detection_index", pa.int64(), nullable=False),  # 0 = the frame's best detection of the algorithm
        pa.field("score", pa.float64(), nullable=False),
        pa.field("box_x1", pa.float64(), nullable=False),  # pixels of the original frame
        pa.field("box_y1", pa.float64(), nullable=False),
        pa.field("box_x2", pa.float64(), nullable=False),
        pa.field("box_y2", pa.float64(), nullable=False),
        pa.field("model_version", pa.int64(), nullable=False),  # the registry version that scored the frame
        pa.field("source", pa.string(), nullable=False),  # batch | stream
        pa.field("batch_id", pa.string()),  # source = batch: the landing batch
        pa.field("stream_topic", pa.string()),  # source = stream: where the frame was consumed
        pa.field("stream_partition", pa.int64()),
        pa.field("stream_offset", pa.int64()),
        pa.field("scored_at", _UTC, nullable=False),
    ]
)


@dataclass(frozen=True)
class FrameRef:
    """What the detections of one frame say about the frame: camera, capture time, sequence, where it is; for a
    streamed frame also the topic, partition and offset it was consumed at."""

    camera_id: str
    captured_at: datetime  # time-zone aware
    frame_seq: int
    frame_uri: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


def batch_transaction(batch_id: str, algorithm: str) -> str:
    """The application transaction marking a frame batch as scored by an algorithm; its version is the model version.

    One commit per (batch, algorithm, model version): `scored_version` reads the version back, so a batch is scored
    once per algorithm, whatever version is in production later.
    """
    return f"yiwang.video/{DETECTIONS}/batch/{batch_id}/{algorithm}"


def _label_lookup(algorithm: str) -> Mapping[str, str]:
    from ml.algorithms import get_algorithm

    return {c.name: c.label_zh for c in get_algorithm(algorithm).classes}


def detections_frame(
    frames: Sequence[FrameRef],
    detections: Sequence[Sequence[Any]],
    *,
    algorithm: str,
    model_version: int | str,
    source: str,
    batch_id: str | None = None,
    scored_at: datetime | None = None,
) -> pl.DataFrame:
    """The rows of `silver/video/detections` for frames scored by one model (DETECTIONS_SCHEMA's columns).

    `detections[i]` are the detections of `frames[i]` as `ml.score.Detector.detect` returns them (objects with
    `class_name`, `score` and `box` = (x1, y1, x2, y2)). `source` is `batch` (then `batch_id` is required) or
    `stream` (then every frame carries its topic, partition and offset). A frame without detections adds no row.
    """
    if len(frames) != len(detections):
        raise ValueError(f"{len(frames)} frames but {len(detections)} lists of detections: one list per frame")
    if source not in SOURCES:
        raise ValueError(f"source {source!r} must be one of {SOURCES}")
    if source == "batch" and not batch_id:
        raise ValueError("batch detections need the batch_id of their frame batch")
    if source == "stream" and any(f.topic is None or f.partition is None or f.offset is None for f in frames):
        raise ValueError("streamed detections need the topic, partition and offset of every frame")
    version = int(model_version)
    labels = _label_lookup(algorithm)
    when = (scored_at or datetime.now(UTC)).astimezone(UTC)
    columns: dict[str, list] = {name: [] for name in DETECTIONS_SCHEMA.names}
    for frame, found in zip(frames, detections, strict=True):
        if frame.captured_at.tzinfo is None:
            raise ValueError(f"captured_at of {frame.camera_id}/{frame.frame_seq} has no time zone")
        for index, detection in enumerate(found):
            if detection.class_name not in labels:
                raise ValueError(f"{algorithm} has no class {detection.class_name!r} (ml/algorithms.yaml)")
            x1, y1, x2, y2 = (float(v) for v in detection.box)
            row = {
                "camera_id": frame.camera_id,
                "captured_at": frame.captured_at.astimezone(UTC),
                "frame_seq": int(frame.frame_seq),
                "frame_uri": frame.frame_uri,
                "algorithm": algorithm,
                "class_name": detection.class_name,
                "label_zh": labels[detection.class_name],
                "detection_index": index,
                "score": float(detection.score),
                "box_x1": x1,
                "box_y1": y1,
                "box_x2": x2,
                "box_y2": y2,
                "model_version": version,
                "source": source,
                "batch_id": batch_id if source == "batch" else None,
                "stream_topic": frame.topic if source == "stream" else None,
                "stream_partition": frame.partition if source == "stream" else None,
                "stream_offset": frame.offset if source == "stream" else None,
                "scored_at": when,
            }
            for name, value in row.items():
                columns[name].append(value)
    return pl.DataFrame(columns, schema=detections_schema())


def detections_schema() -> pl.Schema:
    """DETECTIONS_SCHEMA as polars types."""
    return pl.Schema(pl.from_arrow(DETECTIONS_SCHEMA.empty_table()).schema)  # type: ignore[union-attr]


def detections_table(warehouse: Warehouse) -> DeltaTable | None:
    """The table's current snapshot, or None before the first detection: what `append_detections` commits on."""
    return warehouse.table(DETECTIONS) if warehouse.exists(DETECTIONS) else None


def append_detections(
    warehouse: Warehouse,
    rows: pl.DataFrame | pa.Table,
    transactions: Mapping[str, int],
    *,
    table: DeltaTable | None = None,
    custom_metadata: Mapping[str, str] | None = None,
) -> None:
    """Append `rows` (possibly none) and record `transactions` in one commit of `silver/video/detections`.

    `table` is the snapshot the caller checked its transactions against (default: the current one); a concurrent
    commit of one of the same application transactions makes delta-rs refuse this one (`CommitFailedError`), so
    two writers of one batch or partition can never both land.
    """
    append_transactions(
        warehouse.uri(DETECTIONS),
        rows,
        DETECTIONS_SCHEMA,
        transactions=transactions,
        table=table if table is not None else detections_table(warehouse),
        storage_options=warehouse.options(),
        custom_metadata=custom_metadata,
    )


def scored_version(table: DeltaTable | None, batch_id: str, algorithm: str) -> int | None:
    """The model version that scored the batch with the algorithm, or None when it has not been scored."""
    if table is None:
        return None
    return table.transaction_version(batch_transaction(batch_id, algorithm))


def read_detections(warehouse: Warehouse, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """The detections as polars (empty, with the schema, before the first one)."""
    if not warehouse.exists(DETECTIONS):
        empty = pl.DataFrame(schema=detections_schema())
        return empty.select(columns) if columns else empty
    frame = pl.from_arrow(warehouse.table(DETECTIONS).to_pyarrow_table(columns=list(columns) if columns else None))
    assert isinstance(frame, pl.DataFrame)
    return frame
