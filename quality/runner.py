"""Run a contract's suite on one batch and keep the results in `ops/quality_results`.

Wired into ingestion as the `on_validated` callback (`quality_hook(warehouse)`), it validates every
delivered row of the batch, typed per contract (`Validated.typed`: null where a value did not parse),
so results describe the delivery as the department sent it, before quarantine removed anything.
Writing is idempotent per batch (a Delta application transaction): a re-run after a crash neither
duplicates rows nor re-runs GX.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
from great_expectations.core import ExpectationValidationResult
from great_expectations.core.validation_definition import ValidationDefinition

from ingestion.contract import Contract
from ingestion.landing import Batch, batch_ordinal
from ingestion.ledger import already_written, append_once, batch_transaction
from ingestion.validation import Validated
from ingestion.warehouse import QUALITY_RESULTS, Warehouse
from quality import _gx
from quality.decided import SuiteTally, Tally, decided_results, results_of, tallies, tally_counts, top_values
from quality.results import RESULTS_SCHEMA, read_results
from quality.suites import build_suite, suite_name

# BASIC gives the counts plus a sample of 20 unexpected values, enough for a data officer; SUMMARY also
# computes row indexes and costs half as much again on 1M rows.
RESULT_FORMAT = "BASIC"
ENGINES = ("decided", "gx")
_SAMPLE_KEYS = ("partial_unexpected_list",)
_NOT_NULL = "expect_column_values_to_not_be_null"
_KEPT_KEYS = ("observed_value", "missing_count", "missing_percent", "unexpected_percent_total")


@dataclass(frozen=True)
class QualityResult:
    contract_id: str
    batch_id: str
    rows: pl.DataFrame  # the batch's rows of ops/quality_results
    written: bool  # False when the batch's results were already stored (nothing was re-run)
    seconds: float

    @property
    def evaluated(self) -> int:
        return self.rows.height

    @property
    def failed(self) -> pl.DataFrame:
        return self.rows.filter(~pl.col("success"))

    @property
    def success(self) -> bool:
        return self.failed.height == 0


_DEFINITIONS: dict[str, ValidationDefinition] = {}


def _validation_definition(contract: Contract) -> ValidationDefinition:
    """One asset, batch definition, suite and validation definition per contract version, built once."""
    name = suite_name(contract)
    if name not in _DEFINITIONS:
        _DEFINITIONS[name] = _new_validation_definition(contract, name)
    return _DEFINITIONS[name]


def _new_validation_definition(contract: Contract, name: str) -> ValidationDefinition:
    ctx = _gx.context()
    asset = ctx.data_sources.get(_gx.DATASOURCE).add_dataframe_asset(name)
    batch_definition = asset.add_batch_definition_whole_dataframe(name)
    suite = ctx.suites.add(build_suite(contract))
    return ctx.validation_definitions.add(ValidationDefinition(name=name, data=batch_definition, suite=suite))


def run_suite(contract: Contract, frame: pl.DataFrame) -> list[ExpectationValidationResult]:
    """Validate a typed frame with the contract's suite on GX's pandas engine.

    Arrow-backed pandas columns are a zero-copy view of the polars frame (0.1 s for 1M rows against
    1.5 s for NumPy object columns) and GX's pandas metrics run faster on them.
    """
    data: pd.DataFrame = frame.to_pandas(use_pyarrow_extension_array=True)
    with _gx.GX_LOCK, warnings.catch_warnings():
        # pandas warns that contract patterns have groups, on every regex expectation
        warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular expression")
        outcome = _validation_definition(contract).run(
            batch_parameters={"dataframe": data}, result_format=RESULT_FORMAT
        )
    return list(outcome.results)


def quality_engine() -> str:
    """`decided` (default: the results from validation's own decisions, quality/decided.py) or `gx` (GX's pandas
    engine over the rows again, the reference), from YIWANG_QUALITY_ENGINE."""
    engine = os.environ.get("YIWANG_QUALITY_ENGINE", "decided")
    if engine not in ENGINES:
        raise ValueError(f"YIWANG_QUALITY_ENGINE={engine!r}: use one of {', '.join(ENGINES)}")
    return engine


def suite_results(contract: Contract, validated: Validated) -> list[ExpectationValidationResult]:
    """The contract suite's results on a validated batch, by the configured engine."""
    if quality_engine() == "decided":
        return decided_results(contract, validated)
    frame = validated.typed.select([c for c in contract.column_names if c in validated.typed.columns])
    return run_suite(contract, frame)


def _is_sensitive(contract: Contract, columns: list[str]) -> bool:
    names = {c.name for c in contract.sensitive_columns}
    return any(c in names for c in columns)


def unexpected_counts(typed: pl.DataFrame | None, columns: list[str], sample: list[Any]) -> list[dict[str, Any]]:
    """The distinct values of a sample of unexpected values, each with the number of rows of the batch that hold it,
    most frequent first (at most TOP_VALUES): `"N/A" ×12` instead of the same value repeated in the sample.

    A column map expectation judges a value alone, so every row holding a sampled value is unexpected."""
    if typed is None or len(columns) != 1 or columns[0] not in typed.columns or not isinstance(sample, list):
        return []
    return top_values(typed.select(columns[0]), sample)


def _observed(
    result: ExpectationValidationResult,
    sensitive: bool,
    typed: pl.DataFrame | None = None,
    columns: list[str] | None = None,
    counted: list[dict[str, Any]] | None = None,
) -> str:
    """What GX saw, minus the values of sensitive columns (ID numbers must not leave bronze), with the distinct
    unexpected values and their counts in the batch: `counted` where the caller has them (a tally's), else
    `unexpected_counts` when the typed rows are given.

    A sample of a not-null expectation's unexpected values is a list of nulls: left out.
    """
    found = result.result or {}
    observed: dict[str, Any] = {k: found[k] for k in _KEPT_KEYS if k in found}
    config = result.expectation_config
    samples = () if config is not None and config.type == _NOT_NULL else _SAMPLE_KEYS
    for key in samples:
        if key in found:
            observed[key] = "withheld: sensitive column" if sensitive else found[key]
            counts = [] if sensitive else counted or unexpected_counts(typed, columns or [], found[key])
            if counts:
                observed["unexpected_counts"] = counts
    info = result.exception_info or {}
    if info.get("raised_exception"):
        observed["exception"] = str(info.get("exception_message"))
    return json.dumps(observed, ensure_ascii=False, default=str)


def _row(
    contract: Contract,
    result: ExpectationValidationResult,
    typed: pl.DataFrame | None = None,
    counted: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    config = result.expectation_config
    assert config is not None
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "result_format")}
    columns = [kwargs["column"]] if "column" in kwargs else list(kwargs.get("column_list", []))
    found = result.result or {}
    return {
        "expectation": config.type,
        "column": ", ".join(columns) or None,
        "success": bool(result.success),
        "unexpected_count": found.get("unexpected_count"),
        "element_count": found.get("element_count"),
        "unexpected_percent": found.get("unexpected_percent"),
        "observed": _observed(result, _is_sensitive(contract, columns), typed, columns, counted),
        "rule": config.meta.get("rule", ""),
        "contract_rule": config.meta.get("contract_rule"),
        "kwargs": json.dumps(kwargs, ensure_ascii=False, default=str),
    }


def results_table(
    batch: Batch,
    results: list[ExpectationValidationResult],
    run_at: datetime,
    typed: pl.DataFrame | None = None,
    counted: list[list[dict[str, Any]]] | None = None,
) -> pa.Table:
    """The rows of ops/quality_results for one batch; value counts of the unexpected values from `counted` (one
    list per result) or else from `typed` (the batch's typed rows)."""
    contract = batch.contract
    counts = counted if counted is not None else [None] * len(results)
    rows = [_row(contract, r, typed, c) for r, c in zip(results, counts, strict=True)]
    constant = {
        "contract_id": contract.id,
        "batch_id": batch.batch_id,
        "run_at": run_at,
        "contract_version": contract.version,
        "batch_ordinal": batch_ordinal(batch.batch_id),
        "extracted_at": batch.extracted_at.astimezone(UTC),
    }
    return pa.Table.from_pylist([{**constant, **r} for r in rows], schema=RESULTS_SCHEMA)


def _stored(warehouse: Warehouse, batch: Batch) -> pl.DataFrame:
    return read_results(warehouse, batch.contract.id).filter(pl.col("batch_id") == batch.batch_id)


def validate_batch(batch: Batch, validated: Validated, warehouse: Warehouse) -> QualityResult:
    """Run the contract's suite over every delivered row of a batch and store one row per expectation."""
    if quality_engine() == "decided":
        return _record(batch, warehouse, lambda: _tallies_table(batch, tallies(batch.contract, validated)))
    return _record(
        batch,
        warehouse,
        lambda: results_table(batch, suite_results(batch.contract, validated), datetime.now(UTC), validated.typed),
    )


def record_tallies(batch: Batch, batch_tallies: list[Tally], warehouse: Warehouse) -> QualityResult:
    """Store the suite's results from the tallies of a whole batch (`quality.decided`), one row per expectation."""
    return _record(batch, warehouse, lambda: _tallies_table(batch, batch_tallies))


def _tallies_table(batch: Batch, batch_tallies: list[Tally]) -> pa.Table:
    results = results_of(batch.contract, batch_tallies)
    return results_table(batch, results, datetime.now(UTC), counted=[tally_counts(t) for t in batch_tallies])


def _record(batch: Batch, warehouse: Warehouse, build: Callable[[], pa.Table]) -> QualityResult:
    """Store a batch's results once: a re-run after a crash finds them stored and builds nothing."""
    started = time.perf_counter()
    contract = batch.contract
    app_id = batch_transaction(QUALITY_RESULTS, contract.id, batch.batch_id)
    if already_written(warehouse, QUALITY_RESULTS, app_id):
        stored = _stored(warehouse, batch)
        return QualityResult(contract.id, batch.batch_id, stored, False, time.perf_counter() - started)
    table = build()
    written = append_once(warehouse, QUALITY_RESULTS, table, app_id)
    rows = pl.from_arrow(table)
    assert isinstance(rows, pl.DataFrame)
    return QualityResult(contract.id, batch.batch_id, rows, written, time.perf_counter() - started)


class QualityRecorder:
    """The `on_validated` callback for `ingestion.bronze.ingest_batch`; keeps what it validated.

    A class rather than a closure so that a Dagster asset can report the results after ingestion.
    """

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.results: list[QualityResult] = []

    def __call__(self, batch: Batch, validated: Validated) -> None:
        self.results.append(validate_batch(batch, validated, self.warehouse))

    # A large batch is landed part by part (`ingestion.bronze.PartwiseHook`): the decided engine adds up the
    # parts' tallies; GX's own engine needs every row at once.
    @property
    def by_part(self) -> bool:
        return quality_engine() == "decided"

    def tally(self, batch: Batch, validated: Validated) -> SuiteTally:
        return SuiteTally(tallies(batch.contract, validated))

    def record(self, batch: Batch, tally: SuiteTally) -> None:
        self.results.append(record_tallies(batch, tally.tallies, self.warehouse))


def quality_hook(warehouse: Warehouse) -> Callable[[Batch, Validated], None]:
    """Same as `QualityRecorder(warehouse)`, for callers that only need the callback."""
    return QualityRecorder(warehouse)
