"""Row rules derived from a contract, checked over whole columns.

Every rule is one boolean column; the rows that break none are typed and loaded, the others go to
quarantine with one entry per broken rule. Messages are written for a data officer: they name the
column, the value as delivered, the rule and what a valid value looks like.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import polars as pl

from ingestion.contract import Column, Contract
from ingestion.identifiers import (
    credit_code_check_ok,
    normalise_credit_code,
    normalise_resident_id,
    resident_id_birth_date_ok,
    resident_id_check_ok,
)
from ingestion.readers import ROW_NUMBER, SOURCE_FILE, ReadResult

# The rule codes that quarantine rows carry.
RULES = (
    "required",
    "type",
    "pattern",
    "check_character",
    "allowed_values",
    "range",
    "duplicate_key",
    "malformed_record",
)

_TYPE_HINTS = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "date": "a date YYYY-MM-DD",
    "timestamp": "an ISO 8601 timestamp with an offset, e.g. 2026-11-01T02:00:00+08:00",
}
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "t": True, "f": False}
_SPACES = " \t\r\n\u3000"


@dataclass
class Violations:
    """One row per (record, broken rule) of a batch."""

    frame: pl.DataFrame  # _idx, column, rule, detail

    @property
    def bad_rows(self) -> int:
        return self.frame["_idx"].n_unique() if self.frame.height else 0


@dataclass
class Validated:
    good: pl.DataFrame  # typed contract columns + _row_number + _source_file, rows that broke no rule
    typed: pl.DataFrame  # every delivered row, typed; null where a value did not parse
    raw: pl.DataFrame  # values as delivered, for the quarantine
    violations: Violations
    read: ReadResult

    @property
    def records(self) -> int:
        return self.read.records

    @property
    def bad_records(self) -> int:
        return self.violations.bad_rows + len(self.read.malformed)


def _typed(column: Column, values: pl.Series) -> pl.Series:
    """The value in the contract's type; null where the text does not parse."""
    if values.dtype != pl.String:
        return _cast_typed(column, values)
    if column.logical_type == "string":
        return values
    text = values.str.strip_chars(_SPACES)
    match column.logical_type:
        case "integer":
            return text.cast(pl.Int64, strict=False)
        case "number":
            numbers = text.cast(pl.Float64, strict=False)
            return numbers.set(~numbers.is_finite().fill_null(True), None)
        case "boolean":
            return text.str.to_lowercase().replace_strict(_BOOLEANS, default=None, return_dtype=pl.Boolean)
        case "date":
            return text.str.strptime(pl.Date, "%Y-%m-%d", strict=False)
        case "timestamp":
            return text.str.to_datetime("%+", time_zone="UTC", time_unit="us", strict=False)
    raise AssertionError(f"unhandled type {column.logical_type}")


_POLARS_TYPES: dict[str, pl.DataType] = {
    "string": pl.String(),
    "integer": pl.Int64(),
    "number": pl.Float64(),
    "boolean": pl.Boolean(),
    "date": pl.Date(),
    "timestamp": pl.Datetime("us", "UTC"),
}


def _cast_typed(column: Column, values: pl.Series) -> pl.Series:
    """Parquet columns arrive typed: cast them, treating naive timestamps as China Standard Time."""
    if column.logical_type == "timestamp" and isinstance(values.dtype, pl.Datetime):
        if values.dtype.time_zone is None:
            values = values.dt.replace_time_zone("Asia/Shanghai")
        return values.dt.convert_time_zone("UTC").cast(_POLARS_TYPES["timestamp"])
    return values.cast(_POLARS_TYPES[column.logical_type], strict=False)


def _normalised(column: Column, values: pl.Series) -> pl.Series:
    if values.dtype != pl.String:
        return values
    if column.identifier_kind == "resident_id":
        return normalise_resident_id(values)
    if column.identifier_kind == "credit_code":
        return normalise_credit_code(values)
    return values


def _present(values: pl.Series) -> pl.Series:
    if values.dtype == pl.String:
        # Any non-space character makes a value present; a regex stops at the first one.
        return values.str.contains(r"[^\s\u3000]").fill_null(False)
    return values.is_not_null()


def _column_checks(column: Column, raw: pl.Series, typed: pl.Series) -> dict[str, pl.Series]:
    """Boolean series per rule: True where the row breaks it."""
    present = _present(raw)
    checks: dict[str, pl.Series] = {}
    if column.required:
        checks["required"] = ~present
    if column.logical_type != "string":
        checks["type"] = present & typed.is_null()
    has_value = typed.is_not_null() & present
    if column.pattern:
        matches = typed.str.contains(column.pattern).fill_null(True)
        if column.identifier_kind == "resident_id":
            matches = matches & resident_id_birth_date_ok(typed)
        checks["pattern"] = has_value & ~matches
        if column.identifier_kind == "resident_id":
            checks["check_character"] = has_value & matches & ~resident_id_check_ok(typed).fill_null(True)
        elif column.identifier_kind == "credit_code":
            checks["check_character"] = has_value & matches & ~credit_code_check_ok(typed).fill_null(True)
    if column.allowed_values is not None:
        as_text = typed if typed.dtype == pl.String else typed.cast(pl.String)
        checks["allowed_values"] = has_value & ~as_text.is_in(list(column.allowed_values))
    if column.minimum is not None or column.maximum is not None:
        low = typed < column.minimum if column.minimum is not None else pl.repeat(False, typed.len(), eager=True)
        high = typed > column.maximum if column.maximum is not None else pl.repeat(False, typed.len(), eager=True)
        checks["range"] = has_value & (low.fill_null(False) | high.fill_null(False))
    return {rule: mask.fill_null(False) for rule, mask in checks.items()}


def _detail(column: Column, rule: str, raw: object, value: object) -> str:
    shown = json.dumps(raw, ensure_ascii=False, default=str)
    name = column.name
    if rule == "required":
        return f"{name} is required but empty; fill it in"
    if rule == "type":
        return f"{name} = {shown} is not {_TYPE_HINTS[column.logical_type]}"
    if rule == "pattern":
        return f"{name} = {shown} does not match the pattern {column.pattern} ({column.description})"
    if rule == "check_character":
        what = "ID number (ISO 7064 MOD 11-2)" if column.identifier_kind == "resident_id" else "credit code (GB 32100)"
        return f"{name} = {shown}: the check character of this {what} is wrong; correct the number at the source"
    if rule == "allowed_values":
        return f"{name} = {shown} is not one of {list(column.allowed_values or ())}"
    if rule == "range":
        bounds = f"[{column.minimum if column.minimum is not None else '-∞'}, "
        bounds += f"{column.maximum if column.maximum is not None else '∞'}]"
        return f"{name} = {shown} is outside the allowed range {bounds}"
    raise AssertionError(rule)


def validate(read: ReadResult, contract: Contract) -> Validated:
    """Type every column, check every rule of the contract, and split good rows from bad."""
    raw = read.frame
    typed_columns: dict[str, pl.Series] = {}
    masks: list[tuple[Column, str, pl.Series]] = []
    for column in contract.columns:
        values = raw[column.name]
        typed = _typed(column, _normalised(column, values))
        typed_columns[column.name] = typed
        masks.extend((column, rule, mask) for rule, mask in _column_checks(column, values, typed).items())
    typed_frame = pl.DataFrame(list(typed_columns.values()))
    if contract.primary_key:
        key = typed_frame.select(contract.primary_key)
        complete = key.select(pl.all_horizontal(pl.all().is_not_null())).to_series()
        duplicated = key.is_duplicated() & complete
        pk_column = contract.column(contract.primary_key[0])
        masks.append((pk_column, "duplicate_key", duplicated))

    bad = (
        pl.DataFrame([m.rename(f"m{n}") for n, (_, _, m) in enumerate(masks)])
        .select(pl.any_horizontal(pl.all()))
        .to_series()
        if masks
        else pl.repeat(False, raw.height, eager=True)
    )
    violations = _violations(raw, typed_frame, masks, contract) if bad.any() else _no_violations()
    good = typed_frame.with_columns(raw[ROW_NUMBER], raw[SOURCE_FILE]).filter(~bad)
    return Validated(good=good, typed=typed_frame, raw=raw, violations=violations, read=read)


def _no_violations() -> Violations:
    return Violations(
        pl.DataFrame(schema={"_idx": pl.UInt32, "column": pl.String, "rule": pl.String, "detail": pl.String})
    )


def _violations(
    raw: pl.DataFrame, typed: pl.DataFrame, masks: list[tuple[Column, str, pl.Series]], contract: Contract
) -> Violations:
    rows: list[tuple[int, str, str, str]] = []
    for column, rule, mask in masks:
        if not mask.any():
            continue
        index = mask.arg_true()
        if rule == "duplicate_key":
            key = ", ".join(contract.primary_key)
            for i in index.to_list():
                rows.append(
                    (
                        i,
                        key,
                        rule,
                        f"primary key ({key}) appears more than once in this batch; send one row per key",
                    )
                )
            continue
        raws = raw[column.name].gather(index).to_list()
        values = typed[column.name].gather(index).to_list()
        for i, r, v in zip(index.to_list(), raws, values, strict=True):
            rows.append((i, column.name, rule, _detail(column, rule, r, v)))
    frame = pl.DataFrame(
        rows,
        schema={"_idx": pl.UInt32, "column": pl.String, "rule": pl.String, "detail": pl.String},
        orient="row",
    )
    return Violations(frame.sort("_idx", maintain_order=True))


def raw_records(raw: pl.DataFrame, indexes: list[int], contract: Contract) -> tuple[list[str], list[str]]:
    """Record keys (primary-key values as delivered, joined by `|`) and the raw rows as JSON."""
    subset = raw[indexes].select(contract.column_names)
    keys: list[str] = []
    records: list[str] = []
    for row in subset.iter_rows(named=True):
        keys.append("|".join("" if row[k] is None else str(row[k]) for k in contract.primary_key))
        records.append(json.dumps(row, ensure_ascii=False, default=str))
    return keys, records
