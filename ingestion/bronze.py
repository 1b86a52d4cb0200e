"""One batch from the landing zone into bronze, quarantine and the ledger.

Order of writes, each one Delta commit marked with the batch's application transaction:
bronze rows, quarantine rows, ledger row. The ledger row is the commit point: downstream reads
only batches the ledger calls `loaded`, and a re-run after a crash skips the writes already done,
so a killed process leaves nothing visible and the next run ends exactly like a clean one.

A batch of more than PART_BY_PART_ROWS rows in several parts, or in one large part, is landed one piece (a part, a
run of a Parquet part's row groups, a run of at most that many records of a CSV or JSON-lines part) at a time under
the same commits (`_land_by_part`), so memory holds one piece of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Protocol, runtime_checkable

import polars as pl

from ingestion.contract import Contract, get_contract
from ingestion.landing import (
    Batch,
    BatchDir,
    BatchRejected,
    PartFile,
    batch_ordinal,
    extraction_date,
    open_batch,
    verify_checksums,
)
from ingestion.ledger import (
    QUARANTINE_SCHEMA,
    SNAPSHOT_SHRINK,
    LedgerEntry,
    append_once,
    batch_transaction,
    latest_decisions,
    now_utc,
    read_confirmations,
    read_ledger,
    replace_once,
    staged_append,
    write_ledger,
    write_quarantine,
)
from ingestion.readers import (
    ROW_NUMBER,
    SOURCE_FILE,
    Malformed,
    NotInRuns,
    ReadResult,
    parquet_slices,
    read_batch,
    read_part,
    read_part_runs,
)
from ingestion.validation import Checked, Validated, check_keys, raw_records, validate
from ingestion.warehouse import QUARANTINE_ROWS, Warehouse

DEFAULT_REJECT_SHARE = 0.05
DEFAULT_MAX_SNAPSHOT_SHRINK = 0.5
# A batch of more rows than this, delivered in more than one part or in one larger part, is landed piece by piece
# (`_land_by_part`; a part of more rows than this is read in runs of at most this many rows: a Parquet part's row
# groups, a CSV or JSON-lines part's records): memory for one piece instead of the batch, for 1.1-1.5 times the
# batch's landing time (bench/RESULTS.md, issue 16 (g), (i)). Up to this size the whole batch is held: about 1 GB
# above what the process holds, at 1 M rows. YIWANG_PART_BY_PART_ROWS overrides it.
PART_BY_PART_ROWS = 1_000_000


@dataclass(frozen=True)
class BatchOutcome:
    contract_id: str
    batch_id: str
    status: str  # loaded | rejected | waiting | not_due | skipped
    reason: str | None = None
    rows_loaded: int = 0
    rows_quarantined: int = 0


def bronze_table(contract: Contract) -> str:
    return f"bronze/{contract.table_path}"


def ingest_batch(
    batch_dir: BatchDir,
    warehouse: Warehouse,
    *,
    reject_share: float = DEFAULT_REJECT_SHARE,
    as_of: date | None = None,
    on_validated: Callable[[Batch, Validated], None] | None = None,
    attempt: str = "",
) -> BatchOutcome:
    """Land one batch directory; never raises for bad data, only for platform failures.

    `on_validated` sees every batch that was read and checked (the quality suites run there), before the
    batch is committed: what it writes must be idempotent per batch.

    `attempt` (e.g. `rerun-2`) lands a batch the ledger already decided once more, from its files as they are
    now: its bronze and quarantine rows are replaced (one Delta commit per table, marked with the attempt, so a
    crash mid-way is completed by the same attempt) and the ledger gets a row of its own for the new decision.
    """
    if not batch_dir.is_complete:
        return BatchOutcome(batch_dir.contract_id, batch_dir.batch_id, "waiting", "no _manifest.json yet")
    try:
        batch = open_batch(batch_dir, checksums=False)
    except BatchRejected as rejected:
        _reject(warehouse, batch_dir, rejected, attempt=attempt)
        return BatchOutcome(batch_dir.contract_id, batch_dir.batch_id, "rejected", rejected.message)
    if as_of is not None and extraction_date(batch) > as_of:
        return BatchOutcome(batch.contract.id, batch.batch_id, "not_due", f"extracted after {as_of}")
    if pieces := _pieces_to_land(batch, on_validated, attempt):
        hook = on_validated if isinstance(on_validated, PartwiseHook) else None
        outcome = _land_by_part(batch, pieces, warehouse, reject_share, hook)
        if outcome is not None:
            return outcome
    try:
        validated = _read_and_validate(batch)
    except BatchRejected as rejected:
        _reject(warehouse, batch_dir, rejected, batch, attempt=attempt)
        return BatchOutcome(batch.contract.id, batch.batch_id, "rejected", rejected.message)
    # One commit point, the ledger row, written last: the quality results, bronze rows and quarantine rows
    # are each committed once per batch (Delta application transactions) before it, so a process killed at
    # any boundary leaves a batch the ledger does not know, and the next run completes it without doubles.
    if on_validated is not None:
        on_validated(batch, validated)
    return _land(batch, validated, warehouse, reject_share, attempt)


@runtime_checkable
class PartwiseHook(Protocol):
    """An `on_validated` hook that can also follow a large batch part by part (`_land_by_part`).

    `tally` summarises one validated part; the tallies of a batch's parts add up (`+`) to the whole batch's, and
    `record` gets that sum, before the batch is committed, where a plain hook gets the whole `Validated`.
    """

    @property
    def by_part(self) -> bool:
        """Whether it can follow a batch part by part now (a hook that needs every row at once cannot)."""
        ...

    def tally(self, batch: Batch, validated: Validated) -> Any: ...

    def record(self, batch: Batch, tally: Any) -> None: ...


# One piece of a batch landed piece by piece: a part (a CSV or JSON-lines part of more than PART_BY_PART_ROWS records
# is read in runs of that many: `read_part_runs`), or a run of a Parquet part's row groups.
Piece = tuple[PartFile, range | None]


def _pieces_to_land(
    batch: Batch, on_validated: Callable[[Batch, Validated], None] | None, attempt: str
) -> list[Piece] | None:
    """The pieces to land `batch` in one at a time, or None: land it whole."""
    hook_can = on_validated is None or (isinstance(on_validated, PartwiseHook) and on_validated.by_part)
    limit = part_by_part_rows()
    if not hook_can or attempt or batch.contract.is_image or batch.rows <= limit:
        return None
    pieces: list[Piece] = []
    for part in batch.parts:
        slices = parquet_slices(part, limit) if part.rows > limit else None
        if slices:
            pieces.extend((part, rows) for rows in slices)
        else:
            pieces.append((part, None))
    in_runs = any(part.format != "parquet" and part.rows > limit for part in batch.parts)
    return pieces if len(pieces) > 1 or in_runs else None


def part_by_part_rows() -> int:
    """Batches of more rows than this in several parts land part by part (YIWANG_PART_BY_PART_ROWS, 1,000,000)."""
    value = os.environ.get("YIWANG_PART_BY_PART_ROWS")
    if value is None:
        return PART_BY_PART_ROWS
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"YIWANG_PART_BY_PART_ROWS={value!r} is not a whole number: set it to a row count such as 1000000, "
            "or unset it"
        ) from None


def _land_by_part(
    batch: Batch, pieces: list[Piece], warehouse: Warehouse, reject_share: float, hook: PartwiseHook | None
) -> BatchOutcome | None:
    """Land a large batch one piece at a time, so that memory holds one piece, not the batch; None: land it whole.

    A first pass reads each piece for its primary keys and keeps the keys that more than one piece holds (the
    duplicates only the whole batch shows; `_first_pass`). The second reads, validates (those keys are duplicates
    too) and writes each piece to bronze as data files that no reader sees; the batch is committed as one Delta commit
    after its last part, as a whole batch is, and its quarantine rows, quality results and ledger row are those
    of the whole batch. Where the outcome is not `loaded` (too many bad records, a snapshot held, a damaged or
    malformed file) the files written so far are removed, nothing is committed and the caller lands the batch
    whole, so the decision and its messages are exactly `_land`'s.
    """
    contract = batch.contract
    table = bronze_table(contract)
    bronze = staged_append(
        warehouse,
        table,
        batch_transaction(table, contract.id, batch.batch_id),
        partition_by=["_batch_id"],
        schema=contract.bronze_schema(),
    )
    at = now_utc()
    quarantine: list[pl.DataFrame] = []
    tally: Any = None
    records = bad = 0
    with ThreadPoolExecutor(1, thread_name_prefix="sha256") as pool, TemporaryDirectory(prefix="yiwang-") as spill:
        checksums = pool.submit(verify_checksums, batch)
        try:
            limit = part_by_part_rows()
            try:
                elsewhere, parts = _first_pass(batch, pieces, Path(spill), limit)
            except NotInRuns:  # a line the fast CSV reader leaves to the exact one: that one, in runs too
                elsewhere, parts = _first_pass(batch, pieces, Path(spill), limit, exact=True)
            for validate_part in parts:
                validated = validate_part(elsewhere=elsewhere)
                records += validated.records
                bad += validated.bad_records
                if bad / batch.rows > reject_share:
                    bronze.discard()  # rejected whatever the other parts hold
                    return None
                if hook is not None:
                    part_tally = hook.tally(batch, validated)
                    tally = part_tally if tally is None else tally + part_tally
                quarantine.append(quarantine_frame(batch, validated, at))
                bronze.write(bronze_rows(batch, validated, at))
                del validated  # before the next part is read: one part in memory, not two
            checksums.result()
        except (BatchRejected, NotInRuns):
            bronze.discard()
            return None
    loaded = records - bad
    confirmed = ""
    if batch.mode == "snapshot":
        held, confirmed = _snapshot_guard(batch, loaded, warehouse)
        if held is not None:
            bronze.discard()
            return None
    reason = _loaded_reason(bad, records, confirmed)
    if hook is not None:
        hook.record(batch, tally)
    if loaded:
        bronze.commit()
    rows = pl.concat(quarantine, how="diagonal_relaxed") if quarantine else pl.DataFrame()
    if rows.height:  # the order of a whole batch's quarantine: every rule broken, then the malformed records
        rows = rows.sort(pl.col("rule") == "malformed_record", maintain_order=True)
    write_quarantine(warehouse, contract.id, batch.batch_id, rows)
    write_ledger(
        warehouse,
        _entry(batch, "loaded", reason, loaded, bad, None, records),
        attempt="confirmed" if confirmed else "",
    )
    return BatchOutcome(contract.id, batch.batch_id, "loaded", reason, loaded, bad)


def _first_pass(
    batch: Batch, pieces: list[Piece], spill: Path, max_rows: int, exact: bool = False
) -> tuple[pl.DataFrame | None, list[Callable[[], Validated]]]:
    """The complete primary keys that more than one piece of the batch holds (None without a key), and how the
    second pass validates each piece.

    Each piece's key columns are checked here, as validation checks them, and handed to its validation. A Parquet
    piece is read for its key columns alone, and read whole in the second pass. A CSV or JSON-lines part is parsed
    once, in runs of at most `max_rows` records (`read_part_runs`; `exact`: CSV by the exact reader): each run is kept
    in an uncompressed Arrow IPC file under `spill` and is a piece of the second pass, which reads it back at disk
    speed instead of parsing the text again (JSON lines parse in Python). Which keys repeat across pieces is found on
    64-bit hashes and then confirmed on the values, so a hash collision cannot make a duplicate.
    """
    contract = batch.contract
    names = list(contract.primary_key)
    keys: list[pl.DataFrame] = []
    parts: list[Callable[[], Validated]] = []

    def add(read: Callable[[], ReadResult], frame: pl.DataFrame | None) -> None:
        known = check_keys(frame, contract) if frame is not None and names else None
        if known is not None:
            keys.append(pl.DataFrame([known[k].typed.alias(k) for k in names]).drop_nulls())
        parts.append(partial(_validated, contract, read, known))

    for part, rows in pieces:
        if part.format == "parquet":
            read: Callable[[], ReadResult] = partial(read_part, batch, part, None, rows)
            add(read, read_part(batch, part, names, rows).frame if names else None)
            continue
        for run in read_part_runs(batch, part, max_rows, exact):
            path = spill / f"piece-{len(parts):05d}.arrow"
            run.frame.write_ipc(path, compression="uncompressed")
            add(partial(_read_spilled, path, run.malformed), run.frame)
            del run
    if not names:
        return None, parts
    hashes = [k.hash_rows() for k in keys]
    every = pl.concat([h.unique() for h in hashes])
    repeated = every.filter(every.is_duplicated()).unique().implode()
    candidates = pl.concat([k.filter(h.is_in(repeated)).unique() for k, h in zip(keys, hashes, strict=True)])
    return candidates.filter(candidates.is_duplicated()).unique(), parts


def _validated(
    contract: Contract,
    read: Callable[[], ReadResult],
    known: dict[str, Checked] | None = None,
    elsewhere: pl.DataFrame | None = None,
) -> Validated:
    return validate(read(), contract, elsewhere, known)


def _read_spilled(path: Path, malformed: list[Malformed]) -> ReadResult:
    return ReadResult(pl.read_ipc(path), malformed)


def _read_and_validate(batch: Batch) -> Validated:
    """Parse and check the rows while another thread verifies the parts' sha256 (hashlib releases the GIL).

    The checksum verdict wins: a damaged file is reported as damaged even when it also fails to parse.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="sha256") as pool:
        checksums = pool.submit(verify_checksums, batch)
        try:
            validated = validate(read_batch(batch), batch.contract)
        except Exception:
            checksums.result()
            raise
        checksums.result()
    return validated


def _reject(
    warehouse: Warehouse, batch_dir: BatchDir, rejected: BatchRejected, batch: Batch | None = None, attempt: str = ""
) -> None:
    try:
        contract: Contract | None = batch.contract if batch else get_contract(batch_dir.contract_id)
    except ValueError:
        contract = None
    if attempt:  # landed again and rejected now: nothing of the batch stays in bronze or quarantine
        _replace_batch(warehouse, batch_dir.contract_id, batch_dir.batch_id, contract, None, None, attempt)
    write_ledger(
        warehouse,
        LedgerEntry(
            contract_id=batch_dir.contract_id,
            batch_id=batch_dir.batch_id,
            status="rejected",
            reason=rejected.message,
            rows_loaded=0,
            rows_quarantined=0,
            processed_at=now_utc(),
            rule=rejected.rule,
            contract_version=contract.version if contract else None,
            source_level=batch_dir.level,
            mode=batch.mode if batch else None,
            extracted_at=batch.extracted_at if batch else None,
            rows_delivered=batch.rows if batch else None,
            batch_ordinal=batch_ordinal(batch_dir.batch_id),
        ),
        attempt=attempt,
    )


def _replace_batch(
    warehouse: Warehouse,
    contract_id: str,
    batch_id: str,
    contract: Contract | None,
    rows: pl.DataFrame | None,
    quarantine: pl.DataFrame | None,
    attempt: str,
) -> None:
    """A batch landed again: its bronze rows, then its quarantine rows, replaced by this attempt's (None: none)."""
    tag = f"{batch_id}#{attempt}"
    if contract is not None and not contract.is_image:
        table = bronze_table(contract)
        replace_once(
            warehouse,
            table,
            rows,
            batch_transaction(table, contract_id, tag),
            {"_batch_id": batch_id},
            partition_by=["_batch_id"],
            schema=contract.bronze_schema(),
        )
    replace_once(
        warehouse,
        QUARANTINE_ROWS,
        quarantine.select(QUARANTINE_SCHEMA.names) if quarantine is not None and quarantine.height else None,
        batch_transaction(QUARANTINE_ROWS, contract_id, tag),
        {"contract_id": contract_id, "batch_id": batch_id},
        schema=QUARANTINE_SCHEMA,
    )


def quarantine_frame(batch: Batch, validated: Validated, quarantined_at: datetime | None = None) -> pl.DataFrame:
    """One row per broken rule of each bad record, plus one per record that could not be parsed."""
    contract = batch.contract
    violations = validated.violations.frame
    quarantined_at = quarantined_at or now_utc()
    frames: list[pl.DataFrame] = []
    if violations.height:
        indexes = violations["_idx"].unique(maintain_order=True).to_list()
        keys, records = raw_records(validated.raw, indexes, contract)
        by_index = pl.DataFrame(
            {
                "_idx": pl.Series(indexes, dtype=pl.UInt32),
                "record_key": keys,
                "raw_record": records,
                "row_number": validated.raw[ROW_NUMBER].gather(indexes),
                "source_file": validated.raw[SOURCE_FILE].gather(indexes),
            }
        )
        frames.append(violations.join(by_index, on="_idx", how="left").drop("_idx"))
    if validated.read.malformed:
        frames.append(
            pl.DataFrame(
                {
                    "column": [None] * len(validated.read.malformed),
                    "rule": "malformed_record",
                    "detail": [m.detail for m in validated.read.malformed],
                    "record_key": "",
                    "raw_record": [m.text for m in validated.read.malformed],
                    "row_number": [m.row_number for m in validated.read.malformed],
                    "source_file": [m.source_file for m in validated.read.malformed],
                },
                schema_overrides={"column": pl.String, "row_number": pl.Int64},
            )
        )
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames, how="diagonal_relaxed").with_columns(
        pl.lit(contract.id).alias("contract_id"),
        pl.lit(batch.batch_id).alias("batch_id"),
        pl.lit(quarantined_at).alias("quarantined_at"),
    )


def bronze_rows(batch: Batch, validated: Validated, ingested_at: datetime | None = None) -> pl.DataFrame:
    good = validated.good
    return good.select(batch.contract.column_names).with_columns(
        pl.lit(batch.batch_id).alias("_batch_id"),
        pl.lit(batch.dir.level).alias("_source_level"),
        pl.lit(batch.contract.department).alias("_department"),
        good[SOURCE_FILE].alias("_source_file"),
        good[ROW_NUMBER].alias("_row_number"),
        pl.lit(batch.extracted_at).dt.convert_time_zone("UTC").alias("_extracted_at"),
        pl.lit(ingested_at or now_utc()).dt.convert_time_zone("UTC").alias("_ingested_at"),
    )


def max_snapshot_shrink() -> float:
    """Share of the current rows a snapshot may remove before it is held (YIWANG_MAX_SNAPSHOT_SHRINK, 0.5)."""
    return float(os.environ.get("YIWANG_MAX_SNAPSHOT_SHRINK", DEFAULT_MAX_SNAPSHOT_SHRINK))


def _snapshot_guard(batch: Batch, rows: int, warehouse: Warehouse) -> tuple[str | None, str]:
    """(why the snapshot is held, or None; how it was confirmed, or "").

    A snapshot replaces the dataset: an empty one, or one with fewer than (1 - max share) of the rows of
    the last loaded snapshot, looks exactly like an export that failed upstream, so it is held as
    `rejected` (rule snapshot_shrink) until the sender sets `"confirm_shrink": true` in the manifest or a
    data officer runs `yiwang batches confirm`."""
    contract = batch.contract
    ledger = latest_decisions(read_ledger(warehouse)).filter(
        (pl.col("contract_id") == contract.id)
        & (pl.col("status") == "loaded")
        & (pl.col("mode") == "snapshot")
        & (pl.col("batch_ordinal") < batch_ordinal(batch.batch_id))
    )
    previous = ledger.sort("batch_ordinal").tail(1)
    current = int(previous["rows_loaded"][0]) if previous.height else 0
    share = max_snapshot_shrink()
    if rows > 0 and (current == 0 or (current - rows) / current <= share):
        return None, ""
    confirmations = read_confirmations(warehouse).filter(
        (pl.col("contract_id") == contract.id) & (pl.col("batch_id") == batch.batch_id)
    )
    if confirmations.height:
        c = confirmations.row(0, named=True)
        return None, f"snapshot shrink confirmed by {c['confirmed_by']} ({c['reason']})"
    if batch.confirm_shrink:
        return None, "snapshot shrink confirmed by the sender (manifest confirm_shrink)"
    since = f" of the last loaded snapshot {previous['batch_id'][0]}" if previous.height else ""
    what = (
        "an empty snapshot would delete every row of the dataset"
        if rows == 0
        else f"this snapshot of {rows:,} rows would delete {current - rows:,} of the {current:,} rows{since} "
        f"({(current - rows) / current:.0%}, more than the {share:.0%} allowed)"
    )
    return (
        f"held: {what}. An export that failed upstream looks like this: check with the sender. If it is "
        f'right, set "confirm_shrink": true in its _manifest.json and resend, or run `yiwang batches confirm '
        f"{contract.id} {batch.batch_id} --reason ...`; the next run loads it",
        "",
    )


def _loaded_reason(bad: int, records: int, confirmed: str) -> str | None:
    """The ledger's reason for a loaded batch: the share of its records quarantined, and how a shrinking
    snapshot was confirmed (`_snapshot_guard`); None when there is neither."""
    said = [f"{bad} of {records} records quarantined ({bad / records:.1%}); the other rows loaded"] if bad else []
    if confirmed:
        said.append(confirmed)
    return "; ".join(said) or None


def _entry(
    batch: Batch, status: str, reason: str | None, loaded: int, bad: int, rule: str | None, delivered: int
) -> LedgerEntry:
    return LedgerEntry(
        contract_id=batch.contract.id,
        batch_id=batch.batch_id,
        status=status,
        reason=reason,
        rows_loaded=loaded,
        rows_quarantined=bad,
        processed_at=now_utc(),
        rule=rule,
        contract_version=batch.contract.version,
        source_level=batch.dir.level,
        mode=batch.mode,
        extracted_at=batch.extracted_at,
        rows_delivered=delivered,
        batch_ordinal=batch_ordinal(batch.batch_id),
    )


def _land(
    batch: Batch, validated: Validated, warehouse: Warehouse, reject_share: float, rerun: str = ""
) -> BatchOutcome:
    contract = batch.contract
    bad = validated.bad_records
    share = bad / validated.records if validated.records else 0.0
    quarantine = quarantine_frame(batch, validated)
    rejected = share > reject_share
    loaded = 0 if rejected else validated.good.height
    attempt = ""
    if batch.mode == "snapshot" and not rejected:
        held, attempt = _snapshot_guard(batch, loaded, warehouse)
        if held is not None:
            if rerun:
                _replace_batch(warehouse, contract.id, batch.batch_id, contract, None, None, rerun)
            entry = _entry(batch, "rejected", held, 0, 0, SNAPSHOT_SHRINK, validated.records)
            write_ledger(warehouse, entry, attempt=rerun)
            return BatchOutcome(contract.id, batch.batch_id, "rejected", held, 0, 0)
    if rejected:
        reason: str | None = (
            f"{bad} of {validated.records} records ({share:.1%}) break the contract, more than the "
            f"{reject_share:.0%} allowed; nothing was loaded. See quarantine/rows for each record and rule, "
            "fix them at the source and resend the batch"
        )
    else:
        reason = _loaded_reason(bad, validated.records, attempt)
    if rerun:
        rows = bronze_rows(batch, validated) if loaded else None
        _replace_batch(warehouse, contract.id, batch.batch_id, contract, rows, quarantine, rerun)
    elif loaded:
        table = bronze_table(contract)
        append_once(
            warehouse,
            table,
            bronze_rows(batch, validated),
            batch_transaction(table, contract.id, batch.batch_id),
            partition_by=["_batch_id"],
            schema=contract.bronze_schema(),
        )
    if not rerun:
        write_quarantine(warehouse, contract.id, batch.batch_id, quarantine)
    status = "rejected" if rejected else "loaded"
    rule = "too_many_bad_rows" if rejected else None
    entry = _entry(batch, status, reason, loaded, bad, rule, validated.records)
    write_ledger(warehouse, entry, attempt=rerun or ("confirmed" if attempt else ""))
    return BatchOutcome(contract.id, batch.batch_id, "rejected" if rejected else "loaded", reason, loaded, bad)
