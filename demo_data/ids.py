"""Valid identifiers for synthetic people and organisations, built over whole numpy arrays.

Resident ID numbers (GB 11643) carry an address code, the birth date, a sequence number whose
parity is the sex, and an ISO 7064 MOD 11-2 check character. Unified social credit codes (GB 32100)
embed a 9-character organisation code with its own GB 11714 check character and end in a MOD 31
check character. Both are computed here in matrix form: five million IDs take about a second.
The same module makes the messy-but-valid forms departments really send (spaces, full-width digits,
lower-case x, 15-digit first-generation numbers) and the subtly wrong ones (bad check characters).
"""

from __future__ import annotations

import numpy as np

RIC_WEIGHTS = np.array([pow(2, 17 - i, 11) for i in range(17)], dtype=np.int64)
RIC_CHECK = np.frombuffer(b"10X98765432", dtype=np.uint8)

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28], dtype=np.int64)
_USCC_BYTES = np.frombuffer(USCC_ALPHABET.encode(), dtype=np.uint8)
_USCC_VALUE = np.full(256, -1, dtype=np.int64)
for _i, _c in enumerate(USCC_ALPHABET):
    _USCC_VALUE[ord(_c)] = _i
# GB 11714 organisation codes: 8 characters over 0-9 A-Z (no I O S V Z here, to stay in the USCC alphabet).
ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ORG_BODY = np.frombuffer(b"0123456789ABCDEFGHJKLMNPQRTUWXY", dtype=np.uint8)
_FULL_WIDTH = {str(d): chr(0xFF10 + d) for d in range(10)}


def _strings(matrix: np.ndarray) -> np.ndarray:
    """Rows of an ASCII byte matrix as a numpy unicode array."""
    width = matrix.shape[1]
    return np.ascontiguousarray(matrix).view(f"S{width}").ravel().astype(f"U{width}")


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """An (n, width) byte matrix of the zero-padded decimal digits of non-negative integers."""
    out = np.empty((len(values), width), dtype=np.uint8)
    v = values.astype(np.int64).copy()
    for i in range(width - 1, -1, -1):
        out[:, i] = ord("0") + v % 10
        v //= 10
    return out


def ric_check(body17: np.ndarray) -> np.ndarray:
    """Check characters (as bytes) for an (n, 17) digit byte matrix."""
    digits = body17.astype(np.int64) - ord("0")
    return RIC_CHECK[(digits @ RIC_WEIGHTS) % 11]


def resident_ids(area: np.ndarray, birth_yyyymmdd: np.ndarray, seq: np.ndarray) -> np.ndarray:
    """18-character ID numbers from 6-digit area codes, birth dates as YYYYMMDD ints and sequences."""
    body = np.concatenate([_digits(area, 6), _digits(birth_yyyymmdd, 8), _digits(seq, 3)], axis=1)
    full = np.concatenate([body, ric_check(body)[:, None]], axis=1)
    return _strings(full)


def wrong_ric_check(number: str, generator: np.random.Generator) -> str:
    """The same number with a check character that is still of the right shape but wrong."""
    right = number[17]
    options = [c for c in "0123456789X" if c != right]
    return number[:17] + options[int(generator.integers(len(options)))]


def to_15_digit(number: str) -> str:
    """The first-generation form: 6-digit area + YYMMDD + 3-digit sequence (only for births 1900-1999)."""
    if number[6:8] != "19":
        raise ValueError("15-digit numbers exist only for people born 1900-1999")
    return number[:6] + number[8:17]


def full_width(number: str) -> str:
    """Full-width digits (０-９); a trailing X stays ASCII."""
    return "".join(_FULL_WIDTH.get(c, c) for c in number)


def messy_form(number: str, form: str) -> str:
    """One of the valid-but-untidy forms of an 18-character ID number that departments send."""
    if form == "spaces":
        return f" {number}  "
    if form == "fullwidth":
        return full_width(number)
    if form == "lowercase_x":
        if not number.endswith("X"):
            raise ValueError("lower-case x needs a number whose check character is X")
        return number[:17] + "x"
    if form == "15_digit":
        return to_15_digit(number)
    raise ValueError(f"unknown messy form {form!r}")


def org_code_check(body8: np.ndarray) -> np.ndarray:
    """GB 11714 check characters (as bytes) for an (n, 8) matrix of organisation-code bodies."""
    body = body8.astype(np.int64)
    values = np.where(body <= ord("9"), body - ord("0"), body - ord("A") + 10)
    c9 = 11 - (values @ ORG_WEIGHTS) % 11
    return np.where(c9 == 10, ord("X"), np.where(c9 == 11, ord("0"), ord("0") + c9)).astype(np.uint8)


def org_bodies(serial: np.ndarray, modern: np.ndarray) -> np.ndarray:
    """(n, 8) organisation-code bodies: `MA` + 6 characters since the 2015 reform, 8 digits before."""
    n = len(serial)
    out = np.empty((n, 8), dtype=np.uint8)
    v = serial.astype(np.int64).copy()
    base = len(_ORG_BODY)
    for i in range(7, 1, -1):
        out[:, i] = np.where(modern, _ORG_BODY[v % base], ord("0") + v % 10)
        v = np.where(modern, v // base, v // 10)
    out[:, 0] = np.where(modern, ord("M"), ord("0") + v % 10)
    out[:, 1] = np.where(modern, ord("A"), ord("0") + (v // 10) % 10)
    return out


def usccs(department: np.ndarray, kind: np.ndarray, area: np.ndarray, body8: np.ndarray) -> np.ndarray:
    """Unified social credit codes: registration department + entity kind + area + org code + check.

    `department` and `kind` are byte values (e.g. ord("9"), ord("1") for an enterprise registered by
    the market regulator); `body8` comes from `org_bodies`.
    """
    head = np.stack([department.astype(np.uint8), kind.astype(np.uint8)], axis=1)
    org = np.concatenate([body8, org_code_check(body8)[:, None]], axis=1)
    body = np.concatenate([head, _digits(area, 6), org], axis=1)
    numbers = _USCC_VALUE[body]
    check = _USCC_BYTES[(31 - (numbers @ USCC_WEIGHTS) % 31) % 31]
    return _strings(np.concatenate([body, check[:, None]], axis=1))


def wrong_uscc_check(code: str, generator: np.random.Generator) -> str:
    right = code[17]
    options = [c for c in USCC_ALPHABET if c != right]
    return code[:17] + options[int(generator.integers(len(options)))]
