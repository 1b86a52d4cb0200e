"""Weekly housekeeping: VACUUM every Delta table of the warehouse.

Why: nothing else deletes a file. Overwrites, compactions and the dispatch table's merges leave the files they
replaced (kept for time travel and change feeds), and a process killed between writing a batch's data files and
committing them leaves files no commit names (`ingestion/delta_append.py`: a large batch landed part by part
writes for longer before its one commit). Left alone, a city's warehouse only grows.

What stays: every file a version younger than the retention reads (7 days by default, Delta's own default), so
time travel and change feeds (`yiwang tickets changes --since-version`, the Delta Sharing server) keep working
for a week. Runs on the warehouse's run lock: never beside a platform run. `yiwang maintain` runs it by hand;
the `warehouse_maintenance` job runs it on Sundays at 04:30 CST.
"""

from collections.abc import Callable, Sequence

from dagster import MetadataValue, OpExecutionContext, ScheduleDefinition, job, op

from ingestion.warehouse import VACUUM_RETENTION_HOURS, Vacuumed, Warehouse
from orchestration.resources import PlatformResource


def require_local(warehouse: Warehouse) -> None:
    """ValueError (one line) for a warehouse on object storage: its tables are found by walking a local folder."""
    if not warehouse.is_local:
        raise ValueError(
            f"warehouse {warehouse.root} is on object storage: expire its old files with the bucket's lifecycle "
            "rules, or run VACUUM per table from Spark (maintenance walks a local folder)"
        )


def vacuum_warehouse(
    warehouse: Warehouse,
    tables: Sequence[str] | None = None,
    retention_hours: int = VACUUM_RETENTION_HOURS,
    *,
    dry_run: bool = False,
    on_table: Callable[[Vacuumed], None] | None = None,
) -> list[Vacuumed]:
    """VACUUM `tables` (every table of the local warehouse when None; `Warehouse.vacuum`); `on_table` hears of
    each as it is done."""
    require_local(warehouse)
    done = []
    for table in warehouse.local_tables() if tables is None else tables:
        result = warehouse.vacuum(table, retention_hours, dry_run=dry_run)
        done.append(result)
        if on_table is not None:
            on_table(result)
    return done


@op(description="VACUUM every Delta table: delete the files no version younger than 7 days reads.")
def vacuum_tables(context: OpExecutionContext, platform: PlatformResource) -> None:
    results = vacuum_warehouse(platform.get_warehouse())
    touched = [r for r in results if r.files]
    for result in touched:
        context.log.info(f"{result.table}: {result.files} file(s), {result.bytes / 2**20:.1f} MiB deleted")
    context.add_output_metadata(
        {
            "tables": MetadataValue.int(len(results)),
            "files_deleted": MetadataValue.int(sum(r.files for r in touched)),
            "mib_freed": MetadataValue.float(round(sum(r.bytes for r in touched) / 2**20, 1)),
        }
    )


@job(description="Weekly housekeeping: VACUUM every Delta table (orchestration/maintenance.py).")
def warehouse_maintenance() -> None:
    vacuum_tables()


weekly_maintenance = ScheduleDefinition(
    name="weekly_maintenance",
    job=warehouse_maintenance,
    cron_schedule="30 4 * * 0",
    execution_timezone="Asia/Shanghai",
    description="Sundays 04:30 CST, after the nightly build: VACUUM every Delta table.",
)
