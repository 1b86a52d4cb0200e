"""The landing zone: finding batches and checking their manifests.

Layout (../shared/contracts/README.md): `<level>/<department>/<dataset>/<batch_id>/` holding
`_manifest.json` (written last: a batch without one is still being delivered) and its parts.
Every check here is about the batch as a whole; a failure rejects the whole batch.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from ingestion.contract import LEVELS, Contract, ContractError, load_contracts

MANIFEST = "_manifest.json"
BATCH_ID = re.compile(r"^(\d{8})T(\d{6})(?:-(\d{1,3}))?$")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "gb18030": "gb18030"}


class BatchRejected(Exception):
    """The whole batch is refused. `rule` is a short code, the message says what to do."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


@dataclass(frozen=True)
class BatchDir:
    """A batch directory as found on disk, before its manifest is read."""

    path: Path
    level: str
    department: str
    dataset: str
    batch_id: str

    @property
    def contract_id(self) -> str:
        return f"{self.department}.{self.dataset}"

    @property
    def is_complete(self) -> bool:
        return (self.path / MANIFEST).is_file()

    @property
    def sort_key(self) -> int:
        return batch_ordinal(self.batch_id)


@dataclass(frozen=True)
class PartFile:
    name: str
    path: Path
    rows: int
    sha256: str
    format: str


@dataclass(frozen=True)
class Batch:
    """A complete batch whose manifest agrees with its directory and with a known contract."""

    dir: BatchDir
    contract: Contract
    mode: str
    extracted_at: datetime
    encoding: str
    parts: tuple[PartFile, ...]
    # The manifest's `confirm_shrink: true`: the sender knows this snapshot removes many rows (or is empty).
    confirm_shrink: bool = False

    @property
    def batch_id(self) -> str:
        return self.dir.batch_id

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)


def batch_ordinal(batch_id: str) -> int:
    """An integer that sorts like delivery order: YYYYMMDDHHMMSS * 1000 + N."""
    match = BATCH_ID.match(batch_id)
    if not match:
        return -1
    day, time, suffix = match.groups()
    return int(day + time) * 1000 + int(suffix or 0)


def find_batches(landing: Path) -> list[BatchDir]:
    """Every batch directory under the landing zone, complete or not, in delivery order.

    Anything that is not `<level>/<department>/<dataset>/<batch_id>/` is ignored (e.g. `_labels/`).
    """
    found: list[BatchDir] = []
    for level in LEVELS:
        for batch in sorted((landing / level).glob("*/*/*")):
            if batch.is_dir() and not batch.name.startswith(("_", ".")):
                department, dataset = batch.parent.parent.name, batch.parent.name
                found.append(BatchDir(batch, level, department, dataset, batch.name))
    return sorted(found, key=lambda b: (b.contract_id, b.sort_key, b.batch_id))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def parse_extracted_at(value: object) -> datetime:
    if not isinstance(value, str):
        raise BatchRejected("manifest", f"extracted_at {value!r} is not an ISO 8601 timestamp; resend the manifest")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BatchRejected(
            "manifest", f"extracted_at {value!r} is not an ISO 8601 timestamp; resend the manifest"
        ) from None
    if parsed.tzinfo is None:
        raise BatchRejected("manifest", f"extracted_at {value!r} has no UTC offset (e.g. +08:00)")
    return parsed.astimezone(UTC)


def read_manifest(batch_dir: BatchDir) -> dict:
    path = batch_dir.path / MANIFEST
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BatchRejected("manifest", f"_manifest.json is not valid UTF-8 JSON ({error}); resend it") from None
    if not isinstance(manifest, dict):
        raise BatchRejected("manifest", "_manifest.json is not a JSON object; resend it")
    return manifest


def open_batch(batch_dir: BatchDir, checksums: bool = True) -> Batch:
    """Check the manifest against the contracts and the files; raise BatchRejected when they disagree.

    `checksums=False` leaves the sha256 of the parts to the caller (`verify_checksums`), which may run
    it alongside the parsing.
    """
    manifest = read_manifest(batch_dir)
    contract, mode = check_manifest_header(batch_dir, manifest)
    encoding_name = str(manifest.get("encoding", "utf-8")).lower()
    if encoding_name not in ENCODINGS:
        raise BatchRejected("encoding", f"encoding {encoding_name!r} is not utf-8 or gb18030")
    parts = _check_parts(batch_dir, contract, manifest.get("files"), checksums)
    return Batch(
        dir=batch_dir,
        contract=contract,
        mode=mode,
        extracted_at=parse_extracted_at(manifest.get("extracted_at")),
        confirm_shrink=manifest.get("confirm_shrink") is True,
        encoding=ENCODINGS[encoding_name],
        parts=parts,
    )


def check_manifest_header(batch_dir: BatchDir, manifest: dict) -> tuple[Contract, str]:
    """(contract, mode) of a manifest whose contract id, version, level, batch id and mode agree with the
    contracts and the batch's folder; BatchRejected otherwise. Common to every delivery, rows or images."""
    contract_id = manifest.get("contract_id")
    contracts = load_contracts()
    if contract_id not in contracts or contracts[contract_id].is_stream:
        raise BatchRejected(
            "unknown_contract",
            f"contract_id {contract_id!r} is not a known batch contract; check the id or register its contract",
        )
    if contract_id != batch_dir.contract_id:
        raise BatchRejected(
            "manifest",
            f"manifest says {contract_id!r} but the batch lies under {batch_dir.contract_id!r}; "
            "deliver it under landing/<level>/<department>/<dataset>/",
        )
    contract = contracts[contract_id]
    version = str(manifest.get("contract_version", ""))
    if version != contract.version:
        raise BatchRejected(
            "unknown_version",
            f"contract version {version!r} of {contract_id} is not known (the platform has {contract.version}); "
            "deliver against the published version",
        )
    if batch_dir.level != contract.source_level:
        raise BatchRejected(
            "manifest",
            f"{contract_id} is delivered at level {contract.source_level!r}, not {batch_dir.level!r}",
        )
    if str(manifest.get("batch_id")) != batch_dir.batch_id:
        raise BatchRejected(
            "manifest",
            f"manifest batch_id {manifest.get('batch_id')!r} differs from its directory {batch_dir.batch_id!r}",
        )
    if batch_ordinal(batch_dir.batch_id) < 0:
        raise BatchRejected("manifest", f"batch_id {batch_dir.batch_id!r} is not YYYYMMDDTHHMMSS[-N]")
    mode = manifest.get("mode")
    if mode not in ("snapshot", "incremental"):
        raise BatchRejected("manifest", f"mode {mode!r} must be 'snapshot' or 'incremental'")
    return contract, mode


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")


def _check_parts(batch_dir: BatchDir, contract: Contract, files: object, verify: bool) -> tuple[PartFile, ...]:
    if not isinstance(files, list) or not files:
        raise BatchRejected("manifest", "the manifest lists no files")
    parts: list[PartFile] = []
    for entry in files:
        if not isinstance(entry, dict) or not {"name", "rows", "sha256"} <= entry.keys():
            raise BatchRejected("manifest", f"file entry {entry!r} needs name, rows and sha256")
        name = str(entry["name"])
        path = batch_dir.path / name
        if not _PLAIN_NAME.fullmatch(name) or name in (".", ".."):
            raise BatchRejected(
                "illegal_name",
                f"part name {name!r} in the manifest is not a plain file name inside the batch folder (no path, "
                "no '..', letters, digits, '.', '_' and '-' only); name the parts part-00000.csv and so on and resend",
            )
        if not path.is_file():
            raise BatchRejected("missing_part", f"part {name!r} named in the manifest is missing; resend the batch")
        fmt = FORMATS.get(path.suffix.lower())
        if fmt != contract.file_format:
            raise BatchRejected(
                "format", f"part {name!r} is not {contract.file_format} as the contract {contract.id} says"
            )
        try:
            rows = int(entry["rows"])
        except (TypeError, ValueError):
            raise BatchRejected("manifest", f"rows {entry['rows']!r} of {name!r} is not a number") from None
        part = PartFile(name, path, rows, str(entry["sha256"]).lower(), fmt)
        if verify:
            verify_checksum(part)
        parts.append(part)
    listed = {p.name for p in parts}
    extra = sorted(
        p.name
        for p in batch_dir.path.iterdir()
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".") and p.name not in listed
    )
    if extra:
        raise BatchRejected("unlisted_part", f"files {extra} are not listed in the manifest; resend the batch")
    return tuple(parts)


def verify_checksum(part: PartFile) -> None:
    """Raise BatchRejected when the part's bytes do not hash to the manifest's sha256."""
    if sha256_of(part.path) != part.sha256:
        raise BatchRejected(
            "sha256",
            f"sha256 of {part.name!r} does not match the manifest: the file is damaged; resend the batch",
        )


def verify_checksums(batch: Batch) -> None:
    for part in batch.parts:
        verify_checksum(part)


def extraction_date(batch: Batch) -> date:
    """The date of extraction in China Standard Time: the day a department's export ran."""
    from zoneinfo import ZoneInfo

    return batch.extracted_at.astimezone(ZoneInfo("Asia/Shanghai")).date()


__all__ = [
    "MANIFEST",
    "Batch",
    "BatchDir",
    "BatchRejected",
    "ContractError",
    "PartFile",
    "batch_ordinal",
    "check_manifest_header",
    "extraction_date",
    "find_batches",
    "open_batch",
    "parse_extracted_at",
    "sha256_of",
    "verify_checksums",
]
