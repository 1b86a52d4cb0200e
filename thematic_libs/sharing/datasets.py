"""What can be shared: one `Dataset` per landing contract, stream topic and gold product.

The facts come from the contracts (owner, level, cadence, sharing type, column classifications) and,
for what the platform builds itself, from `products.yaml`. The catalog (`ops/catalog`), the share
orders, the deliveries and the open-data export all read them from here.

Dataset ids are `<schema>.<table>`, the same two names a Delta Sharing client sees under its share:
`minzheng.assistance_members` (a contract, shared from silver), `stream.iot_sensor_readings` (a topic,
shared from its bronze stream table, masked) and `party.grid_coverage` (a gold product).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pyarrow as pa
import yaml

from ingestion.contract import Contract, batch_contracts, get_contract, load_contracts
from ingestion.streaming.topics import load_topics
from ingestion.warehouse import Warehouse

PRODUCTS_FILE = Path(__file__).with_name("products.yaml")
SHARING_TYPES = ("unconditional", "conditional", "none")
CLASSIFICATIONS = ("public", "internal", "personal", "sensitive")
# Areas whose rows are never shared as they are (DESIGN.md): bronze and the cross-check's folder.
RESTRICTED_PREFIXES = ("bronze/", "gold/social_assistance/")


_PLAIN_TYPES: dict[str, pa.DataType] = {
    str(t): t
    for t in (
        pa.string(),
        pa.large_string(),
        pa.string_view(),
        pa.int8(),
        pa.int16(),
        pa.int32(),
        pa.int64(),
        pa.float32(),
        pa.float64(),
        pa.bool_(),
        pa.date32(),
        pa.timestamp("us"),
        pa.timestamp("us", tz="UTC"),
    )
}


class DatasetError(ValueError):
    """An unknown dataset, or metadata that does not say what sharing needs to know."""


@dataclass(frozen=True)
class SharedColumn:
    name: str  # as the contract (or the gold table) names it
    type: str  # Arrow type, e.g. `string`, `timestamp[us, tz=UTC]`
    classification: str  # public | internal | personal | sensitive
    description: str = ""

    @property
    def is_sensitive(self) -> bool:
        return self.classification == "sensitive"

    @property
    def arrow_type(self) -> pa.DataType | None:
        """The Arrow type, for the plain types a filter can compare (None for lists, structs, decimals)."""
        return _PLAIN_TYPES.get(self.type)

    @property
    def pseudonym(self) -> str:
        """The column that carries this one's keyed pseudonym in silver and in a delivery."""
        return f"{self.name}_key"


@dataclass(frozen=True)
class Dataset:
    dataset_id: str  # `<schema>.<table>`
    title: str
    description: str
    layer: str  # silver | stream | gold
    table: str  # the warehouse table a delivery reads, e.g. `silver/minzheng/assistance_members`
    owner_department: str
    owner_label: str
    source_level: str
    sharing_type: str
    cadence: str
    cadence_days: float | None
    columns: tuple[SharedColumn, ...]
    primary_key: tuple[str, ...]
    restricted: bool = False
    # Where raw values of sensitive columns live, for an order with a legal basis (never shared whole).
    raw_table: str | None = None

    @property
    def schema_name(self) -> str:
        return self.dataset_id.split(".", 1)[0]

    @property
    def table_name(self) -> str:
        return self.dataset_id.split(".", 1)[1]

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def sensitive_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.is_sensitive)

    @property
    def is_open(self) -> bool:
        return self.sharing_type == "unconditional" and not self.restricted

    def column(self, name: str) -> SharedColumn:
        for column in self.columns:
            if column.name == name:
                return column
        raise DatasetError(f"{self.dataset_id} has no column {name!r}; its columns are {', '.join(self.column_names)}")


@cache
def _products() -> dict:
    with open(PRODUCTS_FILE, encoding="utf-8") as f:
        document = yaml.safe_load(f)
    for section in ("domains", "products", "streams"):
        if section not in document:
            raise DatasetError(f"{PRODUCTS_FILE}: section {section!r} is missing")
    for where, entry in [*document["domains"].items(), *document["products"].items(), *document["streams"].items()]:
        sharing = (entry or {}).get("sharing_type")
        if sharing is not None and sharing not in SHARING_TYPES:
            raise DatasetError(f"{PRODUCTS_FILE}: {where}: sharing_type {sharing!r} is not one of {SHARING_TYPES}")
    return document


def _label(department: str) -> str:
    """`minzheng (民政局, Civil Affairs Bureau)` read off any contract of that department."""
    for contract in load_contracts().values():
        if contract.department == department and "department" in contract.properties:
            return contract.department_label
    return department


def _contract_columns(contract: Contract) -> tuple[SharedColumn, ...]:
    return tuple(SharedColumn(c.name, str(c.arrow_type), c.classification, c.description) for c in contract.columns)


def _from_contract(contract: Contract) -> Dataset:
    sharing = contract.sharing_type or "conditional"
    if sharing not in SHARING_TYPES:
        raise DatasetError(f"contract {contract.id}: sharingType {sharing!r} is not one of {SHARING_TYPES}")
    return Dataset(
        dataset_id=contract.id,
        title=contract.name,
        description=contract.purpose,
        layer="silver",
        table=f"silver/{contract.table_path}",
        owner_department=contract.department,
        owner_label=contract.department_label,
        source_level=contract.source_level,
        sharing_type=sharing,
        cadence=contract.cadence,
        cadence_days=contract.cadence_days,
        columns=_contract_columns(contract),
        primary_key=contract.primary_key,
        raw_table=f"bronze/{contract.table_path}" if contract.sensitive_columns else None,
    )


def _from_topic(contract_id: str) -> Dataset:
    meta = _products()["streams"].get(contract_id)
    if meta is None:
        raise DatasetError(f"{PRODUCTS_FILE}: stream {contract_id} has no entry under `streams`")
    topic = next((t for t in load_topics().values() if t.contract_id == contract_id), None)
    if topic is None:
        raise DatasetError(f"stream contract {contract_id} has no topic in ingestion/streaming/topics.yaml")
    stream, fields = get_contract(contract_id), get_contract(topic.fields_contract_id)
    return Dataset(
        dataset_id=contract_id,
        title=stream.name,
        description=stream.purpose,
        layer="stream",
        table=topic.bronze_table,
        owner_department=meta["owner"],
        owner_label=_label(meta["owner"]),
        source_level=fields.source_level or "district",
        sharing_type=meta["sharing_type"],
        cadence=meta.get("cadence", "continuous"),
        cadence_days=None,
        columns=_contract_columns(fields),
        primary_key=tuple(topic.dedupe_key),
        # the bronze stream table holds raw values: a delivery of it is always masked per column
        raw_table=topic.bronze_table,
    )


def _gold_columns(warehouse: Warehouse | None, table: str, overrides: dict[str, str]) -> tuple[SharedColumn, ...]:
    if warehouse is None or not warehouse.exists(table):
        return ()
    schema: pa.Schema = pa.schema(warehouse.table(table).schema().to_arrow())
    columns = []
    for field in schema:
        default = "personal" if field.name.endswith("_key") else "internal"
        columns.append(SharedColumn(field.name, str(field.type), overrides.get(field.name, default)))
    return tuple(columns)


def _from_product(table_path: str, warehouse: Warehouse | None) -> Dataset:
    document = _products()
    entry = document["products"][table_path] or {}
    domain, name = table_path.split("/", 1)
    defaults = document["domains"].get(domain)
    if defaults is None:
        raise DatasetError(f"{PRODUCTS_FILE}: product {table_path} is in domain {domain!r}, which has no entry")
    meta = {**defaults, **entry}
    table = f"gold/{table_path}"
    columns = _gold_columns(warehouse, table, meta.get("classification") or {})
    return Dataset(
        dataset_id=f"{domain}.{name}",
        title=meta.get("title", table_path),
        description=meta.get("description", ""),
        layer="gold",
        table=table,
        owner_department=meta["owner"],
        owner_label=_label(meta["owner"]),
        source_level="district",
        sharing_type=meta["sharing_type"],
        cadence=meta.get("cadence", "per platform run"),
        cadence_days=meta.get("cadence_days"),
        columns=columns,
        primary_key=tuple(meta.get("primary_key") or ()),
        restricted=bool(meta.get("restricted")) or table.startswith(RESTRICTED_PREFIXES),
    )


def all_datasets(warehouse: Warehouse | None = None) -> dict[str, Dataset]:
    """Every dataset by id: batch contracts, stream topics, gold products (gold columns need `warehouse`)."""
    datasets = [_from_contract(c) for c in batch_contracts().values()]
    datasets += [_from_topic(cid) for cid in _products()["streams"]]
    datasets += [_from_product(path, warehouse) for path in _products()["products"]]
    return {d.dataset_id: d for d in datasets}


def get_dataset(dataset_id: str, warehouse: Warehouse | None = None) -> Dataset:
    """One dataset, or a DatasetError that names the id and how to find the right one."""
    datasets = all_datasets(warehouse)
    if dataset_id not in datasets:
        raise DatasetError(f"unknown dataset {dataset_id!r}: `yiwang catalog search WORD` lists the dataset ids")
    return datasets[dataset_id]
