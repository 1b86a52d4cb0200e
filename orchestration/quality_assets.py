"""Quality products for data officers: the per-department scorecard and the Data Docs site."""

from datetime import date
from pathlib import Path

from dagster import AssetKey, AssetsDefinition, MaterializeResult, MetadataValue, asset

from ingestion.contract import batch_contracts
from orchestration.ingestion_assets import bronze_key
from orchestration.resources import PlatformResource
from quality.checks import build_quality_checks
from quality.docs import build_data_docs
from quality.scorecard import build_scorecard, render_scorecard_png

_ALL_BRONZE = [bronze_key(c) for c in batch_contracts().values()]


@asset(
    key=AssetKey(["ops", "quality_scorecard"]),
    deps=_ALL_BRONZE,
    group_name="quality",
    description="Completeness, validity and timeliness per department, for the data officers' report.",
    kinds={"delta"},
)
def quality_scorecard(platform: PlatformResource) -> MaterializeResult:
    as_of = platform.as_of_date() or date.today()
    scorecard = build_scorecard(platform.get_warehouse(), as_of)
    picture = render_scorecard_png(scorecard, Path(platform.reports_dir) / "quality_scorecard.png")
    return MaterializeResult(
        metadata={
            "departments": scorecard.height,
            "as_of": as_of.isoformat(),
            "picture": MetadataValue.path(str(picture)),
        }
    )


@asset(
    key=AssetKey(["ops", "quality_data_docs"]),
    deps=_ALL_BRONZE,
    group_name="quality",
    description="Quality docs: static, self-contained HTML over every batch's Great Expectations results.",
    kinds={"html"},
)
def quality_data_docs(platform: PlatformResource) -> MaterializeResult:
    index = build_data_docs(platform.get_warehouse(), Path(platform.reports_dir) / "data_docs")
    return MaterializeResult(metadata={"index": MetadataValue.path(str(index))})


def quality_assets() -> list[AssetsDefinition]:
    return [quality_scorecard, quality_data_docs]


def quality_checks() -> list:
    return build_quality_checks(list(batch_contracts().values()))
