"""Writes batches as the landing-zone contract README says: data parts first, `_manifest.json` last.

CSV goes through polars (RFC 4180 quoting where needed, empty = null, header row) and is re-encoded
to GB18030 where the contract says so; JSONL through polars with the planted raw values spliced into
their lines; parquet through pyarrow. Dates are `YYYY-MM-DD`, timestamps `YYYY-MM-DDTHH:MM:SS+08:00`.
Output is byte-for-byte reproducible. The whole-batch faults (wrong row count, wrong sha256, unknown
contract version, missing manifest) are applied to the manifest only, after the data is written.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from demo_data.common import Batch

PART_ROWS = 500_000
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S+08:00"
EXTENSIONS = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}


@dataclass
class WrittenBatch:
    directory: Path
    rows: int
    files: list[dict[str, object]]


def batch_directory(out: Path, batch: Batch) -> Path:
    c = batch.contract
    return out / c.source_level / c.department / c.dataset / batch.batch_id


def _raw_text(value: object) -> str | None:
    """How a planted raw value reads in a CSV cell."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(round(value, 6))
    return str(value)


def delivered_frame(batch: Batch) -> pl.DataFrame:
    """Dates and timestamps as the strings the contract prescribes; other types unchanged."""
    exprs = []
    for name, dtype in batch.frame.schema.items():
        if dtype == pl.Date:
            exprs.append(pl.col(name).dt.strftime("%Y-%m-%d"))
        elif isinstance(dtype, pl.Datetime):
            exprs.append(pl.col(name).dt.strftime(TIMESTAMP_FORMAT))
    return batch.frame.with_columns(exprs) if exprs else batch.frame


def _with_text_overrides(frame: pl.DataFrame, overrides: dict[str, dict[int, object]]) -> pl.DataFrame:
    """Cast the overridden columns to text and put the raw planted values in."""
    columns = []
    for name, cells in overrides.items():
        if not cells:
            continue
        series = frame[name].cast(pl.String)
        rows = sorted(cells)
        series = series.scatter(rows, pl.Series([_raw_text(cells[r]) for r in rows], dtype=pl.String))
        columns.append(series)
    return frame.with_columns(columns) if columns else frame


def _with_typed_overrides(frame: pl.DataFrame, overrides: dict[str, dict[int, object]]) -> pl.DataFrame:
    columns = []
    for name, cells in overrides.items():
        if not cells:
            continue
        series = frame[name]
        rows = sorted(cells)
        series = series.scatter(rows, pl.Series([cells[r] for r in rows], dtype=series.dtype, strict=False))
        columns.append(series)
    return frame.with_columns(columns) if columns else frame


def record_keys(batch: Batch, rows: list[int]) -> list[str]:
    """Primary-key values of the given rows as delivered (planted values included), joined by `|`."""
    if not rows:
        return []
    key = list(batch.contract.primary_key)
    frame = _with_text_overrides(
        delivered_frame(batch).select(key), {k: v for k, v in batch.overrides.items() if k in key}
    )
    picked = frame.cast(pl.String)[rows]
    values = [picked[c].to_list() for c in key]
    return ["|".join("" if v is None else v for v in parts) for parts in zip(*values, strict=True)]


def _csv_bytes(frame: pl.DataFrame, encoding: str) -> bytes:
    buffer = io.BytesIO()
    frame.write_csv(buffer, quote_style="necessary", null_value="", line_terminator="\n")
    data = buffer.getvalue()
    if encoding == "gb18030":
        data = data.decode("utf-8").encode("gb18030")
    return data


def _jsonl_bytes(frame: pl.DataFrame, overrides: dict[str, dict[int, object]], offset: int) -> bytes:
    buffer = io.BytesIO()
    frame.write_ndjson(buffer)
    data = buffer.getvalue()
    touched = sorted({r - offset for cells in overrides.values() for r in cells if offset <= r < offset + frame.height})
    if not touched:
        return data
    lines = data.split(b"\n")
    for r in touched:
        record = json.loads(lines[r])
        for name, cells in overrides.items():
            if r + offset in cells:
                record[name] = cells[r + offset]
        lines[r] = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return b"\n".join(lines)


def _parquet_bytes(frame: pl.DataFrame) -> bytes:
    table = frame.to_arrow()
    fields = []
    for f in table.schema:
        if pa.types.is_large_string(f.type) or pa.types.is_string_view(f.type):
            fields.append(pa.field(f.name, pa.string()))
        else:
            fields.append(f)
    table = table.cast(pa.schema(fields))
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def write_batch(out: Path, batch: Batch, part_rows: int = PART_ROWS) -> WrittenBatch:
    """Write the parts, then the manifest (unless the batch is meant to stay incomplete)."""
    contract = batch.contract
    directory = batch_directory(out, batch)
    directory.mkdir(parents=True, exist_ok=True)
    fmt = contract.file_format
    encoding = contract.encoding if contract.encoding in ("utf-8", "gb18030") else "utf-8"
    frame = delivered_frame(batch)
    if fmt == "csv":
        frame = _with_text_overrides(frame, batch.overrides)
    elif fmt == "parquet":
        frame = _with_typed_overrides(frame, batch.overrides)
    files: list[dict[str, object]] = []
    starts = list(range(0, max(frame.height, 1), part_rows))
    for number, start in enumerate(starts):
        part = frame.slice(start, part_rows)
        name = f"part-{number:05d}.{EXTENSIONS[fmt]}"
        if fmt == "csv":
            data = _csv_bytes(part, encoding)
        elif fmt == "jsonl":
            data = _jsonl_bytes(part, batch.overrides, start)
        else:
            data = _parquet_bytes(part)
        (directory / name).write_bytes(data)
        files.append({"name": name, "rows": part.height, "sha256": hashlib.sha256(data).hexdigest()})
    if batch.fate != "no_manifest":
        write_manifest(directory, batch, files, encoding)
    return WrittenBatch(directory, frame.height, files)


def write_manifest(directory: Path, batch: Batch, files: list[dict[str, object]], encoding: str) -> None:
    listed = [dict(f) for f in files]
    version = batch.contract.version
    if batch.fate == "row_count":
        listed[0]["rows"] = int(listed[0]["rows"]) + 1  # type: ignore[call-overload]
    elif batch.fate == "sha256":
        digest = str(listed[0]["sha256"])
        listed[0]["sha256"] = ("0" if digest[0] != "0" else "1") + digest[1:]
    elif batch.fate == "unknown_version":
        version = "9.9.9"
    manifest = {
        "contract_id": batch.contract.id,
        "contract_version": version,
        "batch_id": batch.batch_id,
        "mode": batch.mode,
        "extracted_at": batch.extracted_at.strftime(TIMESTAMP_FORMAT),
        "encoding": encoding,
        "files": listed,
    }
    text = json.dumps(manifest, ensure_ascii=False, indent=2) + "\n"
    (directory / "_manifest.json").write_text(text, encoding="utf-8")
