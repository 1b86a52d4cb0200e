"""The fast CSV path (Arrow parses the bytes, only non-ASCII columns are transcoded) must read every
file exactly as the path that decodes the whole file first, or hand the file over to it."""

from __future__ import annotations

import csv
import hashlib
import io
import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from ingestion.contract import get_contract
from ingestion.landing import BatchRejected, PartFile
from ingestion.readers import (
    _dictionary_only_strings,
    _read_csv_exact,
    _read_csv_fast,
    _scan,
    _to_polars,
    _views_of_dictionaries,
)

CONTRACT = get_contract("gongan.household_registration")
HEADER = ",".join(CONTRACT.column_names)
ROW = "110101199003071234,{name},1,1990-03-07,000000001,head,{address},440605001001,normal,,2026-11-01T02:00:00+08:00"


def _part(tmp_path: Path, body: bytes) -> PartFile:
    path = tmp_path / "part-00000.csv"
    path.write_bytes(body)
    return PartFile(path.name, path, body.count(b"\n"), hashlib.sha256(body).hexdigest(), "csv")


def _both(tmp_path: Path, text: str, encoding: str, prefix: bytes = b""):
    part = _part(tmp_path, prefix + text.encode(encoding))
    return _read_csv_fast(part, CONTRACT, encoding), _read_csv_exact(part, CONTRACT, encoding)


@pytest.mark.parametrize("encoding", ["gb18030", "gbk", "utf-8"])
def test_fast_path_reads_like_the_exact_path(tmp_path: Path, encoding: str) -> None:
    names = ["张伟", "欧阳明", "Zhang Wei", "李·娜", "王芳"]
    addresses = ['"桂城街道, 南海大道1号"', "", '"大沥镇\n广佛路8号"', '"说""是"""', "Ａ座１０１"]
    if encoding == "gb18030":
        names.append("𠮷野家")  # four-byte GB 18030 sequence
        addresses.append("€ 与 ✓")
    rows = [ROW.format(name=n, address=a) for n, a in zip(names, addresses * 2, strict=False)]
    fast, exact = _both(tmp_path, "\n".join([HEADER, *rows]) + "\n", encoding)
    assert fast is not None, "the fast path gave up on a clean file"
    assert_frame_equal(fast.frame, exact.frame)
    assert fast.frame["name"].to_list() == names
    assert fast.frame["address"][0] == "桂城街道, 南海大道1号"
    assert fast.frame["address"][1] is None


def test_fast_path_strips_a_gb18030_byte_order_mark(tmp_path: Path) -> None:
    text = "\n".join([HEADER, ROW.format(name="张伟", address="南海")]) + "\n"
    fast, exact = _both(tmp_path, text, "gb18030", prefix="\ufeff".encode("gb18030"))
    assert fast is not None
    assert_frame_equal(fast.frame, exact.frame)
    assert fast.frame.columns[0] == "id_number"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (HEADER + "\n" + ROW.format(name="张伟", address="南海") + ",extra\n", "a malformed line"),
        ("id_number,nickname\n1,2\n", "a header that breaks the contract"),
        (HEADER + "\n" + ROW.format(name="张\x00伟", address="南海") + "\n", "a NUL byte"),
    ],
)
def test_fast_path_hands_unusual_files_to_the_exact_path(tmp_path: Path, body: str, why: str) -> None:
    fast = _read_csv_fast(_part(tmp_path, body.encode("gb18030")), CONTRACT, "gb18030")
    assert fast is None, f"{why} must be read by the exact path, which reports it"


def test_fast_path_hands_undecodable_bytes_to_the_exact_path(tmp_path: Path) -> None:
    body = (HEADER + "\n" + ROW.format(name="张伟", address="南海") + "\n").encode("gb18030")
    body = body.replace("张".encode("gb18030"), b"\x81\x20")  # a lead byte without a valid trail byte
    part = _part(tmp_path, body)
    assert _read_csv_fast(part, CONTRACT, "gb18030") is None
    with pytest.raises(Exception, match="not valid gb18030"):
        _read_csv_exact(part, CONTRACT, "gb18030")


# Names with every kind of character the GB 18030 transcoder tells apart: two-byte sequences with a low
# trail byte (玥 AB68, 赟 DA53, 昇 954E), two-byte sequences of two UTF-8 bytes (· ×), four-byte sequences.
NAMES = ["王玥", "赵赟", "李昇", "买买提·艾力", "张×", "𠮷野家", "Zhang Wei", "欧阳珺"]


@pytest.mark.parametrize("encoding", ["gb18030", "utf-8"])
@pytest.mark.parametrize("names", [NAMES[:6], NAMES], ids=["two-byte", "with-four-byte"])
def test_unquoted_files_read_like_the_exact_path(tmp_path: Path, encoding: str, names: list[str]) -> None:
    """No quote in the file: Arrow is told no value holds a line break."""
    rows = [ROW.format(name=n, address=f"桂城街道{i}号") for i, n in enumerate(names * 50)]
    fast, exact = _both(tmp_path, "\n".join([HEADER, *rows]) + "\n", encoding)
    assert fast is not None
    assert_frame_equal(fast.frame, exact.frame)
    assert fast.frame["name"].to_list() == names * 50
    assert all(fast.frame[c].n_chunks() == 1 for c in fast.frame.columns)


def test_a_quote_after_the_first_piece_still_allows_line_breaks_in_values(tmp_path: Path) -> None:
    """The scan for quotes covers the whole file, not only its first piece: Arrow splits a large file into
    blocks at line breaks, and must be told when some of them are inside values."""
    plain = [ROW.format(name="张伟", address="南海大道1号") for _ in range(45_000)]  # about 5 MB
    broken = [ROW.format(name="李娜", address=f'"大沥镇\n广佛路{i}号"') for i in range(25_000)]  # about 3 MB
    text = "\n".join([HEADER, *plain, *broken]) + "\n"
    assert text.encode("gb18030").find(b'"') > 4 << 20  # beyond the scan's first piece
    fast, exact = _both(tmp_path, text, "gb18030")
    assert fast is not None
    assert fast.frame.height == 70_000
    assert fast.frame["address"][-1] == "大沥镇\n广佛路24999号"
    assert_frame_equal(fast.frame, exact.frame)


def test_the_scan_reads_the_file_in_pieces(tmp_path: Path) -> None:
    body = '\ufeffid_number,name\n1,张伟\n2,"李\n娜"\n'.encode()
    head = len("\ufeffid_number,name".encode())
    for piece in range(1, len(body) + 2):  # every cut, UTF-8 sequences split at each of their bytes
        expected = (3, "id_number,name", True) if piece >= head else None  # a header longer than a piece
        assert _scan(_part(tmp_path, body), "utf-8", piece=piece) == expected, piece
    body = "id,name\n1,张伟\n".encode()
    assert _scan(_part(tmp_path, body + b"\xed\xa0\x80\n"), "utf-8", piece=8) is None  # a surrogate: Arrow
    assert _scan(_part(tmp_path, body + b"x" * 40 + b"\x00"), "utf-8", piece=8) is None  # lets it through
    assert _scan(_part(tmp_path, body + b"x" * 40 + b'"'), "utf-8", piece=8) == (0, "id,name", True)
    assert _scan(_part(tmp_path, b"id,name"), "gb18030", piece=8) == (0, "id,name", False)
    assert _scan(_part(tmp_path, b""), "gb18030", piece=8) == (0, "", False)


_FIELD = st.text(
    st.one_of(st.sampled_from(list(',"\n\r ab1张伟玥赟昇·×€𠮷✓')), st.characters(exclude_categories=("Cs",))),
    max_size=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    encoding=st.sampled_from(["gb18030", "utf-8", "gbk"]),
    rows=st.lists(st.tuples(_FIELD, _FIELD), max_size=12),
    terminator=st.sampled_from(["\n", "\r\n"]),
)
def test_random_rows_read_like_the_exact_path(encoding: str, rows: list[tuple[str, str]], terminator: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=terminator)
    writer.writerow(CONTRACT.column_names)
    for name, address in rows:
        fields = ROW.split(",")
        fields[1], fields[6] = name, address
        writer.writerow(fields)
    text = buffer.getvalue()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            body = text.encode(encoding)
        except UnicodeEncodeError:
            return
        part = _part(Path(tmp), body)
        fast = _read_csv_fast(part, CONTRACT, encoding)
        try:
            exact = _read_csv_exact(part, CONTRACT, encoding)
        except BatchRejected:
            assert fast is None, "the fast path read a file the exact path rejects"
            return
        if fast is None:
            assert "\x00" in text or exact.malformed, "the fast path gave up on a clean file"
            return
        assert_frame_equal(fast.frame, exact.frame)
        assert not exact.malformed


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(encoding=st.sampled_from(["gb18030", "utf-8"]), body=st.binary(max_size=300))
def test_random_bytes_never_read_differently(encoding: str, body: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        part = _part(Path(tmp), HEADER.encode() + b"\n" + body)
        fast = _read_csv_fast(part, CONTRACT, encoding)
        try:
            exact = _read_csv_exact(part, CONTRACT, encoding)
        except BatchRejected:
            assert fast is None
            return
        if fast is not None:
            assert_frame_equal(fast.frame, exact.frame)
            assert not exact.malformed


def test_arrow_strings_reach_polars_unchanged() -> None:
    """`_to_polars` (Parquet's conversion) against polars' own, for every layout Arrow reads strings in."""
    values = ["张伟", None, "", "a" * 20, "·"]
    table = pa.table(
        {
            "string": pa.array(values, pa.string()),
            "large": pa.array(values, pa.large_string()),
            "sliced": pa.array(["x", *values], pa.large_string()).slice(1),
            "chunked": pa.chunked_array(
                [pa.array(values[:2], pa.large_string()), pa.array(values[2:], pa.large_string())]
            ),
            "number": pa.array([1, None, 3, 4, 5]),
            "dictionary": pa.array(values).dictionary_encode(),
        }
    )
    frame = _to_polars(table)
    expected = pl.from_arrow(table)
    assert isinstance(expected, pl.DataFrame)
    assert_frame_equal(frame, expected)
    assert frame["large"].to_list() == values


@pytest.mark.parametrize("dictionary", [True, False])
def test_parquet_string_columns_read_as_dictionaries_read_like_plain_ones(tmp_path: Path, dictionary: bool) -> None:
    """A Parquet file whose low-cardinality string columns are read as dictionaries (`_dictionary_only_strings`)
    gives the frame Arrow's plain read gives: nulls, empty strings, long values, several row groups, and a
    column that falls back to plain pages (many distinct values) among them."""
    count = 5000
    names = ["张伟", None, "", "欧阳明" * 5, "Zhang Wei"]
    table = pa.table(
        {
            "name": pa.array([names[i % 5] for i in range(count)], pa.large_string()),
            "unique": pa.array([f"{i:018d}" for i in range(count)], pa.large_string()),
            "empty": pa.array([None] * count, pa.large_string()),
            "number": pa.array(range(count)),
        }
    )
    path = tmp_path / "part.parquet"
    pq.write_table(table, path, row_group_size=1500, use_dictionary=dictionary, dictionary_pagesize_limit=4096)
    chosen = _dictionary_only_strings(path)
    assert ("name" in chosen) == dictionary and "unique" not in chosen
    read = _to_polars(_views_of_dictionaries(pq.ParquetFile(path, read_dictionary=chosen).read()))
    assert_frame_equal(read, _to_polars(pq.read_table(path)))
    assert read["name"].to_list()[:5] == names
    assert read["name"].dtype == pl.String
