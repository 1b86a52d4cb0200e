"""The pseudonym key: created atomically by concurrent processes, and one clear error for a bad key file."""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingestion.pseudonym import Pseudonymiser, PseudonymKeyError, read_key_file


def _create(path: str) -> str:
    try:
        return Pseudonymiser.from_environment(default_key_file=Path(path)).pseudonym("110101199003070011")
    except Exception as error:  # reported back to the test, which fails on any
        return f"failed: {type(error).__name__}: {error}"


def test_concurrent_creators_end_with_one_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("YIWANG_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("YIWANG_PSEUDONYM_KEY_FILE", raising=False)
    context = multiprocessing.get_context("fork")
    with context.Pool(8) as pool:
        for trial in range(30):  # 300 creations, ten racing on each fresh key file
            results = pool.map(_create, [str(tmp_path / f"key-{trial}" / "pseudonym.key")] * 10)
            assert not [r for r in results if r.startswith("failed")], results
            assert len(set(results)) == 1, results
    assert not list(tmp_path.glob("*/.pseudonym.key.*"))  # no temporary file left behind
    assert oct((tmp_path / "key-0" / "pseudonym.key").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"zz-not-hex", "does not hold a hex key"), (b"abcd", "holds 2 bytes, fewer than 16")],
)
def test_a_bad_key_file_is_one_clear_error_naming_it(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "pseudonym.key"
    path.write_bytes(content)
    with pytest.raises(PseudonymKeyError, match=message) as raised:
        read_key_file(path)
    assert str(path) in str(raised.value) and "delete it" in str(raised.value)


def test_an_unreadable_key_file_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "pseudonym.key"
    folder.mkdir()  # a folder where the key should be: cannot be read as a file
    with pytest.raises(PseudonymKeyError, match="cannot be read"):
        read_key_file(folder)


@pytest.mark.parametrize("key", [bytes(range(32)), b"k" * 16, bytes(range(256)) * 2], ids=["32", "16", "512"])
def test_the_sql_pseudonym_is_the_python_one(key: bytes) -> None:
    """Silver hashes text values in DuckDB (`Pseudonymiser.sql`): byte for byte the HMAC of `pseudonym`, for
    keys shorter and longer than SHA-256's block, and for values in every plane, empty and null."""
    import duckdb

    pseudonymiser = Pseudonymiser(key)
    values = ["440605199001011234", "44060519900101123X", "张三", "", "ü€𠀀", "a" * 200, None]
    with duckdb.connect() as connection:
        connection.execute("create table t (position integer, value varchar)")
        connection.executemany("insert into t values (?, ?)", list(enumerate(values)))
        query = f"select {pseudonymiser.sql('value')} from t order by position"
        got = [row[0] for row in connection.execute(query, pseudonymiser.sql_parameters()).fetchall()]
    assert got == [None if v is None else pseudonymiser.pseudonym(v) for v in values]


@settings(max_examples=300, deadline=None)
@given(
    doubles=st.lists(st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True), max_size=50),
    integers=st.lists(st.integers(-(2**63), 2**63 - 1), max_size=50),
)
def test_duckdb_writes_numbers_as_python_does(doubles: list[float], integers: list[int]) -> None:
    """Silver hashes a 64-bit float or integer in DuckDB as the text `silver._python_text` writes, where Python
    hashed `str(value)`: the two texts must be the same."""
    import duckdb
    import pyarrow as pa

    from ingestion.silver import _python_text

    edges = [0.1, -0.0, 1e16, 1e15, 5e-324, 1.7976931348623157e308, 1e-05, 0.0001, 4500.0, -math.nan, -math.inf]
    doubles = [*doubles, *edges]
    table_ = pa.table({"d": pa.array(doubles, pa.float64())})  # noqa: F841 (read by DuckDB by name)
    ints = pa.table({"i": pa.array(integers, pa.int64())})  # noqa: F841
    with duckdb.connect() as connection:
        got = [row[0] for row in connection.sql(f"select {_python_text('d', pa.float64())} from table_").fetchall()]
        assert got == [str(v) for v in doubles]
        got = [row[0] for row in connection.sql(f"select {_python_text('i', pa.int64())} from ints").fetchall()]
        assert got == [str(v) for v in integers]
