"""Video AI in batch: frame batches scored by the registry's production models, events, tickets, hotspots.

The models are real SSDlite detectors registered in a temporary MLflow registry (`ml.registry`), with their
classification heads rigged so that every frame gets the same few detections of one event class whatever it shows:
the tests are about the plumbing (which frames, which model version, once), not about what a model sees. Frames
are small JPEGs; one is corrupt, one truncated.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pyarrow as pa
import pytest
from deltalake import write_deltalake
from PIL import Image

from ingestion.contract import batch_contracts, get_contract, image_contracts, load_contracts
from ingestion.ledger import read_ledger, read_quarantine
from ingestion.pipeline import ingest_contract, ingest_unknown, pending_batches
from ingestion.warehouse import Warehouse
from thematic_libs.video.detections import (
    DETECTIONS,
    DETECTIONS_SCHEMA,
    FrameRef,
    append_detections,
    batch_transaction,
    detections_frame,
    read_detections,
)
from thematic_libs.video.events import EventRule, detect_events, write_events
from thematic_libs.video.scoring import VIDEO_FRAMES, score_frame_batches

CAM_HELMET = "44060500001320000001"  # runs helmet
CAM_BINS = "44060500001320000002"  # runs garbage_overflow and street_vending
CAM_UNKNOWN = "44060500001320000099"  # not in the camera registry: scored by every algorithm
GRID = "440605001001001"
BATCH = "20261115T100000"
START = datetime(2026, 11, 15, 1, 40, tzinfo=UTC)  # 09:40 in Beijing
HOT_CLASS = {"helmet": "rider_no_helmet", "garbage_overflow": "overflowing_bin", "street_vending": "vendor_stall"}


# --- landing zone and warehouse helpers ------------------------------------------------------------------------


def jpeg(shade: int, size: tuple[int, int] = (320, 180)) -> bytes:
    from io import BytesIO

    buffer = BytesIO()
    Image.new("RGB", size, (shade, 120, 255 - shade)).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def frames_dir(landing: Path, batch_id: str = BATCH) -> Path:
    return landing / "district" / "zhengshu" / "video_frames" / batch_id


def write_frames(
    landing: Path, frames: list[tuple[str, int, datetime, bytes]], batch_id: str = BATCH, **entry_changes: dict
) -> Path:
    """A frame batch as a department delivers it: JPEGs first, the manifest last. `entry_changes` maps a file
    name to fields that replace (or, with value None, remove) those of its manifest entry."""
    folder = frames_dir(landing, batch_id)
    files = []
    for camera, seq, captured, data in frames:
        name = f"{camera}/{seq}.jpg"
        (folder / camera).mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        entry = {
            "name": name,
            "rows": 1,
            "sha256": hashlib.sha256(data).hexdigest(),
            "captured_at": (captured + timedelta(hours=8)).strftime("%Y-%m-%dT%H:%M:%S+08:00"),
        }
        for key, value in entry_changes.get(name, {}).items():
            if value is None:
                entry.pop(key, None)
            else:
                entry[key] = value
        files.append(entry)
    manifest = {
        "contract_id": VIDEO_FRAMES,
        "contract_version": "1.0.0",
        "batch_id": batch_id,
        "mode": "incremental",
        "extracted_at": "2026-11-15T10:00:00+08:00",
        "files": files,
    }
    (folder / "_manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return folder


def standard_frames() -> list[tuple[str, int, datetime, bytes]]:
    """12 frames: 6 of the helmet camera (the last corrupt), 4 of the bins camera (the last truncated), 2 of a
    camera the registry does not know; 20 seconds apart."""
    frames = []
    for camera, count in ((CAM_HELMET, 6), (CAM_BINS, 4), (CAM_UNKNOWN, 2)):
        for k in range(count):
            frames.append((camera, 100 + k, START + timedelta(seconds=20 * k), jpeg(20 * k)))
    helmet_last = 5
    corrupt = b"\xff\xd8\xff\xe0" + b"\x00garbage, not a JPEG stream" * 40
    frames[helmet_last] = (*frames[helmet_last][:3], corrupt)
    whole = frames[9][3]
    frames[9] = (*frames[9][:3], whole[: len(whole) // 2])  # CAM_BINS/103: truncated half-way
    return frames


def write_cameras(warehouse: Warehouse) -> None:
    """The silver camera registry (the columns the video code reads)."""
    write_deltalake(
        warehouse.uri("silver/zhengshu/video_cameras"),
        pa.table(
            {
                "camera_id": [CAM_HELMET, CAM_BINS, "44060500001320000003"],
                "grid_code": [GRID, GRID, GRID],
                "lon": [113.10, 113.101, 113.102],
                "lat": [23.00, 23.001, 23.002],
                "algorithms": ["helmet,illegal_parking", "garbage_overflow,street_vending", "helmet"],
            }
        ),
    )


def write_grid(warehouse: Warehouse) -> None:
    """One grid in silver, with every column of its contract (dbt stages all of them)."""
    contract = get_contract("zhengshu.grid_registry")
    h = 0.005
    ring = [(113.1 - h, 23.0 - h), (113.1 + h, 23.0 - h), (113.1 + h, 23.0 + h), (113.1 - h, 23.0 + h)]
    polygon = "POLYGON((" + ", ".join(f"{x} {y}" for x, y in [*ring, ring[0]]) + "))"
    now = datetime(2026, 11, 9, tzinfo=UTC)
    row = {
        "grid_code": GRID,
        "grid_name": "第一网格",
        "community_code": GRID[:12],
        "community_name": "社区",
        "street_code": GRID[:9],
        "street_name": "桂城街道",
        "district_code": "440605",
        "district_name": "南海区",
        "center_lon": 113.1,
        "center_lat": 23.0,
        "polygon_wkt": polygon,
        "grid_worker_id": "W001",
        "_batch_id": "20261109T010000",
        "_extracted_at": now,
        "_ingested_at": now,
    }
    write_deltalake(
        warehouse.uri("silver/zhengshu/grid_registry"), pa.Table.from_pylist([row], schema=contract.silver_schema())
    )


# --- models -----------------------------------------------------------------------------------------------------


def rigged_model(algorithm: str):
    """A small SSDlite that finds `HOT_CLASS[algorithm]` on every frame: background everywhere except on the coarsest
    feature map (one cell, six anchors), where the event class wins; boxes are the anchors themselves."""
    import torch

    from ml.algorithms import get_algorithm
    from ml.models import build_model

    torch.manual_seed(0)
    spec = get_algorithm(algorithm)
    hot = spec.class_names.index(HOT_CLASS[algorithm]) + 1
    model = build_model(algorithm, width_mult=0.25)
    classification = model.head.classification_head.module_list
    regression = model.head.regression_head.module_list
    with torch.no_grad():
        for block in classification:
            block[1].weight.zero_()
            bias = block[1].bias.view(-1, spec.num_classes)
            bias.fill_(-10.0)
            bias[:, 0] = 10.0
        last = classification[-1][1].bias.view(-1, spec.num_classes)
        last[:, 0] = -10.0
        last[:, hot] = 10.0
        regression[-1][1].weight.zero_()
        regression[-1][1].bias.zero_()
    return model


def save_rigged(folder: Path, algorithm: str) -> Path:
    from ml.algorithms import get_algorithm
    from ml.models import ModelInfo, save_model

    save_model(
        rigged_model(algorithm), ModelInfo(algorithm, get_algorithm(algorithm).class_names, width_mult=0.25), folder
    )
    return folder


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """A temporary MLflow registry with production versions of helmet and garbage_overflow (none of street_vending)."""
    from ml.registry import ModelRegistry

    root = tmp_path_factory.mktemp("registry")
    store = ModelRegistry(f"sqlite:///{root / 'mlflow.db'}", log_file=root / "ml.log")
    for algorithm in ("helmet", "garbage_overflow"):
        info = store.register(
            algorithm,
            save_rigged(root / algorithm, algorithm),
            metrics={"map_50": 0.1},
            params={"epochs": 0},
            data_fingerprint="rigged-for-tests",
        )
        store.promote(algorithm, info.version)
    return store


class NoModels:
    """A registry with no production version at all: checking a batch loads no model."""

    def production(self, algorithm: str) -> None:
        return None

    def load_production(self, algorithm: str):
        raise AssertionError(f"no model should be loaded ({algorithm})")


class WithStreetVending:
    """The test registry plus a street_vending Detector loaded directly, as version 7 (promoted later)."""

    def __init__(self, registry) -> None:
        from ml.algorithms import get_algorithm
        from ml.score import Detector

        self.registry = registry
        spec = get_algorithm("street_vending")
        self.detector = Detector(rigged_model("street_vending"), "street_vending", spec.class_names, version="7")

    def production(self, algorithm: str):
        return SimpleNamespace(version=7) if algorithm == "street_vending" else self.registry.production(algorithm)

    def load_production(self, algorithm: str):
        if algorithm == "street_vending":
            return self.detector, SimpleNamespace(version=7)
        return self.registry.load_production(algorithm)


# --- the contract and the tabular path --------------------------------------------------------------------------


def test_contract_is_an_image_contract_the_tabular_path_skips(tmp_path: Path) -> None:
    contract = get_contract(VIDEO_FRAMES)
    assert contract.is_image and not contract.is_stream and contract.file_format == "jpeg"
    assert contract.primary_key == ("camera_id", "frame_seq") and contract.source_level == "district"
    assert contract.column("captured_at").logical_type == "timestamp"
    assert VIDEO_FRAMES in load_contracts() and VIDEO_FRAMES in image_contracts()
    assert VIDEO_FRAMES not in batch_contracts() and "zhengshu.video_cameras" in batch_contracts()
    assert list(image_contracts()) == [VIDEO_FRAMES]
    landing, warehouse = tmp_path / "landing", Warehouse.at(tmp_path / "warehouse")
    write_frames(landing, standard_frames())
    assert [b.batch_id for b in pending_batches(landing, warehouse, VIDEO_FRAMES)] == [BATCH]
    assert ingest_unknown(landing, warehouse) == []  # known: left to the video scoring, not rejected as unknown
    assert read_ledger(warehouse).height == 0
    with pytest.raises(ValueError, match="image files, not rows"):
        ingest_contract(contract, landing, warehouse)
    staging = Path(__file__).resolve().parent.parent / "dbt_project" / "models" / "staging"
    assert not (staging / "stg_zhengshu__video_frames.sql").exists()


# --- batch scoring ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, registry):
    root = tmp_path_factory.mktemp("video")
    landing, warehouse = root / "landing", Warehouse.at(root / "warehouse")
    write_frames(landing, standard_frames())
    write_cameras(warehouse)
    run = score_frame_batches(landing, warehouse, registry, reject_share=0.25)
    return landing, warehouse, run


def test_batch_scoring_writes_detections_with_the_production_model_version(scored, registry) -> None:
    _, warehouse, run = scored
    assert run.without_production == ["street_vending"]
    assert "street_vending" in (run.skipped_note or "") and "yiwang ml promote" in (run.skipped_note or "")
    assert run.unknown_cameras == {CAM_UNKNOWN}
    (batch,) = run.batches
    assert batch.status == "loaded" and batch.frames_loaded == 10 and batch.frames_quarantined == 2
    detections = read_detections(warehouse)
    assert detections.height > 0 and detections.schema == pl.Schema(
        pl.from_arrow(DETECTIONS_SCHEMA.empty_table()).schema
    )
    versions = {a: registry.production(a).version for a in ("helmet", "garbage_overflow")}
    frames = detections.select("camera_id", "frame_seq", "algorithm", "model_version").unique()
    scored_frames = {(c, s, a) for c, s, a, _ in frames.iter_rows()}
    assert scored_frames == (
        {(CAM_HELMET, 100 + k, "helmet") for k in range(5)}  # 105 is corrupt
        | {(CAM_BINS, 100 + k, "garbage_overflow") for k in range(3)}  # 103 is truncated
        | {(CAM_UNKNOWN, 100 + k, a) for k in range(2) for a in ("helmet", "garbage_overflow")}
    )
    assert {(a, v) for _, _, a, v in frames.iter_rows()} == {(a, versions[a]) for a in versions}
    assert set(detections["class_name"]) == {"rider_no_helmet", "overflowing_bin"}
    assert set(detections["label_zh"]) == {"骑行未戴头盔", "垃圾桶满溢"}
    assert set(detections["source"]) == {"batch"} and set(detections["batch_id"]) == {BATCH}
    assert detections["stream_offset"].null_count() == detections.height
    per_frame = detections.group_by("camera_id", "frame_seq", "algorithm").len()["len"]
    assert per_frame.min() == per_frame.max() >= 1  # the rigged heads: the same detections on every frame
    first = detections.filter((pl.col("camera_id") == CAM_HELMET) & (pl.col("frame_seq") == 101)).row(0, named=True)
    assert first["captured_at"] == START + timedelta(seconds=20)
    assert first["frame_uri"].startswith("file://") and first["frame_uri"].endswith(f"{BATCH}/{CAM_HELMET}/101.jpg")
    assert Path(first["frame_uri"].removeprefix("file://")).is_file()
    assert 0 <= first["box_x1"] < first["box_x2"] <= 320 and 0 <= first["box_y1"] < first["box_y2"] <= 180
    table = warehouse.table(DETECTIONS)
    for algorithm, version in versions.items():
        assert table.transaction_version(batch_transaction(BATCH, algorithm)) == version
        assert batch.scored[algorithm][0] == version
    assert table.transaction_version(batch_transaction(BATCH, "street_vending")) is None
    (ledger,) = read_ledger(warehouse).to_dicts()
    assert ledger["contract_id"] == VIDEO_FRAMES and ledger["status"] == "loaded"
    assert (ledger["rows_loaded"], ledger["rows_quarantined"], ledger["rows_delivered"]) == (10, 2, 12)
    assert "2 of 12 frames quarantined" in ledger["reason"] and "street_vending" in ledger["reason"]


def test_corrupt_and_truncated_frames_are_quarantined_with_rule_and_reason(scored) -> None:
    _, warehouse, _ = scored
    quarantine = read_quarantine(warehouse)
    by_key = {row["record_key"]: row for row in quarantine.to_dicts()}
    assert set(by_key) == {f"{CAM_HELMET}/105", f"{CAM_BINS}/103"}
    assert {row["rule"] for row in by_key.values()} == {"corrupt_image"}
    assert {row["contract_id"] for row in by_key.values()} == {VIDEO_FRAMES}
    assert {row["batch_id"] for row in by_key.values()} == {BATCH}
    truncated = by_key[f"{CAM_BINS}/103"]
    assert "truncated" in truncated["detail"] and "deliver the frame again" in truncated["detail"]
    assert "cannot be decoded" in by_key[f"{CAM_HELMET}/105"]["detail"]
    raw = json.loads(truncated["raw_record"])
    assert raw["name"] == f"{CAM_BINS}/103.jpg" and raw["captured_at"] == "2026-11-15T09:41:00+08:00"
    assert truncated["source_file"] == f"{CAM_BINS}/103.jpg" and truncated["row_number"] == 10


def test_a_rerun_writes_nothing_and_a_model_promoted_later_scores_the_loaded_batch(scored, registry) -> None:
    landing, warehouse, _ = scored
    version, rows = warehouse.table(DETECTIONS).version(), read_detections(warehouse).height
    quarantined = read_quarantine(warehouse).height
    again = score_frame_batches(landing, warehouse, registry, reject_share=0.25)
    assert [b.status for b in again.batches] == ["up_to_date"]
    assert warehouse.table(DETECTIONS).version() == version and read_detections(warehouse).height == rows
    assert read_ledger(warehouse).height == 1 and read_quarantine(warehouse).height == quarantined
    # street_vending gets a production model: the loaded batch is scored by it alone, once
    later = WithStreetVending(registry)
    run = score_frame_batches(landing, warehouse, later, reject_share=0.25)
    (batch,) = run.batches
    assert batch.status == "rescored" and list(batch.scored) == ["street_vending"]
    assert run.without_production == []
    vending = read_detections(warehouse).filter(pl.col("algorithm") == "street_vending")
    assert set(vending["model_version"]) == {7} and set(vending["class_name"]) == {"vendor_stall"}
    frames = set(vending.select("camera_id", "frame_seq").unique().iter_rows())
    assert frames == {(CAM_BINS, 100), (CAM_BINS, 101), (CAM_BINS, 102), (CAM_UNKNOWN, 100), (CAM_UNKNOWN, 101)}
    assert warehouse.table(DETECTIONS).transaction_version(batch_transaction(BATCH, "street_vending")) == 7
    assert read_ledger(warehouse).height == 1 and read_quarantine(warehouse).height == quarantined
    version = warehouse.table(DETECTIONS).version()
    final = score_frame_batches(landing, warehouse, later, reject_share=0.25)
    assert [b.status for b in final.batches] == ["up_to_date"]
    assert warehouse.table(DETECTIONS).version() == version


def test_the_dagster_asset_reports_and_is_idempotent(scored, registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster import materialize

    from orchestration.resources import PlatformResource
    from orchestration.video_assets import detections_scored_once, video_detections, video_events

    landing, warehouse, _ = scored
    home = Path(warehouse.root).parent
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("YIWANG_HOME", str(home / "home"))
    version = warehouse.table(DETECTIONS).version()
    platform = PlatformResource(
        landing=str(landing),
        warehouse=warehouse.root,
        reports_dir=str(home / "reports"),
        key_file=str(home / "key"),
        reject_share=0.25,
    )
    result = materialize([video_detections, video_events, detections_scored_once], resources={"platform": platform})
    assert result.success
    (check,) = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["frames_scored_twice"].value == 0
    metadata = result.asset_materializations_for_node(video_detections.op.name)[0].metadata
    assert metadata["detections_written"].value == 0 and metadata["batches_loaded"].value == 0
    assert "skipped" in metadata and "street_vending" in metadata["skipped"].value
    assert warehouse.table(DETECTIONS).version() == version
    events = pl.from_arrow(warehouse.table("gold/video/events").to_pyarrow_table())
    assert isinstance(events, pl.DataFrame)
    # 5 helmet frames of one camera 20 s apart, each with the rigged detections: one helmet event, with its grid
    helmet = events.filter((pl.col("camera_id") == CAM_HELMET) & (pl.col("algorithm") == "helmet"))
    assert helmet.height == 1 and helmet["grid_code"][0] == GRID and helmet["event_code"][0] == "050203"
    assert helmet["frames"][0] == 5 and helmet["evidence_uris"][0].count("file://") == 5


def test_bad_frame_batches_are_rejected_whole_or_frame_by_frame(tmp_path: Path) -> None:
    landing, warehouse = tmp_path / "landing", Warehouse.at(tmp_path / "warehouse")
    # Two bad frames of twelve: more than the default 5%, the whole batch is rejected, nothing scored.
    write_frames(landing, standard_frames(), "20261115T100000")
    good = [(CAM_HELMET, 200 + k, START, jpeg(k)) for k in range(4)]
    folder = write_frames(landing, good, "20261115T110000")
    (folder / CAM_HELMET / "999.jpg").write_bytes(jpeg(9))  # not in the manifest
    write_frames(landing, good, "20261115T120000", **{f"{CAM_HELMET}/200.jpg": {"sha256": "0" * 64}})
    odd = [*good, ("cam7", 1, START, jpeg(1)), (CAM_BINS, 5, START, jpeg(2)), (CAM_BINS, 6, START, jpeg(3))]
    changes = {f"{CAM_BINS}/5.jpg": {"captured_at": None}, f"{CAM_BINS}/6.jpg": {"frame_seq": 7}}
    write_frames(landing, odd, "20261115T130000", **changes)
    run = score_frame_batches(landing, warehouse, NoModels(), reject_share=0.05)
    outcomes = {b.batch_id: b for b in run.batches}
    assert outcomes["20261115T100000"].status == "rejected" and "2 of 12 frames" in outcomes["20261115T100000"].reason
    ledger = {row["batch_id"]: row for row in read_ledger(warehouse).to_dicts()}
    assert ledger["20261115T100000"]["rule"] == "too_many_bad_rows"
    assert ledger["20261115T110000"]["rule"] == "unlisted_part" and "999.jpg" in ledger["20261115T110000"]["reason"]
    assert ledger["20261115T120000"]["rule"] == "sha256"
    assert not warehouse.exists(DETECTIONS)
    # Frames whose entries break the contract: quarantined with the validator's rules (the batch is rejected too:
    # 3 of 7 frames is more than 5%).
    rules = {
        (row["record_key"], row["rule"])
        for row in read_quarantine(warehouse).filter(pl.col("batch_id") == "20261115T130000").to_dicts()
    }
    assert rules == {("cam7/1", "pattern"), (f"{CAM_BINS}/5", "required"), (f"{CAM_BINS}/6", "name_mismatch")}
    # An illegal name rejects the batch before any file is read.
    write_frames(landing, good, "20261115T140000", **{f"{CAM_HELMET}/200.jpg": {"name": "../../escape.jpg"}})
    score_frame_batches(landing, warehouse, NoModels())
    assert read_ledger(warehouse).filter(pl.col("batch_id") == "20261115T140000")["rule"].to_list() == ["illegal_name"]
    assert score_frame_batches(landing, warehouse, NoModels()).batches == []  # every batch decided once


# --- events -----------------------------------------------------------------------------------------------------


def hand_detections(rows: list[tuple]) -> pl.DataFrame:
    """(camera, minute after START, frame_seq, class, score[, source, scored second]) -> detection rows."""
    records = []
    for row in rows:
        camera, minute, seq, cls, score, *rest = row
        source = rest[0] if rest else "batch"
        scored_second = rest[1] if len(rest) > 1 else 0
        records.append(
            {
                "camera_id": camera,
                "captured_at": START + timedelta(minutes=minute),
                "frame_seq": seq,
                "frame_uri": f"file:///frames/{camera}/{seq}.jpg",
                "algorithm": "helmet",
                "class_name": cls,
                "score": score,
                "model_version": 3,
                "source": source,
                "scored_at": START + timedelta(hours=1, seconds=scored_second),
            }
        )
    return pl.DataFrame(records, schema_overrides={"captured_at": pl.Datetime("us", "UTC")})


HELMET_RULE = {"helmet": EventRule("helmet", ("rider_no_helmet",), 3, 5, 30, 0.5, "骑行未戴头盔识别")}


def test_events_need_k_detections_within_w_minutes_then_a_cooldown() -> None:
    no = "rider_no_helmet"
    rows = [
        # camera A: 3 within 5 minutes -> event at minute 2; 10-12 fall in its cooldown; 40-42 raise a second one
        *[("A", m, i, no, 0.9) for i, m in enumerate([0, 1, 2, 10, 11, 12, 40, 41, 42])],
        # the frame at minute 1 scored again from the stream: counted once
        ("A", 1, 1, no, 0.9, "stream", 30),
        # camera B: 3 detections but spread over 12 minutes; helmets worn; low scores: no event
        ("B", 0, 0, no, 0.9),
        ("B", 6, 1, no, 0.9),
        ("B", 12, 2, no, 0.9),
        *[("B", 13, 3 + i, "rider_helmet", 0.9) for i in range(3)],
        *[("B", 14, 6 + i, no, 0.3) for i in range(3)],
        # camera C: one frame with three riders without helmets is enough
        *[("C", 5, 1, no, 0.8 + i / 100) for i in range(3)],
    ]
    cameras = pl.DataFrame(
        {"camera_id": ["A", "C"], "grid_code": [GRID, GRID], "lon": [113.1, 113.2], "lat": [23.0] * 2}
    )
    events = detect_events(hand_detections(rows), HELMET_RULE, cameras, {"helmet": "050203"})
    summary = events.select("camera_id", "first_seen", "last_seen", "triggered_at", "detections", "frames").rows()
    at = lambda m: START + timedelta(minutes=m)  # noqa: E731
    assert summary == [
        ("A", at(0), at(12), at(2), 6, 6),
        ("A", at(40), at(42), at(42), 3, 3),
        ("C", at(5), at(5), at(5), 3, 1),
    ]
    first = events.row(0, named=True)
    assert first["evidence_uris"].split() == [f"file:///frames/A/{i}.jpg" for i in range(6)]
    assert (
        first["grid_code"] == GRID
        and first["event_code"] == "050203"
        and first["algorithm_label"] == "骑行未戴头盔识别"
    )
    assert first["class_names"] == no and first["model_versions"] == "3" and first["max_score"] == pytest.approx(0.9)
    assert (first["min_detections"], first["window_minutes"], first["cooldown_minutes"]) == (3, 5.0, 30.0)
    assert events["event_id"].n_unique() == 3 and events["event_id"].str.starts_with("VE").all()
    again = detect_events(hand_detections(rows).reverse(), HELMET_RULE, cameras, {"helmet": "050203"})
    assert again.equals(events)  # ids and rows do not depend on the order detections arrive in
    # without a cooldown, the trigger at minute 12 (10, 11, 12 within 5 minutes) is an event of its own
    eager = {"helmet": EventRule("helmet", ("rider_no_helmet",), 3, 5, 0, 0.5)}
    triggers = detect_events(hand_detections(rows), eager).filter(pl.col("camera_id") == "A")["triggered_at"]
    assert triggers.to_list() == [at(2), at(12), at(42)]
    assert detect_events(hand_detections(rows[:1]).clear(), HELMET_RULE).height == 0


# --- tickets ----------------------------------------------------------------------------------------------------


def append_hand_detections(warehouse: Warehouse, camera: str, algorithm: str, minutes: list[float], seq0: int) -> None:
    from ml.algorithms import get_algorithm

    cls = get_algorithm(algorithm).event_classes[0]
    frames = [
        FrameRef(camera, START + timedelta(minutes=m), seq0 + i, f"file:///frames/{camera}/{seq0 + i}.jpg")
        for i, m in enumerate(minutes)
    ]
    found = [[SimpleNamespace(class_name=cls, score=0.9, box=(1, 2, 30, 40))] for _ in frames]
    rows = detections_frame(frames, found, algorithm=algorithm, model_version=2, source="batch", batch_id=f"B{seq0}")
    append_detections(warehouse, rows, {batch_transaction(f"B{seq0}", algorithm): 2})


def test_tickets_via_the_feed_one_open_ticket_per_camera_and_event(tmp_path: Path) -> None:
    from thematic_libs.dispatch.refresh import feeds_named, refresh_tickets
    from thematic_libs.dispatch.store import TICKET_SOURCES, TICKETS

    warehouse = Warehouse.at(tmp_path / "warehouse")
    write_cameras(warehouse)
    write_grid(warehouse)
    append_hand_detections(warehouse, CAM_HELMET, "helmet", [0, 1, 2, 40, 41, 42], 1)  # two events, one camera
    append_hand_detections(warehouse, "44060500001320000003", "helmet", [0, 1, 2], 50)  # same grid, other camera
    append_hand_detections(warehouse, CAM_BINS, "garbage_overflow", [0, 3, 6, 9, 12], 80)
    events = write_events(warehouse)
    assert events.group_by("camera_id", "algorithm").len().sort("camera_id")["len"].to_list() == [2, 1, 1]
    refreshed = refresh_tickets(warehouse, feeds_named("video_ai"))
    assert refreshed.fed == {"video_ai": 4}
    tickets = pl.from_arrow(warehouse.table(TICKETS).to_pyarrow_table())
    assert isinstance(tickets, pl.DataFrame)
    assert tickets.height == 3 and set(tickets["source"]) == {"video_ai"}
    by_camera = {row["dedupe_key"].split("|")[1]: row for row in tickets.to_dicts()}
    helmet = by_camera[CAM_HELMET]
    assert helmet["merged_count"] == 2 and helmet["event_code"] == "050203" and helmet["department_code"] == "gongan"
    assert helmet["dedupe_key"] == f"video|{CAM_HELMET}|050203|2026111500" and helmet["grid_code"] == GRID
    assert helmet["evidence_uri"].split()[:3] == [f"file:///frames/{CAM_HELMET}/{i}.jpg" for i in (1, 2, 3)]
    assert "骑行未戴头盔识别" in helmet["title"] and CAM_HELMET in helmet["description"]
    bins = by_camera[CAM_BINS]
    assert bins["event_code"] == "010104" and bins["department_code"] == "chengguan" and bins["priority"] == "P2"
    sources = pl.from_arrow(warehouse.table(TICKET_SOURCES).to_pyarrow_table())
    assert isinstance(sources, pl.DataFrame) and sources.height == 4
    # the feed again, and the events rebuilt again: no new ticket, no change
    write_events(warehouse)
    version = warehouse.table(TICKETS).version()
    again = refresh_tickets(warehouse, feeds_named("video_ai"))
    assert again.written is not None and (again.written.inserted, again.written.updated) == (0, 0)
    assert warehouse.table(TICKETS).version() == version


# --- hotspots (dbt) ---------------------------------------------------------------------------------------------


def test_hotspot_marts_build_and_count_events(tmp_path: Path) -> None:
    from tests.test_dbt_project import DbtWorkspace

    warehouse = Warehouse.at(tmp_path / "warehouse")
    write_cameras(warehouse)
    write_grid(warehouse)
    append_hand_detections(warehouse, CAM_HELMET, "helmet", [0, 1, 2, 40, 41, 42, 80, 81, 82], 1)  # 09:40, 10:20, 11:00
    append_hand_detections(warehouse, "44060500001320000003", "helmet", [0, 1, 2], 50)
    append_hand_detections(warehouse, CAM_BINS, "garbage_overflow", [0, 3, 6, 9, 12], 80)
    append_hand_detections(warehouse, CAM_UNKNOWN, "helmet", [0, 1, 2], 90)  # no grid: only in the camera mart
    events = write_events(warehouse)
    assert events.height == 6
    space = DbtWorkspace(warehouse=Path(warehouse.root), duckdb_file=tmp_path / "yiwang.duckdb", target=tmp_path / "t")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YIWANG_WAREHOUSE", warehouse.root)
        patch.setenv("YIWANG_DUCKDB", str(space.duckdb_file))
        patch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        run = space.invoke("build", "--indirect-selection", "cautious", "--select", "+path:models/marts/video")
    bad = {name: status for name, status in run.statuses.items() if status not in ("success", "pass")}
    assert bad == {} and run.success
    hourly = space.query(
        "select camera_id, algorithm, hour_of_day, events, detections, grid_code from marts.video_hotspots"
        " order by camera_id, algorithm, hour_of_day"
    )
    assert hourly == [
        (CAM_HELMET, "helmet", 9, 1, 3, GRID),
        (CAM_HELMET, "helmet", 10, 1, 3, GRID),
        (CAM_HELMET, "helmet", 11, 1, 3, GRID),
        (CAM_BINS, "garbage_overflow", 9, 1, 5, GRID),
        ("44060500001320000003", "helmet", 9, 1, 3, GRID),
        (CAM_UNKNOWN, "helmet", 9, 1, 3, None),
    ]
    by_grid = space.query(
        "select grid_code, algorithm, events, cameras, peak_hour, peak_hour_events, rank_in_algorithm, grid_name"
        " from marts.video_hotspots_by_grid order by algorithm"
    )
    assert by_grid == [
        (GRID, "garbage_overflow", 1, 1, 9, 1, 1, "第一网格"),
        (GRID, "helmet", 4, 2, 9, 2, 1, "第一网格"),
    ]
    types = space.query(
        "select data_type from information_schema.columns where table_schema = 'marts' and table_name like 'video_%'"
    )
    assert types and not [t for (t,) in types if "HUGEINT" in t or t.endswith("[]")]
