"""Batch scoring: every complete frame batch, every algorithm with a production model, written once.

For each frame batch of the landing zone (`zhengshu.video_frames`):

1. a batch the ledger does not know yet is checked (`frames.open_frame_batch`) and every frame decoded completely
   with Pillow; frames that break the contract or cannot be decoded go to `quarantine/rows` (one commit per batch);
   more than `reject_share` of bad frames rejects the batch, as for rows;
2. each algorithm of ml/algorithms.yaml that has a production version in the registry and has not scored the
   batch yet scores its frames (only the frames of cameras that run it, per `zhengshu.video_cameras.algorithms`;
   every frame when the camera is not in the registry) and writes the detections in one commit of
   `silver/video/detections` recording the application transaction (batch, algorithm) = model version;
3. the ledger row of a new batch is written last (frames loaded and quarantined), the commit point as for rows.

A batch loaded before an algorithm had a production model is scored by that algorithm on a later run; a batch
already scored by an algorithm is never scored by it again (a new production version scores new batches), so a
re-run writes nothing twice and events are never counted twice. An algorithm without a production model is
skipped with a note, never an error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import polars as pl

from ingestion.bronze import DEFAULT_REJECT_SHARE
from ingestion.contract import Contract, image_contracts
from ingestion.landing import BatchDir, BatchRejected, batch_ordinal, find_batches
from ingestion.ledger import LedgerEntry, now_utc, read_ledger, write_ledger, write_quarantine
from ingestion.warehouse import Warehouse
from thematic_libs.video.detections import (
    FrameRef,
    append_detections,
    batch_transaction,
    detections_frame,
    detections_table,
    scored_version,
)
from thematic_libs.video.frames import (
    DECODE_ERRORS,
    Frame,
    FrameBatch,
    FrameProblem,
    decode,
    decode_problem,
    decoded_frames,
    open_frame_batch,
)

log = logging.getLogger(__name__)

VIDEO_FRAMES = "zhengshu.video_frames"
VIDEO_CAMERAS = "silver/zhengshu/video_cameras"
CST = ZoneInfo("Asia/Shanghai")


class ModelSource(Protocol):
    """What scoring needs of the model registry (`ml.registry.ModelRegistry` is one)."""

    def production(self, algorithm: str) -> Any: ...  # ModelVersionInfo | None

    def load_production(self, algorithm: str) -> tuple[Any, Any]: ...  # (Detector, ModelVersionInfo)


@dataclass
class BatchScore:
    """What happened to one frame batch in this run."""

    batch_id: str
    status: str  # loaded | rejected | waiting | not_due | rescored | up_to_date | unreadable
    reason: str | None = None
    frames_loaded: int = 0
    frames_quarantined: int = 0
    scored: dict[str, tuple[int, int]] = field(default_factory=dict)  # algorithm -> (model version, detections)


@dataclass
class ScoringRun:
    batches: list[BatchScore] = field(default_factory=list)
    without_production: list[str] = field(default_factory=list)  # algorithms skipped: no production version
    unknown_cameras: set[str] = field(default_factory=set)  # cameras not in the registry (scored by everything)

    @property
    def detections(self) -> int:
        return sum(rows for b in self.batches for _, rows in b.scored.values())

    @property
    def skipped_note(self) -> str | None:
        if not self.without_production:
            return None
        names = ", ".join(self.without_production)
        return (
            f"no production model for {names}: their frames were not scored (they will be on a later run). "
            f"Train and promote one: `yiwang ml train --algorithm NAME`, `yiwang ml promote NAME VERSION`"
        )


def frames_contract() -> Contract:
    return image_contracts()[VIDEO_FRAMES]


def camera_algorithms(warehouse: Warehouse) -> dict[str, frozenset[str]] | None:
    """camera_id -> the algorithms it runs (silver `zhengshu.video_cameras`), or None before the registry lands."""
    if not warehouse.exists(VIDEO_CAMERAS):
        return None
    table = warehouse.table(VIDEO_CAMERAS).to_pyarrow_table(columns=["camera_id", "algorithms"])
    return {
        camera: frozenset(a.strip() for a in (algorithms or "").split(",") if a.strip())
        for camera, algorithms in zip(table["camera_id"].to_pylist(), table["algorithms"].to_pylist(), strict=True)
    }


def _extraction_date(extracted_at: datetime) -> date:
    return extracted_at.astimezone(CST).date()


def _problem_rows(batch: FrameBatch, problems: Sequence[FrameProblem]) -> pl.DataFrame:
    """The quarantine rows of the bad frames, in `quarantine/rows`' schema."""
    when = now_utc()
    return pl.DataFrame(
        {
            "contract_id": [batch.contract.id] * len(problems),
            "batch_id": [batch.batch_id] * len(problems),
            "record_key": [p.entry.record_key for p in problems],
            "rule": [p.rule for p in problems],
            "detail": [p.detail for p in problems],
            "raw_record": [p.entry.raw_record() for p in problems],
            "column": [p.column for p in problems],
            "source_file": [p.entry.name for p in problems],
            "row_number": [p.entry.position for p in problems],
            "quarantined_at": [when] * len(problems),
        },
        schema_overrides={"column": pl.String, "row_number": pl.Int64, "quarantined_at": pl.Datetime("us", "UTC")},
    )


def _ledger_entry(
    batch_dir: BatchDir,
    contract: Contract,
    status: str,
    reason: str | None,
    loaded: int,
    bad: int,
    rule: str | None = None,
    batch: FrameBatch | None = None,
) -> LedgerEntry:
    return LedgerEntry(
        contract_id=contract.id,
        batch_id=batch_dir.batch_id,
        status=status,
        reason=reason,
        rows_loaded=loaded,
        rows_quarantined=bad,
        processed_at=now_utc(),
        rule=rule,
        contract_version=contract.version,
        source_level=batch_dir.level,
        mode=batch.mode if batch else None,
        extracted_at=batch.extracted_at if batch else None,
        rows_delivered=len(batch.entries) if batch else None,
        batch_ordinal=batch_ordinal(batch_dir.batch_id),
    )


class _Models:
    """Production detectors, loaded once per run on first use; `versions` are the production versions at the start."""

    def __init__(self, registry: ModelSource, versions: dict[str, int]) -> None:
        self.registry = registry
        self.versions = versions
        self.loaded: dict[str, tuple[Any, int]] = {}

    def get(self, algorithm: str) -> tuple[Any, int]:
        if algorithm not in self.loaded:
            detector, info = self.registry.load_production(algorithm)
            self.loaded[algorithm] = (detector, int(info.version))
        return self.loaded[algorithm]


def score_frame_batches(
    landing: Path,
    warehouse: Warehouse,
    registry: ModelSource,
    *,
    algorithms: Sequence[str] | None = None,
    cameras: Mapping[str, frozenset[str]] | None = None,
    reject_share: float = DEFAULT_REJECT_SHARE,
    as_of: date | None = None,
    chunk: int = 32,
    progress: Callable[[str], None] | None = None,
) -> ScoringRun:
    """Score every frame batch that some algorithm with a production model has not scored yet (module docstring).

    `algorithms` defaults to every algorithm of ml/algorithms.yaml; `cameras` (camera_id -> algorithms it runs)
    to silver `zhengshu.video_cameras`. Never raises for bad data or a missing model, only for platform failures.
    """
    from ml.algorithms import load_algorithms

    contract = frames_contract()
    names = list(algorithms) if algorithms is not None else list(load_algorithms())
    run = ScoringRun()
    productions: dict[str, int] = {}
    for name in names:
        info = registry.production(name)
        if info is None:
            run.without_production.append(name)
        else:
            productions[name] = int(info.version)
    if cameras is None:
        cameras = camera_algorithms(warehouse)
    ledger = read_ledger(warehouse).filter(pl.col("contract_id") == contract.id)
    decided = dict(zip(ledger["batch_id"].to_list(), ledger["status"].to_list(), strict=True))
    models = _Models(registry, productions)
    for batch_dir in find_batches(landing):
        if batch_dir.contract_id != contract.id:
            continue
        state = decided.get(batch_dir.batch_id)
        if state == "rejected":
            continue
        if not batch_dir.is_complete:
            run.batches.append(BatchScore(batch_dir.batch_id, "waiting", "no _manifest.json yet"))
            continue
        table = detections_table(warehouse)
        to_score = [name for name in productions if scored_version(table, batch_dir.batch_id, name) is None]
        if state == "loaded" and not to_score:
            run.batches.append(BatchScore(batch_dir.batch_id, "up_to_date"))
            continue
        if progress:
            progress(batch_dir.batch_id)
        outcome = _score_batch(
            batch_dir, contract, warehouse, models, to_score, cameras, run, state is None, reject_share, as_of, chunk
        )
        run.batches.append(outcome)
    return run


def _score_batch(
    batch_dir: BatchDir,
    contract: Contract,
    warehouse: Warehouse,
    models: _Models,
    to_score: list[str],
    cameras: Mapping[str, frozenset[str]] | None,
    run: ScoringRun,
    new: bool,
    reject_share: float,
    as_of: date | None,
    chunk: int,
) -> BatchScore:
    try:
        batch = open_frame_batch(batch_dir)
    except BatchRejected as rejected:
        if new:
            write_ledger(
                warehouse, _ledger_entry(batch_dir, contract, "rejected", rejected.message, 0, 0, rejected.rule)
            )
            return BatchScore(batch_dir.batch_id, "rejected", rejected.message)
        # Loaded before, its files changed since: nothing to score it with now.
        return BatchScore(batch_dir.batch_id, "unreadable", f"{rejected.rule}: {rejected.message}")
    if new and as_of is not None and _extraction_date(batch.extracted_at) > as_of:
        return BatchScore(batch.batch_id, "not_due", f"extracted after {as_of}")
    problems = list(batch.problems)
    if new:
        # Every frame decoded completely before anything is written: the bad share decides the batch.
        for frame in batch.frames:
            try:
                decode(frame)
            except DECODE_ERRORS as error:
                problems.append(decode_problem(frame, error))
    bad_keys = {p.entry.record_key for p in problems}
    total = len(batch.entries)
    bad = len(bad_keys)
    good = total - bad
    if new:
        write_quarantine(warehouse, contract.id, batch.batch_id, _problem_rows(batch, problems))
        share = bad / total if total else 0.0
        if share > reject_share:
            reason = (
                f"{bad} of {total} frames ({share:.1%}) break the contract or cannot be decoded, more than the "
                f"{reject_share:.0%} allowed; nothing was scored. See quarantine/rows for each frame and rule, fix "
                "them at the source and resend the batch"
            )
            write_ledger(
                warehouse, _ledger_entry(batch_dir, contract, "rejected", reason, 0, bad, "too_many_bad_rows", batch)
            )
            return BatchScore(batch.batch_id, "rejected", reason, 0, bad)
    frames = [f for f in batch.frames if f.entry.record_key not in bad_keys]
    scored = _score_frames(batch, frames, warehouse, models, to_score, cameras, run, chunk)
    parts = [f"{bad} of {total} frames quarantined"] if bad else []
    if scored:
        parts.append("scored by " + ", ".join(f"{a} v{v} ({n} detections)" for a, (v, n) in scored.items()))
    if run.without_production:
        parts.append("not scored yet (no production model): " + ", ".join(run.without_production))
    reason = "; ".join(parts) or None
    if not new:
        return BatchScore(batch.batch_id, "rescored", reason, good, bad, scored)
    write_ledger(warehouse, _ledger_entry(batch_dir, contract, "loaded", reason, good, bad, None, batch))
    return BatchScore(batch.batch_id, "loaded", reason, good, bad, scored)


def _score_frames(
    batch: FrameBatch,
    frames: Sequence[Frame],
    warehouse: Warehouse,
    models: _Models,
    to_score: list[str],
    cameras: Mapping[str, frozenset[str]] | None,
    run: ScoringRun,
    chunk: int,
) -> dict[str, tuple[int, int]]:
    """Decode the frames chunk by chunk, run each algorithm over the frames of cameras that use it, commit once
    per algorithm. Returns algorithm -> (model version, detections written)."""
    if not to_score:
        return {}
    wanted = {}
    for frame in frames:
        enabled = cameras.get(frame.camera_id) if cameras is not None else None
        if cameras is not None and enabled is None:
            run.unknown_cameras.add(frame.camera_id)
        wanted[frame.entry.record_key] = [a for a in to_score if enabled is None or a in enabled]
    rows: dict[str, list[pl.DataFrame]] = {name: [] for name in to_score}
    versions: dict[str, int] = {}
    scored_at = datetime.now(UTC)
    for good, images, _ in decoded_frames(frames, chunk):
        for name in to_score:
            picked = [i for i, frame in enumerate(good) if name in wanted[frame.entry.record_key]]
            if not picked:
                continue
            detector, version = models.get(name)
            versions[name] = version
            refs = [_ref(good[i]) for i in picked]
            found = detector.detect([images[i] for i in picked])
            rows[name].append(
                detections_frame(
                    refs,
                    found,
                    algorithm=name,
                    model_version=version,
                    source="batch",
                    batch_id=batch.batch_id,
                    scored_at=scored_at,
                )
            )
    result: dict[str, tuple[int, int]] = {}
    for name in to_score:
        # No camera of this batch runs the algorithm: the batch is marked scored by the production version all the same.
        version = versions.get(name, models.versions[name])
        table = detections_table(warehouse)
        if scored_version(table, batch.batch_id, name) is not None:  # another run got there first
            continue
        empty = detections_frame([], [], algorithm=name, model_version=version, source="batch", batch_id=batch.batch_id)
        frame = pl.concat(rows[name]) if rows[name] else empty
        append_detections(
            warehouse,
            frame,
            {batch_transaction(batch.batch_id, name): version},
            table=table,
            custom_metadata={"yiwang.batch_id": batch.batch_id, "yiwang.algorithm": name},
        )
        result[name] = (version, frame.height)
        log.info("scored %s with %s v%s: %d detections", batch.batch_id, name, version, frame.height)
    return result


def _ref(frame: Frame) -> FrameRef:
    return FrameRef(frame.camera_id, frame.captured_at, frame.frame_seq, frame.uri)
