"""Video AI as Dagster assets: frame batches scored into detections, detections into events.

- `silver/video/detections`: every complete frame batch of the landing zone (`zhengshu.video_frames`) scored with
  the production model of each algorithm in the registry (`ml.registry`), once per batch and algorithm; bad frames
  to `quarantine/rows`, one ledger row per batch. An algorithm without a production model is skipped with a note.
  The streaming consumer of `video.frames` appends to the same table between runs.
- `gold/video/events`: K event-class detections on one camera within W minutes (ml/algorithms.yaml), recomputed
  from every detection; the `video_ai` ticket feed (thematic_libs/dispatch/feeds.py) reads it.
- `new_frame_batches`: a sensor that starts both when a complete frame batch arrives.
"""

# No `from __future__ import annotations`: Dagster inspects the real annotations of assets and checks.
import hashlib
from collections import Counter

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    asset_check,
    sensor,
)

from ingestion.contract import get_contract
from ingestion.pipeline import pending_batches
from orchestration.ingestion_assets import silver_key
from orchestration.resources import PlatformResource
from thematic_libs.sharing.asset_metadata import product_asset_facts
from thematic_libs.video.detections import DETECTIONS, read_detections
from thematic_libs.video.events import EVENTS, write_events
from thematic_libs.video.scoring import VIDEO_FRAMES, score_frame_batches

VIDEO_CAMERAS_CONTRACT = "zhengshu.video_cameras"
DETECTIONS_KEY = AssetKey(DETECTIONS.split("/"))
EVENTS_KEY = AssetKey(EVENTS.split("/"))


def model_registry(platform: PlatformResource):
    """The model registry beside the platform's warehouse (or `MLFLOW_TRACKING_URI`), as `yiwang ml` uses it."""
    from ingestion.settings import Settings
    from ml.registry import ModelRegistry

    return ModelRegistry.from_settings(Settings.from_env().with_overrides(warehouse=platform.warehouse))


@asset(
    key=DETECTIONS_KEY,
    deps=[silver_key(get_contract(VIDEO_CAMERAS_CONTRACT))],
    group_name="video",
    description=(
        "视频识别结果 Detections of the video-AI algorithms: every frame batch of zhengshu.video_frames scored "
        "with the production model of each algorithm (once per batch and algorithm; the model version is on every "
        "row), corrupt frames quarantined. The video.frames stream consumer appends to the same table."
    ),
    kinds={"delta", "python", "pytorch"},
)
def video_detections(context: AssetExecutionContext, platform: PlatformResource) -> MaterializeResult:
    warehouse = platform.get_warehouse()
    run = score_frame_batches(
        platform.landing_path(),
        warehouse,
        model_registry(platform),
        reject_share=platform.reject_share,
        as_of=platform.as_of_date(),
        progress=lambda batch_id: context.log.info(f"scoring frame batch {batch_id}"),
    )
    note = run.skipped_note
    if note:
        context.log.warning(note)
    for batch in run.batches:
        if batch.status in ("rejected", "unreadable"):
            context.log.warning(f"{VIDEO_FRAMES} {batch.batch_id} {batch.status}: {batch.reason}")
    if run.unknown_cameras:
        context.log.warning(
            f"{len(run.unknown_cameras)} cameras are not in zhengshu.video_cameras: their frames were scored by "
            "every algorithm and their events have no grid"
        )
    statuses = Counter(b.status for b in run.batches)
    versions = {name: version for b in run.batches for name, (version, _) in b.scored.items()}
    metadata: dict[str, object] = {
        "batches_loaded": statuses["loaded"],
        "batches_rejected": statuses["rejected"],
        "batches_rescored": statuses["rescored"],
        "batches_waiting": statuses["waiting"],
        "frames_loaded": sum(b.frames_loaded for b in run.batches if b.status == "loaded"),
        "frames_quarantined": sum(b.frames_quarantined for b in run.batches if b.status in ("loaded", "rejected")),
        "detections_written": run.detections,
        "model_versions": MetadataValue.json(versions),
        "without_production_model": MetadataValue.json(run.without_production),
        "unknown_cameras": len(run.unknown_cameras),
    }
    if note:
        metadata["skipped"] = note
    return MaterializeResult(metadata=metadata)


@asset_check(asset=DETECTIONS_KEY, description="Each frame is scored once per algorithm and source (batch, stream).")
def detections_scored_once(platform: PlatformResource) -> AssetCheckResult:
    import polars as pl

    warehouse = platform.get_warehouse()
    columns = ["camera_id", "frame_seq", "algorithm", "source", "model_version", "scored_at"]
    detections = read_detections(warehouse, columns)
    scorings = detections.unique(columns)
    twice = scorings.group_by("camera_id", "frame_seq", "algorithm", "source").len().filter(pl.col("len") > 1)
    examples = [f"{c}/{s} {a} ({src})" for c, s, a, src, _ in twice.head(20).iter_rows()]
    return AssetCheckResult(
        passed=twice.height == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "detections": detections.height,
            "frames_scored_twice": twice.height,
            "examples": MetadataValue.json(examples),
        },
    )


@asset(
    key=EVENTS_KEY,
    deps=[DETECTIONS_KEY, silver_key(get_contract(VIDEO_CAMERAS_CONTRACT))],
    group_name="video",
    description=(
        "视频告警事件 Video events: at least K event-class detections on one camera within W minutes, then a "
        "cooldown (ml/algorithms.yaml event_rule), with first/last seen, detections, best score, the frames as "
        "evidence and the camera's grid. Recomputed from every detection; feeds tickets (source video_ai)."
    ),
    kinds={"delta", "python"},
    **product_asset_facts(EVENTS),
)
def video_events(platform: PlatformResource) -> MaterializeResult:
    events = write_events(platform.get_warehouse())
    by_algorithm = dict(events.group_by("algorithm").len().iter_rows()) if events.height else {}
    return MaterializeResult(
        metadata={
            "events": events.height,
            "cameras": events["camera_id"].n_unique() if events.height else 0,
            "by_algorithm": MetadataValue.json(by_algorithm),
            "without_grid": events["grid_code"].null_count() if events.height else 0,
        }
    )


@sensor(
    name="new_frame_batches",
    minimum_interval_seconds=60,
    asset_selection=[DETECTIONS_KEY, EVENTS_KEY],
    description="Starts a scoring run when complete frame batches (zhengshu.video_frames) arrive in the landing zone.",
)
def new_frame_batches(context: SensorEvaluationContext, platform: PlatformResource) -> SensorResult | SkipReason:
    ready = [
        b for b in pending_batches(platform.landing_path(), platform.get_warehouse(), VIDEO_FRAMES) if b.is_complete
    ]
    if not ready:
        return SkipReason("no new complete frame batches")
    run_key = hashlib.sha256("|".join(sorted(b.batch_id for b in ready)).encode()).hexdigest()
    return SensorResult(run_requests=[RunRequest(run_key=run_key, asset_selection=[DETECTIONS_KEY, EVENTS_KEY])])


def video_assets() -> list[AssetsDefinition]:
    return [video_detections, video_events]


def video_checks() -> list:
    return [detections_scored_once]


def video_sensors() -> list:
    return [new_frame_batches]
