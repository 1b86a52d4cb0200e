"""Write landing-zone batches by hand, as a department that only read the contracts would."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ingestion.contract import get_contract


def write_batch(
    landing: Path,
    contract_id: str,
    batch_id: str,
    rows: Sequence[dict],
    *,
    mode: str = "snapshot",
    extracted_at: str | None = None,
    encoding: str | None = None,
    columns: Sequence[str] | None = None,
    manifest_overrides: dict | None = None,
    raw_body: bytes | None = None,
    write_manifest: bool = True,
    parts: int = 1,
    row_group_size: int | None = None,
) -> Path:
    """Write one batch (parts + `_manifest.json`, the manifest last) and return its directory. `row_group_size`:
    rows per row group of a Parquet part (pyarrow's default: all in one)."""
    contract = get_contract(contract_id)
    encoding = encoding or contract.encoding
    if encoding not in ("utf-8", "gb18030"):
        encoding = "utf-8"
    directory = landing / contract.source_level / contract.department / contract.dataset / batch_id
    directory.mkdir(parents=True, exist_ok=True)
    names = list(columns or contract.column_names)
    chunks = [list(rows[i::parts]) for i in range(parts)] if parts > 1 else [list(rows)]
    files = []
    for n, chunk in enumerate(chunks):
        ext = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}[contract.file_format]
        name = f"part-{n:05d}.{ext}"
        path = directory / name
        if raw_body is not None and n == 0:
            path.write_bytes(raw_body)
            count = len(chunk)
        elif contract.file_format == "csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(names)
            for row in chunk:
                writer.writerow(["" if row.get(c) is None else row.get(c) for c in names])
            path.write_bytes(buffer.getvalue().encode(encoding))
            count = len(chunk)
        elif contract.file_format == "jsonl":
            text = "".join(json.dumps({c: row.get(c) for c in names}, ensure_ascii=False) + "\n" for row in chunk)
            path.write_bytes(text.encode(encoding))
            count = len(chunk)
        else:
            table = pa.Table.from_pylist([{c: row.get(c) for c in names} for row in chunk])
            pq.write_table(table, path, row_group_size=row_group_size)
            count = len(chunk)
        files.append({"name": name, "rows": count, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    manifest = {
        "contract_id": contract_id,
        "contract_version": contract.version,
        "batch_id": batch_id,
        "mode": mode,
        "extracted_at": extracted_at
        or f"{batch_id[:4]}-{batch_id[4:6]}-{batch_id[6:8]}T{batch_id[9:11]}:{batch_id[11:13]}:{batch_id[13:15]}+08:00",
        "encoding": encoding,
        "files": files,
    }
    manifest.update(manifest_overrides or {})
    if write_manifest:
        (directory / "_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
    return directory
