"""Deterministic dedupe keys and ticket ids.

A ticket id is a pure function of the ticket's dedupe key, so a re-run, a replay or a rebuild from
scratch yields the same ids, and the dispatch system's outcomes keep pointing at the right ticket.
The derivation computes the same values in DuckDB SQL (`sql_ticket_id`); a test keeps both equal.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta, timezone
from importlib import resources

import yaml

CST = timezone(timedelta(hours=8))  # China has one time zone and no daylight saving time
ID_PREFIX = "TK"
ID_HEX_DIGITS = 16


def default_window_hours() -> int:
    """The packaged default merge window (the demo generator's dispatch system uses it)."""
    text = resources.files("thematic_libs.dispatch").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return int(yaml.safe_load(text)["dispatch"]["merge_window_hours"])


def check_window(window_hours: int) -> None:
    """Windows must tile the local day (1, 2, 3, 4, 6, 8, 12, 24 h) or be whole days (48, 72, ... h)."""
    if window_hours <= 0 or (24 % window_hours if window_hours < 24 else window_hours % 24):
        raise ValueError(f"dispatch.merge_window_hours = {window_hours}: use a divisor of 24 or a multiple of 24 hours")


def window_label(occurred_at: datetime, window_hours: int) -> str:
    """The local start of the merge window holding `occurred_at`, as YYYYMMDDHH.

    Windows shorter than a day start at local midnight; windows of n whole days start on days whose
    proleptic Gregorian ordinal is a multiple of n, so every window has one fixed start.
    """
    check_window(window_hours)
    local = occurred_at.astimezone(CST)
    if window_hours < 24:
        return f"{local:%Y%m%d}{local.hour - local.hour % window_hours:02d}"
    days = window_hours // 24
    start = date.fromordinal(local.date().toordinal() // days * days)
    return f"{start:%Y%m%d}00"


def place_dedupe_key(event_code: str, place_code: str, occurred_at: datetime, window_hours: int) -> str:
    """The default dedupe key: same event code, same place, same window."""
    return f"{event_code}|{place_code}|{window_label(occurred_at, window_hours)}"


def ticket_id(dedupe_key: str) -> str:
    """`TK` + the first 16 hex digits of SHA-256(dedupe key), upper case."""
    return ID_PREFIX + hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()[:ID_HEX_DIGITS].upper()


def sql_ticket_id(column: str) -> str:
    """DuckDB expression computing `ticket_id` of the dedupe-key column `column`."""
    return f"'{ID_PREFIX}' || upper(substr(sha256({column}), 1, {ID_HEX_DIGITS}))"


def sql_window_label(column: str, window_hours: int) -> str:
    """DuckDB expression computing `window_label` of the UTC timestamp column `column`."""
    local = f"({column} at time zone 'UTC' + interval 8 hour)"
    check_window(window_hours)
    if window_hours >= 24:
        days = window_hours // 24
        day_number = f"(datediff('day', date '0001-01-01', cast({local} as date)) + 1)"
        start_ordinal = f"(({day_number} // {days}) * {days})"
        return f"strftime(date '0001-01-01' + cast({start_ordinal} - 1 as integer), '%Y%m%d') || '00'"
    hour = f"hour({local})"
    return (
        f"strftime(cast({local} as date), '%Y%m%d') || lpad(cast({hour} - {hour} % {window_hours} as varchar), 2, '0')"
    )
