"""Video frames on Kafka (issue 14): checked, scored by every production model, recorded, exactly once.

A real local broker; tiny models registered in a temporary MLflow store (random backbones whose heads are set to
find one object of each class on every frame: plumbing, not accuracy). `street_vending` has no production version
and must be skipped with one warning. Frames are drawn by `ml.scenes.draw_frame`.
"""

from __future__ import annotations

import io
import logging
import os
import random
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from deltalake import DeltaTable, write_deltalake
from PIL import Image

from demo_data.simulate_video import SimCamera, VideoProfile, VideoSimulator
from ingestion.contract import get_contract
from ingestion.silver import silver_table
from ingestion.streaming.consumer import StreamConsumer
from ingestion.streaming.frames import FRAME_COLUMN, check_frames
from ingestion.streaming.messages import FRAME_RULES, Message
from ingestion.streaming.offsets import app_id
from ingestion.streaming.simulate import produce
from ingestion.streaming.topics import load_topics
from ingestion.warehouse import Warehouse
from ml.algorithms import get_algorithm
from ml.models import ModelInfo, build_model, save_model
from ml.registry import ModelRegistry
from ml.scenes import draw_frame, encode_jpeg
from orchestration.streaming import MAX_BATCH, _static_rules
from orchestration.video_stream import video_stream_spec
from tests.kafka_kit import running_broker
from tests.stream_kit import YIWANG, consumer_env

REPO = Path(__file__).resolve().parents[1]
TOPIC = load_topics()["video"]
FRAMES = "bronze/stream/video_frames"
DETECTIONS = "silver/video/detections"
# helmet gets two versions (production: 2), garbage_overflow one; street_vending none.
VERSIONS = {"helmet": 2, "garbage_overflow": 1}
INPUT_SIZE = 160  # small and quick on two shared cores; the last feature map is still 1x1
OBJECTS = {"helmet": 2, "garbage_overflow": 3}  # what the tiny models find on every frame: one per class
CAM_A, CAM_B, CAM_C, CAM_D = (f"4406050000131{i:07d}" for i in (1, 2, 3, 4))
# The camera registry: A runs helmet only, B everything, D garbage only; C is not registered (scored by every model).
ENABLED = {CAM_A: "helmet", CAM_B: "helmet,garbage_overflow,street_vending", CAM_D: "garbage_overflow"}


# -- models and registries --------------------------------------------------------------------------------------


def _tiny_model(algorithm: str) -> torch.nn.Module:
    """An untrained SSDlite whose head finds one box of each class on any frame (from the 1x1 feature map)."""
    spec = get_algorithm(algorithm)
    torch.manual_seed(0)
    model = build_model(spec, input_size=INPUT_SIZE, width_mult=0.5)
    classes = spec.num_classes
    with torch.no_grad():
        layers = model.head.classification_head.module_list
        for index, block in enumerate(layers):
            conv = block[1]
            conv.weight.zero_()
            bias = torch.zeros(6, classes)
            if index < len(layers) - 1:
                bias[:, 0] = 10.0  # background everywhere
            else:
                for anchor in range(6):
                    bias[anchor, anchor + 1 if anchor < classes - 1 else 0] = 10.0
            conv.bias.copy_(bias.flatten())
    return model


@pytest.fixture(scope="module")
def registry_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    registry = ModelRegistry(uri, log_file=folder / "ml.log")
    for algorithm, versions in VERSIONS.items():
        saved = folder / algorithm
        info = ModelInfo(algorithm, get_algorithm(algorithm).class_names, input_size=INPUT_SIZE, width_mult=0.5)
        save_model(_tiny_model(algorithm), info, saved)
        for version in range(1, versions + 1):
            registry.register(
                algorithm, saved, metrics={"map_50": 0.1 * version}, params={"epochs": 0}, data_fingerprint="test"
            )
        registry.promote(algorithm, versions)
    return uri


def _write_cameras(warehouse: Path) -> None:
    contract = get_contract("zhengshu.video_cameras")
    now = datetime.now(UTC)
    rows = [
        {
            "camera_id": camera,
            "grid_code": "440605011001001",
            "lon": 113.1,
            "lat": 23.0,
            "scene": "street",
            "algorithms": algorithms,
            "status": "online",
            "_batch_id": "test",
            "_extracted_at": now,
            "_ingested_at": now,
        }
        for camera, algorithms in ENABLED.items()
    ]
    table = pa.Table.from_pylist(rows, schema=contract.silver_schema())
    write_deltalake(str(warehouse / silver_table(contract)), table, mode="overwrite")


def _write_grid(warehouse: Path) -> None:
    """The grid the registered cameras stand in (silver zhengshu.grid_registry), for the tickets' routing."""
    square = "POLYGON((113.09 22.99, 113.11 22.99, 113.11 23.01, 113.09 23.01, 113.09 22.99))"
    grid = "440605011001001"
    write_deltalake(
        str(warehouse / "silver/zhengshu/grid_registry"),
        pa.table(
            {
                "grid_code": [grid],
                "community_code": [grid[:12]],
                "street_code": [grid[:9]],
                "district_code": [grid[:6]],
                "center_lon": [113.1],
                "center_lat": [23.0],
                "polygon_wkt": [square],
            }
        ),
    )


def _scored_by(camera: str) -> set[str]:
    if camera not in ENABLED:
        return set(VERSIONS)
    return set(ENABLED[camera].split(",")) & set(VERSIONS)


# -- frames ------------------------------------------------------------------------------------------------------


def _jpeg(seed: int, algorithm: str = "helmet") -> bytes:
    image, _ = draw_frame(np.random.default_rng(seed), algorithm, "train", (320, 180))
    return encode_jpeg(image, 80)


def _headers(ts: str | None, seq: object | None) -> list[tuple[str, bytes]]:
    found = []
    if ts is not None:
        found.append(("ts", ts.encode()))
    if seq is not None:
        found.append(("frame_seq", str(seq).encode()))
    return found


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _plan() -> list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]], str | None]]:
    """(kind, key, value, headers, expected rule): good frames of four cameras, two resent frames and one frame per
    way a frame can be refused."""
    start = datetime.now(UTC) - timedelta(minutes=2)
    plan = []
    good = {}
    for step in range(5):
        for number, camera in enumerate((CAM_A, CAM_B, CAM_C, CAM_D)):
            value = _jpeg(step * 10 + number, ("helmet", "garbage_overflow")[number % 2])
            ts = _iso(start + timedelta(seconds=step))
            good[(camera, step)] = (value, ts)
            plan.append(("valid", camera.encode(), value, _headers(ts, step), None))
    ts = _iso(start)
    jpeg = good[(CAM_A, 1)][0]
    png = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(png, format="PNG")
    plan += [
        ("duplicate", CAM_A.encode(), jpeg, _headers(good[(CAM_A, 1)][1], 1), None),
        ("duplicate", CAM_C.encode(), _jpeg(99), _headers(ts, 3), None),  # same camera and seq, other bytes
        ("truncated", CAM_A.encode(), jpeg[: len(jpeg) // 2], _headers(ts, 10), "not_jpeg"),
        ("png", CAM_B.encode(), png.getvalue(), _headers(ts, 10), "not_jpeg"),
        ("noise", CAM_C.encode(), random.Random(1).randbytes(3_000), _headers(ts, 10), "not_jpeg"),
        ("no_ts", CAM_A.encode(), jpeg, _headers(None, 11), "missing_header"),
        ("no_seq", CAM_B.encode(), jpeg, _headers(ts, None), "missing_header"),
        ("no_key", None, jpeg, _headers(ts, 12), "missing_key"),
        ("bad_ts", CAM_C.encode(), jpeg, _headers("yesterday", 11), "type"),
        ("negative_seq", CAM_D.encode(), jpeg, _headers(ts, -4), "range"),
        ("fraction_seq", CAM_D.encode(), jpeg, _headers(ts, "7.5"), "type"),
        (
            "future_ts",
            CAM_D.encode(),
            jpeg,
            _headers(_iso(datetime.now(UTC) + timedelta(days=1)), 13),
            "future_timestamp",
        ),
    ]
    return plan


def _send(kafka, plan) -> list[tuple[int, int]]:
    """Produce the plan in order; (partition, offset) of each message."""
    from kafka import KafkaProducer

    producer = KafkaProducer(acks="all", linger_ms=5, **kafka.client_options())
    try:
        futures = [
            producer.send(TOPIC.name, key=key, value=value, headers=headers) for _, key, value, headers, _ in plan
        ]
        producer.flush()
        return [(meta.partition, meta.offset) for meta in (f.get(timeout=30) for f in futures)]
    finally:
        producer.close()


# -- reading the warehouse ---------------------------------------------------------------------------------------


def _read(root: Path, table: str) -> pl.DataFrame:
    if not DeltaTable.is_deltatable(str(root / table)):
        return pl.DataFrame()
    frame = pl.from_arrow(DeltaTable(str(root / table)).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def _wait_for(root: Path, frames: int, refused: int, timeout: float = 90) -> None:
    """Until bronze holds `frames` frames and quarantine `refused` messages."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        bronze, quarantine = _read(root, FRAMES), _read(root, "quarantine/messages")
        if (
            bronze.height >= frames
            and (quarantine.select("partition", "offset").n_unique() if quarantine.height else 0) >= refused
        ):
            return
        time.sleep(0.3)
    raise AssertionError(f"the consumer did not write {frames} frames and {refused} refusals within {timeout} s")


def _in_process_consumer(root: Path, kafka, registry_uri: str) -> StreamConsumer:
    warehouse = Warehouse.at(root)
    spec = video_stream_spec(TOPIC, warehouse, None, rules=_static_rules(TOPIC), registry=ModelRegistry(registry_uri))
    return StreamConsumer(spec, warehouse, kafka.client_options(), batch_seconds=0.2, max_batch=MAX_BATCH["video"])


def _run_in_thread(consumer: StreamConsumer, errors: list) -> threading.Thread:
    def run() -> None:
        try:
            consumer.run(max_seconds=120)
        except BaseException as error:  # handed to the test
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _assert_exactly_once(root: Path, plan, placed) -> None:
    """Bronze holds every good frame once, detections every (good frame x algorithm its camera runs) once, with
    each object of the tiny models; quarantine every refused message once with its rule."""
    good = {
        (key.decode(), int(dict(headers)["frame_seq"])): where
        for (kind, key, _, headers, _), where in zip(plan, placed, strict=True)
        if kind == "valid"
    }
    bronze = _read(root, FRAMES)
    assert FRAME_COLUMN not in bronze.columns and "value" not in bronze.columns  # no JPEG bytes in bronze
    assert sorted(zip(bronze["camera_id"], bronze["frame_seq"], strict=True)) == sorted(good)
    assert (bronze["frame_bytes"] > 1_000).all() and set(bronze["width"]) == {320} and set(bronze["height"]) == {180}
    got = {(c, s): (p, o) for c, s, p, o in bronze.select("camera_id", "frame_seq", "_partition", "_offset").rows()}
    assert got == good  # each frame recorded at the offset it was sent at (never a resent copy)

    detections = _read(root, DETECTIONS)
    assert detections.select("camera_id", "frame_seq", "algorithm", "detection_index").is_duplicated().sum() == 0
    per_frame = detections.group_by("camera_id", "frame_seq", "algorithm").agg(
        pl.len().alias("objects"), pl.col("model_version").unique().alias("versions"), pl.col("stream_offset").first()
    )
    expected = {(camera, seq, name) for camera, seq in good for name in _scored_by(camera)}
    assert {tuple(r) for r in per_frame.select("camera_id", "frame_seq", "algorithm").rows()} == expected
    for camera, seq, name, objects, versions, offset in per_frame.rows():
        assert objects == OBJECTS[name] and versions == [VERSIONS[name]] and offset == good[(camera, seq)][1]
    assert set(detections["source"]) == {"stream"} and set(detections["stream_topic"]) == {TOPIC.name}
    assert "street_vending" not in set(detections["algorithm"])
    for uri in detections["frame_uri"].unique():  # the evidence: every frame with a detection, kept as its JPEG
        with Image.open(unquote(urlparse(uri).path)) as image:
            assert image.format == "JPEG"

    quarantine = _read(root, "quarantine/messages")
    refused = {where: rule for (_, _, _, _, rule), where in zip(plan, placed, strict=True) if rule}
    rows = quarantine.select("partition", "offset", "rule").rows()
    assert len(rows) == len(set(rows))  # nothing quarantined twice
    for where, rule in refused.items():
        assert (*where, rule) in rows, (where, rule, rows)
    assert {(p, o) for p, o, _ in rows} == set(refused)

    # Both tables carry each partition's offsets; bronze (written last) is at the end of every partition.
    frames_table, detections_table = DeltaTable(str(root / FRAMES)), DeltaTable(str(root / DETECTIONS))
    for partition in {p for p, _ in placed}:
        last = max(o for p, o in placed if p == partition)
        assert frames_table.transaction_version(app_id(TOPIC.name, 0, partition)) == last
        scored = detections_table.transaction_version(app_id(TOPIC.name, 0, partition))
        frames = [o for (p, o) in good.values() if p == partition]
        assert (scored is None and not frames) or (scored is not None and max(frames, default=-1) <= scored <= last)


# -- tests -------------------------------------------------------------------------------------------------------


def test_every_frame_rule_has_its_case() -> None:
    assert set(FRAME_RULES) <= {rule for *_, rule in _plan() if rule}


def test_frames_are_checked_scored_and_recorded_once(
    tmp_path: Path, registry_uri: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("orchestration.video_stream.REFRESH_S", 0.0)  # the registry is re-read every batch
    caplog.set_level(logging.WARNING, logger="yiwang.stream")
    root = tmp_path / "warehouse"
    _write_cameras(root)
    _write_grid(root)
    plan = _plan()
    with running_broker(tmp_path) as (_, kafka):
        placed = _send(kafka, plan)
        consumer = _in_process_consumer(root, kafka, registry_uri)
        errors: list = []
        thread = _run_in_thread(consumer, errors)
        _wait_for(root, frames=20, refused=sum(1 for *_, rule in plan if rule))
        consumer.stop()
        thread.join(timeout=60)
    assert not errors, errors
    _assert_exactly_once(root, plan, placed)
    skipped = [r for r in caplog.records if "street_vending has no production version" in r.getMessage()]
    assert len(skipped) == 1  # one warning, however many batches re-read the registry
    batches = _read(root, "ops/stream_batches")
    assert batches["duplicates"].sum() == 2 and batches["written"].sum() == 20
    # After the commits: the events (one per camera and algorithm: every frame shows each class) from the detections.
    events = _read(root, "gold/video/events")
    expected = {(camera, name) for camera in (CAM_A, CAM_B, CAM_C, CAM_D) for name in _scored_by(camera)}
    assert set(events.select("camera_id", "algorithm").rows()) == expected and events.height == len(expected)
    tickets = _read(root, "gold/dispatch/tickets")
    # ... and the video_ai tickets: one per event of a camera whose grid is known (C is not in the registry)
    located = events.filter(pl.col("grid_code").is_not_null())
    assert located.height == 4 and set(tickets.filter(pl.col("source") == "video_ai")["source_ref"]) == set(
        located["event_id"]
    )
    for uris in tickets["evidence_uri"]:
        assert all(Path(unquote(urlparse(uri).path)).is_file() for uri in uris.split())


def test_a_crash_between_the_detections_and_the_bronze_commit_doubles_nothing(
    tmp_path: Path, registry_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one window a kill can leave two tables apart: the detections are committed, bronze is not."""
    root = tmp_path / "warehouse"
    _write_cameras(root)
    plan = _plan()
    original = StreamConsumer._commit_bronze

    def crash(self, rows, last):
        raise RuntimeError("killed after the detections commit")

    with running_broker(tmp_path) as (_, kafka):
        placed = _send(kafka, plan)
        monkeypatch.setattr(StreamConsumer, "_commit_bronze", crash)
        first = _in_process_consumer(root, kafka, registry_uri)
        errors: list = []
        _run_in_thread(first, errors).join(timeout=90)
        assert errors and "killed after the detections commit" in str(errors[0])
        assert _read(root, DETECTIONS).height > 0 and _read(root, FRAMES).height == 0
        monkeypatch.setattr(StreamConsumer, "_commit_bronze", original)
        second = _in_process_consumer(root, kafka, registry_uri)
        errors = []
        thread = _run_in_thread(second, errors)
        _wait_for(root, frames=20, refused=sum(1 for *_, rule in plan if rule))
        second.stop()
        thread.join(timeout=60)
    assert not errors, errors
    _assert_exactly_once(root, plan, placed)


def _wait_until_writing(root: Path, pid: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batches = _read(root, "ops/stream_batches")
        if batches.height and batches["consumer_id"].str.contains(f"-{pid}-").any():
            return
        time.sleep(0.1)
    raise AssertionError(f"consumer {pid} wrote nothing within {timeout} s")


def test_a_killed_consumer_process_loses_and_doubles_nothing(tmp_path: Path, registry_uri: str) -> None:
    home = tmp_path / "home"
    root = home / "warehouse"
    _write_cameras(root)
    cameras = [SimCamera(c, ("helmet", "garbage_overflow")) for c in (CAM_A, CAM_B, CAM_C, CAM_D)]
    profile = VideoProfile(duplicate_share=0.1, corrupt_share=0.05, header_share=0.05)
    simulator = VideoSimulator(cameras, fps=10, duration=2, seed=7, profile=profile, size=(320, 180))
    record = tmp_path / "sent.jsonl"
    with running_broker(tmp_path) as (_, kafka):
        with open(record, "w", encoding="utf-8") as handle:
            stats = produce(kafka.client_options(), TOPIC.name, simulator.messages(), handle)
        valid = stats.by_kind["valid"]
        refused = stats.sent - valid - stats.by_kind.get("duplicate", 0)
        assert valid > 60 and refused and stats.by_kind.get("duplicate")
        env = {
            **consumer_env(home, kafka),
            "MLFLOW_TRACKING_URI": registry_uri,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        command = [YIWANG, "stream", "run", "video", "--batch-seconds", "0.2"]
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        _wait_until_writing(root, first.pid)
        time.sleep(random.Random(3).uniform(0.0, 1.0))  # anywhere in a batch: checking, scoring, committing
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            _wait_for(root, frames=valid, refused=refused)
        finally:
            second.send_signal(signal.SIGTERM)
            output, _ = second.communicate(timeout=60)
        assert second.returncode == 0, output
        assert "no production version (skipped): street_vending" in " ".join(output.split())
    bronze = _read(root, FRAMES)
    assert bronze.height == valid and bronze.select("camera_id", "frame_seq").is_duplicated().sum() == 0
    detections = _read(root, DETECTIONS)
    per_frame = detections.group_by("camera_id", "frame_seq", "algorithm").len()
    expected = {(c, s, a) for c, s in bronze.select("camera_id", "frame_seq").rows() for a in _scored_by(c)}
    assert {tuple(r) for r in per_frame.select("camera_id", "frame_seq", "algorithm").rows()} == expected
    assert all(n == OBJECTS[a] for _, _, a, n in per_frame.rows())  # nothing doubled
    quarantine = _read(root, "quarantine/messages")
    assert quarantine.select("partition", "offset", "rule").is_duplicated().sum() == 0
    batches = _read(root, "ops/stream_batches")
    assert batches["consumer_id"].n_unique() >= 2  # the killed consumer had written


def test_the_simulator_sends_what_the_consumer_must_keep_and_refuse() -> None:
    cameras = [SimCamera(CAM_A, ("helmet",)), SimCamera(CAM_B, ("street_vending", "garbage_overflow"))]
    profile = VideoProfile(duplicate_share=0.2, corrupt_share=0.2, header_share=0.2)
    simulator = VideoSimulator(cameras, fps=5, duration=2, seed=1, profile=profile, size=(320, 180))
    ticks = iter(range(0, 10**9, 1_000))  # a clock that never makes it wait
    sent = list(simulator.messages(clock=lambda: float(next(ticks))))
    kinds = [kind for _, _, kind, _ in sent]
    assert len(sent) - kinds.count("duplicate") == 20 and {"valid", "duplicate"} <= set(kinds)
    assert set(kinds) - {"valid", "duplicate"}  # some warts
    messages = [Message(0, i, key, value, None, tuple(headers)) for i, (key, value, _, headers) in enumerate(sent)]
    checked = check_frames(messages, TOPIC.name, get_contract(TOPIC.fields_contract_id), _static_rules(TOPIC))
    good = set(checked.good["_offset"])
    assert good == {i for i, kind in enumerate(kinds) if kind in ("valid", "duplicate")}  # warts refused
    valid = checked.good.filter(pl.col("_offset").is_in([i for i, k in enumerate(kinds) if k == "valid"]))
    assert valid.select("camera_id", "frame_seq").is_duplicated().sum() == 0
    resent = checked.good.filter(pl.col("_offset").is_in([i for i, k in enumerate(kinds) if k == "duplicate"]))
    assert resent.join(valid, on=["camera_id", "frame_seq"], how="anti").height == 0  # each repeats a valid frame
    later = VideoSimulator(cameras, fps=5, duration=2, start=simulator.start + timedelta(seconds=2))
    assert later.base_seq >= simulator.base_seq + 2 * 25  # a later run continues the cameras' counters
