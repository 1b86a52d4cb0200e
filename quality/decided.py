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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from great_expectations.core import ExpectationValidationResult
from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

from ingestion.contract import Contract
from ingestion.validation import Validated
from quality.suites import expectations_for

SAMPLE = 20  # GX's BASIC result format keeps this many unexpected values
TOP_VALUES = 10  # distinct unexpected values kept with their counts

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


@dataclass
class Tally:
    """One expectation's counts over some rows of a batch. The tallies of a batch's parts add up (`+`) to the
    batch's, so a batch landed part by part gets the results of the whole (`ingestion.bronze`)."""

    rows: int
    unexpected: int = 0
    missing: int = 0
    sample: list[Any] = field(default_factory=list)  # the first SAMPLE unexpected values, in row order
    values: pl.DataFrame | None = None  # every unexpected value and its rows (`len`); single-column expectations
    present: bool = True  # the column exists

    def __add__(self, other: Tally) -> Tally:
        values = (
            pl.concat([self.values, other.values]).group_by(self.values.columns[0]).agg(pl.col("len").sum())
            if self.values is not None and other.values is not None
            else None
        )
        return Tally(
            rows=self.rows + other.rows,
            unexpected=self.unexpected + other.unexpected,
            missing=self.missing + other.missing,
            sample=(self.sample + other.sample)[:SAMPLE],
            values=values,
            present=self.present and other.present,
        )


@dataclass
class SuiteTally:
    """The tallies of every expectation of a suite, in suite order; adds up like its tallies."""

    tallies: list[Tally]

    def __add__(self, other: SuiteTally) -> SuiteTally:
        return SuiteTally([a + b for a, b in zip(self.tallies, other.tallies, strict=True)])


def tallies(contract: Contract, validated: Validated) -> list[Tally]:
    """The tally of every expectation of the contract's suite, in suite order, from validation's decisions."""
    typed = validated.typed
    flagged = _flagged(validated.violations.frame)
    key = ", ".join(contract.primary_key)
    return [_tally(e.configuration, typed, flagged, key) for e in expectations_for(contract)]


def _tally(
    config: ExpectationConfiguration, typed: pl.DataFrame, flagged: Mapping[tuple[str, str], np.ndarray], key: str
) -> Tally:
    kind = config.type
    if kind == "expect_column_to_exist":
        return Tally(typed.height, present=config.kwargs["column"] in typed.columns)
    if kind == "expect_column_values_to_not_be_null":
        nulls = typed[config.kwargs["column"]].null_count()
        return Tally(typed.height, unexpected=nulls, sample=[None] * min(nulls, SAMPLE))
    if kind == "expect_compound_columns_to_be_unique":
        columns = list(config.kwargs["column_list"])
        rows = flagged.get((key, RULES[kind]), np.empty(0, dtype=np.int64))
        sample = typed.select(columns).to_struct("key").gather(rows[:SAMPLE]).to_list() if len(rows) else []
        return Tally(typed.height, len(rows), _compound_missing(typed, columns), [dict(v) for v in sample])
    if kind in RULES:
        column = config.kwargs["column"]
        label = key if RULES[kind] == "duplicate_key" else column
        rows = flagged.get((label, RULES[kind]), np.empty(0, dtype=np.int64))
        values = typed[column]
        unexpected = values.gather(rows)
        return Tally(
            typed.height,
            len(rows),
            values.null_count(),
            unexpected.head(SAMPLE).to_list(),
            unexpected.drop_nulls().to_frame().group_by(column).len(),
        )
    raise ValueError(f"{kind} has no validation rule behind it: run the suite on GX (YIWANG_QUALITY_ENGINE=gx)")


def _compound_missing(typed: pl.DataFrame, columns: list[str]) -> int:
    return int(typed.select(pl.any_horizontal(pl.col(columns).is_null()).sum()).item())


def _row_level(config: ExpectationConfiguration, tally: Tally) -> tuple[bool, dict[str, Any]]:
    """GX's result of a column map expectation (nulls never count as unexpected)."""
    total, unexpected, missing = tally.rows, tally.unexpected, tally.missing
    present = total - missing
    mostly = config.kwargs.get("mostly", 1.0)
    success = unexpected == 0 if mostly == 1.0 else present == 0 or (present - unexpected) / present >= mostly
    result = {
        "element_count": total,
        "unexpected_count": unexpected,
        "unexpected_percent": _percent(unexpected, present),
        "partial_unexpected_list": tally.sample,
        "missing_count": missing,
        "missing_percent": _percent(missing, total),
        "unexpected_percent_total": _percent(unexpected, total),
        "unexpected_percent_nonmissing": _percent(unexpected, present),
    }
    return success, result


def _result(config: ExpectationConfiguration, tally: Tally) -> ExpectationValidationResult:
    kind = config.type
    if kind == "expect_column_to_exist":
        success, result = tally.present, {}
    elif kind == "expect_column_values_to_not_be_null":
        total, nulls = tally.rows, tally.unexpected
        mostly = config.kwargs.get("mostly", 1.0)
        success = nulls == 0 if mostly == 1.0 else total == 0 or (total - nulls) / total >= mostly
        result = {
            "element_count": total,
            "unexpected_count": nulls,
            "unexpected_percent": _percent(nulls, total) if total else None,
            "partial_unexpected_list": tally.sample,
        }
    else:
        success, result = _row_level(config, tally)
    return ExpectationValidationResult(success=success, expectation_config=config, result=result)


def results_of(contract: Contract, batch_tallies: list[Tally]) -> list[ExpectationValidationResult]:
    """The suite's results from the tallies of a whole batch (`tallies`, added up over its parts)."""
    return [_result(e.configuration, t) for e, t in zip(expectations_for(contract), batch_tallies, strict=True)]


def decided_results(contract: Contract, validated: Validated) -> list[ExpectationValidationResult]:
    """The results of the contract's suite on a batch, in suite order, from validation's decisions."""
    return results_of(contract, tallies(contract, validated))


def top_values(values: pl.DataFrame, sample: list[Any]) -> list[dict[str, Any]]:
    """The distinct values of a sample of unexpected values, each with its number of rows in `values`, most
    frequent first, at most TOP_VALUES. `values` is one column of values, one per row, or of values and their
    rows (`len`)."""
    distinct = [v for v in dict.fromkeys(v for v in sample if v is not None and not isinstance(v, dict | list))]
    if not distinct:
        return []
    name = values.columns[0]
    try:
        wanted = pl.Series(distinct, dtype=values.schema[name], strict=False).drop_nulls()
        counts = values.filter(pl.col(name).is_in(wanted.implode()))
        if "len" not in counts.columns:
            counts = counts.group_by(name).len()
        counts = counts.sort(["len", name], descending=[True, False]).head(TOP_VALUES)
    except (pl.exceptions.PolarsError, TypeError, ValueError):
        return []
    return [{"value": value, "count": count} for value, count in counts.select(name, "len").iter_rows()]


def tally_counts(tally: Tally) -> list[dict[str, Any]]:
    """`top_values` of a tally's own sample: what `ops/quality_results` keeps as `unexpected_counts`."""
    return top_values(tally.values, tally.sample) if tally.values is not None else []
