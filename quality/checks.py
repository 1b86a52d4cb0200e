"""Dagster asset checks that show each contract's latest quality results on its bronze asset.

One check per batch contract, `contract_expectations` on `bronze/<department>/<dataset>`. It reads
stored results (ops/quality_results, ops/batch_ledger) and never re-runs GX, so it is cheap and can
run after any materialisation. It needs the `platform` resource (attribute `warehouse`: the root).

Verdict for the contract's latest batch in the ledger:
- ERROR when the batch was rejected (whole-batch rules or too many bad rows), when an expectation
  failed without counts (missing column, GX error), or when any failed expectation's unexpected rows
  exceed the contract threshold (5% of the delivered rows, the share that makes ingestion reject);
- WARN when expectations failed but each on at most 5% of the rows (those rows were quarantined);
- WARN when no batch has been validated yet; passed otherwise.
Informational completeness expectations never fail.
"""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation at definition time.

from collections.abc import Iterable
from typing import Any

import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    asset_check,
)

from ingestion.bronze import DEFAULT_REJECT_SHARE
from ingestion.contract import Contract
from ingestion.ledger import latest_decisions, read_ledger
from ingestion.warehouse import Warehouse
from quality.results import latest_batches, read_results

CHECK_NAME = "contract_expectations"
RESOURCE_KEY = "platform"


def _share() -> pl.Expr:
    """Unexpected rows over delivered rows; null when GX gave no counts."""
    return (pl.col("unexpected_count") / pl.col("element_count")).alias("share")


def _failing_table(failed: pl.DataFrame) -> MetadataValue:
    lines = ["| column | rule | expectation | unexpected | rows |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['column']} | {r['rule']} | {r['expectation']} | {r['unexpected_count']} | {r['element_count']} |"
        for r in failed.iter_rows(named=True)
    ]
    return MetadataValue.md("\n".join(lines))


def _latest_ledger_row(ledger: pl.DataFrame, contract_id: str) -> dict[str, Any] | None:
    mine = ledger.filter(pl.col("contract_id") == contract_id).sort("batch_ordinal", "processed_at")
    return mine.row(-1, named=True) if mine.height else None


def evaluate(
    contract: Contract, results: pl.DataFrame, ledger: pl.DataFrame, threshold: float = DEFAULT_REJECT_SHARE
) -> AssetCheckResult:
    """The check's verdict from frames (no I/O), so it is testable without Dagster's machinery."""
    last = _latest_ledger_row(ledger, contract.id)
    mine = results.filter(pl.col("contract_id") == contract.id)
    batch_id = last["batch_id"] if last else None
    if batch_id is None or mine.filter(pl.col("batch_id") == batch_id).height == 0:
        # A batch rejected before GX ran has no results; show the last batch that has some.
        batch_id = latest_batches(mine)["batch_id"][0] if mine.height else batch_id
    if batch_id is None:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=f"No batch of {contract.id} has been delivered or validated yet.",
        )
    batch = mine.filter(pl.col("batch_id") == batch_id).with_columns(_share())
    failed = batch.filter(~pl.col("success"))
    beyond = failed.filter(pl.col("share").is_null() | (pl.col("share") > threshold))
    rejected = last is not None and last["status"] == "rejected"
    metadata: dict[str, Any] = {
        "batch_id": batch_id,
        "ledger_batch_id": last["batch_id"] if last else None,
        "ledger_status": last["status"] if last else "unknown",
        "ledger_reason": (last or {}).get("reason") or "",
        "expectations_evaluated": batch.height,
        "expectations_failed": failed.height,
        "expectations_failed_beyond_threshold": beyond.height,
        "unexpected_values": int(failed["unexpected_count"].fill_null(0).sum()),
        "threshold": threshold,
        "failing_expectations": _failing_table(failed),
    }
    if rejected or beyond.height:
        why = "the latest batch was rejected" if rejected else f"{beyond.height} expectations failed beyond"
        description = why if rejected else f"{why} {threshold:.0%} of the rows"
        return AssetCheckResult(
            passed=False, severity=AssetCheckSeverity.ERROR, metadata=metadata, description=description
        )
    if failed.height:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            metadata=metadata,
            description=f"{failed.height} expectations failed, each on at most {threshold:.0%} of the rows "
            "(those rows were quarantined).",
        )
    return AssetCheckResult(passed=True, metadata=metadata)


def build_quality_check(contract: Contract, threshold: float = DEFAULT_REJECT_SHARE) -> AssetChecksDefinition:
    """The `contract_expectations` check of one contract's bronze asset."""

    @asset_check(
        asset=AssetKey(["bronze", contract.department, contract.dataset]),
        name=CHECK_NAME,
        description=f"Great Expectations suite of contract {contract.id} v{contract.version} on its latest batch.",
        required_resource_keys={RESOURCE_KEY},
    )
    def _check(context: AssetCheckExecutionContext) -> AssetCheckResult:
        warehouse = Warehouse.at(getattr(context.resources, RESOURCE_KEY).warehouse)
        decisions = latest_decisions(read_ledger(warehouse))  # a batch landed again counts once, as last decided
        return evaluate(contract, read_results(warehouse, contract.id), decisions, threshold)

    return _check


def build_quality_checks(
    contracts: Iterable[Contract], threshold: float = DEFAULT_REJECT_SHARE
) -> list[AssetChecksDefinition]:
    """One `contract_expectations` check per contract, for `Definitions(asset_checks=...)`."""
    return [build_quality_check(c, threshold) for c in contracts]
