"""The fast CSV path (Arrow parses the bytes, only non-ASCII columns are transcoded) must read every
file exactly as the path that decodes the whole file first, or hand the file over to it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from ingestion.contract import get_contract
from ingestion.landing import PartFile
from ingestion.readers import _read_csv_exact, _read_csv_fast

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
