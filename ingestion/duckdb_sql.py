"""Names and values written into DuckDB SQL text (silver's queries, dbt's staged sources)."""

from __future__ import annotations


def quoted(name: str) -> str:
    """An identifier, double-quoted."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A string literal, single-quoted."""
    return "'" + text.replace("'", "''") + "'"
