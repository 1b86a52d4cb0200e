"""Working-day calendar: statutory holidays, adjusted working days, SLA due times, elapsed working days."""

from __future__ import annotations

import csv
import datetime as dt
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from thematic_libs import calendar as wc

CST = dt.timezone(dt.timedelta(hours=8))
UTC_US = pa.timestamp("us", tz="UTC")
SEED = Path(__file__).parents[1] / "dbt_project" / "seeds" / "work_calendar.csv"


def cst(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=CST)


def stamps(*values: dt.datetime | None) -> pa.Array:
    return pa.array([v.astimezone(dt.UTC) if v else None for v in values], UTC_US)


def local(values: pa.Array) -> list[dt.datetime | None]:
    return [v.astimezone(CST) if v else None for v in values.to_pylist()]


def test_2026_holidays_and_adjusted_working_days() -> None:
    days = [dt.date(2026, 10, 1), dt.date(2026, 10, 7), dt.date(2026, 10, 8), dt.date(2026, 10, 10)]
    days += [dt.date(2026, 9, 20), dt.date(2026, 2, 14), dt.date(2026, 2, 17), dt.date(2026, 10, 11), None]
    assert wc.is_working_day(days).to_pylist() == [False, False, True, True, True, True, False, False, None]
    assert wc.is_working_day(np.array(["2026-10-09", "2026-10-03"], dtype="datetime64[D]")).to_pylist() == [
        True,
        False,
    ]


def test_sla_across_national_day_and_its_adjusted_saturday() -> None:
    # Wednesday 30 Sep 2026, 10:00: 1 Oct - 7 Oct are holidays, Sat 10 Oct is worked.
    created = stamps(cst(2026, 9, 30, 10), cst(2026, 9, 30, 10), cst(2026, 9, 30, 10), cst(2026, 9, 30, 10))
    due = wc.add_working_days(created, np.array([0, 1, 3, 4]))
    assert local(due) == [
        cst(2026, 9, 30, 23, 59, 59),  # n = 0: end of the (working) creation day
        cst(2026, 10, 8, 23, 59, 59),  # first working day after the holiday
        cst(2026, 10, 10, 23, 59, 59),  # the adjusted working Saturday counts
        cst(2026, 10, 12, 23, 59, 59),  # Sunday 11 Oct does not
    ]
    assert due.type == UTC_US


def test_sla_created_on_a_holiday_or_late_at_night() -> None:
    created = stamps(cst(2026, 10, 3, 9), cst(2026, 10, 3, 9), cst(2026, 10, 9, 23, 30), None)
    due = wc.add_working_days(created, pa.array([0, 1, 1, 1]))
    assert local(due) == [
        cst(2026, 10, 8, 23, 59, 59),  # n = 0 on a holiday: end of the next working day
        cst(2026, 10, 8, 23, 59, 59),  # n = 1: the first working day after the creation date, too
        cst(2026, 10, 10, 23, 59, 59),  # local date decides: 23:30 CST is still 9 Oct (15:30 UTC)
        None,
    ]


def test_sla_across_spring_festival_2026() -> None:
    # Friday 13 Feb 2026 18:00; Sat 14 Feb is worked; 15-23 Feb are the Spring Festival holiday.
    created = stamps(cst(2026, 2, 13, 18), cst(2026, 2, 13, 18))
    assert local(wc.add_working_days(created, np.array([1, 2]))) == [
        cst(2026, 2, 14, 23, 59, 59),
        cst(2026, 2, 24, 23, 59, 59),
    ]


def test_negative_sla_is_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        wc.add_working_days(stamps(cst(2026, 5, 6, 9)), np.array([-1]))


def test_working_days_between_counts_only_working_time() -> None:
    start = stamps(cst(2026, 11, 13, 17), cst(2026, 9, 30, 12), cst(2026, 10, 3, 8), cst(2026, 11, 16, 9), None)
    end = stamps(cst(2026, 11, 16, 9), cst(2026, 10, 8, 12), cst(2026, 10, 5, 8), cst(2026, 11, 13, 17), None)
    got = wc.working_days_between(start, end).to_pylist()
    assert got[0] == pytest.approx(16 / 24)  # Friday 17:00 -> Monday 09:00
    assert got[1] == pytest.approx(1.0)  # half of 30 Sep + half of 8 Oct, across National Day
    assert got[2] == 0.0  # entirely inside the holiday
    assert got[3] == pytest.approx(-16 / 24)
    assert got[4] is None


def test_outside_the_supported_years_mon_to_fri_with_a_warning() -> None:
    with pytest.warns(wc.CalendarRangeWarning, match="2031.*Monday-Friday"):
        got = wc.is_working_day([dt.date(2031, 1, 1), dt.date(2031, 1, 4)])  # a Wednesday, a Saturday
    assert got.to_pylist() == [True, False]
    assert wc.SUPPORTED_YEARS[0] <= 2026 <= wc.SUPPORTED_YEARS[1]
    # A due date that reaches an unsupported year warns too; one that stays inside does not.
    with pytest.warns(wc.CalendarRangeWarning, match="2027"):
        due = wc.add_working_days(stamps(cst(2026, 12, 30, 9)), np.array([3]))  # Thu 31 Dec, Fri 1, Mon 4 Jan
    assert local(due) == [cst(2027, 1, 4, 23, 59, 59)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", wc.CalendarRangeWarning)
        wc.add_working_days(stamps(cst(2026, 12, 1, 9)), np.array([10]))


def test_calendar_table_and_the_dbt_seed() -> None:
    table = wc.work_calendar_table("2026-09-28", "2026-10-12").to_pylist()
    assert len(table) == 15
    by_date = {r["date"]: r for r in table}
    assert by_date[dt.date(2026, 10, 1)]["holiday_name"] == "国庆节"
    assert by_date[dt.date(2026, 10, 10)]["day_kind"] == "adjusted_workday"
    assert by_date[dt.date(2026, 10, 11)]["day_kind"] == "weekend"
    # Working days between two dates = difference of working_days_before.
    # 28, 29, 30 Sep and 8, 9, 10 Oct are worked before 12 Oct.
    assert (
        by_date[dt.date(2026, 10, 12)]["working_days_before"] - by_date[dt.date(2026, 9, 28)]["working_days_before"]
        == 6
    )
    with open(SEED, encoding="utf-8") as f:
        seed = list(csv.DictReader(f))
    # through 2027 so that tickets due next year still get a working-day position (2027 is counted
    # Monday-Friday until chinesecalendar publishes its holidays: regenerate the seed then)
    assert seed[0]["date"] == "2024-01-01" and seed[-1]["date"] == "2027-12-31"
    assert len(seed) == 366 + 365 + 365 + 365
    spring = {r["date"]: r for r in seed if r["date"].startswith("2026-02")}
    assert spring["2026-02-17"]["holiday_name"] == "春节" and spring["2026-02-14"]["is_working_day"] == "true"


def test_vectorised_over_a_million_tickets() -> None:
    rng = np.random.default_rng(5)
    base = np.datetime64("2026-01-01T00:00:00", "us")
    created = base + rng.integers(0, 330 * 86_400_000_000, 1_000_000).astype("timedelta64[us]")
    sla = rng.integers(0, 11, 1_000_000)
    started = time.perf_counter()
    due = wc.add_working_days(created, sla)
    elapsed_due = wc.working_days_between(pa.array(created, pa.timestamp("us")), due)
    elapsed = time.perf_counter() - started
    assert due.null_count == 0
    # The time from creation to due is the SLA plus what is left of the creation day, if it is worked.
    spent = elapsed_due.to_numpy()
    one_second = 1 / 86_400
    assert np.all(spent >= sla - one_second - 1e-9) and np.all(spent <= sla + 1 + 1e-9)
    assert elapsed < 10, f"1M due times and elapsed times took {elapsed:.1f} s"
