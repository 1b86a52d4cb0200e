"""A column store for generated records that the cross-check planting can add rows to.

Background records are made in bulk as numpy columns; planted records arrive one at a time. They
are queued and merged once (`freeze`), so adding a hundred planted rows to a million background ones
copies the columns once, not a hundred times.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class Records:
    """Equal-length numpy columns plus queued rows; every row has `planted` and `messy` columns."""

    def __init__(self, **columns: np.ndarray) -> None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of unequal length: {lengths}")
        n = lengths.pop() if lengths else 0
        columns.setdefault("planted", np.zeros(n, dtype=bool))
        columns.setdefault("messy", np.full(n, "", dtype=object))
        self._columns: dict[str, np.ndarray] = columns
        self._pending: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> np.ndarray:
        columns = self.__dict__.get("_columns")
        if columns is None or name not in columns:
            raise AttributeError(name)
        if self.__dict__["_pending"]:
            raise RuntimeError("freeze() the records before reading them")
        return columns[name]

    def __len__(self) -> int:
        return len(next(iter(self._columns.values())))

    def add(self, **row: Any) -> None:
        """Queue one planted row; columns not given take a neutral default."""
        unknown = set(row) - set(self._columns)
        if unknown:
            raise KeyError(f"unknown columns {unknown}")
        row.setdefault("planted", True)
        row.setdefault("messy", "")
        self._pending.append(row)

    def freeze(self) -> Records:
        if not self._pending:
            return self
        for name, values in self._columns.items():
            extra = [row.get(name, _default(values)) for row in self._pending]
            if values.dtype.kind == "U":
                merged = np.r_[values.astype(object), np.array(extra, dtype=object)].astype(str)
            else:
                merged = np.r_[values, np.array(extra, dtype=values.dtype)]
            self._columns[name] = merged
        self._pending = []
        return self


def _default(values: np.ndarray) -> Any:
    kind = values.dtype.kind
    if kind == "b":
        return False
    if kind in "iu":
        return -1
    if kind == "f":
        return np.nan
    return ""
