"""Where the Delta tables live: a local folder by default, an S3-compatible URI in production.

Every table is addressed as `<root>/<layer>/<path>`, e.g. `bronze/gongan/household_registration` or
`ops/batch_ledger`. Storage options for object stores come from the usual AWS_* variables, so that
the same code writes to a folder, to MinIO, to moto in the tests, or to a real bucket.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from deltalake import DeltaTable

from ingestion.delta_tables import latest

LAYERS = ("bronze", "silver", "gold", "quarantine", "ops", "share")

# The tables whose paths other tools rely on (../shared/DESIGN.md).
BATCH_LEDGER = "ops/batch_ledger"
QUARANTINE_ROWS = "quarantine/rows"
QUALITY_RESULTS = "ops/quality_results"
QUALITY_SCORECARD = "ops/quality_scorecard"

# Ops tables get one small commit per batch; `Warehouse.compact` merges them past this many files.
COMPACT_AFTER_FILES = 16
COMPACT_TARGET_BYTES = 32 * 2**20
# VACUUM keeps every file a version younger than this reads (Delta's default delta.deletedFileRetentionDuration).
VACUUM_RETENTION_HOURS = 168


def _s3_options_from_env() -> dict[str, str]:
    names = {
        "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN": "AWS_SESSION_TOKEN",
        "AWS_REGION": "AWS_REGION",
        "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
        "AWS_ALLOW_HTTP": "AWS_ALLOW_HTTP",
    }
    options = {key: os.environ[env] for env, key in names.items() if os.environ.get(env)}
    options.setdefault("AWS_REGION", "us-east-1")
    endpoint = options.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://"):
        options.setdefault("AWS_ALLOW_HTTP", "true")
    # Single-writer platform: the Delta log is committed without an external lock table.
    options.setdefault("AWS_S3_ALLOW_UNSAFE_RENAME", "true")
    return options


@dataclass(frozen=True)
class Vacuumed:
    """What `Warehouse.vacuum` deleted (or, in a dry run, would delete) from one table."""

    table: str
    files: int
    bytes: int


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


@dataclass(frozen=True)
class Warehouse:
    """A warehouse root plus the options needed to reach it."""

    root: str
    storage_options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def at(cls, root: str | Path) -> Warehouse:
        text = str(root)
        if "://" in text:
            options = _s3_options_from_env() if text.startswith(("s3://", "s3a://")) else {}
            return cls(text.rstrip("/"), options)
        return cls(str(Path(text).resolve()))

    @property
    def is_local(self) -> bool:
        return "://" not in self.root

    def uri(self, table: str) -> str:
        """The URI of a table given as `<layer>/<path>`."""
        layer = table.split("/", 1)[0]
        if layer not in LAYERS:
            raise ValueError(f"{table!r} is not under one of the layers {LAYERS}")
        return f"{self.root}/{table}"

    def exists(self, table: str) -> bool:
        return DeltaTable.is_deltatable(self.uri(table), storage_options=self.storage_options or None)

    def table(self, table: str) -> DeltaTable:
        """The table at its latest version; shared with this thread's other callers (`delta_tables.latest`)."""
        opened = latest(self.uri(table), self.storage_options or None)
        if opened is None:  # raises deltalake's own TableNotFoundError, naming the path
            return DeltaTable(self.uri(table), storage_options=self.storage_options or None)
        return opened

    def options(self) -> dict[str, str] | None:
        return self.storage_options or None

    def compact(self, table: str, max_files: int = COMPACT_AFTER_FILES) -> bool:
        """Rewrite the small files of a table that grows by one small commit per batch (the ledger, quarantine,
        quality results) into one, and checkpoint its log, once it holds more than `max_files` files.

        Why: every reader pays per file and per log entry. At scale 10 the ledger held 150 one-row files
        after one run, and reading it took 240 ms (10 ms compacted); bronze read it about 90 times per run.
        Files over `COMPACT_TARGET_BYTES` are left alone, so a table that grows over months does not rewrite
        its history on every run. Returns whether a compaction was committed (no new version otherwise)."""
        if not self.exists(table):
            return False
        delta = self.table(table)
        if len(delta.file_uris()) <= max_files:
            return False
        metrics = delta.optimize.compact(target_size=COMPACT_TARGET_BYTES)
        if not metrics.get("numFilesRemoved"):
            return False
        delta.create_checkpoint()
        return True

    def local_tables(self) -> list[str]:
        """Every Delta table of a local warehouse, as `<layer>/<path>`, in path order."""
        found = []
        for layer in LAYERS:
            for folder, subfolders, _ in os.walk(Path(self.root) / layer):
                if "_delta_log" in subfolders:
                    found.append(Path(folder).relative_to(self.root).as_posix())
                    subfolders.clear()  # a table's partition folders hold no other table
        return sorted(found)

    def vacuum(self, table: str, retention_hours: int, *, dry_run: bool = False) -> Vacuumed:
        """Delete the files of `table` that no version younger than `retention_hours` reads: files a commit
        removed (overwrites, compaction, merges), change-feed files, and files no commit ever named (a process
        killed between writing a batch's files and committing them). Younger files stay, so a run in progress,
        time travel and change feeds within the retention are unaffected. Delta refuses a retention below the
        table's `delta.deletedFileRetentionDuration` (7 days unless set). Commits only when it deletes."""
        delta = self.table(table)
        files = delta.vacuum(retention_hours=retention_hours, dry_run=True, full=True)
        size = sum(_size(os.path.join(self.root, table, f)) for f in files) if self.is_local else 0
        if files and not dry_run:
            delta.vacuum(retention_hours=retention_hours, dry_run=False, full=True)
        return Vacuumed(table, len(files), size)

    def _read_file_by_file(self, table: str, partitioned_by: list[str]) -> DeltaTable | None:
        """The table when DuckDB's Parquet reader reads its files exactly as Delta would: local, reader version 1
        (no deletion vectors or column mapping), partitioned by exactly `partitioned_by`; else None."""
        if not self.is_local:
            return None
        delta = self.table(table)
        if delta.protocol().min_reader_version != 1 or list(delta.metadata().partition_columns) != partitioned_by:
            return None
        return delta

    def parquet_files(self, table: str) -> list[str] | None:
        """The current version's data files of a local, unpartitioned table (partition values are not in the
        files) when DuckDB can read them as Delta would, else None: read the table through
        `table(...).to_pyarrow_dataset()` instead."""
        delta = self._read_file_by_file(table, [])
        return None if delta is None else sorted(delta.file_uris())

    def batch_files(self, table: str, batch_ids: Iterable[str]) -> dict[str, list[str]] | None:
        """The current data files of each batch of a local table partitioned by `_batch_id` alone (bronze is),
        when DuckDB can read them as Delta would, else None. A batch whose rows were all quarantined has no file
        (an empty list). The batch id is a partition value: it is in the Delta log, not necessarily in the files."""
        delta = self._read_file_by_file(table, ["_batch_id"])
        if delta is None:
            return None
        return {
            batch_id: sorted(delta.file_uris(file_pruning_predicate=[("_batch_id", "=", batch_id)]))
            for batch_id in batch_ids
        }
