"""All of yiwang's Dagster definitions, merged in one place (workspace.yaml points here).

Each domain builds its own assets, checks, sensors and schedules next to its code; this module only
collects them and binds the resources from the settings.
"""

from __future__ import annotations

from dagster import (
    AssetSelection,
    Definitions,
    ScheduleDefinition,
    define_asset_job,
    definitions,
    in_process_executor,
)

from ingestion.settings import Settings
from orchestration.analytics_assets import analytics_assets
from orchestration.asset_layout import lay_out
from orchestration.batch_partitions import BATCH_KEY, batch, land_batches
from orchestration.crosscheck_assets import crosscheck
from orchestration.dbt_assets import build_dbt_definitions
from orchestration.dispatch_assets import dispatch_assets, dispatch_checks
from orchestration.ingestion_assets import ingestion_assets, ingestion_checks, new_landing_batches
from orchestration.maintenance import warehouse_maintenance, weekly_maintenance
from orchestration.quality_assets import quality_assets, quality_checks
from orchestration.resources import PlatformResource
from orchestration.sharing_assets import sharing_assets
from orchestration.stream_assets import stream_assets
from orchestration.video_assets import video_assets, video_checks, video_sensors

PLATFORM_JOB = "platform_build"

platform_build = define_asset_job(
    PLATFORM_JOB,
    # ops/batch (one partition per landing batch) is landed by `land_batches`: a job has one partitions definition
    selection=AssetSelection.all() - AssetSelection.assets(BATCH_KEY),
    description="Everything: batches, silver, quality, dbt models, gold, tickets. What `yiwang run` executes.",
    # One process: dbt writes the DuckDB file that the gold exports read; parallel ops would collide
    # on DuckDB's file lock, and on 2 cores they would not be faster.
    executor_def=in_process_executor,
)

nightly_build = ScheduleDefinition(
    name="nightly_build",
    job=platform_build,
    cron_schedule="30 2 * * *",
    execution_timezone="Asia/Shanghai",
    description="The nightly build, after the departments' night exports (02:00 CST).",
)


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or Settings.from_env()
    settings.export()
    dbt_assets, dbt_resources = build_dbt_definitions()
    assets = [
        *ingestion_assets(),
        batch,
        *quality_assets(),
        *dbt_assets,
        *dispatch_assets(),
        crosscheck,
        *stream_assets(),
        *video_assets(),
    ]
    sharing = sharing_assets(assets)
    return Definitions(
        # groups by business domain, the layer as a tag, freshness from the cadences (asset_layout.py)
        assets=lay_out([*assets, *sharing, *analytics_assets([*assets, *sharing])]),
        asset_checks=[*ingestion_checks(), *quality_checks(), *dispatch_checks(), *video_checks()],
        jobs=[platform_build, land_batches, warehouse_maintenance],
        schedules=[nightly_build, weekly_maintenance],
        sensors=[new_landing_batches, *video_sensors()],
        resources={"platform": PlatformResource.from_settings(settings), **dbt_resources},
    )


@definitions
def defs() -> Definitions:
    """The code location's definitions, built from the environment when Dagster loads them."""
    return build_definitions()
