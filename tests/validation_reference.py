"""The validation as it was before the byte-level fast paths: one polars expression per rule.

Its rules are kept verbatim (only renamed) as the specification that `ingestion.validation.validate`
must equal, value for value, on any input: `tests/test_validation_fast.py` compares the two. The
messages (`_detail`) and the literal tables are imported from `ingestion.validation`: they are not
what the fast paths changed, and a wrong message is caught by the ingestion tests, not by this one.
"""

from __future__ import annotations

import polars as pl

from ingestion.contract import Column, Contract
from ingestion.identifiers import (
    birth_date_ok_expr,
    credit_code_check_ok,
    normalise_credit_code,
    normalise_resident_id,
    resident_id_check_ok,
)
from ingestion.readers import ROW_NUMBER, SOURCE_FILE, ReadResult
from ingestion.validation import (
    _BOOLEANS,
    _POLARS_TYPES,
    _SPACES,
    MAX_FIELD_BYTES,
    Validated,
    Violations,
    _detail,
    _no_violations,
)


def _typed(column: Column, values: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """The value in the contract's type; null where the text does not parse."""
    if dtype != pl.String:
        return _cast_typed(column, values, dtype)
    if column.logical_type == "string":
        return values
    text = values.str.strip_chars(_SPACES)
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


def _cast_typed(column: Column, values: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Parquet columns arrive typed: cast them, treating naive timestamps as China Standard Time."""
    if column.logical_type == "timestamp" and isinstance(dtype, pl.Datetime):
        if dtype.time_zone is None:
            values = values.dt.replace_time_zone("Asia/Shanghai")
        return values.dt.convert_time_zone("UTC").cast(_POLARS_TYPES["timestamp"])
    if dtype == _POLARS_TYPES[column.logical_type]:
        return values
    return values.cast(_POLARS_TYPES[column.logical_type], strict=False)


def _normalised(column: Column, values: pl.Series) -> pl.Series:
    if values.dtype != pl.String:
        return values
    if column.identifier_kind == "resident_id":
        return normalise_resident_id(values)
    if column.identifier_kind == "credit_code":
        return normalise_credit_code(values)
    return values


def _present(values: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.String:
        # Any non-space character makes a value present; a regex stops at the first one.
        return values.str.contains(r"[^\s\u3000]").fill_null(False)
    return values.is_not_null()


def _typed_name(column: Column) -> str:
    return f"__typed__:{column.name}"


def _present_name(column: Column) -> str:
    return f"__present__:{column.name}"


def _check_ok_name(column: Column) -> str:
    return f"__check_ok__:{column.name}"


def _has_check_character(column: Column) -> bool:
    return bool(column.pattern) and column.identifier_kind in ("resident_id", "credit_code")


def _column_checks(column: Column, typed_dtype: pl.DataType) -> dict[str, pl.Expr]:
    """Boolean expression per rule: True where the row breaks it.

    They read the typed value, the presence flag and the check-character result that `validate`
    computed beforehand, so that every rule of every column is evaluated in one parallel pass.
    """
    present = pl.col(_present_name(column))
    typed = pl.col(_typed_name(column))
    checks: dict[str, pl.Expr] = {}
    if column.required:
        checks["required"] = ~present
    if column.logical_type != "string":
        checks["type"] = present & typed.is_null()
    has_value = typed.is_not_null() & present
    if column.pattern:
        matches = typed.str.contains(column.pattern).fill_null(True)
        if column.identifier_kind == "resident_id":
            matches = matches & birth_date_ok_expr(typed)
        checks["pattern"] = has_value & ~matches
        if _has_check_character(column):
            checks["check_character"] = has_value & matches & ~pl.col(_check_ok_name(column)).fill_null(True)
    if column.allowed_values is not None:
        as_text = typed if typed_dtype == pl.String else typed.cast(pl.String)
        checks["allowed_values"] = has_value & ~as_text.is_in(list(column.allowed_values))
    if column.minimum is not None or column.maximum is not None:
        low = typed < column.minimum if column.minimum is not None else pl.lit(False)
        high = typed > column.maximum if column.maximum is not None else pl.lit(False)
        checks["range"] = has_value & (low.fill_null(False) | high.fill_null(False))
    return {rule: mask.fill_null(False) for rule, mask in checks.items()}


def _length_check(column: Column, raw_dtype: pl.DataType) -> dict[str, pl.Expr]:
    if raw_dtype != pl.String:
        return {}
    raw = pl.col(column.name)
    too_long = raw.str.len_bytes() > MAX_FIELD_BYTES
    if column.max_length is not None:
        too_long = too_long | (raw.str.len_chars() > column.max_length)
    return {"max_length": too_long.fill_null(False)}


def reference_validate(read: ReadResult, contract: Contract) -> Validated:
    """Type every column, check every rule of the contract, and split good rows from bad.

    Two parallel polars passes over the whole batch: the first types every column and flags present
    values, the second evaluates every rule of every column (and the duplicate key) at once. Only the
    check characters are computed in between, with numpy. No value becomes a Python object unless its
    row broke a rule.
    """
    raw = read.frame
    inputs = raw.select(contract.column_names)
    identifiers = [
        _normalised(c, raw[c.name]).alias(_typed_name(c))
        for c in contract.columns
        if c.identifier_kind and raw[c.name].dtype == pl.String
    ]
    if identifiers:
        inputs = inputs.with_columns(identifiers)
    typed_dtypes: dict[str, pl.DataType] = {}
    stage: list[pl.Expr] = []
    for column in contract.columns:
        dtype = raw.schema[column.name]
        source = _typed_name(column) if _typed_name(column) in inputs.columns else column.name
        stage.append(_typed(column, pl.col(source), dtype).alias(_typed_name(column)))
        stage.append(_present(pl.col(column.name), dtype).alias(_present_name(column)))
        typed_dtypes[column.name] = _POLARS_TYPES[column.logical_type] if dtype == pl.String else dtype
    checked = inputs.lazy().with_columns(stage).collect()
    checks = [_check_ok(c, checked[_typed_name(c)]) for c in contract.columns if _has_check_character(c)]
    if checks:
        checked = checked.with_columns(checks)

    masks: list[tuple[Column, str, pl.Expr]] = []
    for column in contract.columns:
        rules = _column_checks(column, checked.schema[_typed_name(column)])
        rules.update(_length_check(column, checked.schema[column.name]))
        masks.extend((column, rule, mask) for rule, mask in rules.items())
    if contract.primary_key:
        key = [pl.col(_typed_name(contract.column(k))) for k in contract.primary_key]
        complete = pl.all_horizontal([k.is_not_null() for k in key])
        # Hashes first (a 64-bit hash is several times faster to group than the text), then the exact
        # comparison among the few rows whose hash repeats: a hash collision cannot make a false duplicate.
        candidates = (key[0] if len(key) == 1 else pl.struct(key)).hash().is_duplicated() & complete
        masks.append((contract.column(contract.primary_key[0]), "duplicate_key", candidates))

    names = [f"__mask__:{n}" for n in range(len(masks))]
    mask_frame = checked.lazy().select([m.alias(n) for n, (_, _, m) in zip(names, masks, strict=True)]).collect()
    if contract.primary_key:
        mask_frame = mask_frame.with_columns(_exact_duplicates(checked, contract, mask_frame[names[-1]]))
    bad = mask_frame.select(pl.any_horizontal(pl.all())).to_series() if masks else None
    typed_frame = checked.select([pl.col(_typed_name(c)).alias(c.name) for c in contract.columns])
    if bad is None or not bad.any():
        violations = _no_violations()
        good = typed_frame.with_columns(raw[ROW_NUMBER], raw[SOURCE_FILE])
    else:
        found = [(c, rule, mask_frame[n]) for n, (c, rule, _) in zip(names, masks, strict=True)]
        violations = _violations(raw, typed_frame, found, contract)
        good = typed_frame.with_columns(raw[ROW_NUMBER], raw[SOURCE_FILE]).filter(~bad)
    return Validated(good=good, typed=typed_frame, raw=raw, violations=violations, read=read)


def _exact_duplicates(checked: pl.DataFrame, contract: Contract, candidates: pl.Series) -> pl.Series:
    """Among rows whose key hash repeats, those whose key really repeats (same result as `is_duplicated`)."""
    if not candidates.any():
        return candidates
    rows = candidates.arg_true()
    keys = checked.select([_typed_name(contract.column(k)) for k in contract.primary_key])[rows]
    exact = keys.is_duplicated()
    return pl.repeat(False, candidates.len(), eager=True).scatter(rows.filter(exact), True).alias(candidates.name)


def _check_ok(column: Column, typed: pl.Series) -> pl.Series:
    """True where the identifier's check character is right; null where it is not shaped like one."""
    if typed.dtype != pl.String:  # a typed Parquet column cannot carry an identifier: nothing to check
        return pl.Series(_check_ok_name(column), [None] * typed.len(), dtype=pl.Boolean)
    ok = resident_id_check_ok(typed) if column.identifier_kind == "resident_id" else credit_code_check_ok(typed)
    return ok.alias(_check_ok_name(column))


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
