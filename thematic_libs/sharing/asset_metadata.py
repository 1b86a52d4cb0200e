"""The sharing facts of a dataset as Dagster asset metadata, written once for every asset that shows them.

The bronze and silver assets of a contract, the dbt marts that build a gold product and the gold
export asset all carry the same owner, level, sharing type, cadence and column classifications as the
catalog (`ops/catalog`), so that the Dagster UI and `yiwang catalog show` never disagree.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from dagster import MetadataValue, TableColumn, TableSchema

from ingestion.settings import warehouse_root
from ingestion.warehouse import Warehouse
from thematic_libs.sharing.datasets import Dataset, SharedColumn, all_datasets

# Bronze holds raw values: it is never shared, whatever the contract says of its silver table.
RESTRICTED_LAYER = "none (restricted layer: raw values; shared from silver)"


def _short_type(arrow_type: str) -> str:
    """`timestamp[us, tz=UTC]` -> `timestamp`: the column schema shows the kind, the catalog the detail."""
    return arrow_type.split("[", 1)[0]


def _column(column: SharedColumn, pseudonymised: bool) -> TableColumn:
    if pseudonymised and column.is_sensitive:
        return TableColumn(
            name=column.pseudonym,
            type="string",
            description=f"[personal] keyed pseudonym of {column.name} (sensitive): {column.description}".rstrip(": "),
            tags={"classification": "personal", "pseudonym_of": column.name},
        )
    return TableColumn(
        name=column.name,
        type=_short_type(column.type),
        description=f"[{column.classification}] {column.description}".rstrip(),
        tags={"classification": column.classification},
    )


def column_schema(dataset: Dataset, *, raw: bool = False) -> TableSchema:
    """The dataset's columns with their classification (a tag, and at the head of the description).

    A silver table holds a sensitive column as its keyed pseudonym `<name>_key`, so that is what the
    silver asset's schema shows; `raw=True` (bronze) shows the delivered column itself.
    """
    pseudonymised = dataset.layer == "silver" and not raw
    return TableSchema(columns=[_column(c, pseudonymised) for c in dataset.columns])


def dataset_metadata(dataset: Dataset, *, raw: bool = False) -> dict[str, Any]:
    """Metadata for the asset of `dataset`'s table (`raw=True` for the bronze asset of a contract)."""
    metadata: dict[str, Any] = {
        "dataset_id": MetadataValue.text(dataset.dataset_id),
        "owner": MetadataValue.text(dataset.owner_label),
        "source_level": MetadataValue.text(dataset.source_level or "n/a"),
        "sharing_type": MetadataValue.text(RESTRICTED_LAYER if raw else dataset.sharing_type),
        "cadence": MetadataValue.text(dataset.cadence or "n/a"),
        "sensitive_columns": MetadataValue.text(", ".join(dataset.sensitive_columns) or "none"),
    }
    if dataset.restricted:
        metadata["restricted"] = MetadataValue.bool(True)
    if dataset.columns:  # a gold table not built yet has no known columns: leave dbt's own schema
        metadata["dagster/column_schema"] = column_schema(dataset, raw=raw)
    return metadata


def dataset_owners(dataset: Dataset) -> list[str]:
    """Dagster owners: the owning department as a team (`team:minzheng`)."""
    return [f"team:{dataset.owner_department}"]


def dataset_tags(dataset: Dataset, *, raw: bool = False) -> dict[str, str]:
    """Filterable tags (values must be short identifiers): sharing type and owning department."""
    return {"sharing": "none" if raw or dataset.restricted else dataset.sharing_type, "owner": dataset.owner_department}


@cache
def _without_warehouse() -> dict[str, Dataset]:
    return all_datasets()


def contract_dataset(contract_id: str) -> Dataset:
    """The dataset of a batch contract (no warehouse needed: its columns come from the contract)."""
    return _without_warehouse()[contract_id]


@cache
def _gold_datasets(warehouse_root: str) -> dict[str, Dataset]:
    try:
        datasets = all_datasets(Warehouse.at(warehouse_root))
    except Exception:  # an unreachable warehouse must not stop Dagster loading: the columns are decoration
        datasets = _without_warehouse()
    return {d.table: d for d in datasets.values() if d.layer == "gold"}


def gold_dataset(table: str, warehouse_root: str) -> Dataset | None:
    """The gold product of `table` (`gold/party/org_tree`), its columns read once per process from the
    warehouse's Delta schema (none when the table is not built yet); None when products.yaml lacks it."""
    return _gold_datasets(warehouse_root).get(table)


def product_asset_facts(table: str) -> dict[str, Any]:
    """`metadata`, `owners` and `tags` for the asset of a gold product built in Python (`gold/dispatch/tickets`),
    to splat into `@asset(...)` or `AssetSpec(...)`; empty when products.yaml does not list the table."""
    product = gold_dataset(table, warehouse_root())
    if product is None:
        return {}
    return {"metadata": dataset_metadata(product), "owners": dataset_owners(product), "tags": dataset_tags(product)}
