"""The dispatch derivation and table: merging, ids, routing, SLA, outcomes, the change feed, the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable
from typer.testing import CliRunner

from ingestion.keys import CST, place_dedupe_key, ticket_id, window_label
from ingestion.warehouse import Warehouse
from orchestration.cli import app
from thematic_libs.dispatch.derive import DispatchConfig, derive_tickets, prepare
from thematic_libs.dispatch.schema import TICKET_SCHEMA
from thematic_libs.dispatch.store import TICKET_SOURCES, changes_since, replace_source_rows, write_tickets

GRID_A, GRID_B = "440605001001001", "440605001001002"
DISTRICT = "440605"


def grids() -> pa.Table:
    """Two square grids side by side (0.01 degree), one community, one street."""

    def square(lon: float, lat: float) -> str:
        h = 0.005
        corners = [(lon - h, lat - h), (lon + h, lat - h), (lon + h, lat + h), (lon - h, lat + h), (lon - h, lat - h)]
        return "POLYGON((" + ", ".join(f"{x} {y}" for x, y in corners) + "))"

    return pa.table(
        {
            "grid_code": [GRID_A, GRID_B],
            "community_code": ["440605001001"] * 2,
            "street_code": ["440605001"] * 2,
            "district_code": [DISTRICT] * 2,
            "center_lon": [113.10, 113.11],
            "center_lat": [23.00, 23.00],
            "polygon_wkt": [square(113.10, 23.00), square(113.11, 23.00)],
        }
    )


def local(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=CST).astimezone(UTC)


def candidates(rows: list[dict]) -> pa.Table:
    defaults = {
        "title": "t",
        "description": "d",
        "lon": None,
        "lat": None,
        "grid_code": None,
        "community_code": None,
        "district_code": None,
        "is_urgent": False,
        "evidence_uri": None,
        "dedupe_key": None,
        "department_code": None,
    }
    return pa.Table.from_pylist([{**defaults, **row} for row in rows])


CONFIG = DispatchConfig.load()


def derive(rows: list[dict], outcomes: pa.Table | None = None) -> pa.Table:
    prepared = prepare(candidates(rows), grids(), CONFIG)
    return derive_tickets(prepared.rows, outcomes, CONFIG)


def report(ref: str, code: str, when: datetime, **extra: object) -> dict:
    return {"source": "grid_report", "source_ref": ref, "event_code": code, "occurred_at": when, **extra}


def test_same_event_same_grid_same_window_is_one_ticket_across_sources() -> None:
    tickets = derive(
        [
            report("R1", "010101", local(16, 9), grid_code=GRID_A),
            report("R2", "010101", local(16, 15), grid_code=GRID_A),
            {
                "source": "hotline",
                "source_ref": "H1",
                "event_code": "010101",
                "occurred_at": local(16, 20),
                "lon": 113.101,  # inside grid A
                "lat": 23.001,
                "district_code": DISTRICT,
            },
            report("R3", "010101", local(17, 9), grid_code=GRID_A),  # next day: another window
            report("R4", "010101", local(16, 9), grid_code=GRID_B),  # another grid
            report("R5", "050201", local(16, 9), grid_code=GRID_A),  # another event
        ]
    )
    by_ref = {row["source_ref"]: row for row in tickets.to_pylist()}
    assert tickets.num_rows == 4
    assert by_ref["R1"]["merged_count"] == 3  # the earliest report gives the ticket its source and text
    assert by_ref["R1"]["created_at"] == local(16, 9)
    assert by_ref["R1"]["updated_at"] == local(16, 20)
    assert by_ref["R3"]["merged_count"] == by_ref["R4"]["merged_count"] == by_ref["R5"]["merged_count"] == 1
    assert by_ref["R1"]["ticket_id"] == ticket_id(place_dedupe_key("010101", GRID_A, local(16, 9), 24))
    assert tickets.schema.names[: len(TICKET_SCHEMA)] == TICKET_SCHEMA.names
    assert set(tickets["status"].to_pylist()) == {"new"}


def test_ids_are_deterministic_and_the_sql_matches_python() -> None:
    rows = [report(f"R{i}", "010104", local(10 + i % 3, 8 + i), grid_code=GRID_A) for i in range(9)]
    first, second = derive(rows), derive(list(reversed(rows)))
    assert first.sort_by("ticket_id").to_pylist() == second.sort_by("ticket_id").to_pylist()
    keys = first["dedupe_key"].to_pylist()
    assert first["ticket_id"].to_pylist() == [ticket_id(k) for k in keys]
    assert all(k.endswith("|" + window_label(local(10, 8), 24)) or "|202611" in k for k in keys)


@pytest.mark.parametrize("hours", [1, 6, 24, 72])
def test_window_labels_tile_time(hours: int) -> None:
    start = local(16, 0)
    labels = [window_label(start + timedelta(minutes=17 * i), hours) for i in range(400)]
    assert labels == sorted(labels)
    assert len(set(labels)) == pytest.approx(400 * 17 / 60 / hours, abs=2)


def test_location_routing_priority_and_sla() -> None:
    tickets = derive(
        [
            # road flooding (urgent item, 1 working day) on Thursday 24 September 2026 17:00, before the
            # Mid-autumn holiday (25-27 September): due at the end of Monday the 28th
            report("F1", "040201", local(24, 17, month=9), grid_code=GRID_A),
            # ... and on Saturday 19 September: Sunday the 20th is an adjusted working day (调休上班)
            report("F2", "040201", local(19, 9, month=9), grid_code=GRID_B),
            # refuse and muck (normal, 3 working days) in the National Day holiday (1-7 October), operator
            # marked it urgent: the working days are 8, 9 and Saturday 10 October (adjusted)
            {
                "source": "hotline",
                "source_ref": "H9",
                "event_code": "010102",
                "occurred_at": local(3, 10, month=10),
                "lon": 113.111,
                "lat": 23.0,
                "district_code": DISTRICT,
                "is_urgent": True,
            },
            # no coordinates: placed in its district only
            {"source": "hotline", "source_ref": "H10", "event_code": "050201", "occurred_at": local(16, 9)}
            | {"district_code": DISTRICT},
        ]
    )
    by_ref = {row["source_ref"]: row for row in tickets.to_pylist()}
    flood, garbage, parking = by_ref["F1"], by_ref["H9"], by_ref["H10"]
    assert flood["priority"] == "P1" and flood["department_code"] == "shuiwuju"
    assert flood["due_at"] == datetime(2026, 9, 28, 23, 59, 59, tzinfo=CST).astimezone(UTC)
    assert by_ref["F2"]["due_at"] == datetime(2026, 9, 20, 23, 59, 59, tzinfo=CST).astimezone(UTC)
    assert garbage["grid_code"] == GRID_B and garbage["priority"] == "P2"  # normal raised by is_urgent
    assert garbage["due_at"] == datetime(2026, 10, 10, 23, 59, 59, tzinfo=CST).astimezone(UTC)
    assert parking["grid_code"] is None and parking["district_code"] == DISTRICT
    assert parking["dedupe_key"].startswith(f"050201|{DISTRICT}|")


def test_bad_candidates_are_rejected_with_the_rule_and_what_to_do() -> None:
    prepared = prepare(
        candidates(
            [
                report("X1", "999999", local(16, 9), grid_code=GRID_A),
                {"source": "hotline", "source_ref": "X2", "event_code": None, "occurred_at": local(16, 9)}
                | {"district_code": DISTRICT},
                {"source": "hotline", "source_ref": "X3", "event_code": "010101", "occurred_at": local(16, 9)},
                {"source": "hotline", "source_ref": "X4", "event_code": "010101", "occurred_at": local(16, 9)}
                | {"district_code": "440604"},
                {"source": "fax", "source_ref": "X5", "event_code": "010101", "occurred_at": local(16, 9)},
                report("OK", "010101", local(16, 9), grid_code=GRID_A),
            ]
        ),
        grids(),
        CONFIG,
    )
    rules = dict(
        zip(prepared.rejections["source_ref"].to_pylist(), prepared.rejections["rule"].to_pylist(), strict=True)
    )
    assert rules == {
        "X1": "unknown_event_code",
        "X2": "unclassified",
        "X3": "unlocated",
        "X4": "outside_jurisdiction",
        "X5": "unknown_source",
    }
    assert all(detail for detail in prepared.rejections["detail"].to_pylist())
    assert prepared.rows["source_ref"].to_pylist() == ["OK"]


def test_repeated_reports_raise_priority() -> None:
    rows = [report(f"R{i}", "010101", local(16, 8, i), grid_code=GRID_A) for i in range(CONFIG.repeat_raise_at)]
    assert derive(rows[:-1])["priority"].to_pylist() == ["P3"]
    assert derive(rows)["priority"].to_pylist() == ["P2"]


def outcomes(rows: list[tuple]) -> pa.Table:
    names = ["ticket_id", "event_seq", "event", "event_at", "department_code"]
    return pa.Table.from_pylist([dict(zip(names, row, strict=True)) for row in rows])


def test_outcomes_set_status_and_handling_department() -> None:
    rows = [report("R1", "010101", local(16, 9), grid_code=GRID_A)]
    tid = derive(rows)["ticket_id"][0].as_py()
    feedback = outcomes(
        [
            (tid, 1, "dispatched", local(16, 10), "chengguan"),
            (tid, 2, "transferred", local(16, 11), "jd_guicheng"),
            (tid, 3, "accepted", local(16, 12), "jd_guicheng"),
        ]
    )
    ticket = derive(rows, feedback).to_pylist()[0]
    assert ticket["status"] == "accepted"
    assert ticket["department_code"] == "chengguan"  # where the platform routed it
    assert ticket["handling_department_code"] == "jd_guicheng"
    assert ticket["updated_at"] == local(16, 12)


def test_a_ticket_whose_reports_are_all_gone_is_closed_not_deleted(tmp_path: Path) -> None:
    """An IoT incident a late reading withdrew (or a case the latest cross-check no longer flags) takes its report
    out of the sources: the ticket the dispatch system already holds is closed once, never deleted or left open."""
    warehouse = Warehouse.at(tmp_path / "warehouse")
    rows = [
        report("R1", "010101", local(16, 9), grid_code=GRID_A),
        report("R2", "010104", local(16, 9), grid_code=GRID_B),
    ]
    first = write_tickets(warehouse, derive(rows))
    assert (first.inserted, first.updated) == (2, 0)
    gone = write_tickets(warehouse, derive(rows[:1]))
    assert (gone.inserted, gone.updated) == (0, 1)
    tickets = {
        row["source_ref"]: row
        for row in DeltaTable(warehouse.uri("gold/dispatch/tickets")).to_pyarrow_table().to_pylist()
    }
    assert tickets["R2"]["status"] == "closed" and tickets["R1"]["status"] == "new"
    assert tickets["R2"]["updated_at"] > local(16, 9)
    again = write_tickets(warehouse, derive(rows[:1]))  # closed once: nothing more to write
    assert (again.inserted, again.updated, again.version) == (0, 0, gone.version)


def test_change_feed_returns_exactly_what_changed(tmp_path: Path) -> None:
    warehouse = Warehouse.at(tmp_path / "warehouse")
    rows = [
        report("R1", "010101", local(16, 9), grid_code=GRID_A),
        report("R2", "050201", local(16, 9), grid_code=GRID_A),
        report("R3", "010104", local(16, 9), grid_code=GRID_B),
    ]
    first = write_tickets(warehouse, derive(rows))
    assert (first.inserted, first.updated) == (3, 0)
    everything, version = changes_since(warehouse, -1)
    assert everything.num_rows == 3 and version == first.version
    assert set(everything["change_type"].to_pylist()) == {"new"}

    again = write_tickets(warehouse, derive(rows))  # a re-run of the same data writes nothing
    assert (again.inserted, again.updated, again.version) == (0, 0, first.version)
    assert changes_since(warehouse, version)[0].num_rows == 0

    tid = derive(rows).filter(pa.compute.equal(pa.array(["R2"] * 3), derive(rows)["source_ref"]))["ticket_id"]
    feedback = outcomes([(tid[0].as_py(), 1, "dispatched", local(16, 10), "gongan")])
    grown = [*rows, report("R4", "010101", local(16, 10), grid_code=GRID_A), report("R5", "020101", local(16, 9))]
    grown[-1]["grid_code"] = GRID_B
    second = write_tickets(warehouse, derive(grown, feedback))
    assert (second.inserted, second.updated) == (1, 2)  # R5 new; R1 merged R4; R2 dispatched
    changes, latest = changes_since(warehouse, version)
    assert latest == second.version
    by_ref = {row["source_ref"]: row for row in changes.to_pylist()}
    assert set(by_ref) == {"R1", "R2", "R5"}
    assert by_ref["R1"]["change_type"] == "changed" and by_ref["R1"]["merged_count"] == 2
    assert by_ref["R2"]["status"] == "dispatched"
    assert by_ref["R5"]["change_type"] == "new"
    assert DeltaTable(warehouse.uri("gold/dispatch/tickets")).to_pyarrow_table().num_rows == 4

    result = CliRunner().invoke(
        app, ["tickets", "changes", "--since-version", str(version), "--warehouse", warehouse.root]
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted(line["source_ref"] for line in lines) == ["R1", "R2", "R5"]
    assert f"next --since-version: {latest}" in result.output


def test_feeding_a_source_twice_does_not_duplicate_its_reports(tmp_path: Path) -> None:
    warehouse = Warehouse.at(tmp_path / "warehouse")
    prepared = prepare(candidates([report("R1", "010101", local(16, 9), grid_code=GRID_A)]), grids(), CONFIG)
    crosscheck = prepare(
        candidates(
            [
                {
                    "source": "crosscheck",
                    "source_ref": "C1",
                    "event_code": "080101",
                    "occurred_at": local(15, 23),
                    "community_code": "440605001001",
                    "dedupe_key": "crosscheck|C1",
                    "department_code": "minzheng",
                }
            ]
        ),
        grids(),
        CONFIG,
    )
    for _ in range(2):
        replace_source_rows(warehouse, TICKET_SOURCES, prepared.rows, ["hotline", "grid_report"])
        replace_source_rows(warehouse, TICKET_SOURCES, crosscheck.rows, ["crosscheck"])
    sources = warehouse.table(TICKET_SOURCES).to_pyarrow_table()
    assert sorted(sources["source_ref"].to_pylist()) == ["C1", "R1"]
    tickets = derive_tickets(sources, None, CONFIG).to_pylist()
    case = next(t for t in tickets if t["source"] == "crosscheck")
    assert case["department_code"] == "minzheng" and case["street_code"] == "440605001" and case["grid_code"] is None
