"""A large batch landed part by part ends exactly as the same batch landed whole.

`ingestion.bronze` lands a batch of more than PART_BY_PART_ROWS rows in more than one part one part at a time
(memory for one part) and commits it once; these tests lower the threshold so that small hand-written batches
take that path, land the same landing zone both ways and compare every table it writes, row by row.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

import ingestion.bronze as bronze
import ingestion.readers as readers
from ingestion.contract import Contract, get_contract
from ingestion.landing import PartFile
from ingestion.pipeline import ingest_contract
from ingestion.warehouse import Warehouse
from quality.runner import QualityRecorder
from tests.conftest import person, resident_id
from tests.landing_kit import write_batch
from tests.test_crash_safety import KILLER, REPO

HOUSEHOLDS = get_contract("gongan.household_registration")  # CSV: parsed once, kept in Arrow IPC between passes
INSURANCE = get_contract("renshe.social_insurance")  # Parquet: the first pass reads the key columns alone


def _land(
    landing: Path,
    root: Path,
    by_part: bool,
    monkeypatch: pytest.MonkeyPatch,
    contract: Contract = HOUSEHOLDS,
    limit: int = 10,
) -> tuple[Warehouse, list]:
    monkeypatch.setattr(bronze, "PART_BY_PART_ROWS", limit if by_part else 10**9)
    warehouse = Warehouse.at(root)
    outcomes = ingest_contract(contract, landing, warehouse, on_validated=QualityRecorder(warehouse))
    return warehouse, [(o.batch_id, o.status, o.reason, o.rows_loaded, o.rows_quarantined) for o in outcomes]


def _table(warehouse: Warehouse, table: str, drop: list[str], ordered: bool) -> list[tuple]:
    if not warehouse.exists(table):
        return []
    frame = pl.from_arrow(warehouse.table(table).to_pyarrow_table()).drop(drop)
    return frame.rows() if ordered else sorted(frame.rows(), key=str)


def _state(warehouse: Warehouse, contract: Contract = HOUSEHOLDS) -> dict[str, list[tuple]]:
    return {
        "bronze": _table(warehouse, bronze.bronze_table(contract), ["_ingested_at"], ordered=False),
        # one commit per batch, in the order the whole batch would have had
        "quarantine": _table(warehouse, "quarantine/rows", ["quarantined_at"], ordered=True),
        "ledger": _table(warehouse, "ops/batch_ledger", ["processed_at"], ordered=True),
        "quality": _table(warehouse, "ops/quality_results", ["run_at"], ordered=True),
    }


def _append_malformed(directory: Path, part: str) -> None:
    """A line with too many fields at the end of a CSV part, counted in its manifest entry."""
    path = directory / part
    with path.open("ab") as file:
        file.write(b"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p\n")
    manifest = json.loads((directory / "_manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["name"] == part:
            entry["rows"] += 1
            entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (directory / "_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False))


def _files(warehouse: Warehouse, contract: Contract = HOUSEHOLDS) -> int:
    table = bronze.bronze_table(contract)
    return len(warehouse.table(table).file_uris()) if warehouse.exists(table) else 0


def _both_ways(
    landing: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, contract: Contract = HOUSEHOLDS, limit: int = 10
) -> tuple[int, int]:
    """Land `landing` whole and part by part (PART_BY_PART_ROWS = `limit`); assert equal outcomes and tables;
    return both file counts."""
    whole, whole_outcomes = _land(landing, tmp_path / "whole", False, monkeypatch, contract)
    parted, parted_outcomes = _land(landing, tmp_path / "parted", True, monkeypatch, contract, limit)
    assert parted_outcomes == whole_outcomes
    whole_state, parted_state = _state(whole, contract), _state(parted, contract)
    for table in whole_state:
        assert parted_state[table] == whole_state[table], table
    on_disk = Path(parted.uri(bronze.bronze_table(contract))).rglob("*.parquet")
    assert len(list(on_disk)) == _files(parted, contract)  # a batch landed whole after all leaves no files behind
    return _files(whole, contract), _files(parted, contract)


def test_bad_rows_in_several_parts_land_as_in_a_whole_batch(landing, tmp_path, monkeypatch):
    rows = [person(i) for i in range(240)]
    rows[4] = person(4, gender="x")  # allowed values, part 1
    rows[5] = person(5, birth_date="2026-13-01")  # type, part 2
    rows[9] = person(9, division_code=None)  # required, part 0
    rows[13] = person(13, status="unknown-status")  # part 1
    rows[15] = person(12)  # the key of row 12, in the same part (0): a duplicate within a part
    first = write_batch(landing, HOUSEHOLDS.id, "20261001T020000", rows, mode="incremental", parts=3)
    _append_malformed(first, "part-00000.csv")  # quarantined after every broken rule of the batch
    _append_malformed(first, "part-00001.csv")
    write_batch(landing, HOUSEHOLDS.id, "20261101T020000", rows[30:], mode="snapshot", parts=2)
    # parts of 80-105 records under a limit of 110: each part is one piece, read by the exact CSV reader
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch, limit=110)
    assert (whole_files, parted_files) == (2, 5)  # one file per batch, against one per part: it took the path


def test_a_key_in_two_parts_lands_as_in_a_whole_batch(landing, tmp_path, monkeypatch):
    rows = [person(i) for i in range(120)]
    rows[2] = person(0)  # row 0 is in part 0, row 2 in part 2
    write_batch(landing, HOUSEHOLDS.id, "20261001T020000", rows, mode="incremental", parts=3)
    rows[31] = person(30, name="居民三十")  # rows 30 and 31 are in parts 0 and 1: the same key, other names
    write_batch(landing, HOUSEHOLDS.id, "20261101T020000", rows, mode="incremental", parts=3)
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch, limit=50)
    assert (whole_files, parted_files) == (2, 6)


def _insured(i: int, **changes: object) -> dict:
    row = {
        "id_number": resident_id(i),
        "name": f"参保人{i}",
        "employer_uscc": None,
        "employer_name": None,
        "period": "2026-10",
        "insurance_type": ("pension", "medical", "unemployment", "injury")[i % 4],
        "contribution_base_cny": 4000.0 + i,
        "is_civil_servant": i % 9 == 0,
    }
    row.update(changes)
    return row


def test_a_parquet_batch_read_for_its_keys_first_lands_as_in_a_whole_batch(landing, tmp_path, monkeypatch):
    rows = [_insured(i) for i in range(240)]
    rows[1] = _insured(0, name="另一人")  # the key of row 0 (part 0) in part 1
    rows[7] = _insured(7, insurance_type="pension-old")  # allowed values
    rows[8] = _insured(8, contribution_base_cny=-1.0)  # range
    rows[9] = _insured(6)  # the key of row 6 in the same part (0)
    write_batch(landing, INSURANCE.id, "20261012T030000", rows, mode="incremental", parts=3)
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch, INSURANCE)
    assert (whole_files, parted_files) == (1, 3)


def test_one_large_parquet_part_lands_a_run_of_row_groups_at_a_time(landing, tmp_path, monkeypatch):
    rows = [_insured(i) for i in range(200)]  # one part, row groups of 32 rows: seven pieces above 10 rows
    rows[3] = _insured(3, insurance_type="pension-old")  # row group 0
    rows[50] = _insured(50, contribution_base_cny=-1.0)  # row group 1
    rows[100] = _insured(1, name="另一人")  # the key of row 1 (row group 0) in row group 3
    rows[199] = _insured(198)  # the key of row 198 in the same row group (6)
    write_batch(landing, INSURANCE.id, "20261012T030000", rows, mode="incremental", row_group_size=32)
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch, INSURANCE)
    assert (whole_files, parted_files) == (1, 7)
    quarantine = pl.from_arrow(Warehouse.at(tmp_path / "parted").table("quarantine/rows").to_pyarrow_table())
    assert sorted(quarantine["row_number"]) == [2, 4, 51, 101, 199, 200]  # numbered as in the whole file


def test_a_parquet_part_whose_footer_disagrees_with_the_manifest_is_rejected_as_in_a_whole_batch(
    landing, tmp_path, monkeypatch
):
    directory = write_batch(
        landing, INSURANCE.id, "20261012T030000", [_insured(i) for i in range(40)], row_group_size=8
    )
    manifest = json.loads((directory / "_manifest.json").read_text())
    manifest["files"][0]["rows"] = 41
    (directory / "_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False))
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch, INSURANCE)
    assert whole_files == parted_files == 0


def test_too_many_bad_rows_are_rejected_as_in_a_whole_batch(landing, tmp_path, monkeypatch):
    rows = [person(i, gender="x") if i % 7 == 0 else person(i) for i in range(60)]
    write_batch(landing, HOUSEHOLDS.id, "20261001T020000", rows, mode="incremental", parts=3)
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch)
    assert whole_files == parted_files == 0


def test_a_shrinking_snapshot_is_held_as_in_a_whole_batch(landing, tmp_path, monkeypatch):
    rows = [person(i) for i in range(60)]
    write_batch(landing, HOUSEHOLDS.id, "20261001T020000", rows, parts=3)
    write_batch(landing, HOUSEHOLDS.id, "20261101T020000", rows[:20], parts=2)
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch, limit=25)
    assert (whole_files, parted_files) == (1, 3)


def test_a_damaged_part_is_rejected_as_in_a_whole_batch(landing, tmp_path, monkeypatch):
    rows = [person(i) for i in range(60)]
    directory = write_batch(landing, HOUSEHOLDS.id, "20261001T020000", rows, mode="incremental", parts=3)
    with (directory / "part-00002.csv").open("ab") as part:
        part.write(b"tampered after the checksum was taken\n")
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch)
    assert whole_files == parted_files == 0


@pytest.mark.parametrize("kill_before", ["quarantine", "ledger"])
def test_killed_after_the_parts_were_written_then_rerun_equals_clean_run(landing, tmp_path, kill_before, monkeypatch):
    rows = [person(i) for i in range(60)] + [person(77, gender="x")]
    write_batch(landing, HOUSEHOLDS.id, "20261001T020000", rows, mode="incremental", parts=3)
    crashed = tmp_path / "crashed"
    script = "import ingestion.bronze\ningestion.bronze.PART_BY_PART_ROWS = 25\n" + KILLER
    child = subprocess.run(
        [sys.executable, "-c", script, str(landing), str(crashed), kill_before],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        check=False,
    )
    assert child.returncode == -signal.SIGKILL
    assert not Warehouse.at(crashed).exists("ops/batch_ledger")
    monkeypatch.setattr(bronze, "PART_BY_PART_ROWS", 25)
    outcomes = ingest_contract(HOUSEHOLDS, landing, Warehouse.at(crashed))
    assert [o.status for o in outcomes] == ["loaded"]
    clean = Warehouse.at(tmp_path / "clean")
    ingest_contract(HOUSEHOLDS, landing, clean)
    state = {k: v for k, v in _state(Warehouse.at(crashed)).items() if k != "quality"}
    assert state == {k: v for k, v in _state(clean).items() if k != "quality"}
    assert _files(Warehouse.at(crashed)) == 3  # the batch's files were committed once, by the first process


def test_the_threshold_is_set_by_environment(landing, tmp_path, monkeypatch):
    write_batch(landing, HOUSEHOLDS.id, "20261001T020000", [person(i) for i in range(60)], parts=3)
    monkeypatch.setattr(bronze, "PART_BY_PART_ROWS", 10**9)
    monkeypatch.setenv("YIWANG_PART_BY_PART_ROWS", "25")
    ingest_contract(HOUSEHOLDS, landing, Warehouse.at(tmp_path / "w"))
    assert _files(Warehouse.at(tmp_path / "w")) == 3
    monkeypatch.setenv("YIWANG_PART_BY_PART_ROWS", "a million")
    with pytest.raises(ValueError, match="YIWANG_PART_BY_PART_ROWS='a million' is not a whole number"):
        bronze.part_by_part_rows()


HOTLINE = get_contract("zhengshu.hotline_appeals")  # JSON lines


def _appeal(i: int, **changes: object) -> dict:
    row = {
        "appeal_id": f"A{i:06d}",
        "received_at": "2026-11-01T08:00:00+08:00",
        "channel": ("phone", "app", "wechat")[i % 3],
        "caller_phone": f"1380000{i:04d}",
        "content": f"小区门口路灯坏了 {i}",
        "address_text": None,
        "lon": 113.1 + i / 1000,
        "lat": None,
        "district_code": "440605",
        "is_urgent": i % 5 == 0,
    }
    row.update(changes)
    return row


def test_one_large_csv_part_lands_a_run_of_records_at_a_time(landing, tmp_path, monkeypatch):
    rows = [person(i) for i in range(195)]  # one GB 18030 part of 195 records: twenty runs of at most 10
    rows[3] = person(3, gender="x")  # run 0
    rows[14] = person(14, address='桂城街道\n"南海"花园')  # a quoted line break, run 1
    rows[25] = person(1, name="另一人")  # the key of row 1 (run 0) in run 2
    rows[27] = person(26)  # the key of row 26 in the same run (2)
    rows[194] = person(194, birth_date="2026-13-01")  # the last run, of 5 records
    write_batch(landing, HOUSEHOLDS.id, "20261001T020000", rows, mode="incremental")
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch)
    assert (whole_files, parted_files) == (1, 20)
    quarantine = pl.from_arrow(Warehouse.at(tmp_path / "parted").table("quarantine/rows").to_pyarrow_table())
    assert sorted(quarantine["row_number"]) == [2, 4, 26, 27, 28, 195]  # numbered as in the whole file


def test_a_large_csv_part_with_malformed_lines_lands_in_runs_by_the_exact_reader(landing, tmp_path, monkeypatch):
    rows = [person(i) for i in range(120)]
    rows[33] = person(33, address='桂城街道\n"南海"花园')  # a quoted line break: physical lines and records part
    directory = write_batch(landing, HOUSEHOLDS.id, "20261001T020000", rows, mode="incremental")
    part = directory / "part-00000.csv"
    lines = part.read_bytes().split(b"\n")
    lines.insert(6, b"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p")  # a malformed record in the first run
    part.write_bytes(b"\n".join(lines))
    _append_malformed(directory, "part-00000.csv")  # and one after the last run's rows
    manifest = json.loads((directory / "_manifest.json").read_text())
    manifest["files"][0]["rows"] += 1
    manifest["files"][0]["sha256"] = hashlib.sha256(part.read_bytes()).hexdigest()
    (directory / "_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False))
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch)
    assert (whole_files, parted_files) == (1, 12)  # 120 good records in runs of 10: the fast reader gave way
    quarantine = pl.from_arrow(Warehouse.at(tmp_path / "parted").table("quarantine/rows").to_pyarrow_table())
    assert sorted(quarantine.filter(pl.col("rule") == "malformed_record")["row_number"]) == [6, 122]


def test_a_large_csv_part_whose_count_disagrees_with_the_manifest_is_rejected_as_in_a_whole_batch(
    landing, tmp_path, monkeypatch
):
    directory = write_batch(landing, HOUSEHOLDS.id, "20261001T020000", [person(i) for i in range(40)])
    manifest = json.loads((directory / "_manifest.json").read_text())
    manifest["files"][0]["rows"] = 41
    (directory / "_manifest.json").write_text(json.dumps(manifest, ensure_ascii=False))
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch)
    assert whole_files == parted_files == 0


def test_one_large_json_lines_part_lands_a_run_of_records_at_a_time(landing, tmp_path, monkeypatch):
    rows = [_appeal(i) for i in range(145)]
    rows[7] = _appeal(7, channel="fax")  # run 0
    rows[30] = _appeal(2, content="又坏了")  # the key of row 2 (run 0) in run 3
    lines = [json.dumps(row, ensure_ascii=False) for row in rows]
    lines[12] = '{"appeal_id": "A000012", "content": '  # not valid JSON: a malformed record of run 1
    lines[20] = "[1, 2]"  # not an object
    body = "\r\n".join(lines[:33]) + "\r\n\r\n  \n" + "\n".join(lines[33:]) + "\n"  # blank lines hold no record
    write_batch(landing, HOTLINE.id, "20261101T080000", rows, mode="incremental", raw_body=body.encode("utf-8"))
    whole_files, parted_files = _both_ways(landing, tmp_path, monkeypatch, HOTLINE)
    assert (whole_files, parted_files) == (1, 15)
    quarantine = pl.from_arrow(Warehouse.at(tmp_path / "parted").table("quarantine/rows").to_pyarrow_table())
    assert sorted(quarantine["row_number"]) == [3, 8, 13, 21, 31]


@pytest.mark.parametrize("encoding", ["utf-8", "gb18030"])
def test_json_lines_decoded_a_piece_at_a_time_are_the_lines_of_the_whole_text(tmp_path, monkeypatch, encoding):
    text = '\ufeff{"a": "桂城"}\r\n\r\n{"b": "x\u2028y"}\n  \n{"c": 1}\r' + "末" * 7 + '\n\x85{"d": 2}'
    path = tmp_path / "part-00000.jsonl"
    path.write_bytes(text.encode(encoding))
    part = PartFile(path.name, path, 0, "", "jsonl")
    expected = [line for line in text.removeprefix("\ufeff").splitlines() if line.strip()]
    for piece in (1, 2, 3, 5, 64):  # bytes: pieces end inside characters and between CR and LF
        monkeypatch.setattr(readers, "_TEXT_PIECE", piece)
        assert [line for line in readers._lines(part, encoding) if line.strip()] == expected, piece
