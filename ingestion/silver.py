"""Silver: the current state of each dataset, one row per primary key, with sensitive values pseudonymised.

Loaded batches are applied in batch order: a snapshot replaces the state (keys it no longer holds stop
being current), an incremental batch is MERGEd by primary key (a later batch wins). The silver table
remembers the last batch it applied in a Delta application transaction whose version is that batch's
ordinal, so a re-run applies only what is new and a crash between two commits loses nothing. A batch
that arrives late (sorting before one already applied) makes the state be rebuilt from bronze.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, Transaction, write_deltalake

from ingestion.bronze import bronze_table
from ingestion.contract import Contract
from ingestion.ledger import latest_decisions, read_ledger
from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse

SILVER_APP = "yiwang.silver"


@dataclass(frozen=True)
class SilverOutcome:
    contract_id: str
    applied_batches: tuple[str, ...]
    action: str  # unchanged | merged | replaced | rebuilt
    rows: int


def silver_table(contract: Contract) -> str:
    return f"silver/{contract.table_path}"


def _applied(warehouse: Warehouse, table: str) -> tuple[int, int]:
    """(ordinal of the last applied batch, how many loaded batches it covered) or (-1, 0)."""
    if not warehouse.exists(table):
        return -1, 0
    dt = warehouse.table(table)
    last = dt.transaction_version(SILVER_APP)
    if last is None:
        return -1, 0
    for commit in dt.history():
        if "yiwang.applied_batches" in commit:
            return int(last), int(commit["yiwang.applied_batches"])
    return int(last), 0


def _bronze_rows(warehouse: Warehouse, contract: Contract, batch_ids: list[str]) -> pl.DataFrame:
    dt = warehouse.table(bronze_table(contract))
    table = dt.to_pyarrow_table(filters=[("_batch_id", "in", batch_ids)])
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _current(frame: pl.DataFrame, contract: Contract, order: dict[str, int]) -> pl.DataFrame:
    """Per primary key, the row of the latest batch."""
    ranked = frame.with_columns(pl.col("_batch_id").replace_strict(order, return_dtype=pl.Int64).alias("_ord"))
    return ranked.sort("_ord").unique(subset=list(contract.primary_key), keep="last").drop("_ord")


def _to_silver(frame: pl.DataFrame, contract: Contract, pseudonymiser: Pseudonymiser) -> pl.DataFrame:
    replacements = [
        pseudonymiser.pseudonymise(frame[c.name]).alias(f"{c.name}_key") for c in contract.sensitive_columns
    ]
    return frame.with_columns(replacements).select(contract.silver_schema().names)


def apply_silver(
    contract: Contract,
    warehouse: Warehouse,
    pseudonymiser: Pseudonymiser,
    as_of: date | None = None,
    *,
    rebuild: bool = False,
) -> SilverOutcome:
    """Bring `silver/<department>/<dataset>` up to the last loaded batch.

    `rebuild`: a batch already applied was landed again (ingestion.pipeline.land_batch), so the state is
    rebuilt from bronze as for a late batch (from the last loaded snapshot on), empty when none is loaded now.
    """
    table = silver_table(contract)
    ledger = latest_decisions(read_ledger(warehouse)).filter(
        (pl.col("contract_id") == contract.id) & (pl.col("status") == "loaded")
    )
    if as_of is not None:
        ledger = ledger.filter(pl.col("extracted_at").dt.convert_time_zone("Asia/Shanghai").dt.date() <= as_of)
    ledger = ledger.sort("batch_ordinal")
    if ledger.height == 0:
        if rebuild and warehouse.exists(table):
            commit = CommitProperties(custom_metadata={"yiwang.applied_batches": "0", "yiwang.action": "rebuilt"})
            _overwrite(warehouse, table, contract.silver_schema().empty_table(), commit)
            return SilverOutcome(contract.id, (), "rebuilt", 0)
        return SilverOutcome(contract.id, (), "unchanged", 0)
    last_applied, covered = _applied(warehouse, table)
    already = ledger.filter(pl.col("batch_ordinal") <= last_applied)
    pending = ledger.filter(pl.col("batch_ordinal") > last_applied)
    late = rebuild or already.height != covered
    if not late and pending.height == 0:
        return SilverOutcome(contract.id, (), "unchanged", 0)

    candidates = ledger if late else pending
    snapshots = candidates.filter(pl.col("mode") == "snapshot")
    if snapshots.height:
        start = snapshots["batch_ordinal"][-1]
        replace_from = candidates.filter(pl.col("batch_ordinal") >= start)
        action = "rebuilt" if late else "replaced"
    elif late:
        replace_from, action = candidates, "rebuilt"
    else:
        replace_from, action = pending, "merged"
    batch_ids = replace_from["batch_id"].to_list()
    order = dict(zip(batch_ids, replace_from["batch_ordinal"].to_list(), strict=True))
    rows = (
        _bronze_rows(warehouse, contract, batch_ids)
        if warehouse.exists(bronze_table(contract))
        else pl.DataFrame(schema=pl.from_arrow(contract.bronze_schema().empty_table()).schema)
    )
    current = _to_silver(_current(rows, contract, order), contract, pseudonymiser)
    data = current.to_arrow().cast(contract.silver_schema())
    commit = CommitProperties(
        app_transactions=[Transaction(SILVER_APP, int(ledger["batch_ordinal"][-1]))],
        custom_metadata={"yiwang.applied_batches": str(ledger.height), "yiwang.action": action},
    )
    if action == "merged" and warehouse.exists(table):
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in _silver_key(contract))
        (
            warehouse.table(table)
            .merge(data, predicate=predicate, source_alias="s", target_alias="t", commit_properties=commit)
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
    else:
        _overwrite(warehouse, table, data, commit)
    return SilverOutcome(contract.id, tuple(pending["batch_id"].to_list()), action, data.num_rows)


def _overwrite(warehouse: Warehouse, table: str, data: pa.Table, commit: CommitProperties) -> None:
    """The silver table replaced whole by `data` in one commit."""
    write_deltalake(
        warehouse.uri(table),
        data,
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=warehouse.options(),
        commit_properties=commit,
    )


def _silver_key(contract: Contract) -> list[str]:
    sensitive = {c.name for c in contract.sensitive_columns}
    return [f"{k}_key" if k in sensitive else k for k in contract.primary_key]
