"""The published warehouse Superset reads (thematic_libs/analytics/publish.py): an allow-list that never reads a
restricted area or column, a file swapped in whole (a reader keeps the old one, a failure leaves it as it was),
and, on the file the demo run's own asset wrote, a scan of every table, column and text value for anything
restricted: pseudonyms, cross-check cases, ID and phone numbers, the names of one-person businesses."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import duckdb
import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake
from stdnum.cn import ric

from ingestion.warehouse import Warehouse
from tests.conftest import DemoRun
from thematic_libs.analytics.publish import (
    RESTRICTED_PREFIXES,
    SOURCES,
    TABLES,
    Published,
    PublishError,
    Source,
    check_sources,
    columns,
    publish,
    published_path,
)

ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])[1-9][0-9]{16}[0-9Xx](?![0-9A-Za-z])")
PHONE = re.compile(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])")
GRIDS = "silver/zhengshu/grid_registry"


def is_id_number(text: str) -> bool:
    """Whether `text` holds a resident ID number: 18 characters, a birth date, the right check character (an
    all-digit credit code matches the pattern but not both checks)."""
    for match in ID_NUMBER.finditer(text):
        number = match.group(0).upper()
        try:
            born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
        except ValueError:
            continue
        if 1900 <= born.year <= 2030 and ric.calc_check_digit(number) == number[-1]:
            return True
    return False


def write_grids(warehouse: Warehouse, count: int) -> None:
    """A grid registry of `count` grids in two streets (what the published areas are read from)."""
    rows = [
        {
            "grid_code": f"440605011{i:03d}001",
            "grid_name": f"社区{i}第1网格",
            "community_code": f"440605011{i:03d}",
            "community_name": f"社区{i}",
            "street_code": "440605011" if i % 2 else "440605121",
            "street_name": "桂城街道" if i % 2 else "九江镇",
            "district_code": "440605",
            "district_name": "南海区",
            "grid_worker_id": f"WGY{i:06d}",  # not read: the source declares its columns
        }
        for i in range(count)
    ]
    write_deltalake(warehouse.uri(GRIDS), pl.DataFrame(rows).to_arrow(), mode="overwrite")


def published_tables(path: Path) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as connection:
        names = connection.execute(
            "select table_schema || '.' || table_name from information_schema.tables order by 1"
        ).fetchall()
        return {name: connection.execute(f"select count(*) from {name}").fetchone()[0] for (name,) in names}


# --- the allow-list ----------------------------------------------------------------------------------------------


def test_sources_read_no_restricted_area_or_column():
    check_sources()
    for source in SOURCES:
        assert not source.table.startswith(RESTRICTED_PREFIXES), source.table
        assert not any(c.endswith("_key") or c.startswith("_") for c in source.columns), source.name
    with pytest.raises(PublishError, match="restricted areas are never published"):
        check_sources((Source("flags", "gold/social_assistance/crosscheck_flags", columns("case_id rule_code")),))
    with pytest.raises(PublishError, match="restricted areas are never published"):
        check_sources((Source("raw", "bronze/gongan/household_registration", columns("name")),))
    with pytest.raises(PublishError, match="pseudonyms and lineage are never published"):
        check_sources((Source("members", "silver/minzheng/assistance_members", columns("member_id_number_key")),))


def test_every_published_table_is_in_one_schema_and_described():
    names = [t.qualified for t in TABLES]
    assert len(names) == len(set(names))
    assert {t.schema for t in TABLES} == {
        "dims",
        "dispatch",
        "party",
        "enterprises",
        "emergency",
        "crosscheck",
        "quality",
        "sharing",
    }
    assert all(t.description for t in TABLES)


# --- writing and swapping ----------------------------------------------------------------------------------------


def test_an_empty_warehouse_publishes_every_table_empty(tmp_path: Path):
    warehouse = Warehouse.at(tmp_path / "warehouse")
    (tmp_path / "warehouse").mkdir()
    result = publish(warehouse, published_path(tmp_path / "home"))
    assert result.path == tmp_path / "home" / "analytics" / "yiwang_gold.duckdb"
    assert set(result.tables) == {t.qualified for t in TABLES}
    assert result.tables.pop("dims.departments") > 0  # packaged reference data
    assert set(result.tables.values()) == {0}
    assert GRIDS in result.missing_sources and "gold/dispatch/kpis_monthly" in result.missing_sources
    # every table exists with its columns, so that Superset's datasets resolve before the first build
    with duckdb.connect(str(result.path), read_only=True) as connection:
        columns_of = dict(
            connection.execute(
                "select table_schema || '.' || table_name, list(column_name) from information_schema.columns "
                "group by all"
            ).fetchall()
        )
    assert {"month", "district_name", "street_name", "tickets"} <= set(columns_of["dispatch.ticket_kpis"])
    assert list(tmp_path.joinpath("home", "analytics").iterdir()) == [result.path]


def test_a_reader_keeps_its_file_while_the_next_one_is_swapped_in(tmp_path: Path):
    warehouse = Warehouse.at(tmp_path / "warehouse")
    out = published_path(tmp_path / "home")
    write_grids(warehouse, 4)
    publish(warehouse, out)
    reader = duckdb.connect(str(out), read_only=True, config={"enable_external_access": False})
    try:
        assert reader.execute("select count(*) from dims.areas").fetchone() == (4,)
        write_grids(warehouse, 6)
        result = publish(warehouse, out)  # no lock error: the reader holds the old file, the writer a new one
        assert result.tables["dims.areas"] == 6
        assert reader.execute("select count(*) from dims.areas").fetchone() == (4,)
    finally:
        reader.close()
    assert published_tables(out)["dims.areas"] == 6
    with duckdb.connect(str(out), read_only=True) as connection:
        assert "grid_worker_id" not in [r[0] for r in connection.execute("describe dims.areas").fetchall()]
        assert connection.execute("select distinct grid_label from dims.areas").fetchall() == [("第1网格",)]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary file left behind


def test_a_failed_publish_leaves_the_published_file_as_it_was(tmp_path: Path):
    warehouse = Warehouse.at(tmp_path / "warehouse")
    out = published_path(tmp_path / "home")
    write_grids(warehouse, 3)
    publish(warehouse, out)
    before = out.read_bytes()
    leaking = Published("dims", "leak", "A table that would publish a pseudonym.", "select 'x' as member_key")
    write_grids(warehouse, 5)
    with pytest.raises(PublishError, match=r"restricted column\(s\) would be published: dims\.leak\.member_key"):
        publish(warehouse, out, tables=(*TABLES[:1], leaking))
    assert out.read_bytes() == before
    assert published_tables(out)["dims.areas"] == 3
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]


# --- the demo run's own file ---------------------------------------------------------------------------------------


def restricted_values(warehouse: Path) -> set[str]:
    """Values that must never be published: cross-check case ids and member keys, every pseudonym of silver, and the
    names of one-person businesses and of legal representatives (personal names)."""
    values: set[str] = set()
    for log in sorted(warehouse.glob("gold/social_assistance/*/_delta_log")):
        frame = pl.from_arrow(DeltaTable(str(log.parent)).to_pyarrow_table())
        for name in ("case_id", "member_key"):
            if name in frame.columns:
                values |= {str(v) for v in frame[name].drop_nulls().unique()}
    for log in sorted(warehouse.glob("silver/*/*/_delta_log")):
        table = DeltaTable(str(log.parent))
        keys = [n for n in table.schema().to_arrow().names if n.endswith("_key")]
        if keys:
            frame = pl.from_arrow(table.to_pyarrow_table(columns=keys))
            for name in keys:
                values |= {str(v) for v in frame[name].drop_nulls().unique()}
    registration = pl.from_arrow(
        DeltaTable(str(warehouse / "silver/shichang/enterprise_registration")).to_pyarrow_table()
    )
    one_person = registration.filter(pl.col("entity_type").is_in(["individual_business", "sole_proprietor"]))
    values |= set(one_person["name"].drop_nulls())
    if "legal_rep_name" in registration.columns:
        values |= set(registration["legal_rep_name"].drop_nulls())
    return {v for v in values if len(v) >= 2}


def test_the_id_number_scan_finds_id_numbers_and_not_credit_codes():
    from tests.conftest import resident_id

    assert is_id_number(f"联系人身份证{resident_id(5)}，已核实") and is_id_number(resident_id(7).lower())
    assert not is_id_number("914406055497133668") and not is_id_number("91440605MA6TJDF92F")


@pytest.mark.slow
def test_the_run_published_every_table_and_nothing_restricted(demo_run: DemoRun):
    path = published_path(demo_run.home)
    assert path.exists(), "the platform run's analytics/published_warehouse asset wrote no file"
    counts = published_tables(path)
    assert set(counts) == {t.qualified for t in TABLES}
    for table in ("dispatch.ticket_kpis", "party.grid_coverage", "enterprises.portraits", "crosscheck.summary"):
        assert counts[table] > 0, table
    restricted = restricted_values(demo_run.warehouse)
    assert len(restricted) > 50  # case ids, pseudonyms, names: the scan below has something to find
    leaks: list[str] = []
    with duckdb.connect(str(path), read_only=True) as connection:
        described = connection.execute(
            "select table_schema, table_name, column_name, data_type from information_schema.columns order by all"
        ).fetchall()
        for schema, table, column, kind in described:
            where = f"{schema}.{table}.{column}"
            if column.endswith("_key") or column.startswith("_") or column in ("case_id", "member_id", "id_number"):
                leaks.append(f"{where}: a restricted column")
            if kind != "VARCHAR":
                continue
            values = {v for (v,) in connection.execute(f"select distinct {column} from {schema}.{table}").fetchall()}
            values.discard(None)
            leaks += [f"{where}: {v!r} is restricted" for v in sorted(values & restricted)[:3]]
            leaks += [f"{where}: an ID number in {v!r}" for v in values if is_id_number(v)][:3]
            leaks += [f"{where}: a phone number in {v!r}" for v in values if PHONE.search(v)][:3]
    assert not leaks, leaks
    # the cross-check appears only through its aggregates
    with duckdb.connect(str(path), read_only=True) as connection:
        crosscheck = [
            t
            for (t,) in connection.execute(
                "select table_name from information_schema.tables where table_schema = 'crosscheck'"
            ).fetchall()
        ]
        assert crosscheck == ["summary"]
        summary_flags = connection.execute("select sum(flagged_cases) from crosscheck.summary").fetchone()[0]
    summary = pl.from_arrow(DeltaTable(str(demo_run.warehouse / "gold/reports/crosscheck_summary")).to_pyarrow_table())
    assert summary_flags == summary["flagged_cases"].sum()


@pytest.mark.slow
def test_published_inputs_are_public_or_internal_in_the_catalog(demo_run: DemoRun):
    """Every column a source reads is classified public or internal by the contracts and products.yaml (the
    same classification the sharing catalog and open data follow)."""
    from thematic_libs.sharing.datasets import all_datasets

    datasets = {d.table: d for d in all_datasets(Warehouse.at(demo_run.warehouse)).values()}
    checked = 0
    for source in SOURCES:
        dataset = datasets.get(source.table)
        if dataset is None or source.load is not None:
            continue  # ops tables (the ledger, the scorecard) and computed sources are not datasets
        classes = {c.name: c.classification for c in dataset.columns}
        for column in source.columns:
            assert classes.get(column, "internal") in ("public", "internal"), f"{source.table}.{column}"
            checked += 1
    assert checked > 100
