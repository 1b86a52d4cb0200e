"""The published warehouse for Superset (issue 15) as a Dagster asset: `analytics/published_warehouse`.

It depends on every asset that writes a table it reads (thematic_libs/analytics/publish.py, `SOURCES`) and on the
sharing group's usage asset, so a platform run writes it last, after the gold it publishes. The file goes to
`<YIWANG_HOME>/analytics/yiwang_gold.duckdb` and is swapped in whole: Superset, reading it, never waits; then
Superset's cached query results are forgotten, so the dashboards show the new build at their next load.

Wiring in orchestration/definitions.py, like the sharing assets: pass the other assets, so that only defined keys
become deps:

    Definitions(assets=[*assets, *sharing, *analytics_assets([*assets, *sharing])], ...)
"""

# No `from __future__ import annotations`: Dagster inspects the real annotations of assets.
from collections.abc import Iterable, Sequence
from pathlib import Path

from dagster import AssetKey, AssetsDefinition, MaterializeResult, MetadataValue, asset

from orchestration.dispatch_assets import table_key
from orchestration.resources import PlatformResource
from orchestration.sharing_assets import USAGE_KEY, defined_keys
from thematic_libs.analytics.publish import SOURCES, publish, published_path
from thematic_libs.analytics.superset_service import clear_result_cache

ANALYTICS_GROUP = "analytics"
PUBLISHED_KEY = AssetKey(["analytics", "published_warehouse"])


def analytics_home() -> Path:
    """The platform's home (settings: YIWANG_HOME), under which `analytics/` holds the published file."""
    from ingestion.settings import Settings

    return Settings.from_env().home


def publish_deps(defined: set[AssetKey]) -> list[AssetKey]:
    """The keys of the assets that write what the published warehouse reads (only those that are defined)."""
    wanted = {table_key(source.table) for source in SOURCES} | {USAGE_KEY}
    return sorted(wanted & defined, key=lambda key: key.path)


def build_published_asset(deps: Sequence[AssetKey]) -> AssetsDefinition:
    @asset(
        key=PUBLISHED_KEY,
        deps=list(deps),
        group_name=ANALYTICS_GROUP,
        description=(
            "发布库 The published warehouse Superset reads: the allow-listed gold tables (and aggregates of the "
            "cross-check, quality and sharing) in one DuckDB file, $YIWANG_HOME/analytics/yiwang_gold.duckdb, "
            "replaced whole after each build. No bronze, no gold/social_assistance rows, no pseudonyms."
        ),
        kinds={"duckdb", "python"},
    )
    def _published(platform: PlatformResource) -> MaterializeResult:
        home = analytics_home()
        result = publish(platform.get_warehouse(), published_path(home))
        cleared = clear_result_cache(home)
        return MaterializeResult(
            metadata={
                "path": MetadataValue.path(str(result.path)),
                "tables": len(result.tables),
                "rows": MetadataValue.json(result.tables),
                "missing_sources": MetadataValue.json(list(result.missing_sources)),
                "bytes": result.bytes,
                "seconds": round(result.seconds, 2),
                "superset_cached_results_cleared": cleared,
            }
        )

    return _published


def analytics_assets(upstream: Iterable[object]) -> list[AssetsDefinition]:
    """The published-warehouse asset, depending on the keys `upstream` (the other assets) defines."""
    return [build_published_asset(publish_deps(defined_keys(upstream)))]
