"""Video frames from Kafka checked like any other stream message, with the rules only a frame can break.

A frame of `video.frames` is JPEG bytes; its fields are the message key (`camera_id`) and two headers,
`ts` (ISO 8601 capture time) and `frame_seq` (the camera's frame counter, a non-negative integer). A
micro-batch is split the way `messages.check_messages` splits JSON records, one quarantine row per message
and broken rule, never an exception:

- `oversized`: the value is longer than the topic allows (nothing of it is decoded);
- `not_jpeg`: no value, or bytes Pillow cannot decode as a JPEG (truncated, another image format, noise);
- `missing_key`: no message key, so no camera;
- `missing_header`: no `ts` or no `frame_seq` header (one row per missing header);
- then the contract's row rules on (key, ts, frame_seq) as text (`type` for a ts that is not ISO 8601 or a
  frame_seq that is not an integer, `range` for a negative one), and `future_timestamp`.

Good frames keep their typed fields, their size (bytes, width, height) and the Kafka lineage; the bronze
table records exactly that. The JPEG bytes themselves travel on in the column `_frame` to the scorer and
are not stored (see `orchestration/video_stream.py` for why).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
from PIL import Image

from ingestion.contract import Contract
from ingestion.readers import ROW_NUMBER, SOURCE_FILE, ReadResult
from ingestion.streaming.messages import (
    STREAM_LINEAGE,
    CheckedBatch,
    Message,
    MessageRules,
    _message_rules,
    _quarantine,
    _with_lineage,
)
from ingestion.validation import validate

FRAME_COLUMN = "_frame"  # the JPEG bytes of a good frame, for the scorer; never written to bronze
HEADERS = ("ts", "frame_seq")
# Frame size columns of the bronze record, between the contract's columns and the lineage.
FRAME_SIZE = (
    pa.field("frame_bytes", pa.int64(), nullable=False),
    pa.field("width", pa.int64(), nullable=False),
    pa.field("height", pa.int64(), nullable=False),
)
# A frame bigger than this is refused before it is decoded (a decompression bomb is not a camera frame).
MAX_PIXELS = 8_192 * 8_192

Problem = tuple[int, str | None, str, str]  # (message index, column, rule, detail)


def bronze_frame_schema(contract: Contract) -> pa.Schema:
    """camera_id, ts, frame_seq, the frame's size, and the Kafka lineage columns: no image bytes."""
    return pa.schema(list(contract.arrow_schema()) + list(FRAME_SIZE) + list(STREAM_LINEAGE))


def decode_jpeg(value: bytes) -> Image.Image:
    """The decoded frame; `ValueError` with a sentence for a data officer when it is not a whole JPEG."""
    try:
        image = Image.open(io.BytesIO(value))
    except Exception as error:  # UnidentifiedImageError, DecompressionBombError, ...
        raise ValueError(f"not an image Pillow can read ({type(error).__name__}: {str(error)[:120]})") from None
    if image.format != "JPEG":
        raise ValueError(f"a {image.format or 'unknown'} image; cameras send JPEG")
    if image.width * image.height > MAX_PIXELS:
        raise ValueError(f"{image.width}x{image.height} pixels is not a camera frame")
    try:
        image.load()
    except Exception as error:  # a truncated or corrupt JPEG fails here, not in open()
        raise ValueError(f"the JPEG does not decode ({str(error)[:120]})") from None
    return image


def _headers(message: Message) -> dict[str, str]:
    """Header values as text (the last one wins when a header repeats); non-UTF-8 bytes are kept visibly."""
    found: dict[str, str] = {}
    for name, value in message.headers:
        if value is not None:
            found[name] = value.decode("utf-8", errors="backslashreplace")
    return found


def describe(message: Message) -> str:
    """What a data officer needs to see of a refused frame instead of its bytes: headers, size, first bytes."""
    headers = " ".join(f"{name}={value!r}" for name, value in _headers(message).items()) or "no headers"
    value = message.value or b""
    return f"{headers}; {len(value):,} bytes starting {value[:16].hex(' ') or '(empty)'}"


def check_frames(
    messages: Sequence[Message], topic: str, contract: Contract, rules: MessageRules, now: datetime | None = None
) -> CheckedBatch:
    """Split a micro-batch of frames into good rows (typed fields, size, lineage, `_frame`) and quarantine rows."""
    now = now or datetime.now(UTC)
    problems: list[Problem] = []
    sizes: dict[int, tuple[int, int]] = {}
    texts: dict[str, list[str | None]] = {"camera_id": [], "ts": [], "frame_seq": []}
    missing: set[tuple[int, str]] = set()
    for index, message in enumerate(messages):
        headers = _headers(message)
        key = message.key.decode("utf-8", errors="backslashreplace") if message.key else None
        if key is None:
            problems.append(
                (index, "camera_id", "missing_key", "the message has no key: key each frame by its camera_id")
            )
            missing.add((index, "camera_id"))
        for name in HEADERS:
            if name not in headers:
                problems.append(
                    (index, name, "missing_header", f"the frame has no {name!r} header; send ts and frame_seq")
                )
                missing.add((index, name))
        texts["camera_id"].append(key)
        texts["ts"].append(headers.get("ts"))
        texts["frame_seq"].append(headers.get("frame_seq"))
        value = message.value
        if not value:
            problems.append((index, None, "not_jpeg", "the message has no value; send the frame as JPEG bytes"))
        elif len(value) > rules.max_message_bytes:
            problems.append(
                (
                    index,
                    None,
                    "oversized",
                    f"the frame is {len(value):,} bytes; this topic takes at most {rules.max_message_bytes:,} bytes",
                )
            )
        else:
            try:
                image = decode_jpeg(value)
            except ValueError as error:
                problems.append((index, None, "not_jpeg", f"{error}; send the frame as JPEG bytes"))
            else:
                sizes[index] = image.size
                image.close()
    raw = pl.DataFrame(
        {name: pl.Series(name, values, dtype=pl.String) for name, values in texts.items()}
        | {
            ROW_NUMBER: pl.Series(ROW_NUMBER, [m.offset for m in messages], dtype=pl.Int64),
            SOURCE_FILE: pl.Series(SOURCE_FILE, [f"{topic}/{m.partition}" for m in messages], dtype=pl.String),
        }
    )
    unkeyed = replace(contract, columns=tuple(replace(c, primary_key_position=None) for c in contract.columns))
    validated = validate(ReadResult(frame=raw, malformed=[]), unkeyed)
    for idx, column, rule, detail in validated.violations.frame.iter_rows():
        if rule == "required" and (idx, column) in missing:
            continue  # already refused as missing_key / missing_header
        problems.append((idx, column, rule, detail))
    typed = validated.typed
    everything = list(range(len(messages)))
    time_rules = replace(rules, key_field=None, devices=None, time_field="ts")
    problems.extend(_message_rules(messages, everything, typed, time_rules, now))
    bad = {index for index, *_ in problems}
    keep = [index for index in everything if index not in bad]
    kept = [messages[i] for i in keep]
    good = _with_lineage(typed[keep], kept, topic, now)
    good = good.with_columns(
        pl.Series("frame_bytes", [len(m.value or b"") for m in kept], dtype=pl.Int64),
        pl.Series("width", [sizes[i][0] for i in keep], dtype=pl.Int64),
        pl.Series("height", [sizes[i][1] for i in keep], dtype=pl.Int64),
        pl.Series(FRAME_COLUMN, [m.value for m in kept], dtype=pl.Binary),
    )
    shown = [replace(m, value=describe(m).encode()) for m in messages]
    return CheckedBatch(good=good, quarantine=_quarantine(shown, problems, topic, contract, now), refused=len(bad))
