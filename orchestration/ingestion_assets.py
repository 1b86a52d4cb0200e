"""Bronze and silver assets, one pair per batch contract, plus the sensor that notices new batches.

Bronze lands every pending batch of its contract (quarantine and ledger included); silver applies the
loaded batches in order. Both are built from the contracts, so adding a contract adds its assets.
"""

import hashlib
from collections import Counter
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    asset_check,
    sensor,
)
from deltalake.exceptions import DeltaError

from ingestion.bronze import BatchOutcome
from ingestion.contract import Contract, batch_contracts, image_contracts
from ingestion.ledger import read_ledger
from ingestion.pipeline import ingest_contract, ingest_unknown, pending_batches
from ingestion.silver import apply_silver, silver_key_counts, silver_table
from ingestion.warehouse import BATCH_LEDGER, QUALITY_RESULTS, QUARANTINE_ROWS, Warehouse
from orchestration.batch_partitions import LANDING_BATCHES, batch_partition, landing_batches, record_batches
from orchestration.resources import PlatformResource
from quality.runner import QualityRecorder
from thematic_libs.sharing.asset_metadata import contract_dataset, dataset_metadata, dataset_owners, dataset_tags


def bronze_key(contract: Contract) -> AssetKey:
    return AssetKey(["bronze", contract.department, contract.dataset])


def silver_key(contract: Contract) -> AssetKey:
    return AssetKey(["silver", contract.department, contract.dataset])


def _outcome_metadata(outcomes: list[BatchOutcome]) -> dict[str, object]:
    counts = Counter(o.status for o in outcomes)
    rejected = [f"{o.batch_id}: {o.reason}" for o in outcomes if o.status == "rejected"]
    return {
        "batches_loaded": counts["loaded"],
        "batches_rejected": counts["rejected"],
        "batches_waiting": counts["waiting"],
        "rows_loaded": sum(o.rows_loaded for o in outcomes),
        "rows_quarantined": sum(o.rows_quarantined for o in outcomes),
        "rejections": MetadataValue.md("\n".join(f"- {r}" for r in rejected) or "none"),
    }


def compact_ops_tables(warehouse: Warehouse, log: Any) -> None:
    """The tables every batch appends one small commit to, compacted once they hold many files: the later
    contracts' landing reads them (the ledger about three times per contract). Upkeep, not landing: a compaction
    that fails (a conflicting commit, an object store that does not answer) changes nothing, is logged, and is
    tried again after the next landing; the batches stay landed."""
    for table in (BATCH_LEDGER, QUARANTINE_ROWS, QUALITY_RESULTS):
        try:
            warehouse.compact(table)
        except (DeltaError, OSError) as error:
            log.warning(f"compacting {table} failed, tried again after the next landing: {error}")


def build_bronze_asset(contract: Contract) -> AssetsDefinition:
    @asset(
        key=bronze_key(contract),
        group_name="bronze",
        description=f"{contract.name}: batches as delivered, typed, with lineage. Restricted layer.",
        kinds={"delta", "python"},
        metadata={
            **dataset_metadata(contract_dataset(contract.id), raw=True),
            "contract": f"{contract.id} v{contract.version}",
            "department": contract.department_label,
            "primary_key": ", ".join(contract.primary_key),
        },
        owners=dataset_owners(contract_dataset(contract.id)),
        tags=dataset_tags(contract_dataset(contract.id), raw=True),
    )
    def _bronze(context: AssetExecutionContext, platform: PlatformResource) -> MaterializeResult:
        warehouse = platform.get_warehouse()
        recorder = QualityRecorder(warehouse)
        outcomes = ingest_contract(
            contract,
            platform.landing_path(),
            warehouse,
            reject_share=platform.reject_share,
            as_of=platform.as_of_date(),
            on_validated=recorder,
            progress=lambda b: context.log.info(f"landing {contract.id} batch {b.batch_id}"),
        )
        for o in outcomes:
            if o.status == "rejected":
                context.log.warning(f"{contract.id} {o.batch_id} rejected: {o.reason}")
        record_batches(context, outcomes)  # each batch's partition of ops/batch, with its ledger outcome
        compact_ops_tables(warehouse, context.log)
        quality_seconds = round(sum(r.seconds for r in recorder.results), 2)  # the Great Expectations pass
        return MaterializeResult(metadata={**_outcome_metadata(outcomes), "quality_seconds": quality_seconds})

    return _bronze


def build_silver_asset(contract: Contract) -> AssetsDefinition:
    @asset(
        key=silver_key(contract),
        deps=[bronze_key(contract)],
        group_name="silver",
        description=f"{contract.name}: current state per {', '.join(contract.primary_key)}, "
        "sensitive columns as keyed pseudonyms.",
        kinds={"delta", "python"},
        metadata={**dataset_metadata(contract_dataset(contract.id)), "path": silver_table(contract)},
        owners=dataset_owners(contract_dataset(contract.id)),
        tags=dataset_tags(contract_dataset(contract.id)),
    )
    def _silver(context: AssetExecutionContext, platform: PlatformResource) -> MaterializeResult:
        outcome = apply_silver(contract, platform.get_warehouse(), platform.pseudonymiser(), platform.as_of_date())
        context.log.info(f"{contract.id}: {outcome.action}, {len(outcome.applied_batches)} batches")
        return MaterializeResult(
            metadata={
                "action": outcome.action,
                "batches_applied": len(outcome.applied_batches),
                "rows_written": outcome.rows,
            }
        )

    return _silver


def build_silver_key_check(contract: Contract) -> AssetChecksDefinition:
    """Silver must hold one row per primary key: a duplicate means a merge went wrong."""

    @asset_check(asset=silver_key(contract), name="primary_key_unique", blocking=False)
    def _check(platform: PlatformResource) -> AssetCheckResult:
        warehouse = platform.get_warehouse()
        table = silver_table(contract)
        if not warehouse.exists(table):
            return AssetCheckResult(passed=True, metadata={"rows": 0, "note": "no batch loaded yet"})
        rows, duplicates = silver_key_counts(warehouse, contract)
        return AssetCheckResult(
            passed=duplicates == 0,
            severity=AssetCheckSeverity.ERROR,
            metadata={"rows": rows, "duplicate_rows": duplicates},
        )

    return _check


@asset(
    key=AssetKey(["ops", "unknown_deliveries"]),
    group_name="ops",
    description="Batches delivered under a department/dataset that no contract describes: rejected on the ledger.",
    kinds={"delta"},
)
def unknown_deliveries(context: AssetExecutionContext, platform: PlatformResource) -> MaterializeResult:
    warehouse = platform.get_warehouse()
    outcomes = ingest_unknown(platform.landing_path(), warehouse)
    record_batches(context, outcomes)
    compact_ops_tables(warehouse, context.log)
    return MaterializeResult(metadata=_outcome_metadata(outcomes))


def _sensor_target() -> AssetSelection:
    keys = [k for c in batch_contracts().values() for k in (bronze_key(c), silver_key(c))]
    return AssetSelection.assets(*keys, unknown_deliveries.key)


@sensor(
    name="new_landing_batches",
    minimum_interval_seconds=60,
    target=_sensor_target(),
    description="Starts a run for the contracts that have new complete batches in the landing zone, and shows "
    "every batch as a partition of ops/batch.",
)
def new_landing_batches(context: SensorEvaluationContext, platform: PlatformResource) -> SensorResult | SkipReason:
    contracts = batch_contracts()
    images = image_contracts()  # frame batches: the video sensor (orchestration/video_assets.py) starts those
    warehouse = platform.get_warehouse()
    ready = [
        b for b in pending_batches(platform.landing_path(), warehouse) if b.is_complete and b.contract_id not in images
    ]
    earlier = _unregistered(context, warehouse, set(images))
    if not ready:
        if earlier:  # batches decided before they were partitions (an older warehouse, another Dagster instance)
            return SensorResult(
                skip_reason="no new complete batches",
                dynamic_partitions_requests=[landing_batches.build_add_request(earlier)],
            )
        return SkipReason("no new complete batches")
    selection: set[AssetKey] = set()
    for b in ready:
        contract = contracts.get(b.contract_id)
        selection.update((bronze_key(contract), silver_key(contract)) if contract else (unknown_deliveries.key,))
    keys = sorted(batch_partition(b.contract_id, b.batch_id) for b in ready)
    run_key = hashlib.sha256("|".join(keys).encode()).hexdigest()
    return SensorResult(
        run_requests=[RunRequest(run_key=run_key, asset_selection=sorted(selection, key=str))],
        # the new batches show on ops/batch's partitions page as soon as they are seen
        dynamic_partitions_requests=[landing_batches.build_add_request(sorted({*keys, *earlier}))],
    )


def _unregistered(context: SensorEvaluationContext, warehouse: Warehouse, images: set[str]) -> list[str]:
    """Partition keys of the batches on the ledger that the instance does not know as partitions yet."""
    ledger = read_ledger(warehouse)
    decided = {
        batch_partition(c, b)
        for c, b in zip(ledger["contract_id"].to_list(), ledger["batch_id"].to_list(), strict=True)
        if c not in images
    }
    return sorted(decided - set(context.instance.get_dynamic_partitions(LANDING_BATCHES)))


def ingestion_assets() -> list[AssetsDefinition]:
    contracts = batch_contracts().values()
    return (
        [build_bronze_asset(c) for c in contracts] + [build_silver_asset(c) for c in contracts] + [unknown_deliveries]
    )


def ingestion_checks() -> list:
    return [build_silver_key_check(c) for c in batch_contracts().values()]
