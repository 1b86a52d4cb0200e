"""The state of each input table as of a date, rebuilt from bronze and the batch ledger.

Silver holds only the current state; the cross-check must be reproducible for any past date. So it
uses the same semantics as `ingestion/silver.py`, restricted to batches the ledger calls `loaded` and
extracted (CST date) on or before the as-of date: in batch order, the last snapshot replaces the state
and later incremental batches upsert by primary key. The plan computed here says which bronze batches
count and in which order; each engine turns it into "one row per primary key, from the latest batch".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl

from ingestion.bronze import bronze_table
from ingestion.contract import Contract, get_contract
from ingestion.ledger import latest_decisions, read_ledger
from ingestion.warehouse import Warehouse


@dataclass(frozen=True)
class TablePlan:
    """Which bronze batches make up a table's state as of the date, oldest first, with their ordinals."""

    contract: Contract
    batch_ids: tuple[str, ...]
    ordinals: tuple[int, ...]
    has_rows: bool  # the bronze table exists (a contract whose every batch was empty has none)

    @property
    def table(self) -> str:
        return bronze_table(self.contract)

    @property
    def is_empty(self) -> bool:
        return not self.batch_ids or not self.has_rows

    @property
    def needs_dedupe(self) -> bool:
        """Keys repeat only across batches: duplicate keys within one batch are quarantined at ingestion."""
        return len(self.batch_ids) > 1

    @property
    def last_batch_id(self) -> str | None:
        return self.batch_ids[-1] if self.batch_ids else None


def plan_table(ledger: pl.DataFrame, warehouse: Warehouse, contract: Contract, as_of: date) -> TablePlan:
    loaded = ledger.filter(
        (pl.col("contract_id") == contract.id)
        & (pl.col("status") == "loaded")
        & (pl.col("extracted_at").dt.convert_time_zone("Asia/Shanghai").dt.date() <= as_of)
    ).sort("batch_ordinal")
    snapshots = loaded.filter(pl.col("mode") == "snapshot")
    if snapshots.height:
        loaded = loaded.filter(pl.col("batch_ordinal") >= snapshots["batch_ordinal"][-1])
    return TablePlan(
        contract,
        tuple(loaded["batch_id"].to_list()),
        tuple(int(o) for o in loaded["batch_ordinal"].to_list()),
        warehouse.exists(bronze_table(contract)),
    )


def plan_inputs(warehouse: Warehouse, as_of: date, contract_ids: tuple[str, ...]) -> dict[str, TablePlan]:
    """The plan of every input table of the cross-check as of `as_of`."""
    ledger = latest_decisions(read_ledger(warehouse))  # a batch landed again counts once, as last decided
    return {cid: plan_table(ledger, warehouse, get_contract(cid), as_of) for cid in contract_ids}
