"""The demo's video frames: one frame batch of `zhengshu.video_frames`, drawn with the model core's street scenes.

Eight cameras of the demo's camera registry (those that run helmet, garbage_overflow or street_vending, online and
without a planted defect), twelve frames each at 640x360, 20 seconds apart, drawn by `ml.scenes.draw_frame` for the
camera's algorithm (riders with and without helmets, bins full and overflowing, stalls and carts), so that
`yiwang run` scores them once production models exist. Two frames are broken the way camera exports break: one
truncated half-way, one with its JPEG header overwritten. Their sha256 in the manifest is that of the broken file
(the camera sent them so): the batch loads, those two frames go to quarantine (2 of 96, under the 5% reject share).

The answer key is `_labels/video_frames.csv` (camera_id, frame_seq, name, algorithm, objects drawn per class, expected
`scored` or `corrupt_image`). Every draw comes from `rng(seed, ...)`: the same seed writes the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from demo_data.common import rng
from demo_data.world import World
from ingestion.contract import image_contracts

VIDEO_FRAMES = "zhengshu.video_frames"
ALGORITHMS = ("helmet", "garbage_overflow", "street_vending")
CAMERAS_PER_ALGORITHM = {"helmet": 3, "garbage_overflow": 3, "street_vending": 2}
FRAMES_PER_CAMERA = 12
FRAME_SIZE = (640, 360)
INTERVAL = timedelta(seconds=20)
EXTRACTED_AT = datetime(2026, 11, 15, 10, 0)  # local (CST); on the demo's as-of date, so `yiwang run` takes it
FIRST_CAPTURE = datetime(2026, 11, 15, 9, 40)
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S+08:00"
LABELS_FILE = "video_frames.csv"


@dataclass
class FrameBatchSummary:
    batch_id: str
    frames: int
    corrupt: int
    cameras: int


def _cameras(world: World, excluded: set[str]) -> list[tuple[str, str]]:
    """(camera_id, algorithm) of the cameras that get frames: per algorithm, the first online ones by id."""
    from demo_data.place_tables import video_cameras

    registry = list(video_cameras(world))[-1].frame  # the latest weekly snapshot
    chosen: list[tuple[str, str]] = []
    taken: set[str] = set()
    rows = sorted(registry.iter_rows(named=True), key=lambda r: r["camera_id"])
    for algorithm in ALGORITHMS:
        picked = [
            r["camera_id"]
            for r in rows
            if r["status"] == "online"
            and algorithm in r["algorithms"].split(",")
            and r["camera_id"] not in excluded
            and r["camera_id"] not in taken
        ][: CAMERAS_PER_ALGORITHM[algorithm]]
        taken.update(picked)
        chosen += [(camera, algorithm) for camera in picked]
    return chosen


def _broken(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    # Header overwritten: no start-of-image marker, no tables; Pillow cannot identify the file.
    return b"\x00" * 64 + data[64:]


def write_frame_batch(out: Path, world: World, excluded_cameras: set[str] | None = None) -> FrameBatchSummary:
    """Write the demo frame batch (JPEGs first, the manifest last) and its answer key under `out`."""
    from ml.scenes import draw_frame, encode_jpeg, jpeg_quality

    contract = image_contracts()[VIDEO_FRAMES]
    batch_id = EXTRACTED_AT.strftime("%Y%m%dT%H%M%S")
    directory = out / contract.source_level / contract.department / contract.dataset / batch_id
    cameras = _cameras(world, excluded_cameras or set())
    g = rng(world.seed, "video_frames")
    total = len(cameras) * FRAMES_PER_CAMERA
    broken = dict(zip(sorted(g.choice(total, size=2, replace=False).tolist()), ("truncated", "header"), strict=True))
    files: list[dict[str, object]] = []
    labels: list[tuple[object, ...]] = []
    for number, (camera_id, algorithm) in enumerate(cameras):
        start = FIRST_CAPTURE + timedelta(seconds=int(g.integers(0, 60)))
        first_seq = int(g.integers(1, 5000))
        (directory / camera_id).mkdir(parents=True, exist_ok=True)
        for k in range(FRAMES_PER_CAMERA):
            index = number * FRAMES_PER_CAMERA + k
            draw = np.random.default_rng([world.seed, 28181, number, k])
            image, boxes = draw_frame(draw, algorithm, "train", FRAME_SIZE)
            data = encode_jpeg(image, jpeg_quality(draw, "train"))
            fault = broken.get(index)
            if fault:
                data = _broken(data, fault)
            seq = first_seq + k
            name = f"{camera_id}/{seq}.jpg"
            (directory / name).write_bytes(data)
            captured = (start + k * INTERVAL).strftime(TIMESTAMP_FORMAT)
            files.append(
                {
                    "name": name,
                    "rows": 1,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "camera_id": camera_id,
                    "frame_seq": seq,
                    "captured_at": captured,
                }
            )
            objects = Counter(box["category"] for box in boxes)
            expected = "corrupt_image" if fault else "scored"
            labels.append((camera_id, seq, name, algorithm, json.dumps(dict(sorted(objects.items()))), expected))
    manifest = {
        "contract_id": contract.id,
        "contract_version": contract.version,
        "batch_id": batch_id,
        "mode": "incremental",
        "extracted_at": EXTRACTED_AT.strftime(TIMESTAMP_FORMAT),
        "files": files,
    }
    (directory / "_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=2) + "\n", "utf-8")
    _write_labels(out, labels)
    return FrameBatchSummary(batch_id, total, len(broken), len(cameras))


def _write_labels(out: Path, rows: list[tuple[object, ...]]) -> None:
    folder = out / "_labels"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LABELS_FILE, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["camera_id", "frame_seq", "name", "algorithm", "objects", "expected"])
        writer.writerows(rows)
