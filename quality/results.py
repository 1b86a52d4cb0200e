"""The `ops/quality_results` table: one row per expectation per validated batch.

The first ten columns are the interface other tools read (contract_id, batch_id, expectation, column,
success, unexpected_count, element_count, unexpected_percent, observed, run_at). The later ones let
the Data Docs and the Dagster checks explain a result without loading GX: the contract rule it comes
from, the expectation's arguments, and the batch's delivery order.

`unexpected_percent` is GX's number: the share of the non-null values that broke the expectation.
The share of delivered rows is `unexpected_count / element_count`.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from ingestion.warehouse import QUALITY_RESULTS, Warehouse

# Contract rule codes carried in the `rule` column (and in each expectation's `meta["rule"]`); kept here, not in
# quality.suites, so that readers of the results never import Great Expectations (seconds of start-up).
SCHEMA = "schema"
REQUIRED = "required"
COMPLETENESS = "completeness"
PATTERN = "pattern"
ALLOWED_VALUES = "allowed_values"
RANGE = "range"
DUPLICATE_KEY = "duplicate_key"
RULES = (SCHEMA, REQUIRED, COMPLETENESS, PATTERN, ALLOWED_VALUES, RANGE, DUPLICATE_KEY)

RESULTS_SCHEMA = pa.schema(
    [
        pa.field("contract_id", pa.string(), nullable=False),
        pa.field("batch_id", pa.string(), nullable=False),
        # GX type, e.g. expect_column_values_to_be_in_set
        pa.field("expectation", pa.string(), nullable=False),
        pa.field("column", pa.string()),  # the column, or the key columns joined by ", "
        pa.field("success", pa.bool_(), nullable=False),
        pa.field("unexpected_count", pa.int64()),
        pa.field("element_count", pa.int64()),
        pa.field("unexpected_percent", pa.float64()),
        # JSON: a sample of unexpected values (withheld for sensitive columns), GX's observed value
        pa.field("observed", pa.string(), nullable=False),
        pa.field("run_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("rule", pa.string(), nullable=False),  # contract rule code, one of RULES
        pa.field("contract_rule", pa.string()),  # where in the contract the rule is written
        pa.field("contract_version", pa.string()),
        pa.field("kwargs", pa.string(), nullable=False),  # JSON of the expectation's arguments
        pa.field("batch_ordinal", pa.int64(), nullable=False),  # delivery order, see ingestion.landing
        pa.field("extracted_at", pa.timestamp("us", tz="UTC")),
    ]
)


def empty_results() -> pl.DataFrame:
    frame = pl.from_arrow(RESULTS_SCHEMA.empty_table())
    assert isinstance(frame, pl.DataFrame)
    return frame


def read_results(warehouse: Warehouse, contract_id: str | None = None) -> pl.DataFrame:
    """Every stored result, or one contract's; an empty frame of the right schema before the first run."""
    if not warehouse.exists(QUALITY_RESULTS):
        return empty_results()
    table = warehouse.table(QUALITY_RESULTS).to_pyarrow_table()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if contract_id is not None:
        frame = frame.filter(pl.col("contract_id") == contract_id)
    return frame


def latest_batches(results: pl.DataFrame) -> pl.DataFrame:
    """contract_id, batch_id of the latest validated batch per contract (delivery order, then run time)."""
    return (
        results.group_by("contract_id", "batch_id")
        .agg(pl.col("batch_ordinal").max(), pl.col("run_at").max())
        .sort("batch_ordinal", "run_at")
        .group_by("contract_id", maintain_order=True)
        .last()
        .select("contract_id", "batch_id")
    )


def latest_results(warehouse: Warehouse, contract_id: str | None = None) -> pl.DataFrame:
    """The result rows of each contract's latest validated batch."""
    results = read_results(warehouse, contract_id)
    if results.height == 0:
        return results
    return results.join(latest_batches(results), on=["contract_id", "batch_id"], how="semi")
