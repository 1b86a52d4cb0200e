"""Row rules derived from a contract, checked over whole columns.

Every rule is one boolean column; the rows that break none are typed and loaded, the others go to
quarantine with one entry per broken rule. Messages are written for a data officer: they name the
column, the value as delivered, the rule and what a valid value looks like.

The rules are evaluated column by column into numpy masks. The common shapes (IDs and credit codes in
canonical form, `YYYY-MM-DD` dates, ISO timestamps, fixed-length patterns, values that start with a
visible character) are decided from the bytes of the Arrow buffers (`ingestion.columnar`); every value
those fast paths cannot decide goes through the plain polars expression of the rule, so the result is
the one the expressions alone give (`tests/test_validation_fast.py` compares both on messy input).
A column that repeats one value is checked on its first row. Large batches are checked on two
threads, and when few rows are bad the good rows are slices of the typed frame rather than a copy.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ingestion import columnar
from ingestion.contract import Column, Contract
from ingestion.identifiers import check_identifiers
from ingestion.readers import ROW_NUMBER, SOURCE_FILE, ReadResult

# The rule codes that quarantine rows carry.
RULES = (
    "required",
    "type",
    "pattern",
    "check_character",
    "allowed_values",
    "range",
    "max_length",
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
# No field of any contract may be longer than this (bytes as delivered, UTF-8): a bound on what one value
# can cost every reader downstream, whatever the contract says. A contract's maxLength (characters) is
# checked as well where it sets one.
MAX_FIELD_BYTES = 65_536


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


def _typed(column: Column, values: pl.Expr, dtype: pl.DataType, strip: bool = True) -> pl.Expr:
    """The value in the contract's type; null where the text does not parse.

    `strip=False` only where the caller has proven that stripping would change no value.
    """
    if dtype != pl.String:
        return _cast_typed(column, values, dtype)
    if column.logical_type == "string":
        return values
    text = values.str.strip_chars(_SPACES) if strip else values
    match column.logical_type:
        case "integer":
            return text.cast(pl.Int64, strict=False)
        case "number":
            numbers = text.cast(pl.Float64, strict=False)
            return pl.when(numbers.is_finite().fill_null(True)).then(numbers)
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


def _cast_typed(column: Column, values: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Parquet columns arrive typed: cast them, treating naive timestamps as China Standard Time."""
    if column.logical_type == "timestamp" and isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            values = values.dt.replace_time_zone("Asia/Shanghai")
        return values.dt.convert_time_zone("UTC").cast(_POLARS_TYPES["timestamp"])
    if dtype == _POLARS_TYPES[column.logical_type]:
        return values
    return values.cast(_POLARS_TYPES[column.logical_type], strict=False)


def _evaluate(values: pl.Series, expression: pl.Expr) -> pl.Series:
    """A polars expression over `pl.col("v")`, evaluated on one series."""
    return pl.DataFrame({"v": values}).select(expression).to_series()


def typed_values(column: Column, values: pl.Series) -> pl.Series:
    """`_typed` over one column, with fixed-format fast paths for dates and timestamps delivered as text.

    Values of the fixed shape (`YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS+HH:MM`) that are real dates and times
    are converted from their bytes; everything else (other shapes, surrounding spaces, impossible
    dates, leap seconds) is converted by `_typed` itself.
    """
    dtype = values.dtype
    if dtype != pl.String or column.logical_type == "string":
        return _evaluate(values, _typed(column, pl.col("v"), dtype)).rename(values.name)
    if column.logical_type in ("date", "timestamp"):
        date = column.logical_type == "date"
        views = columnar.string_views(values)
        selected, columns = columnar.fixed_width_rows(values, views, 10 if date else 25)
        ok, physical = columnar.parse_iso_dates(columns) if date else columnar.parse_iso_timestamps(columns)
        decided = columnar.spread(selected, ok)
        result = columnar.spread(selected, physical, 0)
        valid = decided.copy()
        undecided = views.valid & ~decided
        if undecided.any():
            index = np.flatnonzero(undecided)
            exact = _evaluate(values.gather(index), _typed(column, pl.col("v"), dtype))
            result[index] = exact.to_physical().fill_null(0).to_numpy()
            valid[index] = exact.is_not_null().to_numpy()
        return columnar.typed_series(values.name, result, valid, _POLARS_TYPES[column.logical_type])
    strip = columnar.may_need_strip(values)
    return _evaluate(values, _typed(column, pl.col("v"), dtype, strip=strip)).rename(values.name)


def _has_check_character(column: Column) -> bool:
    return bool(column.pattern) and column.identifier_kind in ("resident_id", "credit_code")


def _needs_presence(column: Column) -> bool:
    return (
        column.required
        or column.logical_type != "string"
        or bool(column.pattern)
        or column.allowed_values is not None
        or column.minimum is not None
        or column.maximum is not None
    )


@dataclass
class Checked:
    """One column typed, and a mask per rule of the column: True where the row breaks it."""

    typed: pl.Series
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def _not_null(values: pl.Series) -> np.ndarray:
    if values.null_count() == 0:
        return np.ones(values.len(), dtype=bool)
    return values.is_not_null().to_numpy()


def _pattern_matches(column: Column, typed: pl.Series) -> np.ndarray:
    """`typed.str.contains(pattern)`, byte by byte where the pattern is fixed-length (False where null)."""
    assert column.pattern is not None
    fixed = columnar.compile_fixed_pattern(column.pattern) if typed.dtype == pl.String else None
    if fixed is not None:
        return fixed.matches(typed)
    return typed.str.contains(column.pattern).fill_null(True).to_numpy()


# Pure speed choices (every way gives the same mask): a short list of allowed values is compared value
# by value (a string-view comparison is several times cheaper than a hash lookup); otherwise columns
# whose first values hold few distinct ones are checked one distinct value at a time.
_FEW_ALLOWED = 4
_FEW_DISTINCT = 64


def _not_allowed(typed: pl.Series, allowed: tuple[str, ...]) -> np.ndarray:
    """True where a non-null value is not among the allowed ones (as text); null rows are False."""
    as_text = typed if typed.dtype == pl.String else typed.cast(pl.String)
    allowed_series = pl.Series(list(allowed), dtype=pl.String)
    if not allowed:
        return _not_null(as_text)
    if len(allowed) <= _FEW_ALLOWED:
        equal = [pl.col("v") == pl.lit(a, dtype=pl.String) for a in allowed]
        return _evaluate(as_text, ~pl.any_horizontal(equal).fill_null(True)).to_numpy()
    if as_text.head(4096).n_unique() <= _FEW_DISTINCT:
        distinct = as_text.unique().drop_nulls()
        outside = distinct.filter(~distinct.is_in(allowed_series.implode()))
        if outside.len() == 0:
            return np.zeros(typed.len(), dtype=bool)
        return as_text.is_in(outside.implode()).fill_null(False).to_numpy()
    return (~as_text.is_in(allowed_series.implode())).fill_null(False).to_numpy()


def _out_of_range(column: Column, typed: pl.Series) -> np.ndarray:
    value = pl.col("v")
    low = value < column.minimum if column.minimum is not None else pl.lit(False)
    high = value > column.maximum if column.maximum is not None else pl.lit(False)
    return _evaluate(typed, low.fill_null(False) | high.fill_null(False)).to_numpy()


def _check_column(column: Column, values: pl.Series) -> Checked:
    """Type one column and evaluate each of its rules (the rules of `RULES`, in that order).

    A column that repeats one value (one period, one extract time) or is entirely empty is checked on
    its first row: every row gets the same result.
    """
    if values.len() > 1 and _uniform(values):
        one = _check_rows(column, values.head(1))
        masks = {rule: np.full(values.len(), bool(mask[0])) for rule, mask in one.masks.items()}
        return Checked(one.typed.new_from_index(0, values.len()), masks)
    return _check_rows(column, values)


def _check_rows(column: Column, values: pl.Series) -> Checked:
    identifier = None
    if column.identifier_kind:
        text = values if values.dtype == pl.String else typed_values(column, values)
        identifier = check_identifiers(text, column.identifier_kind, normalise=values.dtype == pl.String)
        typed = identifier.values
    else:
        typed = typed_values(column, values)
    checked = Checked(typed)
    too_long = _too_long(column, values)
    if not _needs_presence(column):
        if too_long is not None:
            checked.masks["max_length"] = too_long
        return checked
    present = columnar.present(values)
    typed_ok = _not_null(typed)
    has_value = present & typed_ok
    if column.required:
        checked.masks["required"] = ~present
    if column.logical_type != "string":
        checked.masks["type"] = present & ~typed_ok
    if column.pattern:
        matches = identifier.matches if identifier is not None else _pattern_matches(column, typed)
        checked.masks["pattern"] = has_value & ~matches
        if _has_check_character(column) and identifier is not None:
            checked.masks["check_character"] = has_value & identifier.wrong_check
    if column.allowed_values is not None:
        checked.masks["allowed_values"] = has_value & _not_allowed(typed, column.allowed_values)
    if column.minimum is not None or column.maximum is not None:
        checked.masks["range"] = has_value & _out_of_range(column, typed)
    if too_long is not None:
        checked.masks["max_length"] = too_long
    return checked


def _too_long(column: Column, values: pl.Series) -> np.ndarray | None:
    """Rows longer than the platform's bound or the contract's maxLength; None when none is (the usual case,
    found from the Arrow offsets alone)."""
    if values.dtype != pl.String:
        return None
    too_long = values.str.len_bytes() > MAX_FIELD_BYTES
    if column.max_length is not None:
        too_long = too_long | (values.str.len_chars() > column.max_length)
    too_long = too_long.fill_null(False)
    return too_long.to_numpy() if too_long.any() else None


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
    if rule == "max_length":
        length = len(raw) if isinstance(raw, str) else 0
        limit = f"{column.max_length} characters (the contract)" if column.max_length else ""
        bound = f"{MAX_FIELD_BYTES:,} bytes (the platform's bound on any field)"
        return (
            f"{name} is {length:,} characters long, more than {limit + ' or ' if limit else ''}{bound}; "
            "send the value shortened or as a file reference"
        )
    if rule == "range":
        bounds = f"[{column.minimum if column.minimum is not None else '-∞'}, "
        bounds += f"{column.maximum if column.maximum is not None else '∞'}]"
        return f"{name} = {shown} is outside the allowed range {bounds}"
    raise AssertionError(rule)


# From this many rows the columns are checked on two threads (numpy and polars release the GIL).
_PARALLEL_ROWS = 100_000


def _check_columns(
    raw: pl.DataFrame, contract: Contract, known: dict[str, Checked] | None = None
) -> tuple[dict[str, Checked], np.ndarray | None]:
    """Every column checked, and the duplicate-key mask (None without a primary key).

    On large batches this thread checks the key columns and then searches the duplicates while a
    worker thread checks the other columns: the two halves take about the same time. Without a key
    to check (none, or `known`: the key columns already checked by `check_keys`), the two threads
    share the columns.
    """
    checked = dict(known or {})
    keys = [contract.column(k) for k in contract.primary_key]
    to_check = [c for c in keys if c.name not in checked]
    others = [c for c in contract.columns if c.name not in contract.primary_key]
    if raw.height < _PARALLEL_ROWS:
        checked.update({c.name: _check_column(c, raw[c.name]) for c in to_check + others})
        return checked, (_duplicate_keys([checked[k.name].typed for k in keys]) if keys else None)
    here, there = (to_check, others) if to_check else (others[::2], others[1::2])
    with ThreadPoolExecutor(1) as worker:
        pending = [(c.name, worker.submit(_check_column, c, raw[c.name])) for c in there]
        checked.update({c.name: _check_column(c, raw[c.name]) for c in here})
        duplicates = _duplicate_keys([checked[k.name].typed for k in keys]) if keys else None
        checked.update({name: future.result() for name, future in pending})
    return checked, duplicates


def check_keys(raw: pl.DataFrame, contract: Contract) -> dict[str, Checked]:
    """The primary-key columns checked, as `validate` checks them (pass them on to it as `known`)."""
    return {k: _check_column(contract.column(k), raw[k]) for k in contract.primary_key}


def validate(
    read: ReadResult,
    contract: Contract,
    elsewhere: pl.DataFrame | None = None,
    known: dict[str, Checked] | None = None,
) -> Validated:
    """Type every column, check every rule of the contract, and split good rows from bad.

    Column by column into numpy masks (see the module docstring), then the duplicate key; the good
    rows are the typed rows minus the bad ones. No value becomes a Python object unless its row broke
    a rule. For one part of a batch landed part by part: `elsewhere` (the typed key columns) holds keys
    that other parts of the batch hold, so rows with one of them are duplicates as well, and `known` the
    part's key columns already checked (`check_keys`).
    """
    raw = read.frame
    checked, duplicates = _check_columns(raw, contract, known)
    if duplicates is not None and elsewhere is not None and elsewhere.height:
        names = list(contract.primary_key)
        keys = pl.DataFrame([checked[k].typed.alias(k) for k in names])
        wanted = elsewhere.select(pl.struct(names)).to_series().implode()
        duplicates = duplicates | keys.select(pl.struct(names).is_in(wanted).fill_null(False)).to_series().to_numpy()
    typed_frame = pl.DataFrame([checked[c.name].typed.alias(c.name) for c in contract.columns])
    found = [(c, rule, mask) for c in contract.columns for rule, mask in checked[c.name].masks.items()]
    if duplicates is not None:
        found.append((contract.column(contract.primary_key[0]), "duplicate_key", duplicates))
    bad = np.zeros(raw.height, dtype=bool)
    for _, _, mask in found:
        bad |= mask
    if not bad.any():
        violations = _no_violations()
        good = typed_frame.with_columns(raw[ROW_NUMBER], raw[SOURCE_FILE])
    else:
        violations = _violations(raw, typed_frame, found, contract)
        good = _without(typed_frame.with_columns(raw[ROW_NUMBER], raw[SOURCE_FILE]), bad)
    return Validated(good=good, typed=typed_frame, raw=raw, violations=violations, read=read)


# Up to this many bad rows, the good rows are kept as slices of the typed frame (no copy) instead of
# being filtered into a new one (a copy of every column: ~40 ms per million rows).
_FEW_BAD_ROWS = 64


def _without(frame: pl.DataFrame, bad: np.ndarray) -> pl.DataFrame:
    """The rows of `frame` that are not `bad`, in order."""
    rows = np.flatnonzero(bad)
    if len(rows) > _FEW_BAD_ROWS:
        return frame.filter(pl.Series(~bad))
    starts = np.concatenate([[0], rows + 1]).tolist()
    ends = [*rows.tolist(), frame.height]
    parts = [frame.slice(start, end - start) for start, end in zip(starts, ends, strict=True) if end > start]
    return pl.concat(parts, rechunk=False) if parts else frame.clear()


def _uniform(values: pl.Series) -> bool:
    """All values null, or all equal and none null (text, integers, booleans and dates only)."""
    count = values.len()
    if values.null_count() == count:
        return True
    exact = values.dtype in (pl.String, pl.Boolean, pl.Date) or values.dtype.is_integer()
    if values.null_count() or not exact:
        return False
    first = values[0]
    if values[count // 2] != first or values[count - 1] != first:  # most columns stop here
        return False
    return bool((values == first).all())


def _constant(values: pl.Series) -> bool:
    """Every value equal and none null (text and integers only: float equality has NaN to think of)."""
    if values.len() == 0 or values.null_count() or not (values.dtype == pl.String or values.dtype.is_integer()):
        return False
    return bool((values == values[0]).all())


def _duplicate_keys(keys: list[pl.Series]) -> np.ndarray:
    """True for every row whose complete primary key (no part null) appears in another complete row.

    Key parts that are the same in every row (one period, one insurance type) cannot tell rows apart
    and are left out. A 64-bit hash of the rest is sorted to find the hash values that repeat; only
    the rows carrying those are compared exactly, so a hash collision cannot make a false duplicate.
    """
    height = keys[0].len()
    complete = np.ones(height, dtype=bool)
    for key in keys:
        complete &= _not_null(key)
    varying = [k for k in keys if not _constant(k)] or keys[:1]
    hashes = (varying[0] if len(varying) == 1 else pl.DataFrame(varying).select(pl.struct(pl.all())).to_series()).hash()
    ordered = hashes.sort().to_numpy()
    repeated = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    if len(repeated) == 0:
        return np.zeros(height, dtype=bool)
    candidates = hashes.is_in(pl.Series(repeated).implode()).to_numpy() & complete
    rows = np.flatnonzero(candidates)
    exact = pl.DataFrame(keys)[rows].is_duplicated().to_numpy()
    result = np.zeros(height, dtype=bool)
    result[rows[exact]] = True
    return result


def _no_violations() -> Violations:
    return Violations(
        pl.DataFrame(schema={"_idx": pl.UInt32, "column": pl.String, "rule": pl.String, "detail": pl.String})
    )


def _violations(
    raw: pl.DataFrame, typed: pl.DataFrame, masks: list[tuple[Column, str, np.ndarray]], contract: Contract
) -> Violations:
    rows: list[tuple[int, str, str, str]] = []
    for column, rule, mask in masks:
        if not mask.any():
            continue
        index = np.flatnonzero(mask)
        if rule == "duplicate_key":
            key = ", ".join(contract.primary_key)
            detail = f"primary key ({key}) appears more than once in this batch; send one row per key"
            rows.extend((i, key, rule, detail) for i in index.tolist())
            continue
        raws = raw[column.name].gather(index).to_list()
        values = typed[column.name].gather(index).to_list()
        for i, r, v in zip(index.tolist(), raws, values, strict=True):
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
    key_names = contract.primary_key
    for row in subset.iter_rows(named=True):
        keys.append("|".join("" if row[k] is None else str(row[k]) for k in key_names))
        records.append(json.dumps(row, ensure_ascii=False, default=str))
    return keys, records
