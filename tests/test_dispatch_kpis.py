"""The closed-loop KPI marts (dbt) on a hand-computed fixture of five tickets and their outcomes.

November 2026 has no holiday; the as-of date is Friday 20 November (end of day, CST).

| ticket | grid | created | due | outcomes | counts as |
|---|---|---|---|---|---|
| T1 | G1 | Mon 16th 09:00 | Wed 18th | resolved Tue 17th 09:00, rated 5, chengguan | on time, 1.0 working days |
| T2 | G1 | Fri 13th 15:00 | Mon 16th | 2 transfers, resolved Tue 17th 12:00, rated 2 | late, 1.875 days, hard |
| T3 | G2 | Wed 18th 09:00 | Thu 19th | accepted by chengguan | open past due |
| T4 | G2 | Fri 20th 08:00 | Mon 23rd | none (routed to chengguan) | open, not due |
| T5 | G2 | Sat 21st 08:00 | | | after the as-of date: not counted |
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import write_deltalake
from test_dbt_project import DbtWorkspace

from ingestion.contract import get_contract
from ingestion.keys import CST
from thematic_libs.dispatch.derive import conform_tickets

G1, G2 = "440605001001001", "440605001001002"


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=CST).astimezone(UTC)


def ticket(ticket_id: str, grid: str, created: datetime, due: datetime) -> dict:
    return {
        "ticket_id": ticket_id,
        "source": "grid_report",
        "source_ref": "R-" + ticket_id,
        "event_code": "010101",
        "event_name": "暴露垃圾",
        "title": "t",
        "description": "d",
        "grid_code": grid,
        "community_code": grid[:12],
        "street_code": grid[:9],
        "district_code": grid[:6],
        "lon": 113.1,
        "lat": 23.0,
        "department_code": "chengguan",
        "priority": "P3",
        "created_at": created,
        "due_at": due,
        "dedupe_key": "k-" + ticket_id,
        "merged_count": 1,
        "evidence_uri": None,
        "status": "new",
        "updated_at": created,
        "handling_department_code": "chengguan",
    }


TICKETS = [
    ticket("T1", G1, at(16, 9), at(18, 23, 59, 59)),
    ticket("T2", G1, at(13, 15), at(16, 23, 59, 59)),
    ticket("T3", G2, at(18, 9), at(19, 23, 59, 59)),
    ticket("T4", G2, at(20, 8), at(23, 23, 59, 59)),
    ticket("T5", G2, at(21, 8), at(24, 23, 59, 59)),
]
OUTCOMES = [
    ("T1", 1, "dispatched", at(16, 10), "chengguan", None),
    ("T1", 2, "resolved", at(17, 9), "chengguan", None),
    ("T1", 3, "closed", at(17, 10), "chengguan", 5),
    ("T2", 1, "dispatched", at(13, 16), "chengguan", None),
    ("T2", 2, "transferred", at(14, 10), "gongan", None),
    ("T2", 3, "transferred", at(16, 10), "jd_guicheng", None),
    ("T2", 4, "resolved", at(17, 12), "jd_guicheng", None),
    ("T2", 5, "closed", at(17, 13), "jd_guicheng", 2),
    ("T3", 1, "dispatched", at(18, 10), "chengguan", None),
    ("T3", 2, "accepted", at(18, 11), "chengguan", None),
]


def outcome_rows() -> pa.Table:
    schema = get_contract("zhihui.ticket_outcomes").silver_schema()
    rows = [
        {
            "ticket_id": t,
            "event_seq": seq,
            "event": event,
            "event_at": when,
            "department_code": department,
            "satisfaction": rating,
            "note": None,
            "_batch_id": "20261121T000000",
            "_extracted_at": at(21, 0),
            "_ingested_at": at(21, 1),
        }
        for t, seq, event, when, department, rating in OUTCOMES
    ]
    return pa.Table.from_pylist(rows, schema=schema)


@pytest.fixture(scope="module")
def kpis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbtWorkspace]:
    root: Path = tmp_path_factory.mktemp("kpis")
    space = DbtWorkspace(warehouse=root / "warehouse", duckdb_file=root / "yiwang.duckdb", target=root / "target")
    write_deltalake(str(space.warehouse / "gold/dispatch/tickets"), conform_tickets(pa.Table.from_pylist(TICKETS)))
    write_deltalake(str(space.warehouse / "silver/zhihui/ticket_outcomes"), outcome_rows())
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("YIWANG_WAREHOUSE", str(space.warehouse))
        patch.setenv("YIWANG_DUCKDB", str(space.duckdb_file))
        patch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
        run = space.invoke(
            "build", "--select", "+int_dispatch__ticket_lifecycle+ departments", "--vars", "{as_of: '2026-11-20'}"
        )
        assert run.success, {name: status for name, status in run.statuses.items() if status not in ("success", "pass")}
        yield space


def rows(space: DbtWorkspace, sql: str) -> list[dict]:
    import duckdb

    with duckdb.connect(str(space.duckdb_file)) as connection:
        relation = connection.sql(sql)
        return [dict(zip(relation.columns, values, strict=True)) for values in relation.fetchall()]


KPI_COLUMNS = (
    "tickets, resolved_tickets, overdue_open_tickets, on_time_rate, rated_tickets, satisfaction_rate,"
    " avg_handling_working_days, hard_tickets"
)


def test_lifecycle_facts(kpis: DbtWorkspace) -> None:
    facts = {
        r["ticket_id"]: r
        for r in rows(kpis, "select * from intermediate.int_dispatch__ticket_lifecycle order by ticket_id")
    }
    assert sorted(facts) == ["T1", "T2", "T3", "T4"]
    assert facts["T1"]["handling_working_days"] == pytest.approx(1.0)
    assert facts["T2"]["handling_working_days"] == pytest.approx(1.875)
    assert (facts["T2"]["transfer_count"], facts["T2"]["is_hard_ticket"]) == (2, True)
    assert facts["T2"]["department_code"] == "jd_guicheng" and facts["T2"]["routed_department_code"] == "chengguan"
    assert [facts[t]["resolved_on_time"] for t in ("T1", "T2", "T3", "T4")] == [True, False, False, False]
    assert [facts[t]["overdue_open"] for t in ("T1", "T2", "T3", "T4")] == [False, False, True, False]
    assert facts["T4"]["status"] == "new"


def test_kpis_by_area(kpis: DbtWorkspace) -> None:
    found = {
        (r.pop("area_level"), r.pop("area_code")): r
        for r in rows(kpis, f"select area_level, area_code, {KPI_COLUMNS} from marts.dispatch_kpis_by_area")
    }
    assert found[("district", "440605")] == {
        "tickets": 4,
        "resolved_tickets": 2,
        "overdue_open_tickets": 1,
        "on_time_rate": pytest.approx(0.3333),
        "rated_tickets": 2,
        "satisfaction_rate": pytest.approx(0.5),
        "avg_handling_working_days": pytest.approx(1.44),
        "hard_tickets": 1,
    }
    assert found[("grid", G1)]["on_time_rate"] == pytest.approx(0.5)
    assert found[("grid", G2)]["on_time_rate"] == pytest.approx(0.0)
    assert found[("grid", G2)]["satisfaction_rate"] is None
    assert found[("street", "440605001")]["tickets"] == found[("community", "440605001001")]["tickets"] == 4


def test_kpis_by_department_and_monthly_ranking(kpis: DbtWorkspace) -> None:
    by_department = {
        r.pop("department_code"): r
        for r in rows(kpis, f"select department_code, {KPI_COLUMNS} from marts.dispatch_kpis_by_department")
    }
    assert set(by_department) == {"chengguan", "jd_guicheng"}
    assert by_department["chengguan"]["tickets"] == 3
    assert by_department["chengguan"]["on_time_rate"] == pytest.approx(0.5)
    assert by_department["chengguan"]["satisfaction_rate"] == pytest.approx(1.0)
    assert by_department["jd_guicheng"]["avg_handling_working_days"] == pytest.approx(1.88)
    ranking = rows(
        kpis,
        "select department_code, score, rank_in_month from marts.dispatch_department_monthly_ranking"
        " where month = '2026-11' order by rank_in_month",
    )
    assert [r["department_code"] for r in ranking] == ["chengguan", "jd_guicheng"]
    assert ranking[0]["score"] == pytest.approx(60 * 0.5 + 30 * 1.0 + 10 * (1 - 1.0 / 10))
    assert ranking[1]["score"] == pytest.approx(10 * (1 - 1.875 / 10), abs=0.01)
    hard = rows(kpis, "select ticket_id from marts.dispatch_hard_tickets")
    assert hard == [{"ticket_id": "T2"}]
