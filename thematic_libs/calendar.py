"""Working-day calendar of mainland China, for SLAs counted in working days (工作日).

Statutory holidays and adjusted working days (调休: a Saturday or Sunday that is worked) come from
`chinesecalendar`, which covers the years it was published for (2004-2026 in 1.11.0; see
`SUPPORTED_YEARS`). Outside that range every Monday-Friday counts as a working day and a
`CalendarRangeWarning` says so: an SLA far in the future is then an estimate until the package is
updated with the State Council's notice for that year.

Everything is vectorised over a day table (one row per local date) that is built once per range of
years and read with index arithmetic, so millions of tickets cost a few array operations.

SLA rule of `add_working_days` (local time, `tz`, default Asia/Shanghai):
- n >= 1: the count starts on the first working day *after* the local creation date, whatever the
  creation time; the ticket is due at the end (23:59:59 local) of the n-th such working day.
  Created Friday 10:00 with n = 1 -> due Monday 23:59:59 (if Monday is a working day).
- n == 0: due at the end of the creation day if that is a working day, else at the end of the next
  working day.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import chinese_calendar
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from chinese_calendar.constants import Holiday

DEFAULT_TZ = "Asia/Shanghai"
_HOLIDAYS: dict[dt.date, str] = chinese_calendar.constants.holidays
_WORKDAYS: dict[dt.date, str] = chinese_calendar.constants.workdays
SUPPORTED_YEARS = (min(_HOLIDAYS).year, max(_HOLIDAYS).year)
_US_PER_DAY = 86_400_000_000
_EPOCH = np.datetime64("1970-01-01", "D")

TimestampsLike = pa.Array | pa.ChunkedArray | np.ndarray | pl.Series
DatesLike = pa.Array | pa.ChunkedArray | np.ndarray | pl.Series | Iterable[dt.date | None]


class CalendarRangeWarning(UserWarning):
    """Dates outside chinesecalendar's years: Monday-Friday assumed, holidays unknown."""


@dataclass(frozen=True)
class DayTable:
    """One row per local date from `first_day` (days since 1970-01-01) on."""

    first_day: int
    working: np.ndarray  # bool per day
    before: np.ndarray  # int64: working days strictly before each day, counted from first_day
    working_days: np.ndarray  # int64 day numbers of the working days, ascending
    kind: np.ndarray  # workday | weekend | holiday | adjusted_workday
    holiday: np.ndarray  # Chinese holiday name or None

    @property
    def last_day(self) -> int:
        return self.first_day + len(self.working) - 1


@functools.cache
def _day_table(first_year: int, last_year: int) -> DayTable:
    """Day table over whole years `first_year`..`last_year` (cached: ranges are few)."""
    start = np.datetime64(f"{first_year}-01-01", "D")
    end = np.datetime64(f"{last_year + 1}-01-01", "D")
    days = np.arange(start, end)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
    working = weekday < 5
    kind = np.where(working, "workday", "weekend").astype(object)
    holiday = np.full(len(days), None, dtype=object)
    first = int(start.astype(np.int64))
    for table, is_work in ((_HOLIDAYS, False), (_WORKDAYS, True)):
        dates = [d for d in table if first_year <= d.year <= last_year]
        if not dates:
            continue
        index = np.array(dates, dtype="datetime64[D]").astype(np.int64) - first
        working[index] = is_work
        kind[index] = "adjusted_workday" if is_work else "holiday"
        if not is_work:
            holiday[index] = [Holiday(table[d]).chinese for d in dates]
    before = np.concatenate([[0], np.cumsum(working)[:-1]]).astype(np.int64)
    return DayTable(first, working, before, np.flatnonzero(working).astype(np.int64) + first, kind, holiday)


def _year_of(day: int) -> int:
    return int(str(np.datetime64(int(day), "D"))[:4])


def _table_for(first_day: int, last_day: int) -> DayTable:
    return _day_table(_year_of(first_day), _year_of(last_day))


def _warn_outside(first_day: int, last_day: int) -> None:
    """Warn when the dates actually used reach years chinesecalendar does not cover."""
    first_year, last_year = _year_of(first_day), _year_of(last_day)
    outside = [y for y in range(first_year, last_year + 1) if not SUPPORTED_YEARS[0] <= y <= SUPPORTED_YEARS[1]]
    if outside:
        warnings.warn(
            f"year(s) {', '.join(map(str, outside))} outside chinesecalendar's supported years "
            f"{SUPPORTED_YEARS[0]}-{SUPPORTED_YEARS[1]}: Monday-Friday counted as working days, statutory "
            "holidays and adjusted working days unknown; update the chinesecalendar package",
            CalendarRangeWarning,
            stacklevel=3,
        )


def _utc_micros(values: TimestampsLike) -> tuple[np.ndarray, np.ndarray]:
    """Microseconds since the epoch (UTC) and a validity mask. Naive timestamps are taken as UTC."""
    if isinstance(values, pl.Series):
        values = values.to_arrow()
    if isinstance(values, np.ndarray):
        if not np.issubdtype(values.dtype, np.datetime64):
            raise TypeError(f"expected datetime64 timestamps (UTC), got numpy dtype {values.dtype}")
        micros = values.astype("datetime64[us]")
        return micros.astype(np.int64), ~np.isnat(micros)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_timestamp(values.type):
        raise TypeError(f"expected timestamps, got arrow type {values.type}")
    micros = values.cast(pa.timestamp("us", tz=values.type.tz)).view(pa.int64())
    valid = micros.is_valid().to_numpy(zero_copy_only=False)
    return micros.fill_null(0).to_numpy(), valid


def _local_micros(utc: np.ndarray, tz: str) -> np.ndarray:
    """Local wall-clock microseconds (as if UTC) of UTC microseconds."""
    stamps = pa.array(utc, pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us", tz=tz))
    return pc.local_timestamp(stamps).view(pa.int64()).to_numpy()


def _local_to_utc(local: np.ndarray, tz: str) -> np.ndarray:
    naive = pa.array(local, pa.timestamp("us"))
    aware = pc.assume_timezone(naive, timezone=tz, ambiguous="earliest", nonexistent="earliest")
    return aware.view(pa.int64()).to_numpy()


def _days(values: DatesLike) -> tuple[np.ndarray, np.ndarray]:
    """Day numbers since 1970-01-01 and a validity mask, from dates."""
    if isinstance(values, pl.Series):
        values = values.to_arrow()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, np.ndarray):
        days = values.astype("datetime64[D]")
        return days.astype(np.int64), ~np.isnat(days)
    if not isinstance(values, pa.Array):
        values = pa.array(list(values), pa.date32())
    if pa.types.is_timestamp(values.type):
        raise TypeError("is_working_day takes dates; convert timestamps to local dates first")
    days = values.cast(pa.date32()).view(pa.int32())
    return days.fill_null(0).to_numpy().astype(np.int64), values.is_valid().to_numpy(zero_copy_only=False)


def is_working_day(dates: DatesLike) -> pa.BooleanArray:
    """Whether each date is a working day in mainland China (nulls stay null)."""
    days, valid = _days(dates)
    if not valid.any():
        return pa.array([None] * len(days), pa.bool_())
    first, last = int(days[valid].min()), int(days[valid].max())
    _warn_outside(first, last)
    table = _table_for(first, last)
    index = np.clip(days - table.first_day, 0, len(table.working) - 1)
    return pa.array(table.working[index], mask=~valid)


def add_working_days(
    created_at: TimestampsLike, n: np.ndarray | pa.Array | pl.Series | int, tz: str = DEFAULT_TZ
) -> pa.TimestampArray:
    """Due time (UTC, microseconds) of tickets created at `created_at` with an SLA of `n` working days.

    Rule in the module docstring: count from the first working day after the local creation date,
    due at 23:59:59 local of the n-th; n = 0 means the end of the creation day, or of the next working
    day when the creation day is not one. A null `created_at` or `n` gives a null due time; a
    negative `n` is an error.
    """
    utc, valid = _utc_micros(created_at)
    if isinstance(n, int):
        counts = np.full(len(utc), n, dtype=np.int64)
        n_valid = np.ones(len(utc), dtype=bool)
    else:
        arrow_n = pa.array(n.to_arrow() if isinstance(n, pl.Series) else n)
        counts = arrow_n.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        n_valid = arrow_n.is_valid().to_numpy(zero_copy_only=False)
    if len(counts) != len(utc):
        raise ValueError(f"created_at ({len(utc)}) and n ({len(counts)}) differ in length")
    if (counts[n_valid] < 0).any():
        raise ValueError("SLA working days must be >= 0; fix sla_working_days in the event catalogue")
    valid &= n_valid
    if not valid.any():
        return pa.array([None] * len(utc), pa.timestamp("us", tz="UTC"))
    local_day = np.floor_divide(_local_micros(utc, tz), _US_PER_DAY)
    lo, hi = int(local_day[valid].min()), int(local_day[valid].max())
    # Enough days ahead for the longest SLA: 7 calendar days per 5 working days, plus the longest holiday.
    horizon = hi + int(counts[valid].max()) * 7 // 5 + 40
    table = _table_for(lo, horizon)
    offset = np.clip(local_day - table.first_day, 0, len(table.working) - 1)
    # Working days before the day after creation = working days up to and including the creation day.
    through_creation = table.before[offset] + table.working[offset]
    ordinal = np.where(counts == 0, table.before[offset], through_creation + counts - 1)
    ordinal = np.where(valid, ordinal, 0)
    if ordinal.max() >= len(table.working_days):  # cannot happen with the horizon above; say so if it does
        raise ValueError(f"SLA of up to {counts.max()} working days runs past the calendar table; widen the horizon")
    due_day = table.working_days[ordinal]
    _warn_outside(lo, int(due_day[valid].max()))
    end_local = (due_day + 1) * _US_PER_DAY - 1_000_000
    due = _local_to_utc(end_local, tz)
    return pa.array(due, pa.timestamp("us", tz="UTC"), mask=~valid)


def working_days_between(start: TimestampsLike, end: TimestampsLike, tz: str = DEFAULT_TZ) -> pa.DoubleArray:
    """Working days elapsed from `start` to `end`, as a fraction: only the parts of working days count.

    Opened Friday 17:00 and closed Monday 09:00 (both working days) = 7 h + 9 h = 16/24 working days.
    Negative when `end` is before `start`; null when either is null.
    """
    s_utc, s_valid = _utc_micros(start)
    e_utc, e_valid = _utc_micros(end)
    if len(s_utc) != len(e_utc):
        raise ValueError(f"start ({len(s_utc)}) and end ({len(e_utc)}) differ in length")
    valid = s_valid & e_valid
    if not valid.any():
        return pa.array([None] * len(s_utc), pa.float64())
    s_local, e_local = _local_micros(s_utc, tz), _local_micros(e_utc, tz)
    s_day, e_day = np.floor_divide(s_local, _US_PER_DAY), np.floor_divide(e_local, _US_PER_DAY)
    both = np.concatenate([s_day[valid], e_day[valid]])
    _warn_outside(int(both.min()), int(both.max()))
    table = _table_for(int(both.min()), int(both.max()))

    def elapsed(local: np.ndarray, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whole working days before the day, and the worked fraction of the day itself."""
        offset = np.clip(day - table.first_day, 0, len(table.working) - 1)
        fraction = (local - day * _US_PER_DAY) / _US_PER_DAY
        return table.before[offset], table.working[offset] * fraction

    (e_whole, e_part), (s_whole, s_part) = elapsed(e_local, e_day), elapsed(s_local, s_day)
    return pa.array((e_whole - s_whole) + (e_part - s_part), pa.float64(), mask=~valid)


def work_calendar_table(start: dt.date | str, end: dt.date | str) -> pa.Table:
    """One row per date from `start` to `end` inclusive, for SQL KPIs (the dbt seed `work_calendar`).

    Columns: date, is_working_day, working_days_before (working days from `start` up to, not
    including, this date: the working days between two dates are the difference of their values),
    day_kind (workday | weekend | holiday | adjusted_workday), holiday_name (Chinese, null otherwise).
    """
    first = np.datetime64(str(start), "D").astype(np.int64)
    last = np.datetime64(str(end), "D").astype(np.int64)
    if last < first:
        raise ValueError(f"end {end} is before start {start}")
    _warn_outside(int(first), int(last))
    table = _table_for(int(first), int(last))
    rows = slice(int(first) - table.first_day, int(last) - table.first_day + 1)
    before = table.before[rows] - table.before[rows][0]
    return pa.table(
        {
            "date": pa.array(np.arange(first, last + 1).astype("datetime64[D]"), pa.date32()),
            "is_working_day": pa.array(table.working[rows]),
            "working_days_before": pa.array(before, pa.int32()),
            "day_kind": pa.array(table.kind[rows].tolist(), pa.string()),
            "holiday_name": pa.array(table.holiday[rows].tolist(), pa.string()),
        }
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m thematic_libs.calendar --write FILE --start YYYY-MM-DD --end YYYY-MM-DD`."""
    parser = argparse.ArgumentParser(description="Write the working-day calendar as CSV (e.g. a dbt seed).")
    parser.add_argument("--write", required=True, type=Path, help="CSV file to write")
    parser.add_argument("--start", required=True, help="first date, YYYY-MM-DD")
    parser.add_argument("--end", required=True, help="last date, YYYY-MM-DD")
    args = parser.parse_args(argv)
    table = work_calendar_table(args.start, args.end)
    args.write.parent.mkdir(parents=True, exist_ok=True)
    pl.from_arrow(table).write_csv(args.write)
    print(f"wrote {table.num_rows} days to {args.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
