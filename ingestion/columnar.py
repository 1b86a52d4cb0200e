"""Byte-level checks over whole string columns, for the shapes that most delivered values have.

Polars' regex and strptime kernels cost 20-200 ms per million values, while most values of a column share
one fixed shape: an 18-character ID, a `YYYY-MM-DD` date, a 12-digit division code. Here such values are
read straight out of the Arrow buffers as a byte matrix (one row per character position) and decided
with a few numpy operations per position. Every function decides only what it can prove from the bytes and
says which values it left undecided; the caller sends those through the general polars expression, so
the result is always the one that expression gives (the tests compare both on messy input).

A polars string column is an Arrow string-view array: 16 bytes per value, of which the first 4 are the
length in bytes and the next 4 the first bytes of the value (all of it, up to 12 bytes, when it is that
short). Length and first byte of a million values are therefore two strided reads, without a copy.

Measured gain in the whole run (`python -m bench.fast_paths --repeat 2`, the bronze stage at scale 10 on 2 cores):
30.9-32.5 s with these checks, 33.4-35.7 s with the plain polars rules of tests/validation_reference.py, so they
save 3-14 % of landing there (bench/RESULTS.md, issue 16); the per-batch ingestion benchmark of issue 2 is where
they were introduced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

import numpy as np
import polars as pl
import pyarrow as pa

# The longest value a string view holds inline (after its 4-byte length).
_INLINE = 12


@dataclass(frozen=True)
class StringViews:
    """Length, first byte and validity of every value of a string column, read off its Arrow views."""

    views: np.ndarray  # (n, 16) uint8
    valid: np.ndarray  # bool, False where null

    @property
    def length(self) -> np.ndarray:
        """Length in bytes (int32, a strided view: no copy). Meaningless where null."""
        return self.views.view(np.int32)[:, 0]

    @property
    def first_byte(self) -> np.ndarray:
        """The first byte of each value (a strided view). Meaningless where null or empty."""
        return self.views[:, 4]


def _string_view_array(values: pl.Series) -> pa.Array:
    array = values.rechunk().to_arrow(compat_level=pl.CompatLevel.newest())
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.type != pa.string_view():
        array = array.cast(pa.string_view())
    return array


def string_views(values: pl.Series) -> StringViews:
    """The views of a polars string column, without copying them."""
    count = values.len()
    if count == 0:
        return StringViews(np.zeros((0, 16), dtype=np.uint8), np.zeros(0, dtype=bool))
    array = _string_view_array(values)
    views = np.frombuffer(array.buffers()[1], dtype=np.uint8).reshape(-1, 16)[array.offset : array.offset + count]
    valid = np.ones(count, dtype=bool) if array.null_count == 0 else values.is_not_null().to_numpy()
    return StringViews(views, valid)


def fixed_width_rows(values: pl.Series, views: StringViews, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The values exactly `width` bytes long: a mask over all values, and their bytes by position.

    The bytes come as a (width, k) matrix, one contiguous row per character position: each check
    reads a position for all values at once, and strided reads of a (k, width) matrix cost several
    times more than the one transposition. Short values are read from the views themselves; longer
    ones from a contiguous binary copy, which Arrow makes in a few milliseconds per million values.
    """
    selected = views.valid & (views.length == width)
    count = int(np.count_nonzero(selected))
    if count == 0:
        return selected, np.zeros((width, 0), dtype=np.uint8)
    subset = values if count == values.len() else values.filter(pl.Series(selected))
    if width <= _INLINE:
        matrix = views.views if subset is values else string_views(subset).views
        return selected, transpose(matrix[:, 4 : 4 + width])
    binary = _string_view_array(subset).cast(pa.large_binary())
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)[binary.offset : binary.offset + count + 1]
    data = np.frombuffer(binary.buffers()[2], dtype=np.uint8)
    return selected, transpose(data[offsets[0] : offsets[0] + count * width].reshape(count, width))


# Rows per block of `transpose`: a block's source and destination stay in the CPU caches.
_TRANSPOSE_BLOCK = 16_384


def transpose(matrix: np.ndarray) -> np.ndarray:
    """`np.ascontiguousarray(matrix.T)` of a (k, width) byte matrix, block by block: numpy's one-shot
    transposition of a tall byte matrix misses the caches on every row and takes about twice as long."""
    count = matrix.shape[0]
    result = np.empty((matrix.shape[1], count), dtype=matrix.dtype)
    for start in range(0, count, _TRANSPOSE_BLOCK):
        result[:, start : start + _TRANSPOSE_BLOCK] = matrix[start : start + _TRANSPOSE_BLOCK].T
    return result


def spread(selected: np.ndarray, subset: np.ndarray, fill: object = False) -> np.ndarray:
    """Values computed for the `selected` rows, put back in place among all rows (`fill` elsewhere)."""
    if len(subset) == len(selected):
        return subset
    result = np.full(len(selected), fill, dtype=subset.dtype)
    result[selected] = subset
    return result


# --- Presence -------------------------------------------------------------------------------------

# A value is present when it has a character outside `\s` (Unicode White_Space) and U+3000. Every such
# white-space character starts with one of these bytes in UTF-8; a value starting with any other byte
# is present at once, the rest go through the regex.
_PRESENT_PATTERN = r"[^\s\u3000]"
_SPACE_LEADS = np.zeros(256, dtype=bool)
_SPACE_LEADS[[0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0xC2, 0xE1, 0xE2, 0xE3]] = True


def present(values: pl.Series) -> np.ndarray:
    """True where a value is not null and not blank (`str.contains(_PRESENT_PATTERN).fill_null(False)`)."""
    if values.dtype != pl.String or values.null_count() == values.len():
        return values.is_not_null().to_numpy()
    views = string_views(values)
    nonempty = views.length > 0
    if not views.valid.all():
        nonempty &= views.valid
    first = np.ascontiguousarray(views.first_byte)
    # Printable ASCII and the lead bytes of most scripts (0x21-0xC1), and of CJK and beyond (0xE4-0xFF).
    sure = ((first - np.uint8(0x21)) <= np.uint8(0xC1 - 0x21)) | (first >= np.uint8(0xE4))
    result = nonempty & sure
    rest = np.flatnonzero(nonempty & ~sure)
    if len(rest):
        maybe_blank = np.take(_SPACE_LEADS, first[rest])
        result[rest[~maybe_blank]] = True
        unsure = rest[maybe_blank]
        if len(unsure):
            checked = values.gather(unsure).str.contains(_PRESENT_PATTERN).fill_null(False)
            result[unsure] = checked.to_numpy()
    return result


# --- Stripping --------------------------------------------------------------------------------------

_STRIP_FIRST = np.zeros(256, dtype=bool)
_STRIP_FIRST[[0x09, 0x0A, 0x0D, 0x20, 0xE3]] = True  # U+3000 is E3 80 80
_STRIP_LAST = np.zeros(256, dtype=bool)
_STRIP_LAST[[0x09, 0x0A, 0x0D, 0x20, 0x80]] = True


def may_need_strip(values: pl.Series) -> bool:
    """False when provably no value starts or ends with a space, tab, CR, LF or U+3000 (so that
    `str.strip_chars(" \\t\\r\\n\\u3000")` would return the column unchanged)."""
    views = string_views(values)
    nonempty = views.valid & (views.length > 0)
    if not nonempty.any():
        return False
    if (nonempty & _STRIP_FIRST[views.first_byte]).any():
        return True
    binary = _string_view_array(values).cast(pa.large_binary())
    offsets = np.frombuffer(binary.buffers()[1], dtype=np.int64)[binary.offset : binary.offset + values.len() + 1]
    data = np.frombuffer(binary.buffers()[2], dtype=np.uint8)
    ends = offsets[1:][nonempty] - 1
    return bool(_STRIP_LAST[data[ends]].any())


# --- Fixed-length patterns ------------------------------------------------------------------------

# The pattern syntax accepted for byte-level matching: anchored at both ends, ASCII letters and digits,
# `-`, groups, alternation, character classes of letters/digits/ranges, and exact repeat counts. In this
# subset Python's `re` and the Rust regex crate (which polars uses) agree on the meaning, and `_parse` below
# reads it (a few lines over the tokens; no regex engine's private parser); anything else (`\d`, `.`, `?`,
# nested classes, class set operations, ...) is left to the regex engine.
_TOKEN = re.compile(r"\[(?:[0-9A-Za-z](?:-[0-9A-Za-z])?)+\]|\{[0-9]+(?:,[0-9]+)?\}|[0-9A-Za-z\-]|[()|]")
_CLASS_ITEM = re.compile(r"([0-9A-Za-z])(?:-([0-9A-Za-z]))?")


@dataclass(frozen=True)
class _Set:
    table: bytes  # 256 entries, 1 where the byte is allowed


@dataclass(frozen=True)
class _Seq:
    items: tuple[_Node, ...]


@dataclass(frozen=True)
class _Alt:
    options: tuple[_Node, ...]


_Node = _Set | _Seq | _Alt


def _width(node: _Node) -> int | None:
    if isinstance(node, _Set):
        return 1
    if isinstance(node, _Seq):
        widths = [_width(i) for i in node.items]
        return None if None in widths else sum(w for w in widths if w is not None)
    widths = {_width(o) for o in node.options}
    return widths.pop() if len(widths) == 1 else None


def _byte_set(token: str) -> _Set | None:
    """A literal character or a `[...]` class as the set of bytes it allows; None for a reversed range."""
    table = bytearray(256)
    if not token.startswith("["):
        table[ord(token)] = 1
        return _Set(bytes(table))
    for low, high in _CLASS_ITEM.findall(token[1:-1]):
        first, last = ord(low), ord(high or low)
        if first > last:
            return None
        table[first : last + 1] = b"\x01" * (last - first + 1)
    return _Set(bytes(table))


class _TokenParser:
    """Recursive descent over the tokens of the subset: alternation of sequences of (atom, exact repeat)."""

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def alternation(self) -> _Node | None:
        options = [self.sequence()]
        while self.peek() == "|":
            self.at += 1
            options.append(self.sequence())
        if any(o is None for o in options):
            return None
        return options[0] if len(options) == 1 else _Alt(tuple(o for o in options if o is not None))

    def sequence(self) -> _Node | None:
        nodes: list[_Node] = []
        while self.peek() not in (None, "|", ")"):
            atom = self.atom()
            if atom is None:
                return None
            repeat = self.peek()
            if repeat is not None and repeat.startswith("{"):
                self.at += 1
                low, _, high = repeat[1:-1].partition(",")
                if high and high != low:
                    return None  # a variable count has no fixed width
                nodes.extend([atom] * int(low))
            else:
                nodes.append(atom)
        return _Seq(tuple(nodes))

    def atom(self) -> _Node | None:
        token = self.peek()
        if token is None or token.startswith("{"):
            return None
        self.at += 1
        if token == "(":
            inner = self.alternation()
            if self.peek() != ")":
                return None
            self.at += 1
            return inner
        return _byte_set(token)


def _parse(body: str) -> _Node | None:
    """The tree of an unanchored pattern body made only of `_TOKEN`s; None outside the subset."""
    tokens = _TOKEN.findall(body)
    if "".join(tokens) != body:
        return None
    depth = 0
    for token in tokens:
        depth += {"(": 1, ")": -1}.get(token, 0)
        if token == "|" and depth == 0:
            return None  # `^a|b$` is `(^a)|(b$)`: the anchors do not hold the whole alternation
    parser = _TokenParser(tokens)
    node = parser.sequence()
    return node if parser.at == len(tokens) else None


@dataclass(frozen=True)
class FixedPattern:
    """An anchored regex that only matches values of one length, as byte tests per position."""

    pattern: str
    width: int
    node: _Node

    def match_columns(self, columns: np.ndarray, tests: dict | None = None) -> np.ndarray:
        """True for each value of a (width, k) byte matrix (see `fixed_width_rows`) that the regex matches.

        `tests` may carry the byte tests of another pattern over the same matrix, to reuse them.
        """
        return _Evaluator(columns, tests).run(self.node, 0)

    def matches(self, values: pl.Series) -> np.ndarray:
        """`values.str.contains(pattern)`, False where null."""
        views = string_views(values)
        selected, columns = fixed_width_rows(values, views, self.width)
        return spread(selected, self.match_columns(columns))


@cache
def compile_fixed_pattern(pattern: str) -> FixedPattern | None:
    """The byte-level form of a regex, or None when it is outside the subset proven equal to the regex."""
    if len(pattern) < 2 or pattern[0] != "^" or pattern[-1] != "$":
        return None
    try:
        re.compile(pattern)  # what the regex engine refuses is not ours to read either
    except re.error:
        return None
    node = _parse(pattern[1:-1])
    if node is None:
        return None
    width = _width(node)
    return None if width is None else FixedPattern(pattern, width, node)


class _Evaluator:
    """Evaluates a pattern tree over a (width, k) byte matrix; a test repeated in alternatives runs once.

    Three shapes are cheaper than one byte test per position: a run of positions that allow the same
    single byte range is one minimum and one maximum over those rows of the matrix; an alternative two
    bytes wide (`(0[1-9]|1[0-2])`) is one lookup of the byte pair in a 65536-entry table; any other
    alternative is the union of its options.
    """

    def __init__(self, columns: np.ndarray, tests: dict | None = None, pairs: bool = True) -> None:
        self.columns = columns
        self.count = columns.shape[1]
        self.tests: dict[tuple, np.ndarray] = {} if tests is None else tests
        self.pairs = pairs  # False while building a pair table itself

    def test(self, position: int, table: bytes) -> np.ndarray:
        key = (position, table)
        if key not in self.tests:
            self.tests[key] = byte_in(self.columns[position], table)
        return self.tests[key]

    def run_of(self, start: int, stop: int, low: int, high: int) -> np.ndarray:
        """True where every byte at positions start..stop-1 lies in low..high."""
        key = ("run", start, stop, low, high)
        if key not in self.tests:
            rows = self.columns[start:stop]
            result = rows.min(axis=0) >= np.uint8(low) if low > 0 else np.ones(self.count, dtype=bool)
            if high < 255:
                result &= rows.max(axis=0) <= np.uint8(high)
            self.tests[key] = result
        return self.tests[key]

    def pair(self, position: int, node: _Node) -> np.ndarray:
        key = ("pair", position, node)
        if key not in self.tests:
            pairs = self.columns[position].astype(np.uint16) << np.uint16(8)
            pairs |= self.columns[position + 1]
            self.tests[key] = np.take(_pair_table(node), pairs)
        return self.tests[key]

    def run(self, node: _Node, offset: int) -> np.ndarray:
        if isinstance(node, _Set):
            return self.test(offset, node.table)
        if isinstance(node, _Seq):
            result = np.ones(self.count, dtype=bool)
            items = _flat(node)
            index = 0
            while index < len(items):
                item = items[index]
                ranges = _ranges(item.table) if isinstance(item, _Set) else ()
                end = index + 1
                while len(ranges) == 1 and end < len(items) and items[end] == item:
                    end += 1
                if end - index >= 2:
                    (low, high), width = ranges[0], end - index
                    result &= self.run_of(offset, offset + width, low, high)
                else:
                    width = _width(item) or 0
                    result &= self.run(item, offset)
                offset += width
                index = end
            return result
        if self.pairs and _width(node) == 2 and self.count >= _PAIR_ROWS:
            return self.pair(offset, node)
        result = np.zeros(self.count, dtype=bool)
        for option in node.options:
            result |= self.run(option, offset)
        return result


# From this many values a two-byte alternative is looked up rather than tested option by option (the
# 65536-entry table costs about what testing 65536 values does).
_PAIR_ROWS = 65_536


@cache
def _flat(node: _Seq) -> tuple[_Node, ...]:
    """The items of a sequence with nested sequences (groups, repeats) spliced in."""
    return tuple(part for item in node.items for part in (_flat(item) if isinstance(item, _Seq) else (item,)))


@cache
def _pair_table(node: _Node) -> np.ndarray:
    """Whether each of the 65536 byte pairs (first byte * 256 + second) matches a two-byte node."""
    every = np.arange(65536, dtype=np.uint16)
    columns = np.stack([(every >> np.uint16(8)).astype(np.uint8), (every & np.uint16(255)).astype(np.uint8)])
    return _Evaluator(columns, pairs=False).run(node, 0)


@cache
def _ranges(table: bytes) -> tuple[tuple[int, int], ...]:
    ranges: list[tuple[int, int]] = []
    for byte in range(256):
        if table[byte]:
            if ranges and ranges[-1][1] == byte - 1:
                ranges[-1] = (ranges[-1][0], byte)
            else:
                ranges.append((byte, byte))
    return tuple(ranges)


def byte_in(column: np.ndarray, table: bytes) -> np.ndarray:
    """True where a byte is allowed by a 256-entry table: one or two comparisons per range, or a lookup."""
    ranges = _ranges(table)
    if len(ranges) > 2:
        return np.take(np.frombuffer(table, dtype=np.uint8).view(bool), column)
    tests = [
        column == low if low == high else (column - np.uint8(low)) <= np.uint8(high - low)  # unsigned wrap-around
        for low, high in ranges
    ]
    if not tests:
        return np.zeros(len(column), dtype=bool)
    return tests[0] if len(tests) == 1 else tests[0] | tests[1]


# --- Dates and timestamps ----------------------------------------------------------------------------


def _civil_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lookup tables: days from 1970-01-01 to 1 January of each year 0-9999 and whether it is a leap
    year (sized for any uint16 index; only 0-9999 are meaningful), and per (leap * 256 + month) the
    days before the month and the length of the month (0 for a month that does not exist)."""
    years = np.arange(65536, dtype=np.int64)
    leap = (years % 4 == 0) & ((years % 100 != 0) | (years % 400 == 0))
    previous = years - 1  # days before 1 January of `year`, counted from 1 January of year 0
    year_start = 365 * years + previous // 4 - previous // 100 + previous // 400 + 1 - 719528
    lengths = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
    month_start = np.zeros(512, dtype=np.int32)
    month_last = np.zeros(512, dtype=np.uint8)
    for is_leap in (0, 1):
        days = lengths + np.array([0, is_leap] + [0] * 10)
        base = is_leap * 256
        month_start[base + 1 : base + 13] = np.concatenate([[0], np.cumsum(days)[:-1]])
        month_last[base + 1 : base + 13] = days
    return year_start.astype(np.int32), leap.astype(np.uint16), month_start, month_last


_YEAR_START, _LEAP, _MONTH_START, _MONTH_LAST = _civil_tables()


def civil_days(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which (year 0-9999, month, day) triples (uint16, uint8, uint8) are real dates of the proleptic
    Gregorian calendar, and their days since 1970-01-01 (int32; meaningless where not real)."""
    key = np.take(_LEAP, year) * np.uint16(256) + month
    ok = (day >= 1) & (day <= np.take(_MONTH_LAST, key))
    days = np.take(_YEAR_START, year) + np.take(_MONTH_START, key) + (day.astype(np.int32) - 1)
    return ok, days


def real_dates(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """The first result of `civil_days` alone (no day count): which triples are real dates."""
    key = np.take(_LEAP, year) << np.uint16(8)
    key |= month
    return (day >= 1) & (day <= np.take(_MONTH_LAST, key))


class _Digits:
    """Digit fields of a (width, k) byte matrix, checked and converted position by position."""

    def __init__(self, columns: np.ndarray) -> None:
        self.columns = columns
        self.ok = np.ones(columns.shape[1], dtype=bool)

    def literal(self, position: int, byte: int) -> None:
        self.ok &= self.columns[position] == byte

    def iso_date(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Year, month and day of the `YYYY-MM-DD` that starts every value."""
        year = self.number(0, 4)
        self.literal(4, ord("-"))
        month = self.number(5, 2)
        self.literal(7, ord("-"))
        return year, month, self.number(8, 2)

    def number(self, start: int, width: int) -> np.ndarray:
        """The digits at start..start+width as uint8 (width 2) or uint16 (width 4); non-digits clear `ok`."""
        dtype = np.uint8 if width <= 2 else np.uint16
        value = np.zeros(self.columns.shape[1], dtype=dtype)
        for position in range(start, start + width):
            digit = self.columns[position] - np.uint8(0x30)
            self.ok &= digit <= 9
            value = value * dtype(10) + digit
        return value


def parse_iso_dates(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values `YYYY-MM-DD` of a (10, k) byte matrix that are real dates, and their days since 1970."""
    digits = _Digits(columns)
    year, month, day = digits.iso_date()
    real, days = civil_days(year, month, day)
    return digits.ok & real, days


def parse_iso_timestamps(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values `YYYY-MM-DDTHH:MM:SS+HH:MM` (or `-HH:MM`) of a (25, k) byte matrix with every field in its
    ordinary range (no leap second), and their UTC instants in microseconds since 1970."""
    digits = _Digits(columns)
    year, month, day = digits.iso_date()
    digits.literal(10, ord("T"))
    hour = digits.number(11, 2)
    digits.literal(13, ord(":"))
    minute = digits.number(14, 2)
    digits.literal(16, ord(":"))
    second = digits.number(17, 2)
    sign_ok = (columns[19] == ord("+")) | (columns[19] == ord("-"))
    offset_hour = digits.number(20, 2)
    digits.literal(22, ord(":"))
    offset_minute = digits.number(23, 2)
    real, days = civil_days(year, month, day)
    ok = digits.ok & sign_ok & real
    ok &= (hour <= 23) & (minute <= 59) & (second <= 59) & (offset_hour <= 23) & (offset_minute <= 59)
    clock = hour.astype(np.int32) * 3600 + minute.astype(np.int32) * 60 + second
    offset = offset_hour.astype(np.int32) * 3600 + offset_minute.astype(np.int32) * 60
    clock -= np.where(columns[19] == ord("-"), -offset, offset)
    return ok, (days.astype(np.int64) * 86400 + clock) * 1_000_000


def typed_series(name: str, values: np.ndarray, valid: np.ndarray, dtype: pl.DataType) -> pl.Series:
    """A polars series of `dtype` from its physical numpy values, null where not `valid`."""
    arrow = pa.array(values, mask=~valid) if not valid.all() else pa.array(values)
    return pl.Series(name, arrow).cast(dtype)
