"""Landing batches as Dagster partitions: each delivered batch can be seen, landed again and backfilled.

`ops/batch` is one asset partitioned by the dynamic partitions definition `landing_batches`, whose keys name a
batch as `<contract_id>/<batch_id>` (e.g. `minzheng.assistance_cases/20261101T020000`). One asset for every
contract, because a partitions definition cannot be shared by per-contract assets whose keys differ, and one
page in the UI then holds the history of every batch.

- `yiwang run` (the unpartitioned `platform_build`) lands batches through the bronze assets; each bronze asset
  registers the batches it decided as partitions and records a materialization of each partition with the
  ledger's outcome (status, rows loaded and quarantined, reason), so the partitions page shows every batch.
- The sensor `new_landing_batches` registers new complete batches as partitions before its run lands them.
- The job `land_batches` (this asset only, partitioned) lands the selected batches again: from the UI
  (Materialize a partition, or a backfill of several) or `yiwang batches rerun <contract_id>/<batch_id>`.
  Landing a decided batch again replaces its bronze and quarantine rows and writes a new ledger row
  (ingestion.pipeline.land_batch), then rebuilds the contract's silver.

`platform_build` leaves `ops/batch` out: Dagster does not mix partitioned and unpartitioned assets in one job,
and a run lands every pending batch anyway.
"""

from collections.abc import Iterable

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    BackfillPolicy,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
    in_process_executor,
)

from ingestion.bronze import BatchOutcome
from ingestion.contract import batch_contracts, image_contracts
from ingestion.pipeline import UnknownBatch, find_batch, land_batch
from ingestion.silver import apply_silver
from orchestration.resources import PlatformResource
from quality.runner import QualityRecorder

LANDING_BATCHES = "landing_batches"
BATCH_KEY = AssetKey(["ops", "batch"])
LAND_BATCHES_JOB = "land_batches"
# Outcomes that are a decision on the ledger; `waiting` (no manifest) and `not_due` (extracted after --as-of)
# leave a batch pending.
DECIDED = ("loaded", "rejected")

landing_batches = DynamicPartitionsDefinition(name=LANDING_BATCHES)


def batch_partition(contract_id: str, batch_id: str) -> str:
    return f"{contract_id}/{batch_id}"


def parse_batch_partition(key: str) -> tuple[str, str]:
    """`<contract_id>/<batch_id>` -> (contract_id, batch_id); ValueError for anything else."""
    contract_id, slash, batch_id = key.partition("/")
    if not slash or not contract_id or not batch_id or "/" in batch_id:
        raise ValueError(
            f"{key!r} does not name a batch: write <contract_id>/<batch_id>, "
            "e.g. minzheng.assistance_cases/20261101T020000"
        )
    return contract_id, batch_id


def outcome_metadata(outcome: BatchOutcome) -> dict[str, object]:
    return {
        "contract_id": outcome.contract_id,
        "batch_id": outcome.batch_id,
        "status": outcome.status,
        "rows_loaded": outcome.rows_loaded,
        "rows_quarantined": outcome.rows_quarantined,
        "reason": MetadataValue.text(outcome.reason or ""),
    }


def record_batches(context: AssetExecutionContext, outcomes: Iterable[BatchOutcome]) -> None:
    """Register the decided batches as partitions of `ops/batch` and record a materialization of each, with the
    ledger's outcome, in this run: what `yiwang run` and the sensor's runs leave on the partitions page."""
    decided = [o for o in outcomes if o.status in DECIDED]
    if not decided:
        return
    keys = [batch_partition(o.contract_id, o.batch_id) for o in decided]
    context.instance.add_dynamic_partitions(LANDING_BATCHES, keys)
    for key, outcome in zip(keys, decided, strict=True):
        context.log_event(
            AssetMaterialization(
                asset_key=BATCH_KEY,
                partition=key,
                description=f"{outcome.status} by run {context.run.run_id}",
                metadata={**outcome_metadata(outcome), "landed_by": "platform_build"},
            )
        )


@asset(
    key=BATCH_KEY,
    partitions_def=landing_batches,
    group_name="ops",
    kinds={"delta", "python"},
    description="One landing batch per partition (<contract_id>/<batch_id>): bronze rows, quarantine and ledger "
    "row of that batch, then its contract's silver. Materialise a partition to land that batch again from "
    "its files as they are now (e.g. after a department fixed them in place); backfill several at once.",
    backfill_policy=BackfillPolicy.multi_run(max_partitions_per_run=1),
)
def batch(context: AssetExecutionContext, platform: PlatformResource) -> MaterializeResult:
    contract_id, batch_id = parse_batch_partition(context.partition_key)
    warehouse = platform.get_warehouse()
    try:
        batch_dir = find_batch(platform.landing_path(), contract_id, batch_id)
    except UnknownBatch as unknown:
        raise Failure(str(unknown)) from None
    if contract_id in image_contracts():
        raise Failure(f"{contract_id} delivers image files: its batches are scored by the video assets, not landed")
    contracts = batch_contracts()
    recorder = QualityRecorder(warehouse)
    outcome = land_batch(
        batch_dir,
        warehouse,
        reject_share=platform.reject_share,
        as_of=platform.as_of_date(),
        on_validated=recorder,
    )
    context.log.info(f"{contract_id} {batch_id}: {outcome.status}" + (f" ({outcome.reason})" if outcome.reason else ""))
    metadata: dict[str, object] = {**outcome_metadata(outcome), "landed_by": LAND_BATCHES_JOB}
    contract = contracts.get(contract_id)
    if contract is not None and outcome.status in DECIDED:
        silver = apply_silver(contract, warehouse, platform.pseudonymiser(), platform.as_of_date(), rebuild=True)
        metadata.update(silver_action=silver.action, silver_rows=silver.rows)
        context.log.info(f"{contract_id}: silver {silver.action}, {silver.rows} rows")
    return MaterializeResult(metadata=metadata)


land_batches = define_asset_job(
    LAND_BATCHES_JOB,
    selection=[BATCH_KEY],
    partitions_def=landing_batches,
    description="Land the selected batches (partitions of ops/batch) again: one batch re-run or a backfill of "
    "several. `yiwang batches rerun <contract_id>/<batch_id>` runs it from the command line.",
    executor_def=in_process_executor,
)
