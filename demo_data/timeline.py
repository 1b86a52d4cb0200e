"""The demo's fixed calendar: when each department extracts, and the as-of date it all leads up to.

Every timestamp in the landing zone derives from these constants (never from the wall clock), so
two runs write the same bytes. The schedule follows each contract's cadence loosely: three
snapshots for snapshot feeds, an initial load plus later changes for incremental ones (hourly feeds: an
hour apart), one period per batch for the monthly social-insurance and provident-fund feeds.
"""

from __future__ import annotations

from datetime import date, datetime

AS_OF = date(2026, 11, 15)
"""The last extraction date the demo covers: `yiwang run --as-of` defaults should use it."""

HISTORY_START = date(2026, 9, 1)
"""Life events (deaths, moves, births) and field events of the demo happen from this date on."""

EVENTS_START = datetime(2026, 9, 1, 0, 0)
"""First grid report, hotline appeal and enterprise appeal."""

PERIODS = ("2026-04", "2026-05", "2026-06", "2026-07", "2026-08", "2026-09", "2026-10")
"""Contribution / deposit months delivered by renshe and gongjijin; the last six precede the as-of month."""

LAST_SIX_MONTHS = PERIODS[1:]

TAX_YEARS = (2024, 2025)


def _at(day: str, hour: int, minute: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, minute=minute)


# Snapshot feeds.
HOUSEHOLD_SNAPSHOTS = tuple(_at(d, 2) for d in ("2026-09-15", "2026-10-15", "2026-11-15"))
ASSISTANCE_SNAPSHOTS = tuple(_at(d, 3) for d in ("2026-09-03", "2026-10-03", "2026-11-03"))
WEEKLY_SNAPSHOTS = tuple(_at(d, 1) for d in ("2026-10-26", "2026-11-02", "2026-11-09"))
SENSOR_SNAPSHOTS = tuple(_at(d, 1, 30) for d in ("2026-11-13", "2026-11-14", "2026-11-15"))

# Daily incremental feeds: an initial load of the history, then changes.
DAILY_DAYS = ("2026-09-01", "2026-10-01", "2026-11-01", "2026-11-14", "2026-11-15")

# Hourly incremental feeds: a backlog since EVENTS_START (the initial load), then one batch an hour, at the
# contracts' cadence, through the evening of the as-of day: the last one (23:00) is on time at its end, so the
# scorecard's timeliness measures the demo's feeds as they are meant to arrive (issue 17: half-day batches scored 0).
HOURLY_TIMES = (_at("2026-11-15", 12), *(_at("2026-11-15", h) for h in range(13, 24)))


def daily_times(hour: int, minute: int = 0) -> tuple[datetime, ...]:
    """The daily-incremental schedule at a department's own extraction hour."""
    return tuple(_at(d, hour, minute) for d in DAILY_DAYS)


def period_extraction(period: str, day: int, hour: int) -> datetime:
    """A monthly feed extracts each period on `day` of the following month."""
    year, month = (int(p) for p in period.split("-"))
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return datetime(year, month, day, hour, 0)


def period_start(period: str) -> date:
    year, month = (int(p) for p in period.split("-"))
    return date(year, month, 1)


TAX_TIMES = (_at("2025-05-31", 2), _at("2026-05-31", 2), _at("2026-10-20", 2))
