"""Landing-zone batches into bronze, quarantine and the ledger: the bad-input cases of the issue."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from ingestion.bronze import ingest_batch
from ingestion.contract import get_contract
from ingestion.landing import find_batches
from ingestion.ledger import read_ledger, read_quarantine
from ingestion.pipeline import ingest_contract, ingest_unknown, pending_batches
from ingestion.warehouse import Warehouse
from tests.conftest import person, resident_id
from tests.landing_kit import write_batch

HOUSEHOLDS = "gongan.household_registration"


def land_all(landing: Path, warehouse: Warehouse, **kwargs) -> list:
    return [ingest_batch(b, warehouse, **kwargs) for b in find_batches(landing)]


def ledger_row(warehouse: Warehouse, batch_id: str) -> dict:
    rows = read_ledger(warehouse).filter(pl.col("batch_id") == batch_id).to_dicts()
    assert len(rows) == 1, rows
    return rows[0]


def bronze(warehouse: Warehouse, table: str = "bronze/gongan/household_registration") -> pl.DataFrame:
    if not warehouse.exists(table):
        return pl.DataFrame()
    return pl.from_arrow(warehouse.table(table).to_pyarrow_table())


def test_good_batch_lands_typed_with_lineage(landing, warehouse):
    write_batch(landing, HOUSEHOLDS, "20261101T020000", [person(i) for i in range(20)])
    (outcome,) = land_all(landing, warehouse)
    assert outcome.status == "loaded" and outcome.rows_loaded == 20
    frame = bronze(warehouse)
    assert frame.height == 20
    assert frame.schema["birth_date"] == pl.Date
    assert frame["updated_at"][0].isoformat() == "2026-10-31T18:00:00+00:00"
    assert set(frame["_batch_id"]) == {"20261101T020000"}
    assert set(frame["_source_level"]) == {"city"} and set(frame["_department"]) == {"gongan"}
    assert sorted(frame["_row_number"].to_list()) == list(range(1, 21))
    row = ledger_row(warehouse, "20261101T020000")
    assert row["status"] == "loaded" and row["rows_loaded"] == 20 and row["rows_quarantined"] == 0


def test_gb18030_is_decoded(landing, warehouse):
    write_batch(landing, HOUSEHOLDS, "20261101T020000", [person(1, name="欧阳娜娜")], encoding="gb18030")
    land_all(landing, warehouse)
    assert bronze(warehouse)["name"].to_list() == ["欧阳娜娜"]


def test_messy_id_forms_are_normalised_not_rejected(landing, warehouse):
    full_width = resident_id(2).translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ"))
    old = resident_id(3, year=1950)
    fifteen = old[:6] + old[8:17]
    with_x = next(resident_id(i) for i in range(10, 400) if resident_id(i).endswith("X"))
    rows = [
        person(1, id_number=f"  {resident_id(1)} "),
        person(2, id_number=full_width),
        person(3, id_number=fifteen, birth_date=f"{old[6:10]}-{old[10:12]}-{old[12:14]}"),
        person(4, id_number=with_x.lower()),
    ]
    write_batch(landing, HOUSEHOLDS, "20261101T020000", rows)
    (outcome,) = land_all(landing, warehouse)
    assert outcome.rows_quarantined == 0, read_quarantine(warehouse)["detail"].to_list()
    assert sorted(bronze(warehouse)["id_number"]) == sorted([resident_id(1), resident_id(2), old, with_x])


@pytest.mark.parametrize(
    ("change", "rule", "column"),
    [
        ({"gender": "3"}, "allowed_values", "gender"),
        ({"name": ""}, "required", "name"),
        ({"birth_date": "1990-02-30"}, "type", "birth_date"),
        ({"updated_at": "2026-11-01 02:00"}, "type", "updated_at"),
        ({"division_code": "44060500100"}, "pattern", "division_code"),
        (
            {"id_number": resident_id(7)[:-1] + ("0" if resident_id(7)[-1] != "0" else "1")},
            "check_character",
            "id_number",
        ),
    ],
)
def test_bad_values_go_to_quarantine_with_their_rule(landing, warehouse, change, rule, column):
    rows = [person(i) for i in range(40)] + [person(100, **change)]
    write_batch(landing, HOUSEHOLDS, "20261101T020000", rows)
    (outcome,) = land_all(landing, warehouse)
    assert outcome.status == "loaded" and outcome.rows_loaded == 40 and outcome.rows_quarantined == 1
    q = read_quarantine(warehouse)
    assert q.height == 1
    entry = q.row(0, named=True)
    assert (entry["rule"], entry["column"], entry["row_number"]) == (rule, column, 41)
    assert entry["record_key"] == str(change.get("id_number", resident_id(100)))
    assert json.loads(entry["raw_record"])["name"] == (change.get("name", "居民100") or None)
    assert column in entry["detail"]


def test_range_and_credit_codes(landing, warehouse):
    contract = "shuiwu.enterprise_tax"
    good = "91440605MA4W8XX2XB"
    from stdnum.cn import uscc

    good = good[:17] + uscc.calc_check_digit(good[:17])
    bad_check = good[:17] + ("0" if good[17] != "0" else "1")
    rows = [{"uscc": good, "tax_year": 2000 + i, "revenue_wan_cny": 10, "tax_paid_wan_cny": 1} for i in range(25)]
    rows += [
        {"uscc": good, "tax_year": 1980, "revenue_wan_cny": 10, "tax_paid_wan_cny": 1},
        {"uscc": bad_check, "tax_year": 2020, "revenue_wan_cny": 10, "tax_paid_wan_cny": 1},
    ]
    write_batch(landing, contract, "20260301T000000", rows, mode="incremental")
    land_all(landing, warehouse, reject_share=0.1)
    q = read_quarantine(warehouse).sort("row_number")
    assert q.select("record_key", "rule").rows() == [
        (f"{good}|1980", "range"),
        (f"{bad_check}|2020", "check_character"),
    ]


def test_duplicate_keys_quarantine_every_copy(landing, warehouse):
    rows = [person(i) for i in range(40)] + [person(5, name="另一个")]
    write_batch(landing, HOUSEHOLDS, "20261101T020000", rows)
    (outcome,) = land_all(landing, warehouse)
    assert outcome.rows_quarantined == 2 and outcome.rows_loaded == 39
    q = read_quarantine(warehouse)
    assert set(q["rule"]) == {"duplicate_key"} and set(q["row_number"]) == {6, 41}


def test_too_many_bad_rows_reject_the_whole_batch(landing, warehouse):
    rows = [person(i) for i in range(18)] + [person(50, gender="x"), person(51, status="gone")]
    write_batch(landing, HOUSEHOLDS, "20261101T020000", rows)
    (outcome,) = land_all(landing, warehouse)
    assert outcome.status == "rejected"
    row = ledger_row(warehouse, "20261101T020000")
    assert row["rule"] == "too_many_bad_rows" and row["rows_loaded"] == 0 and "10.0%" in row["reason"]
    assert bronze(warehouse).height == 0
    assert read_quarantine(warehouse).height == 2  # the data officer still sees why


def _damage(directory: Path, **manifest_changes) -> None:
    path = directory / "_manifest.json"
    manifest = json.loads(path.read_text())
    for key, value in manifest_changes.items():
        if key.startswith("file_"):
            manifest["files"][0][key.removeprefix("file_")] = value
        else:
            manifest[key] = value
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "rule"),
    [
        ({"file_rows": 999}, "row_count"),
        ({"file_sha256": "0" * 64}, "sha256"),
        ({"contract_version": "9.9.9"}, "unknown_version"),
        ({"file_name": "part-00009.csv"}, "missing_part"),
        ({"mode": "append"}, "manifest"),
        ({"extracted_at": "yesterday"}, "manifest"),
    ],
)
def test_manifest_mismatch_rejects_the_batch_and_not_the_others(landing, warehouse, damage, rule):
    bad = write_batch(landing, HOUSEHOLDS, "20261101T020000", [person(i) for i in range(5)])
    write_batch(landing, HOUSEHOLDS, "20261102T020000", [person(i) for i in range(5)])
    _damage(bad, **damage)
    outcomes = land_all(landing, warehouse)
    assert [o.status for o in outcomes] == ["rejected", "loaded"]
    row = ledger_row(warehouse, "20261101T020000")
    assert row["rule"] == rule and row["reason"]
    assert set(bronze(warehouse)["_batch_id"]) == {"20261102T020000"}


def test_a_damaged_file_is_reported_as_damaged_even_when_it_no_longer_parses(landing, warehouse):
    """The sha256 is verified alongside the parsing; its verdict wins over the parser's."""
    bad = write_batch(landing, HOUSEHOLDS, "20261101T020000", [person(i) for i in range(5)])
    (bad / "part-00000.csv").write_bytes(b"\x80\x81 not the delivered file \xff\n")
    (outcome,) = land_all(landing, warehouse)
    assert outcome.status == "rejected"
    row = ledger_row(warehouse, "20261101T020000")
    assert row["rule"] == "sha256" and "damaged" in row["reason"]
    assert not warehouse.exists("bronze/gongan/household_registration")


def test_unknown_contract_is_rejected_on_record(landing, warehouse):
    directory = landing / "district" / "nobody" / "secret_list" / "20261101T000000"
    directory.mkdir(parents=True)
    (directory / "part-00000.csv").write_text("a\n1\n")
    (directory / "_manifest.json").write_text(
        json.dumps(
            {
                "contract_id": "nobody.secret_list",
                "contract_version": "1.0.0",
                "batch_id": "20261101T000000",
                "mode": "snapshot",
                "extracted_at": "2026-11-01T00:00:00+08:00",
                "encoding": "utf-8",
                "files": [{"name": "part-00000.csv", "rows": 1, "sha256": "x"}],
            }
        )
    )
    (outcome,) = ingest_unknown(landing, warehouse)
    assert outcome.status == "rejected"
    assert ledger_row(warehouse, "20261101T000000")["rule"] == "unknown_contract"


def test_undecodable_bytes_reject_with_the_line(landing, warehouse):
    header = ",".join(get_contract(HOUSEHOLDS).column_names) + "\n"
    body = header.encode() + b"440605198001010011,\x80\x80\x80,1\n"
    write_batch(landing, HOUSEHOLDS, "20261101T020000", [{}], raw_body=body, encoding="utf-8")
    (outcome,) = land_all(landing, warehouse)
    assert outcome.status == "rejected"
    row = ledger_row(warehouse, "20261101T020000")
    assert row["rule"] == "encoding" and "line 2" in row["reason"]


def test_malformed_csv_line_is_quarantined(landing, warehouse):
    names = get_contract(HOUSEHOLDS).column_names
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names)
    for i in range(30):
        writer.writerow([person(i)[n] or "" for n in names])
    buffer.write("this,line,has,too,few,fields\n")
    write_batch(landing, HOUSEHOLDS, "20261101T020000", [{}] * 31, raw_body=buffer.getvalue().encode("gb18030"))
    (outcome,) = land_all(landing, warehouse)
    assert outcome.status == "loaded" and outcome.rows_loaded == 30 and outcome.rows_quarantined == 1
    entry = read_quarantine(warehouse).row(0, named=True)
    assert entry["rule"] == "malformed_record" and entry["raw_record"].startswith("this,line")
    assert entry["row_number"] == 31


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (
            [c for c in get_contract(HOUSEHOLDS).column_names if c != "name"],
            "required columns missing: ['name']",
        ),
        ([*get_contract(HOUSEHOLDS).column_names, "salary"], "not in contract"),
    ],
)
def test_missing_or_unexpected_column_rejects(landing, warehouse, columns, message):
    write_batch(landing, HOUSEHOLDS, "20261101T020000", [person(1)], columns=columns)
    (outcome,) = land_all(landing, warehouse)
    assert outcome.status == "rejected"
    row = ledger_row(warehouse, "20261101T020000")
    assert row["rule"] == "columns" and message in row["reason"]


def test_optional_column_may_be_left_out(landing, warehouse):
    columns = [c for c in get_contract(HOUSEHOLDS).column_names if c not in ("address", "status_date")]
    write_batch(landing, HOUSEHOLDS, "20261101T020000", [person(1)], columns=columns)
    (outcome,) = land_all(landing, warehouse)
    assert outcome.status == "loaded" and bronze(warehouse)["address"].to_list() == [None]


def test_batch_without_manifest_waits(landing, warehouse):
    write_batch(landing, HOUSEHOLDS, "20261101T020000", [person(1)], write_manifest=False)
    (outcome,) = land_all(landing, warehouse)
    assert outcome.status == "waiting"
    assert read_ledger(warehouse).height == 0
    assert [b.batch_id for b in pending_batches(landing, warehouse)] == ["20261101T020000"]


def test_jsonl_and_parquet_contracts(landing, warehouse):
    write_batch(
        landing,
        "weijian.death_certificates",
        "20261101T030000",
        [
            {"certificate_no": "C1", "id_number": resident_id(1), "name": "甲", "death_date": "2026-10-01"},
            {
                "certificate_no": "C2",
                "name": "乙",
                "gender": "2",
                "birth_date": "1940-01-01",
                "death_date": "2026-10-02",
            },
        ],
        mode="incremental",
    )
    write_batch(
        landing,
        "renshe.social_insurance",
        "20261101T040000",
        [
            {
                "id_number": resident_id(i),
                "name": "丙",
                "period": "2026-10",
                "insurance_type": "pension",
                "contribution_base_cny": 3200.0 + i,
                "is_civil_servant": i == 3,
            }
            for i in range(10)
        ],
        mode="incremental",
    )
    outcomes = land_all(landing, warehouse)
    assert [o.status for o in outcomes] == ["loaded", "loaded"]
    social = bronze(warehouse, "bronze/renshe/social_insurance")
    assert social.schema["is_civil_servant"] == pl.Boolean and social["is_civil_servant"].sum() == 1
    deaths = bronze(warehouse, "bronze/weijian/death_certificates")
    assert deaths.sort("certificate_no")["id_number"].to_list() == [resident_id(1), None]


def test_loading_twice_changes_nothing(landing, warehouse):
    write_batch(landing, HOUSEHOLDS, "20261101T020000", [person(i) for i in range(30)] + [person(99, gender="7")])
    contract = get_contract(HOUSEHOLDS)
    first = ingest_contract(contract, landing, warehouse)
    versions = {
        t: warehouse.table(t).version()
        for t in ("bronze/gongan/household_registration", "quarantine/rows", "ops/batch_ledger")
    }
    second = ingest_contract(contract, landing, warehouse)
    assert [o.status for o in first] == ["loaded"] and second == []
    # Even forcing the same batch through again writes nothing.
    (forced,) = [ingest_batch(b, warehouse) for b in find_batches(landing)]
    assert forced.status == "loaded"
    assert {t: warehouse.table(t).version() for t in versions} == versions
    assert bronze(warehouse).height == 30 and read_ledger(warehouse).height == 1


def test_as_of_holds_back_later_batches(landing, warehouse):
    from datetime import date

    write_batch(landing, HOUSEHOLDS, "20261001T020000", [person(1)])
    write_batch(landing, HOUSEHOLDS, "20261101T020000", [person(2)])
    outcomes = land_all(landing, warehouse, as_of=date(2026, 10, 15))
    assert [o.status for o in outcomes] == ["loaded", "not_due"]
    assert read_ledger(warehouse).height == 1
