"""The byte-level fast paths of validation give exactly what the plain polars expressions give.

`tests/validation_reference.py` is the validation as it was (one regex / strptime expression per rule);
every test here feeds both the same messy input, CSV-typed (all text) and Parquet-typed, and compares
good rows, typed values and dtypes, and every violation (rule, column, detail text) row for row.
"""

from __future__ import annotations

import datetime as dt
import string

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from stdnum.cn import ric, uscc

from ingestion import columnar, validation
from ingestion.contract import CREDIT_CODE_PATTERN, RESIDENT_ID_PATTERN, Column, Contract, get_contract, load_contracts
from ingestion.identifiers import (
    _char_matrix,
    _ric_expected,
    _uscc_expected_columns,
    birth_date_ok_expr,
    check_identifiers,
    credit_code_check_ok,
    normalise_credit_code,
    normalise_resident_id,
    resident_id_check_ok,
)
from ingestion.readers import ROW_NUMBER, SOURCE_FILE, ReadResult
from ingestion.validation import Validated, raw_records, validate
from tests.validation_reference import reference_validate

CHECKS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
HOUSEHOLDS = get_contract("gongan.household_registration")
INSURANCE = get_contract("renshe.social_insurance")
FULL_WIDTH = str.maketrans("0123456789Xx", "０１２３４５６７８９Ｘｘ")
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"


def _read(columns: dict[str, pl.Series]) -> ReadResult:
    frame = pl.DataFrame(columns)
    return ReadResult(
        frame.with_columns(
            pl.int_range(1, frame.height + 1, dtype=pl.Int64).alias(ROW_NUMBER),
            pl.lit("part-00000.csv").alias(SOURCE_FILE),
        ),
        [],
    )


def assert_same(read: ReadResult, contract: Contract) -> Validated:
    """Fast and reference validation agree on everything the pipeline uses, and leave the input alone."""
    before = read.frame.clone()
    fast = validate(read, contract)
    reference = reference_validate(read, contract)
    assert_frame_equal(fast.typed, reference.typed)
    assert_frame_equal(fast.good, reference.good)
    assert_frame_equal(fast.violations.frame, reference.violations.frame)
    assert_frame_equal(fast.raw, reference.raw)
    assert_frame_equal(read.frame, before)
    bad = fast.violations.frame["_idx"].unique().sort().to_list()
    assert raw_records(fast.raw, bad, contract) == raw_records(reference.raw, bad, contract)
    return fast


# --- Value strategies: valid values, the messy forms departments send, and plain garbage ------------

_SPACES = st.sampled_from([" ", "  ", "\t", "\u3000", "\u00a0", "\r\n", "\u2028", "\u0085", "\u200b"])
_GARBAGE = st.one_of(
    st.none(),
    st.sampled_from(["", " ", "\u3000", " \u3000 ", "NA", "null", "-", "０", "é", "\n"]),
    st.text(max_size=12),
    st.text(alphabet="0123456789Xx- :T+", max_size=26),
)


def _birth() -> st.SearchStrategy[str]:
    return st.one_of(
        st.dates(dt.date(1800, 1, 1), dt.date(2099, 12, 31)).map(lambda d: d.strftime("%Y%m%d")),
        st.sampled_from(["19800231", "19000229", "20000229", "20010229", "19801301", "19800100", "17991231"]),
        st.text(alphabet=string.digits, min_size=8, max_size=8),
    )


@st.composite
def resident_ids(draw: st.DrawFn) -> str | None:
    area = draw(st.sampled_from(["440605", "110101", "012345", "999999"]))
    birth = draw(_birth())
    body = area + birth + draw(st.text(alphabet=string.digits, min_size=3, max_size=3))
    check = ric.calc_check_digit(body + "0") if draw(st.booleans()) else draw(st.sampled_from("0123456789Xx"))
    number = body + check
    form = draw(
        st.sampled_from(["plain", "plain", "lower", "full", "spaced", "inner", "fifteen", "cut", "long", "junk"])
    )
    if form == "lower":
        return number.lower()
    if form == "full":
        return number.translate(FULL_WIDTH)
    if form == "spaced":
        return draw(_SPACES) + number + draw(_SPACES)
    if form == "inner":
        return number[:6] + draw(_SPACES) + number[6:14] + draw(_SPACES) + number[14:]
    if form == "fifteen":
        return area + birth[2:] + body[14:]
    if form == "cut":
        return number[: draw(st.integers(0, 17))]
    if form == "long":
        return number + draw(st.sampled_from(["0", "X", "\n", "é"]))
    if form == "junk":
        return draw(_GARBAGE)
    return number


@st.composite
def credit_codes(draw: st.DrawFn) -> str | None:
    body = draw(st.text(alphabet=USCC_ALPHABET, min_size=2, max_size=2))
    body += draw(st.text(alphabet=string.digits, min_size=6, max_size=6))
    body += draw(st.text(alphabet=USCC_ALPHABET + "IOSVZ", min_size=9, max_size=9))
    right = [uscc.calc_check_digit(body)] if all(c in USCC_ALPHABET for c in body) else []
    check = draw(st.sampled_from([*right, *right, *USCC_ALPHABET[:5], "I", "x"]))
    code = body + check
    form = draw(st.sampled_from(["plain", "plain", "lower", "full", "spaced", "cut", "junk"]))
    if form == "lower":
        return code.lower()
    if form == "full":
        return code.translate(FULL_WIDTH)
    if form == "spaced":
        return draw(_SPACES) + code[:9] + draw(_SPACES) + code[9:]
    if form == "cut":
        return code[: draw(st.integers(0, 17))]
    if form == "junk":
        return draw(_GARBAGE)
    return code


def _iso_dates() -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31)).map(lambda d: d.strftime("%Y-%m-%d").zfill(10)),
        st.tuples(st.integers(0, 9999), st.integers(0, 99), st.integers(0, 99)).map(
            lambda t: f"{t[0]:04d}-{t[1]:02d}-{t[2]:02d}"
        ),
        st.sampled_from(["2021-02-29", "2020-1-1", " 2020-01-01", "2020-01-01\u3000", "２０２０-01-01", "20200101"]),
        st.sampled_from(["2020/01/01", "2020-01-01T00:00:00", "2020-01-01 ", "0000-01-01", "-202-01-01"]),
        _GARBAGE,
    )


@st.composite
def iso_timestamps(draw: st.DrawFn) -> str | None:
    moment = draw(st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30)))
    text = moment.strftime("%Y-%m-%dT%H:%M:%S").zfill(19)
    sign = draw(st.sampled_from("+-"))
    offset = f"{sign}{draw(st.integers(0, 25)):02d}:{draw(st.integers(0, 61)):02d}"
    form = draw(st.sampled_from(["plain", "plain", "plain", "z", "fraction", "space", "bad", "pad", "junk"]))
    if form == "z":
        return text + "Z"
    if form == "fraction":
        return text + ".123456" + offset
    if form == "space":
        return text.replace("T", " ") + offset
    if form == "bad":  # a field out of its range: leap second, hour 24, month 13, day 30 of February ...
        position = draw(st.sampled_from([5, 8, 11, 14, 17]))
        value = draw(st.sampled_from(["00", "13", "24", "29", "30", "31", "60", "99"]))
        return text[:position] + value + text[position + 2 :] + offset
    if form == "pad":
        return draw(_SPACES) + text + offset + draw(_SPACES)
    if form == "junk":
        return draw(_GARBAGE)
    return text + offset


def _numbers() -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.floats(allow_nan=True).map(str),
        st.integers(-(10**20), 10**20).map(str),
        st.sampled_from([" 12 ", "1e400", "NaN", "-inf", "-0", "１２", "1,000", "0x10", "+5", "\u30007"]),
        _GARBAGE,
    )


def _booleans() -> st.SearchStrategy[str | None]:
    return st.one_of(st.sampled_from(["true", "TRUE", " t ", "F", "1", "0", "yes", "\u3000false"]), _GARBAGE)


def _choices(values: tuple[str, ...]) -> st.SearchStrategy[str | None]:
    near = [v.upper() for v in values] + [f" {values[0]}", f"{values[0]} ", values[0].translate(FULL_WIDTH)]
    return st.one_of(st.sampled_from(values), st.sampled_from(values), st.sampled_from(near), _GARBAGE)


def _column_strategy(column: Column) -> st.SearchStrategy[str | None]:
    if column.identifier_kind == "resident_id":
        return resident_ids()
    if column.identifier_kind == "credit_code":
        return credit_codes()
    if column.allowed_values is not None:
        return _choices(column.allowed_values)
    if column.pattern:
        return st.one_of(st.from_regex(column.pattern, fullmatch=True), _mutated(column.pattern), _GARBAGE)
    return {
        "date": _iso_dates(),
        "timestamp": iso_timestamps(),
        "number": _numbers(),
        "integer": _numbers(),
        "boolean": _booleans(),
    }.get(column.logical_type, st.one_of(st.text(max_size=8), _GARBAGE))


def _mutated(pattern: str) -> st.SearchStrategy[str]:
    """Values one edit away from matching: a character replaced, added or dropped, a newline appended."""

    @st.composite
    def edit(draw: st.DrawFn) -> str:
        value = draw(st.from_regex(pattern, fullmatch=True))
        where = draw(st.integers(0, len(value)))
        what = draw(st.sampled_from(["0", "9", "A", "-", " ", "\n", "０", "é"]))
        how = draw(st.sampled_from(["replace", "insert", "drop", "newline"]))
        if how == "replace":
            return value[:where] + what + value[where + 1 :]
        if how == "insert":
            return value[:where] + what + value[where:]
        if how == "drop":
            return value[:where] + value[where + 1 :]
        return value + "\n"

    return edit()


@st.composite
def text_columns(draw: st.DrawFn, contract: Contract) -> dict[str, pl.Series]:
    """A CSV-typed delivery: every column text; some columns clean or constant, keys sometimes repeated."""
    rows = draw(st.integers(0, 40))
    columns: dict[str, pl.Series] = {}
    for column in contract.columns:
        values = draw(st.lists(_column_strategy(column), min_size=rows, max_size=rows))
        mode = draw(st.sampled_from(["as drawn", "as drawn", "constant", "no nulls"]))
        if mode == "constant" and values:
            values = [values[0]] * rows
        elif mode == "no nulls":
            values = [v for v in values if v is not None] or values
            values = (values * rows)[:rows]
        columns[column.name] = pl.Series(column.name, values, dtype=pl.String)
    if rows and draw(st.booleans()):  # repeat some rows: duplicate keys
        repeat = draw(st.lists(st.integers(0, rows - 1), min_size=1, max_size=5))
        columns = {n: pl.concat([s, s.gather(repeat)]) for n, s in columns.items()}
    return columns


# --- Whole batches ---------------------------------------------------------------------------------


@CHECKS
@given(columns=text_columns(HOUSEHOLDS))
def test_csv_households_like_the_reference(columns):
    assert_same(_read(columns), HOUSEHOLDS)


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Check every batch on two threads, as batches of 100k rows and more are."""
    monkeypatch.setattr(validation, "_PARALLEL_ROWS", 0)


@CHECKS
@given(columns=text_columns(HOUSEHOLDS))
def test_two_threads_like_the_reference(two_threads, columns):
    assert_same(_read(columns), HOUSEHOLDS)


@CHECKS
@given(columns=text_columns(INSURANCE))
def test_csv_insurance_like_the_reference(columns):
    assert_same(_read(columns), INSURANCE)


@CHECKS
@given(contract=st.sampled_from(sorted(load_contracts())), data=st.data())
def test_every_contract_as_text_like_the_reference(contract, data):
    contract = load_contracts()[contract]
    assert_same(_read(data.draw(text_columns(contract))), contract)


@CHECKS
@given(data=st.data())
def test_parquet_insurance_like_the_reference(data):
    columns = data.draw(text_columns(INSURANCE))
    rows = len(columns["id_number"])
    bases = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
    columns["contribution_base_cny"] = pl.Series(
        data.draw(st.lists(bases, min_size=rows, max_size=rows)), dtype=pl.Float64
    )
    flags = data.draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=rows, max_size=rows))
    columns["is_civil_servant"] = pl.Series(flags, dtype=pl.Boolean)
    assert_same(_read(columns), INSURANCE)


def _synthetic(*columns: Column) -> Contract:
    return Contract(id="test.synthetic", version="1", name="synthetic", purpose="tests", columns=columns)


def _column(name: str, logical_type: str, **options: object) -> Column:
    return Column(
        name=name, logical_type=logical_type, required=bool(options.pop("required", True)), classification="internal",
        description=f"{name} for the test", **options,
    )  # fmt: skip


SYNTHETIC = _synthetic(
    _column("person", "string", pattern=RESIDENT_ID_PATTERN, primary_key_position=1),
    _column("code", "string", pattern=r"^[A-T][0-9]{2,4}$", required=False),  # not fixed-length: the regex
    _column("loose", "string", pattern=r"[0-9]{3}", required=False),  # not anchored: the regex
    _column("kind", "string", allowed_values=("a", "b", "c", "d", "e", "f"), primary_key_position=2),
    _column("count", "integer", minimum=1, maximum=20, required=False),
    _column("amount", "number", minimum=0),
    _column("flag", "boolean", required=False),
    _column("day", "date", required=False),
    _column("moment", "timestamp"),
)


@st.composite
def typed_columns(draw: st.DrawFn) -> dict[str, pl.Series]:
    """A Parquet-typed delivery of the synthetic contract: numbers, dates and timestamps arrive typed."""
    rows = draw(st.integers(0, 30))

    def lists(strategy: st.SearchStrategy) -> list:
        return draw(st.lists(st.one_of(st.none(), strategy), min_size=rows, max_size=rows))

    ids = lists(resident_ids().filter(lambda v: v is None or v.isascii()))
    numeric_ids = draw(st.booleans())
    return {
        "person": (
            pl.Series([int(v) if v and v.isdigit() and int(v) < 2**63 else None for v in ids], dtype=pl.Int64)
            if numeric_ids
            else pl.Series(ids, dtype=pl.String)
        ),
        "code": pl.Series(lists(st.from_regex(r"[A-Z][0-9]{1,5}", fullmatch=True)), dtype=pl.String),
        "loose": pl.Series(lists(st.text(alphabet="0123a", max_size=5)), dtype=pl.String),
        "kind": pl.Series(lists(st.sampled_from("abcdefg")), dtype=pl.String),
        "count": pl.Series(lists(st.integers(-5, 30)), dtype=pl.Int64),
        "amount": pl.Series(lists(st.floats(allow_nan=True)), dtype=pl.Float64),
        "flag": pl.Series(lists(st.booleans()), dtype=pl.Boolean),
        "day": pl.Series(lists(st.dates()), dtype=pl.Date),
        "moment": pl.Series(
            lists(st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2100, 1, 1))),
            dtype=pl.Datetime("us", draw(st.sampled_from([None, "UTC", "Asia/Shanghai"]))),
        ),
    }


@CHECKS
@given(columns=typed_columns())
def test_parquet_typed_columns_like_the_reference(columns):
    assert_same(_read(columns), SYNTHETIC)


@CHECKS
@given(columns=text_columns(SYNTHETIC))
def test_synthetic_contract_as_text_like_the_reference(columns):
    assert_same(_read(columns), SYNTHETIC)


def test_many_distinct_values_checked_against_a_long_allowed_list():
    """More than 64 distinct values: the hash lookup, not the one-distinct-value-at-a-time path."""
    kinds = [str(i) for i in range(200)] + ["a", "b", None, "f"] * 50
    columns = {c.name: pl.Series([None] * len(kinds), dtype=pl.String) for c in SYNTHETIC.columns}
    columns["kind"] = pl.Series(kinds, dtype=pl.String)
    result = assert_same(_read(columns), SYNTHETIC)
    assert (result.violations.frame["rule"] == "allowed_values").sum() == 200


@pytest.mark.parametrize("threads", [1, 2])
def test_large_clean_batch_with_a_few_messy_rows_like_the_reference(threads, monkeypatch):
    """Thousands of canonical rows (the whole-column fast paths) with the messy forms scattered in."""
    if threads == 2:
        monkeypatch.setattr(validation, "_PARALLEL_ROWS", 0)
    rng = np.random.default_rng(7)
    count = 20_000
    births = pl.Series(dt.date(1930, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 32000, count))
    bodies = pl.Series(
        "440605" + births.dt.strftime("%Y%m%d") + pl.Series(rng.integers(0, 1000, count)).cast(pl.String).str.zfill(3)
    )
    checks = _ric_expected(_char_matrix(bodies, 17)).tobytes().decode()
    ids = (bodies + pl.Series(list(checks))).to_list()
    messy = {
        5: f" {ids[5]} ",
        6: ids[6].translate(FULL_WIDTH),
        7: ids[7][:6] + ids[7][8:17],
        8: ids[8][:17] + ("0" if ids[8][17] != "0" else "1"),
        9: ids[9][:6] + "19800231" + ids[9][14:],
        10: None,
        11: "",
        12: "\u3000",
        13: ids[13][:-1] + "x",
        14: ids[100],
    }
    for row, value in messy.items():
        ids[row] = value
    dates = births.dt.strftime("%Y-%m-%d").to_list()
    dates[20:25] = ["2021-02-29", " 1990-01-01", "1990-1-1", None, ""]
    moments = ["2026-11-01T02:00:00+08:00"] * count
    moments[30:33] = ["2026-11-01T02:00:60+08:00", "2026-11-01 02:00:00+08:00", " 2026-11-01T02:00:00Z"]
    columns = {
        "id_number": pl.Series(ids, dtype=pl.String),
        "name": pl.Series(rng.choice(["张伟", "王芳", " ", "\u3000李娜", "Ann"], count), dtype=pl.String),
        "gender": pl.Series(rng.choice(["1", "2", "3", "１"], count, p=[0.5, 0.4998, 0.0001, 0.0001]), dtype=pl.String),
        "birth_date": pl.Series(dates, dtype=pl.String),
        "household_id": pl.Series([f"{i // 3:09d}" for i in range(count)], dtype=pl.String),
        "relation_to_head": pl.Series(
            rng.choice(["head", "spouse", "child", "boss"], count, p=[0.4, 0.3, 0.2999, 0.0001])
        ),
        "address": pl.Series(rng.choice(["南海大道1号", None], count), dtype=pl.String),
        "division_code": pl.Series(
            rng.choice(["440605001001", "040605001001", "4406050010011"], count, p=[0.998, 0.001, 0.001])
        ),
        "status": pl.Series(["normal"] * count, dtype=pl.String),
        "status_date": pl.Series([None] * count, dtype=pl.String),
        "updated_at": pl.Series(moments, dtype=pl.String),
    }
    result = assert_same(_read(columns), HOUSEHOLDS)
    rules = set(result.violations.frame["rule"])
    assert {"pattern", "check_character", "type", "duplicate_key", "required", "allowed_values"} <= rules
    clean = dict(columns, id_number=pl.Series((bodies + pl.Series(list(checks))).to_list()))
    clean.update(
        updated_at=pl.Series(["2026-11-01T02:00:00+08:00", "2026-11-01T03:00:00+08:00"] * (count // 2)),
        birth_date=births.dt.strftime("%Y-%m-%d"),
    )
    assert_same(_read(clean), HOUSEHOLDS)


def test_messy_but_valid_ids_are_normalised_as_before():
    body = "44060519800101001"
    number = body + ric.calc_check_digit(body + "0")
    with_x = next(b + "X" for b in (f"4406051980010100{i}" for i in range(10)) if ric.calc_check_digit(b + "0") == "X")
    values = [f" {number} ", number.translate(FULL_WIDTH), number[:6] + number[8:17], with_x.lower(), "4406 0519"]
    checked = check_identifiers(pl.Series("id", values), "resident_id")
    assert checked.values.to_list() == [number, number, number, with_x, "44060519"]
    assert checked.values.to_list() == normalise_resident_id(pl.Series("id", values)).to_list()
    assert checked.matches.tolist() == [True, True, True, True, False]
    assert not checked.wrong_check.any()


# --- The pieces, exhaustively where the domain is small ---------------------------------------------


def test_resident_id_checks_for_every_birth_date_of_the_pattern():
    """All of 1800-2099 x months 01-12 x days 01-31: the byte check equals the pattern + strptime."""
    births = [f"{y}{m:02d}{d:02d}" for y in range(1800, 2100) for m in range(1, 13) for d in range(1, 32)]
    bodies = pl.Series([f"440605{b}001" for b in births])
    right = bodies + pl.Series(list(_ric_expected(_char_matrix(bodies, 17)).tobytes().decode()))
    wrong = bodies + pl.Series(["0" if c != "0" else "1" for c in right.str.slice(17).to_list()])
    values = pl.concat([right, wrong]).rename("id")
    checked = check_identifiers(values, "resident_id")
    matches = values.str.contains(RESIDENT_ID_PATTERN) & pl.select(birth_date_ok_expr(pl.lit(values))).to_series()
    assert checked.matches.tolist() == matches.to_list()
    assert checked.wrong_check.tolist() == (matches & ~resident_id_check_ok(values).fill_null(True)).to_list()
    assert 0 < int(checked.matches.sum()) < len(values)


@CHECKS
@given(values=st.lists(st.one_of(resident_ids(), st.text(max_size=20)), max_size=60))
def test_resident_ids_like_the_regex_functions(values):
    series = pl.Series("id", values, dtype=pl.String)
    checked = check_identifiers(series, "resident_id")
    normalised = normalise_resident_id(series)
    assert checked.values.to_list() == normalised.to_list()
    matches = normalised.str.contains(RESIDENT_ID_PATTERN).fill_null(False)
    matches &= pl.select(birth_date_ok_expr(pl.lit(normalised))).to_series()
    assert checked.matches.tolist() == matches.to_list()
    wrong = matches & ~resident_id_check_ok(normalised).fill_null(True)
    assert checked.wrong_check.tolist() == wrong.to_list()


@CHECKS
@given(values=st.lists(st.one_of(credit_codes(), st.text(max_size=20)), max_size=60))
def test_credit_codes_like_the_regex_functions(values):
    series = pl.Series("code", values, dtype=pl.String)
    checked = check_identifiers(series, "credit_code")
    normalised = normalise_credit_code(series)
    assert checked.values.to_list() == normalised.to_list()
    matches = normalised.str.contains(CREDIT_CODE_PATTERN).fill_null(False)
    assert checked.matches.tolist() == matches.to_list()
    assert checked.wrong_check.tolist() == (matches & ~credit_code_check_ok(normalised).fill_null(True)).to_list()


def test_check_characters_against_python_stdnum():
    rng = np.random.default_rng(3)
    bodies = ["".join(map(str, rng.integers(0, 10, 17))) for _ in range(2000)]
    expected = _ric_expected(_char_matrix(pl.Series(bodies), 17)).tobytes().decode()
    assert list(expected) == [ric.calc_check_digit(b + "0") for b in bodies]
    codes = ["".join(rng.choice(list(USCC_ALPHABET), 17)) for _ in range(2000)]
    columns = np.ascontiguousarray(_char_matrix(pl.Series(codes), 17).T)
    assert list(_uscc_expected_columns(columns).tobytes().decode()) == [uscc.calc_check_digit(c) for c in codes]


CONTRACT_PATTERNS = sorted({c.pattern for k in load_contracts().values() for c in k.columns if c.pattern})
EXTRA_PATTERNS = [r"^[0-9]{17}[0-9X]$", r"^[0-9A-Z]{18}$", r"^(a|bc|d)e$", r"^$", r"^x{0}y$", r"^-[a-c]-$"]


@pytest.mark.parametrize("large_batch_paths", [False, True])
@pytest.mark.parametrize("pattern", CONTRACT_PATTERNS + EXTRA_PATTERNS)
def test_fixed_patterns_match_like_the_regex(pattern, large_batch_paths, monkeypatch):
    if large_batch_paths:  # byte-pair lookups and a transposition in several blocks, on small inputs
        monkeypatch.setattr(columnar, "_PAIR_ROWS", 0)
        monkeypatch.setattr(columnar, "_TRANSPOSE_BLOCK", 3)
    fixed = columnar.compile_fixed_pattern(pattern)
    if pattern in (r"^[A-T][0-9]{2,4}$", r"^(a|bc|d)e$"):
        assert fixed is None
        return
    assert fixed is not None, pattern

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(values=st.lists(st.one_of(st.from_regex(pattern, fullmatch=True), _mutated(pattern), _GARBAGE), max_size=40))
    def agree(values):
        series = pl.Series("v", values, dtype=pl.String)
        expected = series.str.contains(pattern).fill_null(False).to_list()
        assert fixed.matches(series).tolist() == expected

    agree()


@pytest.mark.parametrize(
    "pattern",
    [
        r"^\d{3}$",  # Unicode digits in Rust
        r"^[^0-9]{3}$",
        r"^a.c$",
        r"^[[:alpha:]]{2}$",
        r"^[a-z&&[^aeiou]]$",
        r"^[a-c--b]$",
        r"^(?i)abc$",
        r"abc",
        r"^abc",
        r"^a|b$",
        r"^a+$",
        r"^é$",
        r"^[A-T][0-9]{2,4}$",
        r"^a\$$",
    ],
)
def test_patterns_outside_the_proven_subset_are_left_to_the_regex(pattern):
    assert columnar.compile_fixed_pattern(pattern) is None


def test_presence_for_every_first_character():
    """Every code point, alone, before a letter and after a space: the same as the regex."""
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for values in (points, [p + "a" for p in points[:70000]], [" " + p for p in points[:70000]]):
        series = pl.Series("v", [*values, None, "", "  "], dtype=pl.String)
        expected = series.str.contains(r"[^\s\u3000]").fill_null(False).to_numpy()
        assert (columnar.present(series) == expected).all()


def test_dates_like_strptime():
    every_day = pl.date_range(dt.date(1, 1, 1), dt.date(9999, 12, 31), "1d", eager=True).dt.strftime("%Y-%m-%d")
    fields = [
        f"{y:04d}-{m:02d}-{d:02d}"
        for y in (0, 4, 100, 1900, 2000, 2023, 2024, 9999)
        for m in range(20)
        for d in range(40)
    ]
    for values in (every_day, pl.Series(fields)):
        column = _column("day", "date")
        expected = reference_validate(_read({"day": values}), _synthetic(column)).typed["day"]
        assert_frame_equal(validate(_read({"day": values}), _synthetic(column)).typed, expected.to_frame())


@CHECKS
@given(values=st.lists(iso_timestamps(), min_size=1, max_size=80))
def test_timestamps_like_to_datetime(values):
    contract = _synthetic(_column("moment", "timestamp"))
    assert_same(_read({"moment": pl.Series(values, dtype=pl.String)}), contract)
