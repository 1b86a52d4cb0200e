"""Landing a whole contract (every pending batch, in delivery order) and the deliveries nobody expects."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import polars as pl

from ingestion.bronze import DEFAULT_REJECT_SHARE, BatchOutcome, ingest_batch
from ingestion.contract import Contract, load_contracts
from ingestion.landing import Batch, BatchDir, find_batches
from ingestion.ledger import SNAPSHOT_SHRINK, decisions_of, read_confirmations, read_ledger
from ingestion.validation import Validated
from ingestion.warehouse import Warehouse


def seen_batches(warehouse: Warehouse) -> set[tuple[str, str]]:
    """(contract_id, batch_id) of every batch the ledger has decided, loaded or rejected; a snapshot held
    for shrinking is decided again once a data officer has confirmed it (`yiwang batches confirm`)."""
    ledger = read_ledger(warehouse)
    seen = set(zip(ledger["contract_id"].to_list(), ledger["batch_id"].to_list(), strict=True))
    confirmed = read_confirmations(warehouse)
    if confirmed.height:
        held = ledger.group_by("contract_id", "batch_id").agg(
            (pl.col("rule") == SNAPSHOT_SHRINK).fill_null(False).all().alias("only_held")
        )
        reopened = held.filter(pl.col("only_held")).join(confirmed, on=["contract_id", "batch_id"])
        seen -= set(zip(reopened["contract_id"].to_list(), reopened["batch_id"].to_list(), strict=True))
    return seen


def pending_batches(landing: Path, warehouse: Warehouse, contract_id: str | None = None) -> list[BatchDir]:
    """Batch directories the ledger does not know yet (complete or still waiting for a manifest)."""
    seen = seen_batches(warehouse)
    return [
        b
        for b in find_batches(landing)
        if (contract_id is None or b.contract_id == contract_id) and (b.contract_id, b.batch_id) not in seen
    ]


def ingest_contract(
    contract: Contract,
    landing: Path,
    warehouse: Warehouse,
    *,
    reject_share: float = DEFAULT_REJECT_SHARE,
    as_of: date | None = None,
    on_validated: Callable[[Batch, Validated], None] | None = None,
    progress: Callable[[BatchDir], None] | None = None,
) -> list[BatchOutcome]:
    if contract.is_image:
        raise ValueError(
            f"{contract.id} delivers image files, not rows: its batches are scored by the video assets "
            "(thematic_libs/video/scoring.py), not landed in bronze"
        )
    outcomes = []
    for batch_dir in pending_batches(landing, warehouse, contract.id):
        if progress:
            progress(batch_dir)
        outcomes.append(
            ingest_batch(batch_dir, warehouse, reject_share=reject_share, as_of=as_of, on_validated=on_validated)
        )
    return outcomes


class UnknownBatch(ValueError):
    """No batch directory of that contract and id in the landing zone."""


def find_batch(landing: Path, contract_id: str, batch_id: str) -> BatchDir:
    for batch_dir in find_batches(landing) if landing.is_dir() else []:
        if batch_dir.contract_id == contract_id and batch_dir.batch_id == batch_id:
            return batch_dir
    raise UnknownBatch(
        f"no batch {contract_id}/{batch_id} in the landing zone {landing}: see `yiwang ledger --contract "
        f"{contract_id}` for the batches on record"
    )


def land_batch(
    batch_dir: BatchDir,
    warehouse: Warehouse,
    *,
    reject_share: float = DEFAULT_REJECT_SHARE,
    as_of: date | None = None,
    on_validated: Callable[[Batch, Validated], None] | None = None,
) -> BatchOutcome:
    """Land this one batch now, whatever the ledger says: a batch not decided yet is landed as a run would; a
    decided one is landed again from its files as they are now (a department fixed them in place, the contract
    changed): its bronze and quarantine rows are replaced and the ledger gets a new row, `rerun-<n>`, n the
    number of decisions before it. The silver of its contract must then be rebuilt (`apply_silver(rebuild=True)`).
    """
    if (batch_dir.contract_id, batch_dir.batch_id) not in seen_batches(warehouse):
        attempt = ""
    else:
        attempt = f"rerun-{decisions_of(warehouse, batch_dir.contract_id, batch_dir.batch_id)}"
    return ingest_batch(
        batch_dir, warehouse, reject_share=reject_share, as_of=as_of, on_validated=on_validated, attempt=attempt
    )


def ingest_unknown(landing: Path, warehouse: Warehouse) -> list[BatchOutcome]:
    """Batches delivered under a department/dataset that no contract describes: rejected, on record.

    Image contracts (video frames) are known: their batches are left to the video scoring."""
    known = {c.id for c in load_contracts().values() if not c.is_stream}
    return [
        ingest_batch(batch_dir, warehouse)
        for batch_dir in pending_batches(landing, warehouse)
        if batch_dir.contract_id not in known
    ]
