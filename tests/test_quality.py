"""The quality package: suites from contracts, stored GX results, Data Docs, scorecard, Dagster checks."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from stdnum.cn import ric

from ingestion.bronze import ingest_batch
from ingestion.contract import batch_contracts, get_contract
from ingestion.landing import batch_ordinal, find_batches
from ingestion.ledger import LEDGER_SCHEMA
from ingestion.warehouse import QUALITY_RESULTS, QUALITY_SCORECARD, Warehouse
from quality.checks import CHECK_NAME, build_quality_checks, evaluate
from quality.docs import build_data_docs
from quality.results import RESULTS_SCHEMA, latest_results, read_results
from quality.runner import QualityRecorder, validate_batch
from quality.scorecard import build_scorecard, render_scorecard_png, score
from quality.suites import build_suite
from tests.landing_kit import write_batch

HOUSEHOLD = "gongan.household_registration"
FUND = "gongjijin.provident_fund"
CST = timezone(timedelta(hours=8))


def _resident_id(i: int) -> str:
    body = f"44060519{80 + i % 20:02d}0101{i:03d}"
    return body + ric.calc_check_digit(body + "0")


def _person(i: int, **changes: str) -> dict[str, str]:
    row = {
        "id_number": _resident_id(i),
        "name": f"人{i}",
        "gender": "1",
        "birth_date": "1990-01-01",
        "household_id": f"H{i // 3}",
        "relation_to_head": "head",
        "division_code": "440605001001",
        "status": "normal",
        "updated_at": "2026-11-01T02:00:00+08:00",
    }
    return {**row, **changes}


def _fund(i: int, period: str, **changes: object) -> dict[str, object]:
    row = {
        "account_no": f"A{i}",
        "id_number": _resident_id(i),
        "name": "x",
        "period": period,
        "monthly_deposit_cny": 100 * i,
        "balance_cny": 1000,
        "status": "normal",
    }
    return {**row, **changes}


@pytest.fixture(scope="module")
def landed(tmp_path_factory: pytest.TempPathFactory) -> Warehouse:
    """Two household batches (the second with 3 planted bad values of 80 rows: loaded) and one
    provident-fund batch with a duplicated compound key and a negative deposit (rejected)."""
    root = tmp_path_factory.mktemp("quality")
    landing = root / "landing"
    write_batch(landing, HOUSEHOLD, "20261001T020000", [_person(i) for i in range(40)])
    planted = [_person(i) for i in range(80)]
    planted[0]["gender"] = "9"
    planted[1]["status"] = "gone"
    planted[2]["division_code"] = "12"
    write_batch(landing, HOUSEHOLD, "20261101T020000", planted)
    fund = [_fund(i, "2026-10") for i in range(10)]
    fund += [_fund(1, "2026-10", balance_cny=5), _fund(11, "2026-10", monthly_deposit_cny=-5)]
    write_batch(landing, FUND, "20261101T020000", fund, mode="incremental")
    warehouse = Warehouse.at(root / "warehouse")
    recorder = QualityRecorder(warehouse)
    for batch_dir in find_batches(landing):
        ingest_batch(batch_dir, warehouse, on_validated=recorder)
    assert len(recorder.results) == 3
    return warehouse


def _batch_results(warehouse: Warehouse, contract_id: str, batch_id: str) -> pl.DataFrame:
    results = read_results(warehouse, contract_id)
    return results.filter(pl.col("batch_id") == batch_id)


def _unexpected(results: pl.DataFrame, expectation: str, column: str) -> int:
    row = results.filter((pl.col("expectation") == expectation) & (pl.col("column") == column))
    assert row.height == 1, (expectation, column)
    return row["unexpected_count"][0]


# --- suites -------------------------------------------------------------------------------------


@pytest.mark.parametrize("contract", list(batch_contracts().values()), ids=lambda c: c.id)
def test_suite_is_derived_from_the_contract(contract) -> None:
    expectations = build_suite(contract).expectations
    by_type: dict[str, list] = {}
    for e in expectations:
        by_type.setdefault(e.expectation_type, []).append(e)
        assert e.meta["contract_id"] == contract.id and e.meta["contract_version"] == contract.version
        assert e.meta["rule"] and e.meta["contract_rule"]
    exists = {e.column for e in by_type["expect_column_to_exist"]}
    assert exists == set(contract.column_names)
    required = {e.column for e in by_type["expect_column_values_to_not_be_null"] if e.mostly == 1}
    assert required == {c.name for c in contract.columns if c.required}
    regexes = {(e.column, e.regex) for e in by_type.get("expect_column_values_to_match_regex", [])}
    assert regexes == {(c.name, c.pattern) for c in contract.columns if c.pattern}
    in_sets = {
        (e.column, tuple(str(v) for v in e.value_set)) for e in by_type.get("expect_column_values_to_be_in_set", [])
    }
    assert in_sets == {(c.name, c.allowed_values) for c in contract.columns if c.allowed_values is not None}
    ranges = {(e.column, e.min_value, e.max_value) for e in by_type.get("expect_column_values_to_be_between", [])}
    assert ranges == {
        (c.name, c.minimum, c.maximum) for c in contract.columns if c.minimum is not None or c.maximum is not None
    }
    if len(contract.primary_key) == 1:
        assert [e.column for e in by_type["expect_column_values_to_be_unique"]] == list(contract.primary_key)
    else:
        [compound] = by_type["expect_compound_columns_to_be_unique"]
        assert tuple(compound.column_list) == contract.primary_key


# --- runner -------------------------------------------------------------------------------------


def test_planted_values_fail_with_exact_counts(landed: Warehouse) -> None:
    results = _batch_results(landed, HOUSEHOLD, "20261101T020000")
    assert _unexpected(results, "expect_column_values_to_be_in_set", "gender") == 1
    assert _unexpected(results, "expect_column_values_to_be_in_set", "status") == 1
    assert _unexpected(results, "expect_column_values_to_match_regex", "division_code") == 1
    failed = results.filter(~pl.col("success"))
    assert sorted(failed["column"].to_list()) == ["division_code", "gender", "status"]
    assert set(results["element_count"].drop_nulls().to_list()) == {80}
    gender = results.filter((pl.col("column") == "gender") & ~pl.col("success"))
    assert json.loads(gender["observed"][0])["partial_unexpected_list"] == ["9"]
    clean = _batch_results(landed, HOUSEHOLD, "20261001T020000")
    assert clean.height == results.height and clean["success"].all()


def test_compound_key_and_range_on_a_rejected_batch(landed: Warehouse) -> None:
    results = _batch_results(landed, FUND, "20261101T020000")
    assert _unexpected(results, "expect_compound_columns_to_be_unique", "account_no, period") == 2
    assert _unexpected(results, "expect_column_values_to_be_between", "monthly_deposit_cny") == 1


def test_sensitive_values_never_leave_bronze(landed: Warehouse) -> None:
    results = read_results(landed)
    sensitive = results.filter(pl.col("column").str.contains("id_number"))
    assert sensitive.height > 0
    for observed in sensitive["observed"].to_list():
        assert "440605" not in observed
    patterns = sensitive.filter(pl.col("expectation") == "expect_column_values_to_match_regex")
    assert all("withheld" in o for o in patterns["observed"].to_list())


def test_results_are_idempotent_per_batch(landed: Warehouse, tmp_path: Path) -> None:
    before = read_results(landed).height
    versions = landed.table(QUALITY_RESULTS).version()
    recorder = QualityRecorder(landed)
    landing = next(Path(landed.root).parent.glob("landing"))
    for batch_dir in find_batches(landing):
        ingest_batch(batch_dir, landed, on_validated=recorder)
    assert [r.written for r in recorder.results] == [False, False, False]
    assert read_results(landed).height == before
    assert landed.table(QUALITY_RESULTS).version() == versions
    stored = recorder.results[1]
    assert stored.batch_id == "20261101T020000" and stored.failed.height == 3


def test_latest_results_pick_the_latest_batch(landed: Warehouse) -> None:
    latest = latest_results(landed, HOUSEHOLD)
    assert latest["batch_id"].unique().to_list() == ["20261101T020000"]


def test_validate_batch_direct_call_types(landed: Warehouse) -> None:
    """`validate_batch` has the callback's argument order, so functools.partial fits `on_validated`."""
    import inspect

    assert list(inspect.signature(validate_batch).parameters)[:3] == ["batch", "validated", "warehouse"]


# --- Data Docs ----------------------------------------------------------------------------------


def test_data_docs_index_and_contract_pages(landed: Warehouse, tmp_path: Path) -> None:
    index = build_data_docs(landed, tmp_path / "docs")
    assert index.name == "index.html" and index.is_file()
    text = index.read_text(encoding="utf-8")
    assert HOUSEHOLD in text and f'href="{HOUSEHOLD}.html"' in text
    page = (tmp_path / "docs" / f"{HOUSEHOLD}.html").read_text(encoding="utf-8")
    assert "20261101T020000" in page and "FAILED" in page and "gender" in page
    assert (tmp_path / "docs" / "zuzhibu.party_members.html").is_file()  # no results yet: still a page


def test_data_docs_show_distinct_unexpected_values_with_their_counts(tmp_path: Path) -> None:
    """A department that sends the same wrong code on many rows: one value with its count, not ten copies."""
    landing = tmp_path / "landing"
    rows = [_person(i) for i in range(100)]
    for i in (3, 5, 8):
        rows[i]["status"] = "gone"
    rows[9]["status"] = "lost"
    write_batch(landing, HOUSEHOLD, "20261101T020000", rows)
    warehouse = Warehouse.at(tmp_path / "warehouse")
    for batch_dir in find_batches(landing):
        ingest_batch(batch_dir, warehouse, on_validated=QualityRecorder(warehouse))
    status = read_results(warehouse, HOUSEHOLD).filter(
        (pl.col("column") == "status") & (pl.col("expectation") == "expect_column_values_to_be_in_set")
    )
    observed = json.loads(status["observed"][0])
    assert observed["unexpected_counts"] == [{"value": "gone", "count": 3}, {"value": "lost", "count": 1}]
    build_data_docs(warehouse, tmp_path / "docs")
    page = (tmp_path / "docs" / f"{HOUSEHOLD}.html").read_text(encoding="utf-8")
    assert "&quot;gone&quot; ×3, &quot;lost&quot; ×1" in page
    assert page.count("&quot;gone&quot;") == 1
    assert "CST" in (tmp_path / "docs" / "index.html").read_text(encoding="utf-8")


# --- scorecard ----------------------------------------------------------------------------------


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=CST).astimezone(UTC)


def _ledger(rows: list[tuple]) -> pl.DataFrame:
    records = []
    for contract_id, batch_id, status, delivered, quarantined, extracted in rows:
        records.append(
            {
                "contract_id": contract_id,
                "batch_id": batch_id,
                "status": status,
                "reason": None,
                "rows_loaded": 0 if status == "rejected" else (delivered or 0) - quarantined,
                "rows_quarantined": quarantined,
                "processed_at": _at(extracted) + timedelta(hours=1),
                "extracted_at": _at(extracted),
                "rows_delivered": delivered,
                "batch_ordinal": batch_ordinal(batch_id),
            }
        )
    frame = pl.from_arrow(LEDGER_SCHEMA.empty_table())
    return pl.concat([frame, pl.DataFrame(records)], how="diagonal_relaxed")


def _not_null_results(contract_id: str, batch_id: str, extracted: str, counts: list[tuple[int, int]]) -> pl.DataFrame:
    rows = [
        {
            "contract_id": contract_id,
            "batch_id": batch_id,
            "expectation": "expect_column_values_to_not_be_null",
            "column": f"c{n}",
            "success": unexpected == 0,
            "unexpected_count": unexpected,
            "element_count": elements,
            "observed": "{}",
            "run_at": _at(extracted),
            "rule": "required" if n == 0 else "completeness",
            "kwargs": "{}",
            "batch_ordinal": batch_ordinal(batch_id),
            "extracted_at": _at(extracted),
        }
        for n, (unexpected, elements) in enumerate(counts)
    ]
    frame = pl.from_arrow(RESULTS_SCHEMA.empty_table())
    return pl.concat([frame, pl.DataFrame(rows)], how="diagonal_relaxed")


def test_scorecard_numbers_on_a_hand_made_ledger() -> None:
    vehicles = "gongan.vehicle_registration"
    ledger = _ledger(
        [
            (HOUSEHOLD, "20261109T020000", "loaded", 100, 4, "2026-11-09T02:00:00"),
            (HOUSEHOLD, "20261110T020000", "loaded", 100, 0, "2026-11-10T02:00:00"),
            (vehicles, "20260901T020000", "loaded", 1000, 1000, "2026-09-01T02:00:00"),  # outside the window
            (vehicles, "20261105T020000", "loaded", 50, 0, "2026-11-05T02:00:00"),
            (vehicles, "20261108T020000", "rejected", 50, 0, "2026-11-08T02:00:00"),
            (vehicles, "20261109T020000", "rejected", None, 0, "2026-11-09T02:00:00"),  # counts as 50
        ]
    )
    results = pl.concat(
        [
            _not_null_results(HOUSEHOLD, "20261109T020000", "2026-11-09T02:00:00", [(100, 100), (100, 100)]),
            _not_null_results(HOUSEHOLD, "20261110T020000", "2026-11-10T02:00:00", [(0, 100), (50, 100)]),
            # extracted after as_of: not counted
            _not_null_results(HOUSEHOLD, "20261112T020000", "2026-11-12T02:00:00", [(100, 100)]),
        ]
    )
    contracts = [get_contract(HOUSEHOLD), get_contract(vehicles), get_contract(FUND)]
    card = score(ledger, results, date(2026, 11, 10), contracts)
    by = {(r["grain"], r["contract_id"] or r["department"]): r for r in card.iter_rows(named=True)}
    assert card.height == 5 and card["grain"].to_list()[:2] == ["department", "department"]

    household = by[("contract", HOUSEHOLD)]
    assert household["completeness"] == pytest.approx(0.75)
    assert household["validity"] == pytest.approx(1 - 4 / 200)
    assert household["timeliness"] == 1.0
    assert household["days_since_last_delivery"] == pytest.approx(22 / 24)
    assert household["overall_score"] == pytest.approx((0.75 + 0.98 + 1) / 3)

    vehicle = by[("contract", vehicles)]
    assert (vehicle["batches_loaded"], vehicle["batches_rejected"]) == (1, 2)
    assert (vehicle["rows_delivered"], vehicle["rows_invalid"]) == (150, 100)
    assert vehicle["validity"] == pytest.approx(1 / 3)
    assert vehicle["timeliness"] == 0.0 and vehicle["completeness"] is None
    assert vehicle["days_since_last_delivery"] == pytest.approx(5 + 22 / 24)
    assert vehicle["overall_score"] == pytest.approx((1 / 3 + 0) / 2)

    gongan = by[("department", "gongan")]
    assert (gongan["contracts"], gongan["contracts_on_time"]) == (2, 1)
    assert gongan["timeliness"] == pytest.approx(0.5)
    assert gongan["completeness"] == pytest.approx(0.75)
    assert gongan["validity"] == pytest.approx(1 - 104 / 350)
    assert gongan["rows_delivered"] == 350 and gongan["batches_rejected"] == 2
    assert gongan["days_since_last_delivery"] == pytest.approx(5 + 22 / 24)

    fund = by[("department", "gongjijin")]
    assert fund["validity"] is None and fund["timeliness"] == 0.0 and fund["overall_score"] == 0.0
    assert by[("contract", FUND)]["days_since_last_delivery"] is None


@pytest.mark.parametrize(
    ("extracted", "timeliness"),
    [
        ("2026-11-10T02:00:00", 1.0),  # 22 h before the end of the day: on time (cadence 1 day)
        ("2026-11-10T00:00:00", 1.0),  # exactly one cadence before the end of the as-of day: still on time
        ("2026-11-09T12:00:00", 0.75),  # half a day late: a quarter of the way to 0 (two cadences)
        ("2026-11-09T00:00:00", 0.5),  # a day late
        ("2026-11-08T00:00:00", 0.0),  # two deliveries missed
        ("2026-10-30T00:00:00", 0.0),  # floored at 0
    ],
)
def test_timeliness_falls_in_proportion_to_how_late_the_latest_delivery_is(extracted: str, timeliness: float) -> None:
    ledger = _ledger([(HOUSEHOLD, "20261101T020000", "loaded", 100, 0, extracted)])
    empty = pl.from_arrow(RESULTS_SCHEMA.empty_table())
    card = score(ledger, empty, date(2026, 11, 10), [get_contract(HOUSEHOLD), get_contract(FUND)])
    contract = card.filter(pl.col("contract_id") == HOUSEHOLD).row(0, named=True)
    assert contract["timeliness"] == pytest.approx(timeliness)
    assert contract["contracts_on_time"] == (1 if timeliness == 1.0 else 0)
    department = card.filter((pl.col("grain") == "department") & (pl.col("department") == "gongan")).row(0, named=True)
    assert department["timeliness"] == pytest.approx(timeliness)


def test_an_hourly_feed_two_hours_old_is_half_on_time() -> None:
    hourly = "zhengshu.hotline_appeals"
    ledger = _ledger([(hourly, "20261110T220000", "loaded", 10, 0, "2026-11-10T22:00:00")])
    card = score(ledger, pl.from_arrow(RESULTS_SCHEMA.empty_table()), date(2026, 11, 10), [get_contract(hourly)])
    assert card.filter(pl.col("contract_id") == hourly)["timeliness"][0] == pytest.approx(0.5)


def test_an_empty_latest_batch_leaves_completeness_to_the_last_batch_with_rows() -> None:
    ledger = _ledger(
        [
            (HOUSEHOLD, "20261109T020000", "loaded", 100, 0, "2026-11-09T02:00:00"),
            (HOUSEHOLD, "20261110T020000", "loaded", 0, 0, "2026-11-10T02:00:00"),
        ]
    )
    results = pl.concat(
        [
            _not_null_results(HOUSEHOLD, "20261109T020000", "2026-11-09T02:00:00", [(0, 100), (20, 100)]),
            _not_null_results(HOUSEHOLD, "20261110T020000", "2026-11-10T02:00:00", [(0, 0), (0, 0)]),
        ]
    )
    card = score(ledger, results, date(2026, 11, 10), [get_contract(HOUSEHOLD)])
    assert card.filter(pl.col("contract_id") == HOUSEHOLD)["completeness"][0] == pytest.approx(0.9)


def test_build_scorecard_overwrites_the_table_and_draws_a_picture(landed: Warehouse, tmp_path: Path) -> None:
    first = build_scorecard(landed, date(2026, 11, 1), window_days=60)
    second = build_scorecard(landed, date(2026, 11, 1), window_days=60)
    stored = pl.from_arrow(landed.table(QUALITY_SCORECARD).to_pyarrow_table())
    assert stored.height == second.height == first.height
    departments = second.filter(pl.col("grain") == "department")
    assert departments.height == len({c.department for c in batch_contracts().values()})
    gongan = second.filter((pl.col("grain") == "contract") & (pl.col("contract_id") == HOUSEHOLD)).row(0, named=True)
    assert gongan["timeliness"] == 1.0 and gongan["batches_loaded"] == 2
    assert gongan["validity"] == pytest.approx(1 - 3 / 120)
    picture = render_scorecard_png(second, tmp_path / "card" / "scorecard.png")
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


# --- Dagster checks -----------------------------------------------------------------------------


class _Platform(dg.ConfigurableResource):
    warehouse: str


def _run_check(warehouse: Warehouse, contract_id: str) -> dg.AssetCheckResult:
    [check] = build_quality_checks([get_contract(contract_id)])
    context = dg.build_asset_check_context(resources={"platform": _Platform(warehouse=warehouse.root)})
    return check(context)


def test_checks_are_keyed_on_bronze_assets() -> None:
    checks = build_quality_checks(batch_contracts().values())
    keys = {key for c in checks for key in c.check_keys}
    assert len(keys) == len(batch_contracts())
    assert dg.AssetCheckKey(dg.AssetKey(["bronze", "gongan", "household_registration"]), CHECK_NAME) in keys
    assets = [dg.AssetSpec(["bronze", c.department, c.dataset]) for c in batch_contracts().values()]
    defs = dg.Definitions(assets=assets, asset_checks=checks, resources={"platform": _Platform(warehouse="/x")})
    assert defs.resolve_asset_graph() is not None


def test_check_severities(landed: Warehouse) -> None:
    household = _run_check(landed, HOUSEHOLD)
    assert not household.passed and household.severity == dg.AssetCheckSeverity.WARN
    assert household.metadata["expectations_failed"].value == 3
    assert household.metadata["unexpected_values"].value == 3

    fund = _run_check(landed, FUND)
    assert not fund.passed and fund.severity == dg.AssetCheckSeverity.ERROR
    assert fund.metadata["ledger_status"].value == "rejected"

    never = _run_check(landed, "zuzhibu.party_members")
    assert not never.passed and never.severity == dg.AssetCheckSeverity.WARN


def test_check_passes_and_errors_beyond_the_threshold() -> None:
    contract = get_contract(HOUSEHOLD)
    ledger = _ledger([(HOUSEHOLD, "20261110T020000", "loaded", 100, 0, "2026-11-10T02:00:00")])
    clean = _not_null_results(HOUSEHOLD, "20261110T020000", "2026-11-10T02:00:00", [(0, 100)])
    assert evaluate(contract, clean, ledger).passed
    broken = clean.with_columns(pl.lit(6, dtype=pl.Int64).alias("unexpected_count"), pl.lit(False).alias("success"))
    verdict = evaluate(contract, broken, ledger)
    assert not verdict.passed and verdict.severity == dg.AssetCheckSeverity.ERROR
