"""Small shared pieces of the demo generator: seeded random streams, the batch record, date helpers.

Every random draw comes from a stream named after what it generates (`rng(seed, "vehicles")`), so
that adding a new dataset never shifts the numbers of an existing one and the same seed always gives
byte-identical files. Nothing here reads the wall clock.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import date, datetime

import numpy as np
import polars as pl

from ingestion.contract import Contract

EPOCH = date(1970, 1, 1)


def rng(seed: int, name: str) -> np.random.Generator:
    """An independent random stream for one named purpose; crc32 keeps it stable across processes."""
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])


def day_number(d: date) -> int:
    """Days since 1970-01-01, the unit of the numpy `datetime64[D]` arrays used throughout."""
    return (d - EPOCH).days


def minute_number(t: datetime) -> int:
    """Minutes since 1970-01-01 00:00 local (Beijing) time: the unit of every timestamp array."""
    return int((t - datetime(1970, 1, 1)).total_seconds() // 60)


@dataclass
class RowLabel:
    """A planted row-level fact: a defect the platform must quarantine, or a messy-but-valid value."""

    row: int
    rule: str
    note: str


@dataclass
class Batch:
    """One delivery: the typed frame of its rows plus what the writer and the labels need to know.

    `frame` holds the contract's columns with numbers, booleans, dates and naive local timestamps in
    their own types; the writer formats them. `protected` marks rows that the cross-check depends on:
    no random defect may touch them. `overrides` replaces single cells with raw delivered values
    (a wrong check character, an unparseable date ...) at write time.
    """

    contract: Contract
    batch_id: str
    extracted_at: datetime
    frame: pl.DataFrame
    protected: np.ndarray
    mode: str
    labels: list[RowLabel] = field(default_factory=list)
    overrides: dict[str, dict[int, object]] = field(default_factory=dict)
    fate: str = "ok"

    def __post_init__(self) -> None:
        expected = list(self.contract.column_names)
        if self.frame.columns != expected:
            raise ValueError(f"{self.contract.id}: frame columns {self.frame.columns} != contract {expected}")
        if len(self.protected) != self.frame.height:
            raise ValueError(f"{self.contract.id}: protected mask length does not match the frame")

    @property
    def rows(self) -> int:
        return self.frame.height


def make_batch(
    contract: Contract,
    extracted_at: datetime,
    frame: pl.DataFrame,
    protected: np.ndarray | None = None,
    mode: str | None = None,
    suffix: str = "",
    labels: list[RowLabel] | None = None,
) -> Batch:
    """A batch whose id is derived from its extraction time, so that ids sort in delivery order."""
    frame = frame.select(list(contract.column_names))
    mask = np.zeros(frame.height, dtype=bool) if protected is None else np.asarray(protected, dtype=bool)
    return Batch(
        contract=contract,
        batch_id=extracted_at.strftime("%Y%m%dT%H%M%S") + suffix,
        extracted_at=extracted_at,
        frame=frame,
        protected=mask,
        mode=mode or contract.default_mode,
        labels=labels or [],
    )
