"""Camera frames for `video.frames`, drawn live: what the video platform sends, warts included.

Each camera of `zhengshu.video_cameras` (online ones; synthetic GB/T 28181 ids when the registry is not
loaded) sends `fps` frames per second: a street scene drawn by `ml.scenes.draw_frame` for one of the
camera's enabled algorithms (riders with and without helmets, overflowing bins and litter, stalls and carts),
encoded as JPEG at a quality a real camera uses. The message key is the camera id; the headers are `ts`
(capture time, ISO 8601 UTC) and `frame_seq`.

`frame_seq` is the camera's frame counter at a nominal 25 frames per second, of which the platform samples
`fps`: it follows the capture time, so a second run of the simulator continues the counters instead of
repeating them (which the consumer would drop as duplicates).

Warts, by share of frames: resent frames (`duplicate`: the same key, headers and bytes again, a little
later), corrupt frames that the consumer must refuse as `not_jpeg` (`truncated`, `not_image`, `png`), frames
without a header (`missing_header`) and frames with a header the contract refuses (`bad_ts`, `bad_seq`).
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

from ingestion.streaming.simulate import Headers

CORRUPT_KINDS = ("truncated", "not_image", "png")
HEADER_KINDS = ("missing_header", "bad_ts", "bad_seq")
NOMINAL_FPS = 25  # the counter rate behind frame_seq
SEQ_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
FRAME_SIZE = (640, 360)
Frame = tuple[bytes, bytes, str, Headers]  # key, value, kind, headers


@dataclass(frozen=True)
class SimCamera:
    camera_id: str
    algorithms: tuple[str, ...]  # enabled algorithms; the scenes are drawn for one of them


@dataclass
class VideoProfile:
    """Shares of the warts, per frame."""

    duplicate_share: float = 0.03
    corrupt_share: float = 0.02
    header_share: float = 0.02


def synthetic_cameras(count: int, algorithms: tuple[str, ...]) -> list[SimCamera]:
    """`count` cameras with 20-digit ids (district 440605, type code 131: a camera), every algorithm enabled."""
    return [SimCamera(f"4406050000131{index:07d}", algorithms) for index in range(1, count + 1)]


def load_cameras(frame: pl.DataFrame, known: tuple[str, ...]) -> list[SimCamera]:
    """Online cameras of the registry (silver zhengshu.video_cameras), in id order, with their known algorithms."""
    online = frame.filter(pl.col("status") == "online").sort("camera_id")
    cameras = []
    for camera_id, enabled in online.select("camera_id", "algorithms").iter_rows():
        names = tuple(a.strip() for a in (enabled or "").split(",") if a.strip() in known)
        cameras.append(SimCamera(camera_id, names or known))
    return cameras


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class VideoSimulator:
    """Frames of `cameras`, each at `fps` frames per second, for `duration` seconds."""

    def __init__(
        self,
        cameras: list[SimCamera],
        fps: float,
        duration: float,
        *,
        seed: int = 0,
        profile: VideoProfile | None = None,
        start: datetime | None = None,
        size: tuple[int, int] = FRAME_SIZE,
    ) -> None:
        if not cameras:
            raise ValueError("no camera to simulate")
        if fps <= 0 or duration <= 0:
            raise ValueError("fps and duration must be positive")
        if fps > NOMINAL_FPS:
            raise ValueError(f"at most {NOMINAL_FPS} frames per second per camera (got {fps:g})")
        self.cameras = cameras
        self.fps = fps
        self.duration = duration
        self.profile = profile or VideoProfile()
        self.size = size
        self.random = random.Random(seed)
        self.seed = seed
        self.start = start or datetime.now(UTC)
        self.base_seq = int((self.start - SEQ_EPOCH).total_seconds() * NOMINAL_FPS)
        self.held: deque[tuple[float, Frame]] = deque()  # duplicates waiting to be resent

    def _draw(self, camera: SimCamera, index: int) -> tuple[bytes, str]:
        """JPEG bytes of one frame of `camera` and the algorithm whose scene it shows."""
        import numpy as np

        from ml.scenes import draw_frame, encode_jpeg, jpeg_quality

        algorithm = self.random.choice(camera.algorithms)
        rng = np.random.default_rng([self.seed, index])
        image, _ = draw_frame(rng, algorithm, "train", self.size)
        return encode_jpeg(image, jpeg_quality(rng, "train")), algorithm

    def _corrupt(self, jpeg: bytes) -> tuple[str, bytes]:
        kind = self.random.choice(CORRUPT_KINDS)
        if kind == "truncated":
            return kind, jpeg[: len(jpeg) // 3]
        if kind == "not_image":
            return kind, self.random.randbytes(2_048)
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.open(io.BytesIO(jpeg)).save(buffer, format="PNG")
        return kind, buffer.getvalue()

    def _bad_headers(self, ts: str, seq: int) -> tuple[str, Headers]:
        kind = self.random.choice(HEADER_KINDS)
        if kind == "missing_header":
            dropped = self.random.choice(["ts", "frame_seq"])
            return kind, [(n, v) for n, v in (("ts", ts.encode()), ("frame_seq", str(seq).encode())) if n != dropped]
        if kind == "bad_ts":
            bad_ts = self.random.choice([b"yesterday", b"2026-13-45T99:00:00Z", b""])
            return kind, [("ts", bad_ts), ("frame_seq", str(seq).encode())]
        return kind, [("ts", ts.encode()), ("frame_seq", self.random.choice([b"-1", b"seven", b"3.5"]))]

    def messages(self, clock: Callable[[], float] = time.monotonic) -> Iterator[Frame]:
        """(key, value, kind, headers) at the pace of `cameras x fps`; kind is valid, duplicate or a wart."""
        started = clock()
        per_camera = max(1, int(self.fps * self.duration))
        total = per_camera * len(self.cameras)
        rate = self.fps * len(self.cameras)
        share = self.profile
        for index in range(total):
            while self.held and self.held[0][0] <= clock():
                yield self.held.popleft()[1]
            wait = started + index / rate - clock()
            if wait > 0:
                time.sleep(wait)
            camera = self.cameras[index % len(self.cameras)]
            step = index // len(self.cameras)
            captured = self.start + timedelta(seconds=step / self.fps)
            seq = self.base_seq + int(step * NOMINAL_FPS / self.fps)
            ts = _iso(captured)
            key = camera.camera_id.encode()
            jpeg, _ = self._draw(camera, index)
            headers: Headers = [("ts", ts.encode()), ("frame_seq", str(seq).encode())]
            draw = self.random.random()
            if draw < share.corrupt_share:
                kind, value = self._corrupt(jpeg)
                yield key, value, kind, headers
                continue
            if draw < share.corrupt_share + share.header_share:
                kind, bad = self._bad_headers(ts, seq)
                yield key, jpeg, kind, bad
                continue
            yield key, jpeg, "valid", headers
            if draw < share.corrupt_share + share.header_share + share.duplicate_share:
                self.held.append((clock() + self.random.uniform(0.2, 2.0), (key, jpeg, "duplicate", headers)))
        while self.held:
            yield self.held.popleft()[1]
