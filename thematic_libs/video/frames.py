"""Frame batches of the landing zone (`zhengshu.video_frames`): one JPEG per frame plus `_manifest.json`.

Layout: `landing/district/zhengshu/video_frames/<batch_id>/<camera_id>/<frame_seq>.jpg`, the manifest written
last. The manifest is the landing zone's own (contract id and version, batch id, mode, extracted_at) with one
`files` entry per frame, `{"name": "<camera_id>/<frame_seq>.jpg", "rows": 1, "sha256": ..., "captured_at": ...}`
(`camera_id` and `frame_seq` may be repeated in the entry; they must then agree with the name).

What rejects the whole batch, as for a tabular delivery: the manifest header (`ingestion.landing`), a file name
that is not `<folder>/<number>.jpg`, a listed file missing, a file not listed, a wrong sha256, a name listed twice.
What quarantines one frame: an entry that breaks the contract's rules (camera id pattern, frame_seq, captured_at:
checked by the same validator as every tabular row) and a JPEG that Pillow cannot decode completely (corrupt or
truncated). Quarantined frames are keyed `<camera_id>/<frame_seq>`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
from PIL import Image

from ingestion.contract import Contract
from ingestion.landing import (
    MANIFEST,
    BatchDir,
    BatchRejected,
    check_manifest_header,
    parse_extracted_at,
    read_manifest,
    sha256_of,
)
from ingestion.readers import ROW_NUMBER, SOURCE_FILE, ReadResult
from ingestion.validation import validate

FRAME_NAME = re.compile(r"([A-Za-z0-9_-]{1,64})/([A-Za-z0-9_-]{1,32})\.jpg")
CORRUPT_IMAGE = "corrupt_image"
NAME_MISMATCH = "name_mismatch"
ENTRY_FIELDS = ("camera_id", "frame_seq", "captured_at")
# What Pillow raises for a file it cannot decode (a truncated JPEG: OSError "image file is truncated").
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


@dataclass(frozen=True)
class FrameEntry:
    """One frame as the manifest lists it (values as delivered, before any check of the contract's rules)."""

    position: int  # 1-based place in the manifest's files list
    name: str  # <camera_id>/<frame_seq>.jpg
    path: Path
    raw: dict  # the manifest entry as delivered

    @property
    def record_key(self) -> str:
        """`<camera_id>/<frame_seq>`: how quarantine/rows names the frame."""
        return self.name.removesuffix(".jpg")

    def raw_record(self) -> str:
        return json.dumps(self.raw, ensure_ascii=False, default=str, sort_keys=True)


@dataclass(frozen=True)
class Frame:
    """A frame whose manifest entry keeps the contract: typed, ready to decode and score."""

    entry: FrameEntry
    camera_id: str
    frame_seq: int
    captured_at: datetime  # UTC

    @property
    def path(self) -> Path:
        return self.entry.path

    @property
    def uri(self) -> str:
        """Where the frame can be opened: its file in the landing zone (evidence of detections and tickets)."""
        return self.entry.path.resolve().as_uri()


@dataclass(frozen=True)
class FrameProblem:
    """A frame that is not scored: the quarantine row it becomes."""

    entry: FrameEntry
    rule: str
    detail: str
    column: str | None = None


@dataclass(frozen=True)
class FrameBatch:
    """A complete frame batch whose manifest agrees with its folder, with its frames checked against the contract."""

    dir: BatchDir
    contract: Contract
    mode: str
    extracted_at: datetime
    entries: tuple[FrameEntry, ...]
    frames: tuple[Frame, ...]  # entries that keep the contract's rules (their JPEGs are not decoded yet)
    problems: tuple[FrameProblem, ...]  # entries that break them

    @property
    def batch_id(self) -> str:
        return self.dir.batch_id


def open_frame_batch(batch_dir: BatchDir, checksums: bool = True) -> FrameBatch:
    """Check a frame batch's manifest, names, files and sha256, then each frame's entry against the contract.

    Raises BatchRejected for what rejects the whole batch; broken entries come back as `problems`.
    """
    manifest = read_manifest(batch_dir)
    contract, mode = check_manifest_header(batch_dir, manifest)
    if not contract.is_image:
        raise BatchRejected("format", f"{contract.id} is not delivered as images; it is landed as rows")
    entries = _entries(batch_dir, manifest.get("files"), checksums)
    extracted_at = parse_extracted_at(manifest.get("extracted_at"))
    frames, problems = _check_entries(entries, contract)
    return FrameBatch(batch_dir, contract, mode, extracted_at, tuple(entries), tuple(frames), tuple(problems))


def _entries(batch_dir: BatchDir, files: object, checksums: bool) -> list[FrameEntry]:
    if not isinstance(files, list) or not files:
        raise BatchRejected("manifest", "the manifest lists no frames (files)")
    entries: list[FrameEntry] = []
    seen: set[str] = set()
    for position, entry in enumerate(files, start=1):
        if not isinstance(entry, dict) or not {"name", "sha256"} <= entry.keys():
            raise BatchRejected("manifest", f"frame entry {entry!r} needs name and sha256 (and captured_at)")
        name = str(entry["name"])
        if not FRAME_NAME.fullmatch(name):
            raise BatchRejected(
                "illegal_name",
                f"frame file {name!r} in the manifest is not <camera_id>/<frame_seq>.jpg inside the batch folder "
                "(one folder per camera, no '..', letters, digits, '_' and '-' only); rename the files and resend",
            )
        if name in seen:
            raise BatchRejected("manifest", f"frame file {name!r} is listed twice; list each frame once and resend")
        seen.add(name)
        path = batch_dir.path / name
        if not path.is_file():
            raise BatchRejected(
                "missing_part", f"frame file {name!r} named in the manifest is missing; resend the batch"
            )
        if checksums and sha256_of(path) != str(entry["sha256"]).lower():
            raise BatchRejected(
                "sha256",
                f"sha256 of {name!r} does not match the manifest: the file was damaged in transfer; resend the batch",
            )
        entries.append(FrameEntry(position, name, path, dict(entry)))
    listed = {e.name for e in entries}
    extra = sorted(
        str(p.relative_to(batch_dir.path))
        for p in batch_dir.path.rglob("*")
        if p.is_file()
        and p.name != MANIFEST
        and not p.name.startswith(".")
        and p.relative_to(batch_dir.path).as_posix() not in listed
    )
    if extra:
        shown = ", ".join(extra[:10]) + (f" and {len(extra) - 10} more" if len(extra) > 10 else "")
        raise BatchRejected("unlisted_part", f"files {shown} are not listed in the manifest; resend the batch")
    return entries


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _check_entries(entries: Sequence[FrameEntry], contract: Contract) -> tuple[list[Frame], list[FrameProblem]]:
    """The contract's rules over the entries, by the validator every tabular row goes through."""
    columns: dict[str, list[str | None]] = {name: [] for name in ENTRY_FIELDS}
    mismatched: dict[int, str] = {}
    for index, entry in enumerate(entries):
        folder, stem = FRAME_NAME.fullmatch(entry.name).groups()  # type: ignore[union-attr]
        named = {"camera_id": folder, "frame_seq": stem}
        for field_name in ENTRY_FIELDS:
            given = _text(entry.raw.get(field_name))
            value = given if given is not None or field_name == "captured_at" else named[field_name]
            columns[field_name].append(value)
            if field_name in named and given is not None and given.strip() != named[field_name]:
                mismatched[index] = (
                    f"{field_name} {given!r} in the manifest differs from the file name {entry.name!r}; name each "
                    "frame <camera_id>/<frame_seq>.jpg and resend it"
                )
    raw = pl.DataFrame(
        {
            **{name: pl.Series(name, values, dtype=pl.String) for name, values in columns.items()},
            ROW_NUMBER: pl.Series(ROW_NUMBER, [e.position for e in entries], dtype=pl.Int64),
            SOURCE_FILE: pl.Series(SOURCE_FILE, [MANIFEST] * len(entries), dtype=pl.String),
        }
    )
    validated = validate(ReadResult(raw, []), contract)
    problems: list[FrameProblem] = []
    broken: set[int] = set(mismatched)
    for index, column, rule, detail in validated.violations.frame.iter_rows():
        problems.append(FrameProblem(entries[index], rule, detail, column))
        broken.add(index)
    for index, detail in mismatched.items():
        problems.append(FrameProblem(entries[index], NAME_MISMATCH, detail, None))
    typed = validated.typed
    frames = [
        Frame(entry, typed["camera_id"][i], int(typed["frame_seq"][i]), typed["captured_at"][i])
        for i, entry in enumerate(entries)
        if i not in broken
    ]
    problems.sort(key=lambda p: (p.entry.position, p.rule))
    return frames, problems


def decode(frame: Frame) -> Image.Image:
    """The frame's pixels, decoded completely (`Image.load()`): a truncated file fails here, not in the model."""
    with Image.open(frame.path) as image:
        if image.format != "JPEG":
            raise OSError(f"the file is {image.format or 'not an image Pillow knows'}, not JPEG")
        image.load()
        return image.convert("RGB")


def decode_problem(frame: Frame, error: Exception) -> FrameProblem:
    """The quarantine entry of a frame Pillow could not decode: the decoder's error and what to do."""
    return FrameProblem(
        frame.entry,
        CORRUPT_IMAGE,
        f"{frame.entry.name}: the JPEG cannot be decoded ({type(error).__name__}: {error}); the frame was not "
        "scored. The file is corrupt or truncated at the source (its sha256 matches the manifest): check the "
        "camera's encoder or the export, and deliver the frame again in a later batch if it is needed",
    )


def decoded_frames(
    frames: Sequence[Frame], chunk: int = 32
) -> Iterator[tuple[list[Frame], list[Image.Image], list[FrameProblem]]]:
    """Frames decoded `chunk` at a time: (good frames, their images, frames that failed to decode)."""
    for start in range(0, len(frames), chunk):
        good: list[Frame] = []
        images: list[Image.Image] = []
        bad: list[FrameProblem] = []
        for frame in frames[start : start + chunk]:
            try:
                images.append(decode(frame))
                good.append(frame)
            except DECODE_ERRORS as error:
                bad.append(decode_problem(frame, error))
        yield good, images, bad
