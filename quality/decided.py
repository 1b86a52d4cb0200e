"""A contract suite's Great Expectations results, from what validation already decided about every row.

Every expectation of a suite (quality/suites.py) restates a rule of the contract that bronze validation has
already evaluated on every delivered row (ingestion/validation.py): not-null is the typed column's nulls, the
regex, value-set and range expectations are the `pattern`, `allowed_values` and `range` masks, uniqueness is the
`duplicate_key` mask, the column exists because validation typed it. Running GX's pandas engine over the same
rows again computed nothing new and cost 1.4 to 3 times the whole validated ingestion (scale-10 demo on 2 cores:
`gongan.household_registration` 8.8 s to land, 11.9 s of GX; `renshe.social_insurance` 17.5 s and 53.9 s).

`decided_results` builds the same `ExpectationValidationResult` objects GX returns, from the masks and the typed
frame, for every expectation of the suite: the rows of `ops/quality_results`, the scorecard and the Data Docs stay
what they were. `tests/test_quality_decided.py` holds it to GX's own results, field by field, on every batch of a
demo landing zone with its planted defects; `quality.runner.run_suite` (GX's engine) stays the reference, and
`YIWANG_QUALITY_ENGINE=gx` uses it in production too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl
from great_expectations.core import ExpectationValidationResult
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

from ingestion.contract import Contract
from ingestion.validation import Validated
from quality.suites import expectations_for

SAMPLE = 20  # GX's BASIC result format keeps this many unexpected values

# The validation rule behind each row-level expectation (not-null is the typed column's nulls, see below).
RULES = {
    "expect_column_values_to_match_regex": "pattern",
    "expect_column_values_to_be_in_set": "allowed_values",
    "expect_column_values_to_be_between": "range",
    "expect_column_values_to_be_unique": "duplicate_key",
    "expect_compound_columns_to_be_unique": "duplicate_key",
}


def _flagged(violations: pl.DataFrame) -> dict[tuple[str, str], np.ndarray]:
    """Row indexes (ascending) per (column, rule) that validation flagged."""
    if violations.height == 0:
        return {}
    grouped = violations.group_by("column", "rule").agg(pl.col("_idx").sort())
    return {(c, r): np.asarray(rows, dtype=np.int64) for c, r, rows in grouped.iter_rows()}


def _percent(part: int, whole: int) -> float | None:
    return part / whole * 100 if whole else None


def _not_null(config: ExpectationConfiguration, typed: pl.DataFrame) -> tuple[bool, dict[str, Any]]:
    column = typed[config.kwargs["column"]]
    total, nulls = column.len(), column.null_count()
    mostly = config.kwargs.get("mostly", 1.0)
    success = nulls == 0 if mostly == 1.0 else total == 0 or (total - nulls) / total >= mostly
    result = {
        "element_count": total,
        "unexpected_count": nulls,
        "unexpected_percent": _percent(nulls, total) if total else None,
        "partial_unexpected_list": [None] * min(nulls, SAMPLE),
    }
    return success, result


def _row_level(
    config: ExpectationConfiguration, typed: pl.DataFrame, rows: np.ndarray, values: pl.Series, missing: int
) -> tuple[bool, dict[str, Any]]:
    """GX's result of a column map expectation whose unexpected rows are `rows` (nulls never count)."""
    total = typed.height
    unexpected = len(rows)
    present = total - missing
    sample = values.gather(rows[:SAMPLE]).to_list() if unexpected else []
    mostly = config.kwargs.get("mostly", 1.0)
    success = unexpected == 0 if mostly == 1.0 else present == 0 or (present - unexpected) / present >= mostly
    result = {
        "element_count": total,
        "unexpected_count": unexpected,
        "unexpected_percent": _percent(unexpected, present),
        "partial_unexpected_list": sample,
        "missing_count": missing,
        "missing_percent": _percent(missing, total),
        "unexpected_percent_total": _percent(unexpected, total),
        "unexpected_percent_nonmissing": _percent(unexpected, present),
    }
    return success, result


def _compound_missing(typed: pl.DataFrame, columns: list[str]) -> int:
    return int(typed.select(pl.any_horizontal(pl.col(columns).is_null()).sum()).item())


def _result(
    config: ExpectationConfiguration, typed: pl.DataFrame, flagged: Mapping[tuple[str, str], np.ndarray], key: str
) -> ExpectationValidationResult:
    kind = config.type
    if kind == "expect_column_to_exist":
        success, result = config.kwargs["column"] in typed.columns, {}
    elif kind == "expect_column_values_to_not_be_null":
        success, result = _not_null(config, typed)
    elif kind == "expect_compound_columns_to_be_unique":
        columns = list(config.kwargs["column_list"])
        rows = flagged.get((key, RULES[kind]), np.empty(0, dtype=np.int64))
        values = typed.select(columns).to_struct("key")
        success, result = _row_level(config, typed, rows, values, _compound_missing(typed, columns))
        result["partial_unexpected_list"] = [dict(v) for v in result["partial_unexpected_list"]]
    elif kind in RULES:
        column = config.kwargs["column"]
        label = key if RULES[kind] == "duplicate_key" else column
        rows = flagged.get((label, RULES[kind]), np.empty(0, dtype=np.int64))
        success, result = _row_level(config, typed, rows, typed[column], typed[column].null_count())
    else:
        raise ValueError(f"{kind} has no validation rule behind it: run the suite on GX (YIWANG_QUALITY_ENGINE=gx)")
    return ExpectationValidationResult(success=success, expectation_config=config, result=result)


def decided_results(contract: Contract, validated: Validated) -> list[ExpectationValidationResult]:
    """The results of the contract's suite on a batch, in suite order, from validation's decisions."""
    typed = validated.typed
    flagged = _flagged(validated.violations.frame)
    key = ", ".join(contract.primary_key)
    return [_result(e.configuration, typed, flagged, key) for e in expectations_for(contract)]
