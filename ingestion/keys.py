"""Deterministic dedupe keys and ticket ids, and China Standard Time.

A ticket id is a pure function of the ticket's dedupe key, so a re-run, a replay or a rebuild from
scratch yields the same ids, and the dispatch system's outcomes keep pointing at the right ticket.
They live in the lowest layer because both the dispatch derivation (thematic_libs/dispatch, which
computes the same values in DuckDB SQL: `thematic_libs.dispatch.keys`) and the demo generator's
dispatch system (demo_data) make them; a test keeps the Python and SQL forms equal.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta, timezone

CST = timezone(timedelta(hours=8))  # China has one time zone and no daylight saving time
ID_PREFIX = "TK"
ID_HEX_DIGITS = 16


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
