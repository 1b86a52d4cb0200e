"""Open data (开放数据): the unconditional datasets exported as files anyone may download.

Each open dataset gets a folder `<out>/<dataset_id>/` with `data.csv` (UTF-8 with a byte-order mark, so
that Excel shows the Chinese; times in China Standard Time), `data.parquet` (times in UTC) and
`metadata.json`. Only columns classified `public` or `internal` leave the platform: never a sensitive
or personal column, a pseudonym (`*_key`) or a lineage column (`_*`), whatever a table's schema holds.

The export follows its source: a folder is rewritten only when the source table's version (or the
exported columns) changed, replaced whole (written beside it, then renamed into place) so that a
download never sees half a file, and removed when its dataset is no longer open.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingestion.keys import CST
from ingestion.warehouse import Warehouse
from thematic_libs.sharing.datasets import Dataset, SharedColumn, all_datasets

OPEN_CLASSIFICATIONS = ("public", "internal")
LICENCE = "政府开放数据 open government data"
METADATA = "metadata.json"
INDEX = "index.json"
GENERATOR = "yiwang open_data"
BATCH_ROWS = 64_000
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class OpenDataset:
    dataset_id: str
    directory: Path
    rows: int
    source_version: int
    columns: tuple[str, ...]
    written: bool  # False when the export was already up to date


def open_columns(dataset: Dataset, table_columns: list[str]) -> list[SharedColumn]:
    """The columns that may be published: public or internal, present in the table, no pseudonym or lineage."""
    present = set(table_columns)
    return [
        c
        for c in dataset.columns
        if c.classification in OPEN_CLASSIFICATIONS
        and c.name in present
        and not c.name.endswith("_key")
        and not c.name.startswith("_")
    ]


def open_datasets(warehouse: Warehouse) -> list[Dataset]:
    return [d for d in all_datasets(warehouse).values() if d.is_open]


def _read_metadata(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / METADATA).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _up_to_date(directory: Path, version: int, columns: list[str]) -> bool:
    metadata = _read_metadata(directory)
    return (
        metadata is not None
        and metadata.get("source_version") == version
        and [c.get("name") for c in metadata.get("columns", [])] == columns
        and (directory / "data.csv").is_file()
        and (directory / "data.parquet").is_file()
    )


def _for_csv(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Times in China Standard Time (what a person reads) and nested values as JSON text (CSV has no lists)."""
    arrays = []
    for field, array in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            array = array.cast(pa.timestamp(field.type.unit, tz="+08:00"))
        elif pa.types.is_nested(field.type):
            array = pa.array(
                [None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in array.to_pylist()],
                pa.string(),
            )
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _write_files(warehouse: Warehouse, dataset: Dataset, names: list[str], folder: Path) -> int:
    """Stream the table's batches into data.parquet and data.csv; returns the row count."""
    scanner = warehouse.table(dataset.table).to_pyarrow_dataset().scanner(columns=names, batch_size=BATCH_ROWS)
    rows = 0
    parquet: pq.ParquetWriter | None = None
    csv: pacsv.CSVWriter | None = None
    with open(folder / "data.csv", "wb") as csv_file:
        csv_file.write(UTF8_BOM)
        try:
            for batch in scanner.to_batches():
                if parquet is None:
                    parquet = pq.ParquetWriter(folder / "data.parquet", batch.schema, compression="zstd")
                    csv = pacsv.CSVWriter(csv_file, _for_csv(batch.slice(0, 0)).schema)
                parquet.write_batch(batch)
                assert csv is not None
                csv.write_batch(_for_csv(batch))
                rows += batch.num_rows
            if parquet is None:  # an empty table still gets its header and its schema
                schema = scanner.projected_schema
                pq.write_table(schema.empty_table(), folder / "data.parquet", compression="zstd")
                pacsv.write_csv(_for_csv(pa.RecordBatch.from_pylist([], schema=schema)), csv_file)
        finally:
            if parquet is not None:
                parquet.close()
            if csv is not None:
                csv.close()
    return rows


def _metadata(dataset: Dataset, columns: list[SharedColumn], rows: int, version: int, now: datetime) -> dict:
    return {
        "id": dataset.dataset_id,
        "title": dataset.title,
        "description": dataset.description,
        "owner": {"department": dataset.owner_department, "label": dataset.owner_label},
        "source_level": dataset.source_level,
        "cadence": dataset.cadence,
        "columns": [
            {"name": c.name, "type": c.type, "classification": c.classification, "description": c.description}
            for c in columns
        ],
        "rows": rows,
        "source_table": dataset.table,
        "source_version": version,
        "exported_at": now.astimezone(CST).isoformat(timespec="seconds"),
        "licence": LICENCE,
        "files": {"csv": "data.csv", "parquet": "data.parquet"},
        "notes": "CSV: UTF-8 with BOM, times in China Standard Time (+08:00). Parquet: times in UTC.",
        "generator": GENERATOR,
    }


def _replace_dir(staging: Path, target: Path) -> None:
    """Put `staging` in place of `target`: the old folder is moved aside, the new one renamed in, the old removed."""
    if target.exists():
        aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, aside)
        os.replace(staging, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(staging, target)


def export_dataset(warehouse: Warehouse, dataset: Dataset, out_dir: Path, now: datetime) -> OpenDataset | None:
    """Export one open dataset, or leave it when its source has not changed; None when its table is missing
    (an earlier export stays) or none of its columns may be published (an earlier export goes)."""
    if not warehouse.exists(dataset.table):
        return None
    delta = warehouse.table(dataset.table)
    version = delta.version()
    columns = open_columns(dataset, [f.name for f in pa.schema(delta.schema().to_arrow())])
    names = [c.name for c in columns]
    target = out_dir / dataset.dataset_id
    if not names:  # nothing in it may be published: an export of no columns would only mislead
        shutil.rmtree(target, ignore_errors=True)
        return None
    if _up_to_date(target, version, names):
        metadata = _read_metadata(target) or {}
        return OpenDataset(dataset.dataset_id, target, int(metadata.get("rows", 0)), version, tuple(names), False)
    staging = out_dir / f".{dataset.dataset_id}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        rows = _write_files(warehouse, dataset, names, staging)
        text = json.dumps(_metadata(dataset, columns, rows, version, now), ensure_ascii=False, indent=2)
        (staging / METADATA).write_text(text + "\n", encoding="utf-8")
        _replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return OpenDataset(dataset.dataset_id, target, rows, version, tuple(names), True)


def _remove_closed(out_dir: Path, keep: set[str]) -> list[str]:
    """Remove exports (folders holding our metadata.json) of datasets no longer open, and leftovers of crashes."""
    removed = []
    for folder in sorted(p for p in out_dir.iterdir() if p.is_dir()):
        if folder.name.startswith(".") and (".tmp-" in folder.name or ".old-" in folder.name):
            shutil.rmtree(folder, ignore_errors=True)
            continue
        metadata = _read_metadata(folder)
        if folder.name not in keep and metadata is not None and metadata.get("generator") == GENERATOR:
            shutil.rmtree(folder)
            removed.append(folder.name)
    return removed


def _write_index(out_dir: Path, exported: list[OpenDataset]) -> None:
    """`index.json`: what is published, for a portal to list; rewritten only when it changes."""
    entries = []
    for item in exported:
        metadata = _read_metadata(item.directory) or {}
        entries.append(
            {
                "id": item.dataset_id,
                "title": metadata.get("title"),
                "owner": (metadata.get("owner") or {}).get("label"),
                "rows": item.rows,
                "source_version": item.source_version,
                "exported_at": metadata.get("exported_at"),
                "path": item.dataset_id,
            }
        )
    text = json.dumps({"licence": LICENCE, "datasets": entries}, ensure_ascii=False, indent=2) + "\n"
    index = out_dir / INDEX
    if index.is_file() and index.read_text(encoding="utf-8") == text:
        return
    temporary = out_dir / f".{INDEX}.tmp-{uuid.uuid4().hex[:8]}"
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, index)


def refresh_open_data(
    warehouse: Warehouse, out_dir: Path, now: datetime | None = None
) -> tuple[list[OpenDataset], list[str]]:
    """Export every open dataset whose table exists and drop the exports of datasets that stopped being
    open: (the exports, the dataset ids removed)."""
    now = now or datetime.now(UTC)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets = open_datasets(warehouse)
    exported = [e for e in (export_dataset(warehouse, d, out_dir, now) for d in datasets) if e is not None]
    removed = _remove_closed(out_dir, {d.dataset_id for d in datasets})
    _write_index(out_dir, exported)
    return exported, removed


def export_open_data(warehouse: Warehouse, out_dir: Path, now: datetime | None = None) -> list[OpenDataset]:
    """`refresh_open_data` without the list of removed exports."""
    return refresh_open_data(warehouse, out_dir, now)[0]
