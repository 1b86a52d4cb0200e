from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from stdnum.cn import ric

from ingestion.pseudonym import Pseudonymiser
from ingestion.warehouse import Warehouse


def resident_id(i: int, year: int = 1980) -> str:
    body = f"440605{year + i % 30}{1 + i % 12:02d}{1 + i % 28:02d}{i % 1000:03d}"
    return body + ric.calc_check_digit(body + "0")


def person(i: int, **changes: object) -> dict:
    row = {
        "id_number": resident_id(i),
        "name": f"居民{i}",
        "gender": "1" if i % 2 else "2",
        "birth_date": None,
        "household_id": f"H{i // 3:05d}",
        "relation_to_head": "head",
        "address": "南海区桂城街道",
        "division_code": "440605001001",
        "status": "normal",
        "status_date": None,
        "updated_at": "2026-11-01T02:00:00+08:00",
    }
    ident = row["id_number"]
    row["birth_date"] = f"{ident[6:10]}-{ident[10:12]}-{ident[12:14]}"
    row.update(changes)
    return row


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return tmp_path / "landing"


@pytest.fixture
def warehouse(tmp_path: Path) -> Warehouse:
    return Warehouse.at(tmp_path / "warehouse")


@pytest.fixture
def pseudonymiser() -> Pseudonymiser:
    return Pseudonymiser(secrets.token_bytes(32))
