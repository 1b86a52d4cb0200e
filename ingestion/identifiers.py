"""Resident ID numbers (GB 11643) and unified social credit codes (GB 32100), vectorised.

Departments send the same ID number in several forms: with spaces around it, in full-width digits,
with a lower-case `x`, or as a 15-digit first-generation number. These are normalised before any
check, so that only numbers that are still wrong afterwards count as bad input. The check characters
are computed over whole Arrow columns with numpy: a million IDs take milliseconds, not seconds.

`check_identifiers` is what validation uses: one pass over the bytes of the values that are already in
canonical form (nearly all of them) gives the pattern, the birth date and the check character; only
the other values go through the regex normalisation below, and are then checked the same way. Its gain is
measured together with `ingestion/columnar.py`'s (validation as shipped against one polars expression per rule:
3-14 % of the bronze stage at scale 10, bench/RESULTS.md, issue 16).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from ingestion.columnar import (
    FixedPattern,
    compile_fixed_pattern,
    fixed_width_rows,
    real_dates,
    spread,
    string_views,
)
from ingestion.contract import CREDIT_CODE_PATTERN, RESIDENT_ID_PATTERN

# ISO 7064 MOD 11-2 weights for the 17 body digits, and the check character for each remainder.
_RIC_WEIGHTS = np.array([pow(2, 17 - i, 11) for i in range(17)], dtype=np.int64)
_RIC_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)

_USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28], dtype=np.int64)
_USCC_VALUE = np.full(256, -1, dtype=np.int64)
for _i, _ch in enumerate(_USCC_ALPHABET):
    _USCC_VALUE[ord(_ch)] = _i
_USCC_CHECK = np.frombuffer(_USCC_ALPHABET.encode(), dtype=np.uint8)

_FULL_WIDTH = "０１２３４５６７８９ｘＸ"
_HALF_WIDTH = "0123456789xX"


def normalise_expr(column: str) -> pl.Expr:
    """Drop spaces anywhere (ASCII and full-width: "440605 19800101 0011" is typed too), fold full-width
    digits and letters, upper-case."""
    expr = pl.col(column).str.replace_all(r"[\s\x{3000}\x{00a0}]+", "")
    for full, half in zip(_FULL_WIDTH, _HALF_WIDTH, strict=True):
        expr = expr.str.replace_all(full, half, literal=True)
    return expr.str.to_uppercase()


def _char_matrix(values: pl.Series, width: int) -> np.ndarray:
    """An (n, width) uint8 matrix of strings that all have exactly `width` ASCII characters."""
    if values.len() == 0:
        return np.zeros((0, width), dtype=np.uint8)
    arrow = values.rechunk().to_arrow().cast(pa.large_binary())
    offsets = np.frombuffer(arrow.buffers()[1], dtype=np.int64)[arrow.offset : arrow.offset + len(arrow) + 1]
    data = np.frombuffer(arrow.buffers()[2], dtype=np.uint8)
    return data[offsets[0] : offsets[0] + len(arrow) * width].reshape(-1, width)


def _ric_expected(chars: np.ndarray) -> np.ndarray:
    """The check character (as a byte) of each row of a matrix whose first 17 columns are digits."""
    return _ric_expected_columns(np.ascontiguousarray(chars[:, :17].T))


def _ric_expected_columns(columns: np.ndarray) -> np.ndarray:
    """The check character (as a byte) of each value of a (>= 17, k) byte matrix, one row per position.

    Accumulated position by position in uint16 (17 weights of at most 10 times a byte of at most
    255 stay below 65536): an (n, 17) int64 copy would cost more than the arithmetic. The ASCII offset
    of the digits is removed at the end, modulo 11.
    """
    total = np.zeros(columns.shape[1], dtype=np.uint16)
    for i, weight in enumerate(_RIC_WEIGHTS.tolist()):
        total += columns[i].astype(np.uint16) * np.uint16(weight)
    offset = (ord("0") * int(_RIC_WEIGHTS.sum())) % 11
    return _RIC_CHECK[(total.astype(np.int32) - offset) % 11]


def upgrade_15_digit(values: pl.Series) -> pl.Series:
    """Convert 15-digit first-generation numbers (all born 19xx) to their 18-character form."""
    is_old = values.str.contains(r"^[0-9]{15}$").fill_null(False)
    if not is_old.any():
        return values
    old = values.filter(is_old)
    bodies = old.str.slice(0, 6) + "19" + old.str.slice(6, 9)
    checks = _ric_expected(_char_matrix(bodies, 17)).tobytes().decode("ascii")
    upgraded = bodies + pl.Series(list(checks), dtype=pl.String)
    return values.scatter(is_old.arg_true(), upgraded)


def _scatter_shaped(values: pl.Series, shaped: pl.Series, ok: np.ndarray) -> pl.Series:
    """`ok` (one entry per shaped value) spread back over all values, null where not shaped."""
    if len(ok) == values.len():
        return pl.Series(values.name, ok, dtype=pl.Boolean)
    result = pl.Series(values.name, [None] * values.len(), dtype=pl.Boolean)
    return result.scatter(shaped.arg_true(), pl.Series(ok))


def resident_id_check_ok(values: pl.Series) -> pl.Series:
    """True where an 18-character number's last character matches its body; null where not 18 digits."""
    shaped = values.str.contains(r"^[0-9]{17}[0-9X]$").fill_null(False)
    count = int(shaped.sum())
    if count == 0:
        return pl.Series(values.name, [None] * values.len(), dtype=pl.Boolean)
    chars = _char_matrix(values if count == values.len() else values.filter(shaped), 18)
    return _scatter_shaped(values, shaped, chars[:, 17] == _ric_expected(chars))


def birth_date_ok_expr(values: pl.Expr) -> pl.Expr:
    """True where characters 7-14 are a real calendar date (the pattern alone admits 31 February)."""
    births = values.str.slice(6, 8).str.strptime(pl.Date, "%Y%m%d", strict=False)
    return births.is_not_null() | values.is_null()


def _uscc_expected_columns(columns: np.ndarray) -> np.ndarray:
    """The GB 32100 check character (as a byte) of each value of a (>= 17, k) byte matrix over its alphabet."""
    total = np.zeros(columns.shape[1], dtype=np.int32)
    for i, weight in enumerate(_USCC_WEIGHTS.tolist()):
        total += np.take(_USCC_VALUE, columns[i]).astype(np.int32) * weight
    return _USCC_CHECK[(31 - total % 31) % 31]


def credit_code_check_ok(values: pl.Series) -> pl.Series:
    """True where an 18-character code over the GB 32100 alphabet carries the right check character."""
    shaped = values.str.contains(r"^[0-9A-HJ-NPQRTUWXY]{18}$").fill_null(False)
    count = int(shaped.sum())
    if count == 0:
        return pl.Series(values.name, [None] * values.len(), dtype=pl.Boolean)
    chars = _char_matrix(values if count == values.len() else values.filter(shaped), 18)
    expected = _uscc_expected_columns(np.ascontiguousarray(chars[:, :17].T))
    return _scatter_shaped(values, shaped, chars[:, 17] == expected)


def _normalise(values: pl.Series, canonical: str) -> tuple[pl.Series, bool]:
    """Fold only the values not already in canonical form: most deliveries are clean.

    Also says whether anything was folded, so that callers can skip later passes over clean columns.
    """
    messy = values.is_not_null() & ~values.str.contains(canonical)
    if not messy.any():
        return values, False
    folded = pl.DataFrame({"v": values.filter(messy)}).select(normalise_expr("v")).to_series()
    return values.scatter(messy.arg_true(), folded), True


def normalise_resident_id(values: pl.Series) -> pl.Series:
    """The canonical 18-character form of each number, as far as its form allows."""
    folded, changed = _normalise(values, r"^[0-9]{17}[0-9X]$")
    if not changed:  # every value is already 18 characters: none is a 15-digit number to upgrade
        return values
    return upgrade_15_digit(folded).rename(values.name)


def normalise_credit_code(values: pl.Series) -> pl.Series:
    return _normalise(values, r"^[0-9A-Z]{18}$")[0].rename(values.name)


@dataclass(frozen=True)
class _Kind:
    canonical: FixedPattern  # the form `_normalise` leaves alone
    pattern: FixedPattern  # the contract's pattern
    birth_date: bool  # resident IDs also need a real birth date


def _fixed(pattern: str) -> FixedPattern:
    compiled = compile_fixed_pattern(pattern)
    assert compiled is not None, f"{pattern} is no longer a fixed-length pattern"
    return compiled


_KINDS = {
    "resident_id": _Kind(_fixed(r"^[0-9]{17}[0-9X]$"), _fixed(RESIDENT_ID_PATTERN), True),
    "credit_code": _Kind(_fixed(r"^[0-9A-Z]{18}$"), _fixed(CREDIT_CODE_PATTERN), False),
}


@dataclass(frozen=True)
class IdentifierCheck:
    """An identifier column normalised and checked: what the contract rules need, nothing else."""

    values: pl.Series  # normalised as `normalise_resident_id` / `normalise_credit_code` do
    matches: np.ndarray  # bool: the contract pattern matches (and for an ID the birth date is real); False if null
    wrong_check: np.ndarray  # bool: matches, but the check character is not the one the body gives


def _column_checks(kind: str, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical form, pattern match and wrong check character of 18-byte values (an (18, k) matrix)."""
    spec = _KINDS[kind]
    tests: dict = {}  # the two patterns test the same positions for digits: once is enough
    canonical = spec.canonical.match_columns(columns, tests)
    matches = spec.pattern.match_columns(columns, tests)
    if spec.birth_date:
        # Only meaningful where the pattern matched (digits, year 18xx-20xx, month 01-12, day 01-31):
        # there it equals `birth_date_ok_expr`, which parses characters 7-14 with `%Y%m%d`.
        digits = columns[6:14] - np.uint8(ord("0"))
        year = digits[0] * np.uint16(1000) + digits[1] * np.uint16(100) + digits[2] * np.uint16(10) + digits[3]
        matches &= real_dates(year, digits[4] * np.uint8(10) + digits[5], digits[6] * np.uint8(10) + digits[7])
    expected = _ric_expected_columns(columns) if kind == "resident_id" else _uscc_expected_columns(columns)
    return canonical, matches, matches & (columns[17] != expected)


def _fold(values: pl.Series, kind: str) -> pl.Series:
    """`normalise_resident_id` / `normalise_credit_code` for values known not to be in canonical form."""
    folded = pl.DataFrame({"v": values}).select(normalise_expr("v")).to_series()
    return upgrade_15_digit(folded) if kind == "resident_id" else folded


def check_identifiers(values: pl.Series, kind: str, normalise: bool = True) -> IdentifierCheck:
    """Normalise (when `normalise`) and check a string column of resident IDs or credit codes.

    Values in canonical form are checked straight from their bytes; the others (spaces, full-width
    digits, lower-case letters, 15-digit numbers, anything malformed) are folded by the regex path
    and checked the same way. Equal, value for value, to `normalise_*`, the contract pattern,
    `birth_date_ok_expr` and `*_check_ok`, which the tests compare it with.
    """
    views = string_views(values)
    selected, columns = fixed_width_rows(values, views, 18)
    canonical, matches, wrong = (spread(selected, c) for c in _column_checks(kind, columns))
    messy = views.valid & ~canonical
    if not normalise or not messy.any():
        return IdentifierCheck(values, matches, wrong)
    index = np.flatnonzero(messy)
    folded = _fold(values.gather(index), kind)
    again = check_identifiers(folded, kind, normalise=False)
    matches[index] = again.matches
    wrong[index] = again.wrong_check
    normalised = values.clone().scatter(index, folded).rename(values.name)
    return IdentifierCheck(normalised, matches, wrong)
