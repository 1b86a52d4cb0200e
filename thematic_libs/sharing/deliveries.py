"""Deliveries: one Delta table per active share order, holding only what the order grants.

`share/deliveries/<order_id>` carries the granted columns, the order's row filter applied and every
sensitive column masked: a sensitive column is delivered as its keyed pseudonym `<column>_key` (the
same pseudonym silver uses, so a department can join two of its deliveries), or as it is where the
order records a legal basis. Raw values come from the restricted layer only for those columns and are
matched through their pseudonyms, so no other bronze value ever leaves.

Change data feed is on. A refresh writes only the difference: rows whose values changed are updated,
new rows inserted and vanished rows deleted in one MERGE (keyed by the dataset's primary key when the
order grants it), so `load_table_changes_as_pandas` shows a department exactly what changed. Each
commit records the source's version as an application transaction (`source:<table>`), so a refresh
with an unchanged source writes nothing, and the server and the Dagster asset can tell which
deliveries are behind.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse
from thematic_libs.sharing.datasets import Dataset, get_dataset
from thematic_libs.sharing.filters import parse_filter
from thematic_libs.sharing.orders import SYSTEM, Order, OrderError, change_order, list_orders

DELIVERIES = "share/deliveries"
CDF = {"delta.enableChangeDataFeed": "true"}
_DELETED = "__yiwang_deleted"


class DeliveryError(ValueError):
    """A delivery that cannot be built (its source is missing, say); the order stays as it was."""


@dataclass(frozen=True)
class DeliveryRefresh:
    order_id: str
    version: int  # delivery table version after the refresh
    source_version: int
    rows: int  # rows the delivery holds
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: bool = False  # the source had not changed


def delivery_table(order_id: str) -> str:
    return f"{DELIVERIES}/{order_id}"


def delivered_column(order: Order, column: str) -> str:
    """The name a granted column has in the delivery (`<column>_key` for a masked sensitive one)."""
    return column if column not in order.sensitive_columns or column in order.raw_columns else f"{column}_key"


def delivered_columns(order: Order) -> list[str]:
    return [delivered_column(order, c) for c in order.columns]


def _source_app_id(table: str) -> str:
    return f"source:{table}"


def _read_source(warehouse: Warehouse, dataset: Dataset, order: Order, pseudonymiser: Pseudonymiser) -> pl.DataFrame:
    """The granted columns of the source, filtered and masked."""
    if not warehouse.exists(dataset.table):
        raise DeliveryError(f"{dataset.dataset_id}: source {dataset.table} does not exist yet: run `yiwang run`")
    in_silver = dataset.layer == "silver"
    filter_columns = list(parse_filter(order.row_filter, dataset.column_names).columns) if order.row_filter else []
    wanted = []
    for column in order.columns:
        sensitive = column in order.sensitive_columns
        wanted.append(f"{column}_key" if sensitive and in_silver else column)
    names = list(dict.fromkeys(wanted + filter_columns))
    frame = pl.DataFrame(pl.from_arrow(warehouse.table(dataset.table).to_pyarrow_table(columns=names)))
    if order.row_filter:
        frame = frame.filter(parse_filter(order.row_filter, dataset.column_names).expression)
    for column in order.sensitive_columns:
        if in_silver and column in order.raw_columns:
            frame = _with_raw_values(warehouse, dataset, column, frame, pseudonymiser)
        elif not in_silver and column not in order.raw_columns:
            frame = frame.with_columns(pseudonymiser.pseudonymise(frame[column]).alias(f"{column}_key"))
    return frame.select(delivered_columns(order))


def _with_raw_values(
    warehouse: Warehouse, dataset: Dataset, column: str, frame: pl.DataFrame, pseudonymiser: Pseudonymiser
) -> pl.DataFrame:
    """Replace silver's pseudonym of `column` with the raw value, looked up through the pseudonyms of the
    restricted layer's distinct values (only the values this delivery's rows carry come out)."""
    if dataset.raw_table is None or not warehouse.exists(dataset.raw_table):
        raise DeliveryError(f"{dataset.dataset_id}: raw values of {column} are not available ({dataset.raw_table})")
    raw = pl.DataFrame(pl.from_arrow(warehouse.table(dataset.raw_table).to_pyarrow_table(columns=[column])))
    values = raw[column].drop_nulls().unique()
    lookup = pl.DataFrame({f"{column}_key": pseudonymiser.pseudonymise(values), column: values})
    return frame.join(lookup, on=f"{column}_key", how="left")


def _key(order: Order, dataset: Dataset) -> list[str]:
    """The delivery's key: the dataset's primary key as delivered, when the order grants all of it."""
    if dataset.primary_key and all(c in order.columns for c in dataset.primary_key):
        return [delivered_column(order, c) for c in dataset.primary_key]
    return []


def _diff(current: pl.DataFrame, new: pl.DataFrame, key: list[str]) -> tuple[pl.DataFrame, int, int, int]:
    """Rows to merge (new and changed rows, plus vanished rows marked deleted) and how many of each."""
    changed = new.join(current, on=new.columns, how="anti", nulls_equal=True)
    inserted = changed.join(current.select(key), on=key, how="anti", nulls_equal=True).height
    gone = current.join(new.select(key), on=key, how="anti", nulls_equal=True).select(new.columns)
    rows = pl.concat(
        [changed.with_columns(pl.lit(False).alias(_DELETED)), gone.with_columns(pl.lit(True).alias(_DELETED))],
        how="vertical_relaxed",
    )
    return rows, inserted, changed.height - inserted, gone.height


def _mergeable(frame: pl.DataFrame, key: list[str]) -> bool:
    """A keyed MERGE needs a unique key and flat columns (an anti-join cannot compare lists)."""
    if not key or any(dtype.is_nested() for dtype in frame.dtypes):
        return False
    return frame.select(key).is_unique().all()


def refresh_delivery(
    warehouse: Warehouse,
    order: Order,
    pseudonymiser: Pseudonymiser,
    *,
    force: bool = False,
    dataset: Dataset | None = None,
) -> DeliveryRefresh:
    """Bring the order's delivery table up to its source's current version (writes nothing when it is)."""
    dataset = dataset or get_dataset(order.dataset_id, warehouse)
    source = warehouse.table(dataset.table) if warehouse.exists(dataset.table) else None
    if source is None:
        raise DeliveryError(f"{dataset.dataset_id}: source {dataset.table} does not exist yet: run `yiwang run`")
    source_version = source.version()
    uri, options = warehouse.uri(delivery_table(order.order_id)), warehouse.options()
    target = (
        DeltaTable(uri, storage_options=options) if DeltaTable.is_deltatable(uri, storage_options=options) else None
    )
    app_id = _source_app_id(dataset.table)
    if target is not None and not force and target.transaction_version(app_id) == source_version:
        return DeliveryRefresh(order.order_id, target.version(), source_version, _rows(target), skipped=True)
    new = _read_source(warehouse, dataset, order, pseudonymiser)
    properties = CommitProperties(
        app_transactions=[Transaction(app_id, source_version)],
        custom_metadata={"yiwang.order_id": order.order_id, "yiwang.source_version": str(source_version)},
    )
    key = _key(order, dataset)
    if target is None or not _mergeable(new, key):
        write_deltalake(
            uri,
            new.to_arrow(),
            mode="overwrite",
            schema_mode="overwrite",
            configuration=CDF,
            storage_options=options,
            commit_properties=properties,
        )
        version = DeltaTable(uri, storage_options=options).version()
        return DeliveryRefresh(order.order_id, version, source_version, new.height, inserted=new.height)
    current = pl.DataFrame(pl.from_arrow(target.to_pyarrow_table()))
    rows, inserted, updated, deleted = _diff(current, new, key)
    if rows.height == 0:
        # nothing changed in what this order sees: record the source version only
        write_deltalake(
            target, new.head(0).to_arrow(), mode="append", storage_options=options, commit_properties=properties
        )
    else:
        on = " and ".join(f"t.`{c}` <=> s.`{c}`" for c in key)
        updates = {f"`{c}`": f"s.`{c}`" for c in new.columns}
        (
            target.merge(rows.to_arrow(), on, source_alias="s", target_alias="t", commit_properties=properties)
            .when_matched_delete(predicate=f"s.`{_DELETED}`")
            .when_matched_update(updates=updates, predicate=f"not s.`{_DELETED}`")
            .when_not_matched_insert(updates=updates, predicate=f"not s.`{_DELETED}`")
            .execute()
        )
    target = DeltaTable(uri, storage_options=options)
    return DeliveryRefresh(order.order_id, target.version(), source_version, new.height, inserted, updated, deleted)


def _rows(table: DeltaTable) -> int:
    actions = pa.table(table.get_add_actions(flatten=True))
    return int(pa.compute.sum(actions["num_records"]).as_py() or 0) if actions.num_rows else 0


def drop_delivery(warehouse: Warehouse, order_id: str) -> bool:
    """Remove a revoked or expired order's delivery (a copy; the audit keeps what was shared)."""
    if not warehouse.is_local:
        return False
    path = Path(warehouse.uri(delivery_table(order_id)))
    if path.exists():
        shutil.rmtree(path)
        return True
    return False


def refresh_deliveries(
    warehouse: Warehouse,
    pseudonymiser: Pseudonymiser,
    *,
    on_error: Callable[[Order, Exception], None] | None = None,
) -> list[DeliveryRefresh]:
    """Refresh every approved or active order's delivery; an approved one becomes active once its delivery
    exists. Deliveries of revoked and expired orders are removed."""
    refreshed = []
    for order in list_orders(warehouse):
        state = order.effective_state()
        if state in ("revoked", "expired", "rejected"):
            drop_delivery(warehouse, order.order_id)
            continue
        if state not in ("approved", "active"):
            continue
        try:
            result = refresh_delivery(warehouse, order, pseudonymiser)
            if order.state == "approved":
                change_order(warehouse, order.order_id, "activate", SYSTEM, delivery_version=result.version)
            refreshed.append(result)
        except (DeliveryError, OrderError) as error:
            if on_error is None:
                raise
            on_error(order, error)
    return refreshed
