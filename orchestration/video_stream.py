"""The consumer of `video.frames`: frames scored by every algorithm's production model, exactly once.

It is the platform's `StreamConsumer` (ingestion/streaming/consumer.py) with three video parts:

- `check_frames` (ingestion/streaming/frames.py) decodes every frame with Pillow and refuses, with one rule
  per problem, what is not a JPEG or lacks a valid `ts` / `frame_seq` header (`quarantine/messages`);
- `StreamScorer.before_commit` scores the micro-batch's new frames (duplicates `camera_id, frame_seq` are
  already dropped) with the production model of each algorithm, only for the cameras that run it
  (`zhengshu.video_cameras.algorithms`; every algorithm for a camera the registry does not know, as batch
  scoring does), and appends the detections to `silver/video/detections` (`source = stream`, the batch
  side's schema and builder) in ONE commit that records each partition's last offset as the application
  transaction `kafka:<topic>#<epoch>:<partition>` of that table;
- the bronze record `bronze/stream/video_frames` (camera_id, ts, frame_seq, frame size, Kafka lineage) is
  committed right after, with the same offsets: where `topics.yaml` says the offsets live, and what the
  consumer resumes from.

Exactly once: a consumer killed before the detections commit left nothing; killed between the two commits,
it resumes from bronze's offsets and re-reads frames that the detections table already holds; those are
skipped by offset (the table's own transaction versions), not scored again. Two consumers that both believe
they own a partition: the second detections commit on the same application transaction is refused by
delta-rs (the consumer then re-reads Delta), or finds every frame already written and writes nothing.

The JPEG bytes are not kept in bronze: at one frame a second a camera sends ~4 GB a day, the batch delivery
keeps its JPEGs in the landing zone anyway, and a frame nothing was found on is no evidence of anything. A
frame with at least one detection is evidence: it is written once to
`<warehouse>/evidence/video/stream/<camera_id>/<frame_seq>.jpg` before the detections commit (a replay
rewrites the same bytes), and that file is the detections' `frame_uri`, as the landing file is for batch.

Models are re-checked every `REFRESH_S`: a newly promoted version is loaded and scores the frames that come
after; an algorithm without a production version is skipped with one warning until it has one.

After the bronze commit (`--derive`, the default), `gold/video/events` is recomputed from every detection and the
`video_ai` tickets re-derived, at most once every `DERIVE_EVERY_S` and once more when the consumer stops: an
event is a ticket seconds after its frames. Both are derived whole from the detections, so a failure there is
logged and repaired by the next round (or the batch run); it never stops the consumer.
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import DeltaTable

from ingestion.contract import get_contract
from ingestion.settings import Settings
from ingestion.streaming.consumer import StreamSpec
from ingestion.streaming.frames import FRAME_COLUMN, bronze_frame_schema, check_frames
from ingestion.streaming.messages import MessageRules
from ingestion.streaming.offsets import app_id, read_offsets
from ingestion.streaming.topics import Topic
from ingestion.warehouse import Warehouse

log = logging.getLogger("yiwang.stream")

REFRESH_S = 60.0  # how often the registry's production versions and the camera registry are re-read
DERIVE_EVERY_S = 10.0  # at most one recomputation of the video events and tickets per this many seconds
EVIDENCE = "evidence/video/stream"


@dataclass
class _Model:
    detector: Any  # ml.score.Detector
    version: int


@dataclass
class ScoringFigures:
    frames: int = 0  # frames scored (by at least one algorithm)
    detections: int = 0
    evidence: int = 0  # frames written as evidence
    by_algorithm: dict[str, int] = field(default_factory=dict)  # detections per algorithm


class VideoEvents:
    """`gold/video/events` and the `video_ai` tickets, recomputed after batches that added detections (throttled)."""

    def __init__(self, warehouse: Warehouse, every_s: float | None = None) -> None:
        self.warehouse = warehouse
        self.every_s = DERIVE_EVERY_S if every_s is None else every_s
        self.pending = False
        self.last = -float("inf")
        self.refreshes = 0
        self.failures = 0

    def maybe(self, force: bool = False) -> None:
        if not self.pending or (not force and time.monotonic() - self.last < self.every_s):
            return
        from thematic_libs.dispatch.refresh import feeds_named, refresh_tickets
        from thematic_libs.video.events import write_events

        self.last = time.monotonic()
        try:
            write_events(self.warehouse)
            refresh_tickets(self.warehouse, feeds_named("video_ai"))
        except Exception:  # derived whole from the detections: the next round (or the batch run) repairs it
            log.exception("video: events or video_ai tickets not refreshed; retrying after the next batch")
            self.failures += 1
            return
        self.pending = False
        self.refreshes += 1


class StreamScorer:
    """Scores each micro-batch's new frames and writes their detections with the partition offsets, in one commit.

    `registry` is what `ml.registry.ModelRegistry` offers (`production`, `load_production`); `cameras` returns
    camera_id -> enabled algorithms (None: no camera registry yet, every camera runs every algorithm).
    """

    def __init__(
        self,
        warehouse: Warehouse,
        topic: str,
        registry: Any,
        *,
        algorithms: Sequence[str] | None = None,
        cameras: Callable[[], dict[str, frozenset[str]] | None] | None = None,
        refresh_s: float | None = None,
        events: VideoEvents | None = None,
    ) -> None:
        from ml.algorithms import load_algorithms

        self.warehouse = warehouse
        self.topic = topic
        self.registry = registry
        self.algorithms = list(algorithms) if algorithms is not None else list(load_algorithms())
        self.cameras_source = cameras or (lambda: _camera_algorithms(warehouse))
        self.refresh_s = REFRESH_S if refresh_s is None else refresh_s
        self.models: dict[str, _Model] = {}
        self.without_production: list[str] = []
        self.cameras: dict[str, frozenset[str]] | None = None
        self.figures = ScoringFigures()
        self.events = events
        self._derived_at = 0  # figures.detections when events were last marked pending
        self._table: DeltaTable | None = None
        self._checked = 0.0
        self.refresh(force=True)

    # -- models -------------------------------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Load the production version of each algorithm when it changed; re-read the camera registry.

        At start a registry that cannot be read is an error; later it is a warning (the loaded models go on)."""
        if not force and time.monotonic() - self._checked < self.refresh_s:
            return
        self._checked = time.monotonic()
        try:
            self._refresh_models()
            self.cameras = self.cameras_source()
        except Exception as error:
            if force:
                raise
            log.warning(
                "video: model or camera registry not re-read (%s); scoring goes on with the loaded models", error
            )

    def _refresh_models(self) -> None:
        without = []
        for name in self.algorithms:
            info = self.registry.production(name)
            if info is None:
                without.append(name)
                if name not in self.without_production:
                    log.warning(
                        "video: %s has no production version in the model registry: its frames are not scored "
                        "(train and promote one: `yiwang ml train --algorithm %s`, `yiwang ml promote %s VERSION`)",
                        name,
                        name,
                        name,
                    )
                self.models.pop(name, None)
                continue
            current = self.models.get(name)
            if current is None or current.version != int(info.version):
                detector, loaded = self.registry.load_production(name)
                self.models[name] = _Model(detector, int(loaded.version))
                log.info("video: scoring %s with version %s", name, loaded.version)
        self.without_production = without

    def describe(self) -> str:
        """One line for the terminal: which model versions score, which algorithms are skipped."""
        using = ", ".join(f"{name} v{model.version}" for name, model in sorted(self.models.items()))
        line = f"scoring frames with {using or 'no model'} into silver/video/detections"
        if self.without_production:
            line += f"; no production version (skipped): {', '.join(self.without_production)}"
        return line

    def _runs(self, camera_id: str, algorithm: str) -> bool:
        if self.cameras is None:
            return True
        enabled = self.cameras.get(camera_id)
        return enabled is None or algorithm in enabled

    # -- the commit before bronze's ----------------------------------------------------------------------

    def _latest(self) -> DeltaTable | None:
        from thematic_libs.video.detections import DETECTIONS

        if self._table is None:
            if not self.warehouse.exists(DETECTIONS):
                return None
            self._table = self.warehouse.table(DETECTIONS)
        else:
            self._table.update_incremental()
        return self._table

    def before_commit(self, rows: pl.DataFrame, last: dict[int, int], epoch: int) -> None:
        """Score the frames of `rows` the detections table does not hold yet; commit their detections together with
        the partitions' last offsets (`last`). Raises delta-rs' `CommitFailedError` when another consumer committed
        the same partitions meanwhile (the consumer then re-reads Delta)."""
        from thematic_libs.video.detections import append_detections

        self.refresh()
        if not self.models:
            return
        table = self._latest()
        partitions = sorted(last)
        done = read_offsets(table, self.topic, epoch, partitions).last
        fresh = pl.lit(True)
        for partition, offset in done.items():
            if offset is not None:
                fresh = fresh & ~((pl.col("_partition") == partition) & (pl.col("_offset") <= offset))
        todo = rows.filter(fresh)
        if todo.height == 0:
            return  # a replay of frames already scored
        detections, evidence, frames = self._score(todo)
        for uri, jpeg in evidence.items():
            self._write_evidence(uri, jpeg)
        # Never move a partition's version back: a replayed batch can end before what the table already holds.
        transactions = {
            app_id(self.topic, epoch, p): max(last[p], -1 if done[p] is None else done[p]) for p in partitions
        }
        append_detections(self.warehouse, detections, transactions, table=table)
        self.figures.frames += frames
        self.figures.detections += detections.height
        self.figures.evidence += len(evidence)
        for name, count in detections.group_by("algorithm").len().iter_rows():
            self.figures.by_algorithm[name] = self.figures.by_algorithm.get(name, 0) + count

    def _score(self, todo: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, bytes], int]:
        """The detections of every model over the frames of cameras that run it, the evidence files to write (URI ->
        JPEG bytes: the frames with at least one detection) and how many frames some model scored."""
        from PIL import Image

        from thematic_libs.video.detections import FrameRef, detections_frame, detections_schema

        jpegs = todo[FRAME_COLUMN].to_list()
        images = [Image.open(io.BytesIO(jpeg)).convert("RGB") for jpeg in jpegs]
        refs = [
            FrameRef(camera, captured, seq, self.evidence_uri(camera, seq), self.topic, partition, offset)
            for camera, captured, seq, partition, offset in todo.select(
                "camera_id", "ts", "frame_seq", "_partition", "_offset"
            ).iter_rows()
        ]
        scored_at = datetime.now(UTC)
        parts: list[pl.DataFrame] = []
        found_on: set[int] = set()
        scored: set[int] = set()
        for name, model in sorted(self.models.items()):
            picked = [i for i, ref in enumerate(refs) if self._runs(ref.camera_id, name)]
            if not picked:
                continue
            found = model.detector.detect([images[i] for i in picked])
            scored.update(picked)
            found_on.update(i for i, objects in zip(picked, found, strict=True) if objects)
            part = detections_frame(
                [refs[i] for i in picked],
                found,
                algorithm=name,
                model_version=model.version,
                source="stream",
                scored_at=scored_at,
            )
            parts.append(part)
        detections = pl.concat(parts) if parts else pl.DataFrame(schema=detections_schema())
        return detections, {refs[i].frame_uri: jpegs[i] for i in sorted(found_on)}, len(scored)

    # -- evidence ----------------------------------------------------------------------------------------

    def evidence_uri(self, camera_id: str, frame_seq: int) -> str:
        """Where a streamed frame with detections is kept: a file:// URI locally, the object's URI on a bucket."""
        relative = f"{EVIDENCE}/{camera_id}/{frame_seq}.jpg"
        if self.warehouse.is_local:
            return (Path(self.warehouse.root) / relative).as_uri()
        return f"{self.warehouse.root}/{relative}"

    def _write_evidence(self, uri: str, jpeg: bytes) -> None:
        """Write the frame whole or not at all (a temporary name, then a rename; an object store's put is atomic)."""
        if uri.startswith("file://"):
            from urllib.parse import unquote, urlparse

            path = Path(unquote(urlparse(uri).path))
            path.parent.mkdir(parents=True, exist_ok=True)
            scratch = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            scratch.write_bytes(jpeg)
            os.replace(scratch, path)
            return
        filesystem, path = _object_store(self.warehouse, uri)
        with filesystem.open_output_stream(path) as out:
            out.write(jpeg)

    # -- after the bronze commit -------------------------------------------------------------------------

    def __call__(self, rows: pl.DataFrame) -> dict[str, object]:
        """After the bronze commit: events and tickets when detections were added; the running figures, for the
        consumer's summary (`after_commit`)."""
        if self.events is not None:
            self.events.pending = self.events.pending or self.figures.detections > self._derived_at
            self._derived_at = self.figures.detections
            self.events.maybe()
        figures: dict[str, object] = {
            "frames_scored": self.figures.frames,
            "detections": self.figures.detections,
            "evidence_frames": self.figures.evidence,
            "models": {name: model.version for name, model in sorted(self.models.items())},
        }
        if self.events is not None:
            figures["event_refreshes"] = self.events.refreshes
        return figures

    def close(self) -> None:
        """When the consumer stops: the events and tickets of the last batches."""
        if self.events is not None:
            self.events.maybe(force=True)


def _object_store(warehouse: Warehouse, uri: str):
    """A pyarrow filesystem for the warehouse's bucket, from the same options delta-rs gets."""
    from urllib.parse import urlparse

    from pyarrow import fs

    options = warehouse.options() or {}
    endpoint = options.get("AWS_ENDPOINT_URL")
    parsed = urlparse(endpoint) if endpoint else None
    filesystem = fs.S3FileSystem(
        access_key=options.get("AWS_ACCESS_KEY_ID"),
        secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
        session_token=options.get("AWS_SESSION_TOKEN"),
        region=options.get("AWS_REGION", "us-east-1"),
        endpoint_override=parsed.netloc if parsed else None,
        scheme=parsed.scheme if parsed else "https",
    )
    location = urlparse(uri)
    return filesystem, f"{location.netloc}{location.path}"


def _camera_algorithms(warehouse: Warehouse) -> dict[str, frozenset[str]] | None:
    from thematic_libs.video.scoring import camera_algorithms

    return camera_algorithms(warehouse)


def video_stream_spec(
    topic: Topic,
    warehouse: Warehouse,
    settings: Settings | None,
    *,
    rules: MessageRules,
    derive: bool = True,
    registry: Any = None,
) -> StreamSpec:
    """The consumer's view of `video.frames`: frame checks, the frame record as bronze, scoring before its commit.

    The detections are always written (they are what the consumer is for); `derive` adds the events and tickets
    after the commits. `registry` defaults to the model registry beside the warehouse (`MLFLOW_TRACKING_URI`
    when set)."""
    from ml.registry import ModelRegistry

    contract = get_contract(topic.fields_contract_id)
    if registry is None:
        registry = ModelRegistry.from_settings(settings or Settings.from_env())
    scorer = StreamScorer(warehouse, topic.name, registry, events=VideoEvents(warehouse) if derive else None)
    frame_rules = replace(rules, time_field="ts")
    return StreamSpec(
        topic=topic.name,
        short_name=topic.short_name,
        contract=contract,
        bronze_table=topic.bronze_table,
        group=topic.group,
        partitions=topic.partitions,
        dedupe_key=topic.dedupe_key,
        rules=lambda: frame_rules,
        after_commit=scorer,
        close=scorer.close,
        check=check_frames,
        bronze_schema=bronze_frame_schema(contract),
        before_commit=scorer.before_commit,
    )
