"""The dedupe-key and ticket-id functions of `ingestion.keys` as DuckDB SQL expressions, for the derivation.

A test keeps them equal to their Python forms.
"""

from __future__ import annotations

from ingestion.keys import ID_HEX_DIGITS, ID_PREFIX, check_window


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
