"""Helpers that turn generated numpy arrays into the polars columns a batch frame is made of."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

import numpy as np
import polars as pl

from demo_data.common import Batch, RowLabel, make_batch, minute_number
from demo_data.ids import messy_form
from ingestion.contract import Contract


def text(name: str, values: np.ndarray | Sequence[str] | pl.Series) -> pl.Series:
    """A string column in which empty strings become null (the CSV convention: empty = null)."""
    series = values.rename(name) if isinstance(values, pl.Series) else pl.Series(name, values, dtype=pl.String)
    return pl.select(pl.when(series == "").then(None).otherwise(series).alias(name)).to_series()


def choices(name: str, options: Sequence[str] | np.ndarray, codes: np.ndarray) -> pl.Series:
    """A string column from a small vocabulary and integer codes (much faster than numpy strings)."""
    return text(
        name, pl.Series(name, [str(o) for o in options], dtype=pl.String).gather(np.asarray(codes, dtype=np.int64))
    )


def gathered(name: str, source: pl.Series, rows: np.ndarray, valid: np.ndarray | None = None) -> pl.Series:
    """Rows of a prepared string column; rows where `valid` is False become null."""
    series = source.gather(np.asarray(rows, dtype=np.int64)).rename(name)
    if valid is not None:
        series = pl.select(
            pl.when(pl.Series(np.asarray(valid, dtype=bool))).then(series).otherwise(None).alias(name)
        ).to_series()
    return series


def number(name: str, values: np.ndarray) -> pl.Series:
    """A float column; NaN becomes null."""
    series = pl.Series(name, np.asarray(values, dtype=np.float64))
    return series.fill_nan(None)


def integer(name: str, values: np.ndarray, null_below: int | None = None) -> pl.Series:
    series = pl.Series(name, np.asarray(values, dtype=np.int64))
    if null_below is not None:
        series = pl.select(pl.when(series < null_below).then(None).otherwise(series).alias(name)).to_series()
    return series


def flag(name: str, values: np.ndarray) -> pl.Series:
    return pl.Series(name, np.asarray(values, dtype=bool))


def day(name: str, days: np.ndarray, valid: np.ndarray | None = None) -> pl.Series:
    """A Date column from day numbers; rows where `valid` is False are null."""
    series = pl.Series(name, np.asarray(days, dtype=np.int64)).cast(pl.Int32).cast(pl.Date)
    if valid is not None:
        series = pl.select(
            pl.when(pl.Series(np.asarray(valid, dtype=bool))).then(series).otherwise(None).alias(name)
        ).to_series()
    return series


def moment(name: str, minutes: np.ndarray, seconds: np.ndarray | None = None) -> pl.Series:
    """A naive local Datetime column (the writer adds +08:00) from minute numbers."""
    micros = np.asarray(minutes, dtype=np.int64) * 60_000_000
    if seconds is not None:
        micros = micros + np.asarray(seconds, dtype=np.int64) * 1_000_000
    return pl.Series(name, micros).cast(pl.Datetime("us"))


def identifiers(
    name: str, values: pl.Series | np.ndarray, messy: np.ndarray, valid: np.ndarray | None = None
) -> tuple[pl.Series, list[RowLabel]]:
    """An ID-number column where planted rows carry a messy-but-valid form, with their labels."""
    series = text(name, values if isinstance(values, pl.Series) else np.asarray(values))
    if valid is not None:
        series = pl.select(
            pl.when(pl.Series(np.asarray(valid, dtype=bool))).then(series).otherwise(None).alias(name)
        ).to_series()
    rows = np.flatnonzero(np.asarray(messy, dtype=object) != "")
    labels: list[RowLabel] = []
    if len(rows):
        current = series.gather(rows).to_list()
        forms = [str(messy[i]) for i in rows]
        replaced = [messy_form(v, f) for v, f in zip(current, forms, strict=True)]
        series = series.scatter(rows, pl.Series(replaced, dtype=pl.String))
        labels = [
            RowLabel(int(r), "normalisable", f"column={name}; form={f}") for r, f in zip(rows, forms, strict=True)
        ]
    return series, labels


def incremental(
    contract: Contract,
    times: Sequence[datetime],
    build: Callable[[int | None, int], tuple[pl.DataFrame, np.ndarray, list[RowLabel]]],
) -> Iterator[Batch]:
    """One batch per extraction time: `build(previous_cut, cut)` returns what changed in (previous, cut]."""
    previous: int | None = None
    for t in times:
        cut = minute_number(t)
        frame, protected, labels = build(previous, cut)
        yield make_batch(contract, t, frame, protected, mode="incremental", labels=labels)
        previous = cut


def in_window(minutes: np.ndarray, previous: int | None, cut: int) -> np.ndarray:
    minutes = np.asarray(minutes)
    return minutes <= cut if previous is None else (minutes > previous) & (minutes <= cut)
