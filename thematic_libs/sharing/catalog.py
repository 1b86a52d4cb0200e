"""The resource catalog (数据资源目录): one row per shareable dataset in `ops/catalog`.

A data officer, a department looking for data and the share-order screens all need the same answers:
what a dataset holds (columns and how each is classified), who owns it, whether it may be shared and
how, how big and how fresh it is, how good its deliveries are and where it comes from and goes to.
The facts come from `datasets.py` (contracts and `products.yaml`), the Delta tables themselves (row
counts and versions from the Delta log, never by reading the rows), `ops/batch_ledger` (when a
contract last loaded), `ops/quality_scorecard` (its score) and the Dagster asset graph (lineage, passed
in by the asset as a mapping, since only a running Dagster knows it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from ingestion.replace import replace_table
from ingestion.warehouse import BATCH_LEDGER, QUALITY_SCORECARD, Warehouse
from thematic_libs.sharing.datasets import Dataset, all_datasets

if TYPE_CHECKING:
    from dagster import AssetKey

CATALOG = "ops/catalog"
LAYERS = ("silver", "stream", "gold")
FRESHNESS = ("fresh", "stale", "never")
# A delivery may be this share of its cadence late before the dataset counts as stale.
STALE_GRACE = 0.25

COLUMN_TYPE = pa.struct(
    [
        pa.field("name", pa.string()),
        pa.field("type", pa.string()),
        pa.field("classification", pa.string()),
        pa.field("description", pa.string()),
    ]
)
UTC_TIME = pa.timestamp("us", tz="UTC")
CATALOG_SCHEMA = pa.schema(
    [
        pa.field("dataset_id", pa.string(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field("layer", pa.string(), nullable=False),
        pa.field("source_table", pa.string(), nullable=False),
        pa.field("owner_department", pa.string()),
        pa.field("owner_label", pa.string()),
        pa.field("source_level", pa.string()),
        pa.field("sharing_type", pa.string(), nullable=False),
        pa.field("restricted", pa.bool_(), nullable=False),
        pa.field("cadence", pa.string()),
        pa.field("cadence_days", pa.float64()),
        pa.field("columns", pa.list_(COLUMN_TYPE)),
        pa.field("primary_key", pa.list_(pa.string())),
        pa.field("sensitive_columns", pa.list_(pa.string())),
        pa.field("row_count", pa.int64()),
        pa.field("table_version", pa.int64()),
        pa.field("last_loaded_at", UTC_TIME),
        pa.field("freshness", pa.string(), nullable=False),
        pa.field("quality_score", pa.float64()),
        pa.field("upstream", pa.list_(pa.string())),
        pa.field("downstream", pa.list_(pa.string())),
        pa.field("built_at", UTC_TIME, nullable=False),
    ]
)

Lineage = Mapping[str, tuple[list[str], list[str]]]


class CatalogError(ValueError):
    """The catalog is missing or asked for something it does not hold; the message says what to run."""


# --- facts read off the warehouse -------------------------------------------------------------------


def table_facts(warehouse: Warehouse, table: str) -> tuple[int | None, int | None, datetime | None]:
    """(row count, version, last commit time) of a Delta table from its log alone; Nones when it is missing.

    The row count sums the add actions' `num_records`; only when a file has no statistics does it fall back
    to the Parquet footers (still no row is read).
    """
    if not warehouse.exists(table):
        return None, None, None
    delta = warehouse.table(table)
    actions = pa.table(delta.get_add_actions(flatten=False))
    records = actions.column("num_records") if actions.num_rows else pa.chunked_array([], pa.int64())
    rows = delta.to_pyarrow_dataset().count_rows() if records.null_count else int(pc.sum(records).as_py() or 0)
    history = delta.history(1)
    committed = datetime.fromtimestamp(history[0]["timestamp"] / 1000, UTC) if history else None
    return rows, delta.version(), committed


def last_loaded(warehouse: Warehouse) -> dict[str, datetime]:
    """When each contract last had a batch loaded, from `ops/batch_ledger`."""
    if not warehouse.exists(BATCH_LEDGER):
        return {}
    ledger = pl.from_arrow(
        warehouse.table(BATCH_LEDGER).to_pyarrow_table(columns=["contract_id", "status", "processed_at"])
    )
    assert isinstance(ledger, pl.DataFrame)
    latest = ledger.filter(pl.col("status") == "loaded").group_by("contract_id").agg(pl.col("processed_at").max())
    return dict(latest.iter_rows())


def quality_scores(warehouse: Warehouse) -> dict[str, float]:
    """Each contract's latest overall score from `ops/quality_scorecard` (contract rows only)."""
    if not warehouse.exists(QUALITY_SCORECARD):
        return {}
    card = pl.from_arrow(warehouse.table(QUALITY_SCORECARD).to_pyarrow_table())
    assert isinstance(card, pl.DataFrame)
    if not {"grain", "contract_id", "overall_score"} <= set(card.columns):
        return {}
    order = [c for c in ("as_of", "built_at") if c in card.columns]
    rows = card.filter((pl.col("grain") == "contract") & pl.col("contract_id").is_not_null())
    if order:
        rows = rows.sort(order, nulls_last=False)
    latest = rows.group_by("contract_id", maintain_order=True).agg(pl.col("overall_score").last())
    return {cid: score for cid, score in latest.iter_rows() if score is not None}


def freshness(dataset: Dataset, loaded_at: datetime | None, exists: bool, now: datetime) -> str:
    """`never` before the first load; `stale` when the last load is older than the cadence plus 25 %.

    Gold and stream tables have no delivery cadence of their own (they follow the platform run or the
    topic), so they are fresh once they exist, unless products.yaml gives them `cadence_days`.
    """
    if loaded_at is None or (dataset.layer != "silver" and not exists):
        return "never"
    if dataset.cadence_days is None:
        return "fresh"
    allowed = timedelta(days=dataset.cadence_days * (1 + STALE_GRACE))
    return "stale" if now - loaded_at > allowed else "fresh"


# --- lineage from the asset graph --------------------------------------------------------------------


def _key_text(key: AssetKey) -> str:
    return "/".join(key.path)


def lineage_from_graph(
    graph: Any, tables: Mapping[str, str], ignore: Collection[AssetKey] = ()
) -> dict[str, tuple[list[str], list[str]]]:
    """Upstream and downstream datasets of every dataset table, read off a Dagster asset graph.

    `graph` is what `Definitions.resolve_asset_graph()` or `context.repository_def.asset_graph` returns;
    `tables` maps each dataset's table path (`silver/minzheng/assistance_members`, whose asset key is
    the path's parts) to its dataset id. From each table the walk goes through assets that are not
    datasets (dbt staging, intermediate and mart models) and stops at the nearest datasets, so a gold
    product lists the silver and stream tables it reads and a silver table the products that read it.
    A walk that ends on an asset that is no dataset (a bronze table, a dbt seed, a model nobody reads)
    names that asset by its key path. `ignore` holds assets to step over entirely (the catalog itself,
    which depends on everything).
    """
    known = set(graph.get_all_asset_keys())
    ignored = set(ignore)
    by_key = {tuple(path.split("/")): dataset_id for path, dataset_id in tables.items()}

    def nearest(start: AssetKey, direction: str) -> list[str]:
        found: set[str] = set()
        seen = {start}
        frontier = [start]
        while frontier:
            node = graph.get(frontier.pop())
            for neighbour in getattr(node, direction):
                if neighbour in seen or neighbour in ignored or neighbour not in known:
                    continue
                seen.add(neighbour)
                dataset_id = by_key.get(tuple(neighbour.path))
                if dataset_id is not None:
                    found.add(dataset_id)
                elif not [n for n in getattr(graph.get(neighbour), direction) if n not in ignored]:
                    found.add(_key_text(neighbour))
                else:
                    frontier.append(neighbour)
        return sorted(found)

    lineage: dict[str, tuple[list[str], list[str]]] = {}
    keys_by_path = {tuple(k.path): k for k in known}
    for table in tables:
        key = keys_by_path.get(tuple(table.split("/")))
        if key is not None:
            lineage[table] = (nearest(key, "parent_keys"), nearest(key, "child_keys"))
    return lineage


# --- the catalog ---------------------------------------------------------------------------------------


def _columns(dataset: Dataset) -> list[dict[str, str]]:
    return [
        {"name": c.name, "type": c.type, "classification": c.classification, "description": c.description}
        for c in dataset.columns
    ]


def catalog_row(
    dataset: Dataset,
    facts: tuple[int | None, int | None, datetime | None],
    loaded_at: datetime | None,
    quality: float | None,
    lineage: tuple[list[str], list[str]],
    now: datetime,
) -> dict[str, Any]:
    rows, version, committed = facts
    if dataset.layer != "silver":
        loaded_at = committed  # a stream or gold table is as recent as its last commit
    return {
        "dataset_id": dataset.dataset_id,
        "title": dataset.title,
        "description": dataset.description,
        "layer": dataset.layer,
        "source_table": dataset.table,
        "owner_department": dataset.owner_department,
        "owner_label": dataset.owner_label,
        "source_level": dataset.source_level,
        "sharing_type": dataset.sharing_type,
        "restricted": dataset.restricted,
        "cadence": dataset.cadence,
        "cadence_days": dataset.cadence_days,
        "columns": _columns(dataset),
        "primary_key": list(dataset.primary_key),
        "sensitive_columns": list(dataset.sensitive_columns),
        "row_count": rows,
        "table_version": version,
        "last_loaded_at": loaded_at,
        "freshness": freshness(dataset, loaded_at, version is not None, now),
        "quality_score": quality if dataset.layer == "silver" else None,
        "upstream": list(lineage[0]),
        "downstream": list(lineage[1]),
        "built_at": now,
    }


def build_catalog(warehouse: Warehouse, lineage: Lineage | None = None, now: datetime | None = None) -> pa.Table:
    """One row per dataset of `all_datasets(warehouse)`, in the order of CATALOG_SCHEMA."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    loaded = last_loaded(warehouse)
    scores = quality_scores(warehouse)
    lineage = lineage or {}
    rows = [
        catalog_row(
            dataset,
            table_facts(warehouse, dataset.table),
            loaded.get(dataset.dataset_id),
            scores.get(dataset.dataset_id),
            lineage.get(dataset.table, ([], [])),
            now,
        )
        for dataset in all_datasets(warehouse).values()
    ]
    return pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA)


def write_catalog(warehouse: Warehouse, table: pa.Table) -> int:
    """Overwrite `ops/catalog` and return its version; no new version when only `built_at` changed.

    The catalog is rebuilt on every platform run: a version per run that changes nothing would bury the
    versions that do (someone looks back for when a dataset's classification changed).
    """
    replace_table(warehouse, CATALOG, table, ignore=("built_at",))
    return warehouse.table(CATALOG).version()


def read_catalog(warehouse: Warehouse) -> pl.DataFrame:
    """The catalog as polars, or a CatalogError naming what builds it."""
    if not warehouse.exists(CATALOG):
        raise CatalogError(
            f"{warehouse.root}/{CATALOG} does not exist yet: run `yiwang catalog build` "
            "(or `yiwang run`, which builds it with the platform)"
        )
    frame = pl.from_arrow(warehouse.table(CATALOG).to_pyarrow_table())
    assert isinstance(frame, pl.DataFrame)
    layer_order = pl.col("layer").replace_strict(LAYERS, list(range(len(LAYERS))), default=len(LAYERS))
    return frame.sort(layer_order, "dataset_id")


def _haystack() -> pl.Expr:
    """Everything a search looks through, lower-cased, one string per dataset."""
    column_text = (
        pl.col("columns")
        .list.eval(
            pl.concat_str(
                [pl.element().struct.field("name"), pl.element().struct.field("description")],
                separator=" ",
                ignore_nulls=True,
            )
        )
        .list.join(" ")
    )
    fields = [pl.col(c).cast(pl.String) for c in ("dataset_id", "title", "description", "owner_label")]
    return pl.concat_str([*fields, column_text], separator=" ", ignore_nulls=True).str.to_lowercase()


def search_catalog(frame: pl.DataFrame, words: Sequence[str] | str) -> pl.DataFrame:
    """The datasets whose id, title, description, owner or columns contain every word (any case).

    Plain substring matching, so Chinese works without a tokenizer: `救助` finds 社会救助 datasets.
    """
    phrases = [words] if isinstance(words, str) else list(words)
    terms = [term.lower() for phrase in phrases for term in phrase.split()]
    if not terms:
        return frame
    haystack = _haystack()
    condition = pl.lit(True)
    for term in terms:
        condition = condition & haystack.str.contains(term, literal=True)
    return frame.filter(condition)


def catalog_tables(datasets: Iterable[Dataset]) -> dict[str, str]:
    """`table path -> dataset id`, the `tables` argument of `lineage_from_graph`."""
    return {d.table: d.dataset_id for d in datasets}
