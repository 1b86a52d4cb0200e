"""`ingestion.delta_append`: polars-written Parquet plus our own statistics, committed through delta-rs.

The reference is always `write_deltalake` on the same data: the log entries (statistics, paths,
partition values) must be the ones it writes, and every reader must see the rows it was given.
"""

from __future__ import annotations

import json
import math
import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestion.delta_append import (
    DeltaAppendError,
    append_frame,
    arrow_schema_of,
    commit_files,
    conform,
    file_stats,
    write_data_files,
)
from ingestion.ledger import append_once
from ingestion.warehouse import Warehouse

SCHEMA = pa.schema(
    [
        pa.field("name", pa.string()),
        pa.field("id_number", pa.string(), nullable=False),
        pa.field("born", pa.date32()),
        pa.field("seen_at", pa.timestamp("us", tz="UTC")),
        pa.field("count", pa.int64()),
        pa.field("income", pa.float64()),
        pa.field("resident", pa.bool_()),
        pa.field("note", pa.string()),
        pa.field("batch", pa.string(), nullable=False),
    ]
)
LONG = "张" * 40 + "x"


def _rows(batch: str = "20261101T020000") -> pa.Table:
    return pa.Table.from_pydict(
        {
            "name": ["张三", None, LONG, "z" * 80, "é" * 40, "一😀" * 20],
            "id_number": ["a", "b", "c", "d", "e", "f"],
            "born": [date(2020, 1, 1), None, date(1969, 12, 31), date(2030, 5, 5), date(1, 1, 1), date(9999, 12, 31)],
            "seen_at": [
                datetime(2020, 1, 1, 1, 2, 3, 456789, tzinfo=UTC),
                None,
                datetime(1960, 1, 1, tzinfo=UTC),
                datetime(2026, 11, 1, 2, 0, 0, 1, tzinfo=UTC),
                datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                datetime(2026, 11, 1, 10, 0, tzinfo=UTC),
            ],
            "count": [1, None, -5, 2**62, -(2**63), 0],
            "income": [1.5, None, float("nan"), 0.0, -2.25, 1e300],
            "resident": [True, None, False, True, True, False],
            "note": [None] * 6,
            "batch": [batch] * 6,
        },
        schema=SCHEMA,
    )


def _adds(root: Path) -> list[dict]:
    """The add actions of a table's log, straight from its JSON commits."""
    adds = []
    for commit in sorted((root / "_delta_log").glob("*.json")):
        for line in commit.read_text().split("\n"):  # not splitlines(): data may hold U+0085 or U+2028
            if not line:
                continue
            action = json.loads(line)
            if "add" in action:
                adds.append(action["add"])
    return adds


def _canonical_stats(add: dict) -> str:
    # Re-dumped sorted so that key order is ignored while -0.0 and 0.0 still differ.
    return json.dumps(json.loads(add["stats"]), sort_keys=True, ensure_ascii=False)


def _stats_by_partition(root: Path, column: str) -> dict:
    return {a["partitionValues"].get(column): _canonical_stats(a) for a in _adds(root)}


def _sorted(table: pa.Table, key: str = "id_number") -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.sort(key)


def _parquet_files(root: Path) -> set[Path]:
    return set(root.rglob("*.parquet"))


def test_round_trip_with_partitions_and_a_second_append(tmp_path):
    uri = str(tmp_path / "t")
    first, second = _rows("20261001T020000"), _rows("20261101T020000")
    assert append_frame(uri, first, SCHEMA, app_id="batch-1", partition_by=["batch"])
    assert append_frame(uri, pl.from_arrow(second), SCHEMA, app_id="batch-2", partition_by=["batch"])

    expected = pl.concat([_sorted(first), _sorted(second)]).sort("batch", "id_number")
    table = DeltaTable(uri)
    assert table.version() == 1
    delta_rows = table.to_pyarrow_table()
    assert delta_rows.schema == SCHEMA  # physical types and nullability exactly the schema's
    assert pl.from_arrow(delta_rows).sort("batch", "id_number").equals(expected)
    assert pl.read_delta(uri).sort("batch", "id_number").equals(expected)
    assert pl.scan_delta(uri).collect().sort("batch", "id_number").equals(expected)

    con = duckdb.connect()
    con.register("t", table.to_pyarrow_dataset())
    from_duckdb = con.sql("SELECT * FROM t ORDER BY batch, id_number").to_arrow_table().cast(SCHEMA)
    assert pl.from_arrow(from_duckdb).equals(expected)
    assert con.execute("SELECT count(*) FROM t WHERE name = ?", ["张三"]).fetchone() == (2,)
    assert sorted(p.parent.name for p in _parquet_files(Path(uri))) == [
        "batch=20261001T020000",
        "batch=20261101T020000",
    ]


def test_statistics_paths_and_add_actions_equal_write_deltalake(tmp_path):
    data = pa.concat_tables([_rows("20261101T020000"), _rows("a b/中文=%")])
    reference, ours = tmp_path / "reference", tmp_path / "ours"
    write_deltalake(str(reference), data, partition_by=["batch"])
    append_frame(str(ours), data, SCHEMA, app_id="x", partition_by=["batch"])

    theirs, mine = _adds(reference), _adds(ours)
    assert len(mine) == len(theirs) == 2
    by_value = {a["partitionValues"]["batch"]: a for a in theirs}
    for add in mine:
        twin = by_value[add["partitionValues"]["batch"]]
        assert _canonical_stats(add) == _canonical_stats(twin)
        assert add["path"].split("/")[0] == twin["path"].split("/")[0]  # same escaped directory, as logged
    on_disk = {p.parent.name for p in _parquet_files(ours)}
    assert on_disk == {p.parent.name for p in _parquet_files(reference)}
    assert "batch=a%20b%2F%E4%B8%AD%E6%96%87%3D%25" in on_disk

    # What a reader of the log sees through delta-rs, file by file.
    def summary(root: Path) -> pl.DataFrame:
        actions = pl.from_arrow(pa.table(DeltaTable(str(root)).get_add_actions(flatten=True)))
        assert isinstance(actions, pl.DataFrame)
        return actions.drop("path", "size_bytes", "modification_time").sort("partition.batch")

    assert summary(ours).equals(summary(reference))
    stats = json.loads(by_value["20261101T020000"]["stats"])
    assert stats["maxValues"]["name"] == "张" * 20 + "弡"  # cut to 64 bytes, last character incremented
    assert stats["minValues"]["seen_at"] == "1960-01-01T00:00:00Z"
    assert "note" not in stats["minValues"] and stats["nullCount"]["note"] == 6


def test_parquet_types_are_the_ones_delta_rs_writes(tmp_path):
    reference, ours = tmp_path / "reference", tmp_path / "ours"
    write_deltalake(str(reference), _rows(), partition_by=["batch"])
    append_frame(str(ours), _rows(), SCHEMA, app_id="x", partition_by=["batch"])

    def columns(root: Path) -> list[tuple]:
        (path,) = _parquet_files(root)
        schema = pq.ParquetFile(path).schema
        return [(c.name, c.physical_type, str(c.logical_type)) for c in (schema.column(i) for i in range(len(schema)))]

    assert columns(ours) == columns(reference)
    seen_at = {name: (physical, logical) for name, physical, logical in columns(ours)}["seen_at"]
    assert seen_at[0] == "INT64" and seen_at[1].startswith("Timestamp(isAdjustedToUTC=true, timeUnit=microseconds")


def test_files_record_the_tables_arrow_types_not_polars_own(tmp_path):
    """Readers that trust the file's `ARROW:schema` (Sail) refuse a `large_string` where the table says `string`."""
    ours, reference = tmp_path / "ours", tmp_path / "reference"
    append_frame(str(ours), pl.from_arrow(_rows()), SCHEMA, app_id="x", partition_by=["batch"])
    write_deltalake(str(reference), _rows(), partition_by=["batch"])
    ((path,), (expected,)) = _parquet_files(ours), _parquet_files(reference)
    assert pq.read_schema(path).types == pq.read_schema(expected).types
    assert pq.read_schema(path).field("name").type == pa.string()


# Values chosen to hit the edges of the statistics format: NaN and infinities, signed zeros, strings
# around the 64-byte cut (ASCII, 2-, 3- and 4-byte characters, U+10FFFF that cannot be incremented),
# timestamps on, before and after the epoch with and without fractional seconds.
_TEXT = st.one_of(
    st.none(),
    st.text(max_size=70),
    st.text(alphabet="a张é😀\U0010ffff\x7f\u07ff\uffff", min_size=15, max_size=70),
)
_FLOAT = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0]))
_INSTANT = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
) | st.integers(-(10**7), 10**7).map(lambda us: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us))
_ROW = st.fixed_dictionaries(
    {
        "name": _TEXT,
        "id_number": st.text(min_size=1, max_size=5),
        "born": st.none() | st.dates(),
        "seen_at": st.none() | _INSTANT,
        "count": st.none() | st.integers(-(2**63), 2**63 - 1),
        "income": _FLOAT,
        "resident": st.none() | st.booleans(),
        "note": st.none() | st.sampled_from(["", "街道", "x" * 65]),
        "batch": st.sampled_from(["b1", "街道 1", "x/y=%"]),
    }
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ROW, min_size=1, max_size=12))
def test_statistics_match_write_deltalake_on_generated_data(rows):
    data = pa.Table.from_pylist(rows, schema=SCHEMA)
    with tempfile.TemporaryDirectory() as scratch:
        reference, ours = Path(scratch, "reference"), Path(scratch, "ours")
        write_deltalake(str(reference), data, partition_by=["batch"])
        append_frame(str(ours), pl.from_arrow(data), SCHEMA, app_id="x", partition_by=["batch"])
        assert _stats_by_partition(ours, "batch") == _stats_by_partition(reference, "batch")
        assert (
            pl.read_delta(str(ours))
            .sort("batch", "id_number")
            .equals(pl.read_delta(str(reference)).sort("batch", "id_number"))
        )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_ROW, min_size=1, max_size=12), st.integers(1, 4))
def test_statistics_from_the_footer_equal_statistics_scanned_from_the_data(rows, row_group_size):
    # Small row groups give groups of only nulls or only NaN, and bounds that must be combined.
    data = pl.from_arrow(pa.Table.from_pylist(rows, schema=SCHEMA))
    assert isinstance(data, pl.DataFrame)
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch, "f.parquet")
        data.write_parquet(path, compression="snappy", statistics=True, row_group_size=row_group_size)
        footer = pq.read_metadata(path)
        assert file_stats(data, data.columns, footer=footer) == file_stats(data, data.columns)


def test_long_strings_and_files_without_statistics_fall_back_to_scanning(tmp_path):
    data = pl.DataFrame({"text": ["a" + "\U0010ffff" * 20, "b" * 70, "c"], "n": [3, None, 1]})
    expected = json.loads(file_stats(data, ["text", "n"]))
    assert expected["maxValues"]["text"] == "c" and expected["minValues"]["text"] == "a" + "\U0010ffff" * 15
    with_statistics, without = tmp_path / "with.parquet", tmp_path / "without.parquet"
    data.write_parquet(with_statistics, statistics=True)
    data.write_parquet(without, statistics=False)
    for path in (with_statistics, without):
        assert json.loads(file_stats(data, ["text", "n"], footer=pq.read_metadata(path))) == expected


def test_data_skipping_on_our_statistics_returns_the_right_rows(tmp_path):
    uri = str(tmp_path / "t")
    for number in range(3):
        batch = f"b{number}"
        frame = pl.DataFrame(
            {
                "name": [f"{batch}-{i}" for i in range(100)],
                "id_number": [f"{number}{i:03d}" for i in range(100)],
                "born": [date(1990 + number, 1, 1) + timedelta(days=i) for i in range(100)],
                "seen_at": [datetime(2026, 1, 1 + number, tzinfo=UTC) + timedelta(milliseconds=i) for i in range(100)],
                "count": list(range(number * 100, number * 100 + 100)),
                "income": [float(i) for i in range(100)],
                "resident": [i % 2 == 0 for i in range(100)],
                "note": [None] * 100,
                "batch": batch,
            }
        )
        append_frame(uri, frame, SCHEMA, app_id=batch)
    assert len(_adds(Path(uri))) == 3
    assert pl.scan_delta(uri).filter(pl.col("count").is_between(150, 160)).collect().height == 11
    assert pl.scan_delta(uri).filter(pl.col("born") >= date(1992, 1, 1)).collect()["batch"].unique().to_list() == ["b2"]
    day = datetime(2026, 1, 2, tzinfo=UTC)
    one_day = [("seen_at", ">=", day), ("seen_at", "<", day + timedelta(days=1))]
    table = DeltaTable(uri).to_pyarrow_table(filters=one_day)
    assert table.num_rows == 100
    assert DeltaTable(uri).to_pyarrow_table(filters=[("name", "=", "b1-7")]).column("count").to_pylist() == [107]


def test_same_app_id_writes_nothing_the_second_time(tmp_path):
    uri = str(tmp_path / "t")
    assert append_frame(uri, _rows(), SCHEMA, app_id="batch-1", partition_by=["batch"]) is True
    files = _parquet_files(Path(uri))
    assert append_frame(uri, _rows(), SCHEMA, app_id="batch-1", partition_by=["batch"]) is False
    assert _parquet_files(Path(uri)) == files
    assert DeltaTable(uri).version() == 0
    assert DeltaTable(uri).to_pyarrow_table().num_rows == 6
    assert DeltaTable(uri).transaction_version("batch-1") == 1


def test_appends_to_a_write_deltalake_table_and_the_other_way_round(tmp_path):
    theirs = str(tmp_path / "theirs")
    write_deltalake(theirs, _rows("b1"), partition_by=["batch"])
    assert append_frame(theirs, _rows("b2"), SCHEMA, app_id="b2", partition_by=["batch"])
    assert pl.read_delta(theirs).group_by("batch").len().sort("batch").rows() == [("b1", 6), ("b2", 6)]

    ours = str(tmp_path / "ours")
    append_frame(ours, _rows("b1"), SCHEMA, app_id="b1", partition_by=["batch"])
    write_deltalake(ours, _rows("b2"), mode="append", partition_by=["batch"])
    assert pl.read_delta(ours).group_by("batch").len().sort("batch").rows() == [("b1", 6), ("b2", 6)]
    assert DeltaTable(ours).schema() == DeltaTable(theirs).schema()
    assert DeltaTable(ours).metadata().partition_columns == ["batch"]


def test_files_written_but_not_committed_stay_invisible(tmp_path):
    uri = str(tmp_path / "t")
    append_frame(uri, _rows("b1"), SCHEMA, app_id="b1", partition_by=["batch"])
    # A process that dies between writing its files and committing them leaves exactly this behind.
    orphans = write_data_files(uri, conform(_rows("b2"), SCHEMA), SCHEMA, partition_by=["batch"])
    assert all((Path(uri) / a.path).exists() for a in orphans)

    assert DeltaTable(uri).to_pyarrow_table().num_rows == 6
    assert pl.scan_delta(uri).collect()["batch"].unique().to_list() == ["b1"]
    con = duckdb.connect()
    con.register("t", DeltaTable(uri).to_pyarrow_dataset())
    assert con.execute("SELECT count(*) FROM t").fetchone() == (6,)

    # The re-run completes the batch once; the orphans stay unreferenced.
    assert append_frame(uri, _rows("b2"), SCHEMA, app_id="b2", partition_by=["batch"])
    assert pl.read_delta(uri).group_by("batch").len().sort("batch").rows() == [("b1", 6), ("b2", 6)]
    referenced = {a["path"] for a in _adds(Path(uri))}
    assert not referenced & {a.path for a in orphans}


def test_commit_files_makes_written_files_visible_in_one_commit(tmp_path):
    uri = str(tmp_path / "t")
    actions = write_data_files(uri, conform(_rows(), SCHEMA), SCHEMA, partition_by=["batch"])
    commit_files(uri, actions, SCHEMA, app_id="manual", partition_by=["batch"])
    assert DeltaTable(uri).version() == 0 and DeltaTable(uri).transaction_version("manual") == 1
    assert DeltaTable(uri).to_pyarrow_table().num_rows == 6


def test_null_in_a_required_column_is_refused_before_anything_is_written(tmp_path):
    uri = tmp_path / "t"
    bad = _rows().set_column(1, "id_number", pa.array(["a", "b", None, "d", None, "f"], pa.string()))
    with pytest.raises(DeltaAppendError, match=r"'id_number'.*2 of 6 rows.*row 2.*nothing was written"):
        append_frame(str(uri), bad, SCHEMA, app_id="bad", partition_by=["batch"])
    assert not uri.exists() or not _parquet_files(uri)
    assert not DeltaTable.is_deltatable(str(uri))

    append_frame(str(uri), _rows("b1"), SCHEMA, app_id="good", partition_by=["batch"])
    files = _parquet_files(uri)
    with pytest.raises(DeltaAppendError, match="id_number"):
        append_frame(str(uri), pl.from_arrow(bad), SCHEMA, app_id="bad", partition_by=["batch"])
    assert _parquet_files(uri) == files
    assert DeltaTable(str(uri)).version() == 0
    assert DeltaTable(str(uri)).transaction_version("bad") is None


def test_a_table_that_forbids_nulls_is_obeyed_even_if_the_schema_allows_them(tmp_path):
    uri = str(tmp_path / "t")
    append_frame(uri, _rows(), SCHEMA, app_id="b1", partition_by=["batch"])
    loose = pa.schema([f.with_nullable(True) for f in SCHEMA])
    bad = _rows("b2").set_column(1, "id_number", pa.array([None] * 6, pa.string()))
    with pytest.raises(DeltaAppendError, match="id_number"):
        append_frame(uri, bad, loose, app_id="b2", partition_by=["batch"])


def test_wrong_columns_schema_or_partitioning_are_refused(tmp_path):
    uri = str(tmp_path / "t")
    with pytest.raises(DeltaAppendError, match=r"missing: \['batch'\]"):
        append_frame(uri, _rows().drop_columns(["batch"]), SCHEMA, app_id="x", partition_by=["batch"])
    with pytest.raises(DeltaAppendError, match=r"not in the schema: \['extra'\]"):
        append_frame(uri, _rows().append_column("extra", pa.array([1] * 6)), SCHEMA, app_id="x")
    append_frame(uri, _rows(), SCHEMA, app_id="b1", partition_by=["batch"])
    with pytest.raises(DeltaAppendError, match="partitioned by"):
        append_frame(uri, _rows(), SCHEMA, app_id="b2", partition_by=["id_number"])
    other = pa.schema([f.with_type(pa.string()) if f.name == "count" else f for f in SCHEMA])
    with pytest.raises(DeltaAppendError, match=r"columns \['count'\]"):
        append_frame(uri, _rows().cast(other), other, app_id="b2", partition_by=["batch"])
    with pytest.raises(pl.exceptions.InvalidOperationError):  # a polars cast that cannot succeed
        append_frame(uri, pl.from_arrow(_rows()).with_columns(count=pl.lit("many")), SCHEMA, app_id="b2")
    assert DeltaTable(uri).version() == 0


def test_several_partitions_and_large_partitions_split_into_files(tmp_path):
    uri = str(tmp_path / "t")
    frame = pl.DataFrame(
        {
            "name": [f"n{i}" for i in range(1000)],
            "id_number": [f"{i:04d}" for i in range(1000)],
            "born": None,
            "seen_at": None,
            "count": list(range(1000)),
            "income": None,
            "resident": None,
            "note": None,
            "batch": ["b1"] * 700 + ["b2"] * 300,
        }
    )
    append_frame(uri, frame, SCHEMA, app_id="x", partition_by=["batch"], max_rows_per_file=250)
    adds = _adds(Path(uri))
    counts = sorted((a["partitionValues"]["batch"], json.loads(a["stats"])["numRecords"]) for a in adds)
    assert counts == [("b1", 232), ("b1", 234), ("b1", 234), ("b2", 150), ("b2", 150)]
    assert len(DeltaTable(uri).history()) == 1  # still one commit
    assert sum(json.loads(a["stats"])["maxValues"]["count"] == 699 for a in adds) == 1
    assert pl.read_delta(uri).sort("id_number").equals(conform(frame, SCHEMA).sort("id_number"))


def test_empty_frame_creates_the_table_and_records_the_transaction(tmp_path):
    uri = str(tmp_path / "t")
    assert append_frame(uri, SCHEMA.empty_table(), SCHEMA, app_id="empty", partition_by=["batch"])
    table = DeltaTable(uri)
    assert table.transaction_version("empty") == 1
    assert table.to_pyarrow_table().num_rows == 0
    assert table.metadata().partition_columns == ["batch"]


def test_other_column_types_go_through_write_deltalake(tmp_path):
    uri = str(tmp_path / "t")
    schema = pa.schema([pa.field("k", pa.int32(), nullable=False), pa.field("v", pa.float32())])
    frame = pl.DataFrame({"k": [1, 2], "v": [0.5, None]})
    assert append_frame(uri, frame, schema, app_id="x")
    assert not append_frame(uri, frame, schema, app_id="x")
    assert DeltaTable(uri).to_pyarrow_table().schema == schema
    with pytest.raises(DeltaAppendError, match="'k'"):
        append_frame(uri, pl.DataFrame({"k": [None], "v": [1.0]}), schema, app_id="y")


def test_ledger_append_once_keeps_its_old_call_form(tmp_path):
    warehouse = Warehouse.at(tmp_path)
    table = "bronze/test/households"
    data = _rows()
    assert append_once(warehouse, table, data, "app-1", partition_by=["batch"])  # Arrow, its own schema
    assert not append_once(warehouse, table, data, "app-1", partition_by=["batch"])
    frame = pl.from_arrow(_rows("b2"))
    assert append_once(warehouse, table, frame, "app-2", schema=SCHEMA)  # polars, the table's schema
    rows = pl.read_delta(warehouse.uri(table))
    assert rows.group_by("batch").len().sort("batch").rows() == [("20261101T020000", 6), ("b2", 6)]
    assert arrow_schema_of(frame).field("name").type == pa.string()
    assert not math.isnan(rows.filter(pl.col("id_number") == "a")["income"][0])


def test_write_deltalake_commit_properties_interoperate_with_ours(tmp_path):
    """A transaction recorded by `write_deltalake` (the object-store path) is honoured here too."""
    uri = str(tmp_path / "t")
    write_deltalake(uri, _rows(), commit_properties=CommitProperties(app_transactions=[Transaction("b1", 1)]))
    assert not append_frame(uri, _rows(), SCHEMA, app_id="b1")
    assert DeltaTable(uri).to_pyarrow_table().num_rows == 6


def test_partition_values_of_every_type_are_written_like_delta_rs(tmp_path):
    schema = pa.schema(
        [
            pa.field("v", pa.int64(), nullable=False),
            pa.field("p_int", pa.int64()),
            pa.field("p_date", pa.date32()),
            pa.field("p_ts", pa.timestamp("us", tz="UTC")),
            pa.field("p_bool", pa.bool_()),
            pa.field("p_str", pa.string()),
        ]
    )
    data = pa.Table.from_pydict(
        {
            "v": [1, 2, 3, 4],
            "p_int": [-2, None, 7, 7],
            "p_date": [date(2026, 11, 1), None, date(1, 1, 1), date(2026, 11, 1)],
            "p_ts": [datetime(2026, 11, 1, 2, 0, 0, 5, tzinfo=UTC), None, datetime(1960, 1, 1, tzinfo=UTC), None],
            "p_bool": [True, None, False, True],
            "p_str": ["街道 1/2", None, "", "a+b&c~!*'()%"],
        },
        schema=schema,
    )
    partitions = ["p_int", "p_date", "p_ts", "p_bool", "p_str"]
    reference, ours = tmp_path / "reference", tmp_path / "ours"
    write_deltalake(str(reference), data, partition_by=partitions)
    append_frame(str(ours), data, schema, app_id="x", partition_by=partitions)

    def layout(root: Path) -> list[tuple]:
        return sorted(
            (a["path"].rsplit("/", 1)[0], json.dumps(a["partitionValues"], sort_keys=True), _canonical_stats(a))
            for a in _adds(root)
        )

    assert layout(ours) == layout(reference)
    assert {p.parent.relative_to(ours) for p in _parquet_files(ours)} == {
        p.parent.relative_to(reference) for p in _parquet_files(reference)
    }
    assert pl.read_delta(str(ours)).sort("v").equals(pl.read_delta(str(reference)).sort("v"))


def test_a_crash_before_the_first_commit_leaves_no_table_and_the_rerun_creates_it(tmp_path):
    uri = str(tmp_path / "t")
    orphans = write_data_files(uri, conform(_rows(), SCHEMA), SCHEMA, partition_by=["batch"])
    assert orphans and not DeltaTable.is_deltatable(uri)
    assert append_frame(uri, _rows(), SCHEMA, app_id="b1", partition_by=["batch"])
    assert DeltaTable(uri).to_pyarrow_table().num_rows == 6
    assert len(_parquet_files(Path(uri))) == 2  # the orphan and the committed file; only one is referenced


def test_checkpoints_carry_our_statistics_and_transactions(tmp_path):
    uri = str(tmp_path / "t")
    write_deltalake(uri, _rows("b0"), partition_by=["batch"], configuration={"delta.checkpointInterval": "2"})
    for number in (1, 2, 3):
        append_frame(uri, _rows(f"b{number}"), SCHEMA, app_id=f"b{number}", partition_by=["batch"])
    assert list((Path(uri) / "_delta_log").glob("*.checkpoint.parquet"))
    table = DeltaTable(uri)
    assert table.transaction_version("b1") == 1
    assert not append_frame(uri, _rows("b1"), SCHEMA, app_id="b1", partition_by=["batch"])
    assert table.to_pyarrow_table(filters=[("count", "=", -5)]).num_rows == 4
    actions = pl.from_arrow(pa.table(table.get_add_actions(flatten=True)))
    assert isinstance(actions, pl.DataFrame)
    assert actions["max.count"].to_list() == [2**62] * 4
    assert actions["min.seen_at"].to_list() == [datetime(1960, 1, 1, tzinfo=UTC)] * 4


def test_compact_merges_many_small_commits_and_keeps_rows_and_transactions(tmp_path):
    """Warehouse.compact: one file, the same rows, every batch's transaction still found after the checkpoint; a
    table under the threshold gets no new version."""
    from ingestion.ledger import (
        LEDGER_SCHEMA,
        LedgerEntry,
        already_written,
        batch_transaction,
        read_ledger,
        write_ledger,
    )
    from ingestion.warehouse import BATCH_LEDGER

    warehouse = Warehouse.at(tmp_path)
    when = datetime(2026, 12, 6, tzinfo=UTC)
    for n in range(20):
        write_ledger(warehouse, LedgerEntry("a.b", f"batch-{n:02d}", "loaded", None, n, 0, when, batch_ordinal=n))
    before = read_ledger(warehouse).sort("batch_id")
    assert not warehouse.compact(BATCH_LEDGER, max_files=32)
    assert warehouse.table(BATCH_LEDGER).version() == 19  # nothing written under the threshold
    assert warehouse.compact(BATCH_LEDGER, max_files=16)
    compacted = warehouse.table(BATCH_LEDGER)
    assert len(compacted.file_uris()) == 1
    assert read_ledger(warehouse).sort("batch_id").equals(before)
    assert read_ledger(warehouse).schema == pl.Schema(pl.from_arrow(LEDGER_SCHEMA.empty_table()).schema)
    for n in range(20):  # a re-run after a crash still finds each batch's commit
        assert already_written(warehouse, BATCH_LEDGER, batch_transaction(BATCH_LEDGER, "a.b", f"batch-{n:02d}"))
    assert not warehouse.compact(BATCH_LEDGER, max_files=16)  # compacted already: no new version
    assert not warehouse.compact("ops/not_there")


def test_a_failed_compaction_is_logged_and_the_landing_stands(tmp_path):
    """compact_ops_tables is upkeep: a conflicting commit (here on the ledger) is a warning, the other tables are
    still compacted, and nothing is raised into the bronze step whose batches have landed."""
    from deltalake.exceptions import CommitFailedError

    from ingestion.ledger import QUARANTINE_SCHEMA, LedgerEntry, write_ledger, write_quarantine
    from ingestion.warehouse import BATCH_LEDGER, COMPACT_AFTER_FILES, QUARANTINE_ROWS
    from orchestration.ingestion_assets import compact_ops_tables

    class Log:
        def __init__(self) -> None:
            self.warnings: list[str] = []

        def warning(self, message: str) -> None:
            self.warnings.append(message)

    class ConflictingLedger(Warehouse):
        def compact(self, table: str, max_files: int = COMPACT_AFTER_FILES) -> bool:
            if table == BATCH_LEDGER:
                raise CommitFailedError("a concurrent transaction deleted the same data")
            return super().compact(table, max_files)

    warehouse = ConflictingLedger(str(tmp_path))
    when = datetime(2026, 12, 6, tzinfo=UTC)
    for n in range(20):
        batch = f"batch-{n:02d}"
        write_ledger(warehouse, LedgerEntry("a.b", batch, "loaded", None, n, 1, when, batch_ordinal=n))
        row = {"contract_id": "a.b", "batch_id": batch, "record_key": str(n), "rule": "not_null", "detail": "-"}
        row |= {
            "raw_record": "{}",
            "column": "name",
            "source_file": "part-0.csv",
            "row_number": 1,
            "quarantined_at": when,
        }
        write_quarantine(warehouse, "a.b", batch, pl.from_arrow(pa.Table.from_pylist([row], schema=QUARANTINE_SCHEMA)))
    log = Log()
    compact_ops_tables(warehouse, log)
    assert len(log.warnings) == 1 and "ops/batch_ledger" in log.warnings[0] and "concurrent" in log.warnings[0]
    assert len(warehouse.table(BATCH_LEDGER).file_uris()) == 20  # untouched, compacted after the next landing
    quarantine = warehouse.table(QUARANTINE_ROWS)
    assert len(quarantine.file_uris()) == 1 and quarantine.to_pyarrow_table().num_rows == 20  # the loop went on
