"""The sharing side (一网共享) as Dagster assets: the resource catalog `ops/catalog` and the open-data export.

- `ops/catalog` depends on every silver, stream and gold asset that is a dataset, and on the quality
  scorecard, so a platform run rebuilds it last. Its lineage columns are read off this very asset graph
  (the one place that knows what reads what), walking through the dbt models in between.
- `open_data` writes the unconditional datasets as CSV and Parquet files under `<YIWANG_HOME>/open_data`
  (or `YIWANG_OPEN_DATA`); a dataset whose source has not changed is left as it is.

Wiring in orchestration/definitions.py: pass the other assets, so that only defined keys become deps:

    assets = [*ingestion_assets(), ..., *stream_assets()]
    Definitions(assets=[*assets, *sharing_assets(assets)], ...)
"""

# No `from __future__ import annotations`: Dagster inspects the real annotations of assets.
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Definitions,
    MaterializeResult,
    MetadataValue,
    SourceAsset,
    asset,
)

from orchestration.dispatch_assets import table_key
from orchestration.resources import PlatformResource
from thematic_libs.sharing.access_log import USAGE_DAILY, read_access_log, usage_daily, write_usage
from thematic_libs.sharing.catalog import build_catalog, catalog_tables, lineage_from_graph, write_catalog
from thematic_libs.sharing.datasets import Dataset, all_datasets
from thematic_libs.sharing.deliveries import refresh_deliveries
from thematic_libs.sharing.open_data import refresh_open_data
from thematic_libs.sharing.orders import expire_due

SHARING_GROUP = "sharing"
CATALOG_KEY = AssetKey(["ops", "catalog"])
OPEN_DATA_KEY = AssetKey(["open_data"])
DELIVERIES_KEY = AssetKey(["share", "deliveries"])
USAGE_KEY = AssetKey(USAGE_DAILY.split("/"))
SCORECARD_KEY = AssetKey(["ops", "quality_scorecard"])


def open_data_dir() -> Path:
    """Where the open data goes (settings: YIWANG_OPEN_DATA, else `<YIWANG_HOME>/open_data`)."""
    from ingestion.settings import Settings

    return Settings.from_env().open_data_dir.expanduser().resolve()


def defined_keys(assets: Iterable[object]) -> set[AssetKey]:
    """Every asset key the given assets and source assets define."""
    keys: set[AssetKey] = set()
    for item in assets:
        if isinstance(item, AssetsDefinition):
            keys.update(item.keys)
        elif isinstance(item, (SourceAsset, AssetSpec)):
            keys.add(item.key)
    return keys


def _default_upstream() -> list[object]:
    """The assets orchestration/definitions.py builds, for a caller that does not pass them."""
    from orchestration.crosscheck_assets import crosscheck
    from orchestration.dbt_assets import build_dbt_definitions
    from orchestration.dispatch_assets import dispatch_assets
    from orchestration.ingestion_assets import ingestion_assets
    from orchestration.quality_assets import quality_assets
    from orchestration.stream_assets import stream_assets

    dbt_assets, _ = build_dbt_definitions()
    return [*ingestion_assets(), *quality_assets(), *dbt_assets, *dispatch_assets(), crosscheck, *stream_assets()]


def dataset_keys(datasets: Iterable[Dataset], defined: set[AssetKey]) -> list[AssetKey]:
    """The asset keys of the datasets' tables that some asset defines (a table written as a side effect of
    another asset, like gold/dispatch/ticket_sources, has none)."""
    return sorted({table_key(d.table) for d in datasets} & defined, key=lambda k: k.path)


def graph_of(assets: Iterable[object]):
    """An asset graph of the assets' specs alone: no resources to bind, so it can be built anywhere."""
    specs: list[AssetSpec] = []
    for item in assets:
        if isinstance(item, AssetsDefinition):
            specs.extend(item.specs)
        elif isinstance(item, SourceAsset):
            specs.append(AssetSpec(item.key, group_name=item.group_name))
        elif isinstance(item, AssetSpec):
            specs.append(item)
    return Definitions(assets=specs).resolve_asset_graph()


def asset_graph(context: AssetExecutionContext, upstream: Sequence[object]):
    """The code location's asset graph. An in-process run (`yiwang run`, `materialize`) has no repository:
    then the graph of the assets the catalog was built over, which are the rest of the definitions."""
    try:
        return context.repository_def.asset_graph
    except Exception:  # dagster raises an internal CheckError: "No repository definition was set"
        return graph_of(upstream)


def _catalog_summary(table: pa.Table, version: int) -> dict[str, object]:
    rows = table.to_pylist()
    stale = [r["dataset_id"] for r in rows if r["freshness"] == "stale"]
    never = [r["dataset_id"] for r in rows if r["freshness"] == "never"]
    return {
        "datasets": len(rows),
        "catalog_version": version,
        "by_sharing_type": MetadataValue.json(dict(sorted(Counter(r["sharing_type"] for r in rows).items()))),
        "by_layer": MetadataValue.json(dict(sorted(Counter(r["layer"] for r in rows).items()))),
        "rows_in_datasets": sum(r["row_count"] or 0 for r in rows),
        "stale": MetadataValue.md("\n".join(f"- {d}" for d in stale) or "none"),
        "stale_datasets": len(stale),
        "never_loaded": MetadataValue.md("\n".join(f"- {d}" for d in never) or "none"),
    }


def build_catalog_asset(deps: Sequence[AssetKey], upstream: Sequence[object] = ()) -> AssetsDefinition:
    @asset(
        key=CATALOG_KEY,
        deps=list(deps),
        group_name=SHARING_GROUP,
        description=(
            "数据资源目录 The resource catalog: one row per shareable dataset (contracts, stream topics, gold "
            "products) with owner, sharing type, columns and classifications, rows, freshness, quality and "
            "lineage. Read it with `yiwang catalog list|show|search`."
        ),
        kinds={"delta", "python"},
    )
    def _catalog(context: AssetExecutionContext, platform: PlatformResource) -> MaterializeResult:
        warehouse = platform.get_warehouse()
        graph = asset_graph(context, upstream)
        own = {k for k in graph.get_all_asset_keys() if graph.get(k).group_name == SHARING_GROUP}
        tables = catalog_tables(all_datasets(warehouse).values())
        table = build_catalog(warehouse, lineage_from_graph(graph, tables, ignore=own))
        version = write_catalog(warehouse, table)
        return MaterializeResult(metadata=_catalog_summary(table, version))

    return _catalog


def build_open_data_asset(deps: Sequence[AssetKey]) -> AssetsDefinition:
    @asset(
        key=OPEN_DATA_KEY,
        deps=list(deps),
        group_name=SHARING_GROUP,
        description=(
            "开放数据 Open data: every unconditional dataset as CSV (UTF-8 with BOM) and Parquet with a "
            "metadata.json, public and internal columns only, under $YIWANG_HOME/open_data (or $YIWANG_OPEN_DATA)."
        ),
        kinds={"csv", "parquet", "python"},
    )
    def _open_data(context: AssetExecutionContext, platform: PlatformResource) -> MaterializeResult:
        out = open_data_dir()
        exported, removed = refresh_open_data(platform.get_warehouse(), out)
        for dataset_id in removed:
            context.log.info(f"open data: removed {dataset_id} (no longer open)")
        return MaterializeResult(
            metadata={
                "directory": MetadataValue.path(str(out)),
                "datasets": len(exported),
                "rewritten": MetadataValue.json([e.dataset_id for e in exported if e.written]),
                "unchanged": MetadataValue.json([e.dataset_id for e in exported if not e.written]),
                "removed": MetadataValue.json(removed),
                "rows": MetadataValue.json({e.dataset_id: e.rows for e in exported}),
            }
        )

    return _open_data


def build_deliveries_asset(deps: Sequence[AssetKey]) -> AssetsDefinition:
    @asset(
        key=DELIVERIES_KEY,
        deps=list(deps),
        group_name=SHARING_GROUP,
        description=(
            "共享交付 Share deliveries: one masked Delta table per approved or active order "
            "(`share/deliveries/<order_id>`), refreshed when its source changed; orders past their date are "
            "expired and revoked or expired deliveries removed. The sharing server refreshes them too."
        ),
        kinds={"delta", "python"},
    )
    def _deliveries(context: AssetExecutionContext, platform: PlatformResource) -> MaterializeResult:
        warehouse = platform.get_warehouse()
        expired = expire_due(warehouse)
        failures: dict[str, str] = {}
        refreshed = refresh_deliveries(
            warehouse, platform.pseudonymiser(), on_error=lambda o, e: failures.__setitem__(o.order_id, str(e))
        )
        for order_id, why in failures.items():
            context.log.warning(f"delivery of {order_id} not refreshed: {why}")
        return MaterializeResult(
            metadata={
                "deliveries": len(refreshed),
                "refreshed": MetadataValue.json([r.order_id for r in refreshed if not r.skipped]),
                "unchanged": len([r for r in refreshed if r.skipped]),
                "expired_orders": MetadataValue.json([o.order_id for o in expired]),
                "not_delivered": MetadataValue.json(failures),
            }
        )

    return _deliveries


@asset(
    key=USAGE_KEY,
    group_name=SHARING_GROUP,
    description=(
        "接口调用次数 Share usage: calls, refusals, files, rows and bytes served per day (China Standard Time), "
        "department and order, from ops/share_access_log (written by `yiwang share serve`)."
    ),
    kinds={"delta", "python"},
)
def share_usage(platform: PlatformResource) -> MaterializeResult:
    warehouse = platform.get_warehouse()
    usage = usage_daily(read_access_log(warehouse))
    version = write_usage(warehouse, usage)
    return MaterializeResult(
        metadata={"rows": usage.height, "calls": int(usage["calls"].sum() or 0), "table_version": version}
    )


def sharing_assets(upstream: Iterable[object] | None = None) -> list[AssetsDefinition]:
    """The catalog and open-data assets, depending only on keys that `upstream` (the other assets of the
    definitions; built here when not given) defines."""
    assets = list(_default_upstream() if upstream is None else upstream)
    defined = defined_keys(assets)
    datasets = list(all_datasets().values())
    catalog_deps = dataset_keys(datasets, defined) + ([SCORECARD_KEY] if SCORECARD_KEY in defined else [])
    open_deps = dataset_keys([d for d in datasets if d.is_open], defined)
    delivery_deps = [d for d in dataset_keys(datasets, defined) if d != SCORECARD_KEY]
    return [
        build_catalog_asset(catalog_deps, assets),
        build_open_data_asset(open_deps),
        build_deliveries_asset(delivery_deps),
        share_usage,
    ]
