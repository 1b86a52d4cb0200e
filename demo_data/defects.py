"""Planted bad input: row defects the platform must quarantine, messy-but-valid IDs it must normalise,
and whole batches it must reject or wait for.

The rules a row can break are read off the contract (required columns, typed columns, patterns,
allowed values, ranges, ID and credit-code columns, the primary key), so every contract gets the
defects it can have. The share of bad rows in an ordinary batch stays below 4% (the platform rejects a
batch above 5%); one batch gets 15% on purpose. Protected rows (those the cross-check labels rely on)
are never touched. Every planted row is labelled; the writer turns row numbers into record keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from demo_data.common import Batch, RowLabel, rng
from demo_data.ids import messy_form, wrong_ric_check, wrong_uscc_check
from demo_data.timeline import HOURLY_TIMES
from ingestion.contract import Column, Contract

RULES = ("required", "type", "pattern", "allowed_values", "range", "check_character", "duplicate_key")
MAX_BAD_SHARE = 0.04
REJECT_SHARE = 0.15
MESSY_FORMS = ("spaces", "fullwidth", "lowercase_x", "15_digit")


@dataclass(frozen=True)
class BadBatch:
    contract_id: str
    batch_index: int  # position of the batch in the contract's delivery order
    reason_kind: str  # row_count | sha256 | unknown_version | too_many_bad_rows | no_manifest

    @property
    def expected_status(self) -> str:
        return "waiting" if self.reason_kind == "no_manifest" else "rejected"


BAD_BATCHES = (
    BadBatch("xiaofang.fire_inspections", 1, "row_count"),
    BadBatch("zhengshu.enterprise_appeals", 1, "sha256"),
    BadBatch("qixiang.rainfall_forecast", 2, "unknown_version"),
    BadBatch("zhengshu.video_cameras", 1, "too_many_bad_rows"),
    BadBatch("chengguan.grid_reports", len(HOURLY_TIMES) - 1, "no_manifest"),  # the last: nothing waits behind it
)


def bad_batch_for(contract_id: str, index: int) -> BadBatch | None:
    for bad in BAD_BATCHES:
        if bad.contract_id == contract_id and bad.batch_index == index:
            return bad
    return None


def _columns_for(contract: Contract, rule: str) -> list[Column]:
    """The columns on which a row can break `rule` (primary-key columns only keep their own rules)."""
    key = set(contract.primary_key)
    parquet = contract.file_format == "parquet"
    tests = {
        "required": lambda c: c.required and c.name not in key,
        "type": lambda c: not parquet and c.logical_type != "string" and c.name not in key,
        "pattern": lambda c: bool(c.pattern),
        "allowed_values": lambda c: bool(c.allowed_values),
        "range": lambda c: (c.minimum is not None or c.maximum is not None) and c.name not in key,
        "check_character": lambda c: bool(c.identifier_kind),
    }
    return [c for c in contract.columns if tests[rule](c)]


def applicable_rules(contract: Contract) -> dict[str, list[Column]]:
    rules = {rule: _columns_for(contract, rule) for rule in RULES if rule != "duplicate_key"}
    rules = {rule: cols for rule, cols in rules.items() if cols}
    if contract.primary_key:
        rules["duplicate_key"] = []
    return rules


TYPE_GARBAGE = {
    "number": ("N/A", "一百二", "12.5.3"),
    "integer": ("N/A", "三", "两个"),
    "date": ("2026-02-30", "2026/13/01", "未知"),
    "timestamp": ("2026-11-31T25:61:00+08:00", "N/A", "昨天下午"),
    "boolean": ("是", "N/A", "maybe"),
}
WRONG_VALUES = ("unknown", "其他", "待定", "N/A")


def _corrupt(rule: str, column: Column, value: object, g: np.random.Generator) -> object:
    """The delivered value that breaks `rule` on `column` (value is the good one, not null)."""
    if rule == "required":
        return None
    if rule == "type":
        options = TYPE_GARBAGE[column.logical_type]
        return options[int(g.integers(len(options)))]
    if rule == "check_character":
        text = str(value)
        return wrong_ric_check(text, g) if column.identifier_kind == "resident_id" else wrong_uscc_check(text, g)
    if rule == "pattern":
        text = str(value)
        if column.identifier_kind:
            cut = int(g.integers(6, 16))
            bad = text[:cut] + text[cut + 1 :]
        else:
            bad = text[:2] + "O" + text[3:] if len(text) > 3 else "O" + text
        return bad if not re.match(column.pattern or "", bad) else "X" + bad
    if rule == "allowed_values":
        allowed = set(column.allowed_values or ())
        options = ("9", "0") if all(v.isdigit() for v in allowed) else WRONG_VALUES
        return next(v for v in options if v not in allowed)
    if rule == "range":
        if column.minimum is not None and (column.maximum is None or g.random() < 0.6):
            low = float(column.minimum) - float(np.round(g.uniform(1, 500), 0))
            return int(low) if column.logical_type == "integer" else low
        high = float(column.maximum) + max(1.0, float(column.maximum) * 0.5)  # type: ignore[arg-type]
        return int(high) if column.logical_type == "integer" else high
    raise ValueError(rule)


def plant_row_defects(
    batch: Batch, seed: int, rate: float, index: int, share_cap: float = MAX_BAD_SHARE, at_least: int = 0
) -> None:
    """Corrupt a share `rate` of the unprotected rows (at least `at_least`), within `share_cap`; label each."""
    contract = batch.contract
    g = rng(seed, f"defects/{contract.id}/{index}")
    rules = applicable_rules(contract)
    free = np.flatnonzero(~batch.protected)
    n = batch.rows
    if n == 0 or len(free) == 0 or not rules:
        return
    wanted = max(int(g.binomial(len(free), min(rate, 1.0))), at_least)
    if wanted == 0:
        return
    rows = np.sort(g.choice(free, size=min(wanted, len(free)), replace=False))
    names = list(rules)
    chosen = [names[int(g.integers(len(names)))] for _ in rows]
    # Keep within the cap: each duplicate makes two bad rows out of one more row.
    dups = sum(1 for r in chosen if r == "duplicate_key")
    while chosen and (len(chosen) + dups) / (n + dups) > share_cap:
        dropped = chosen.pop()
        rows = rows[:-1]
        dups -= dropped == "duplicate_key"
    if not chosen:
        return
    key = contract.primary_key
    needed = {c.name for cols in rules.values() for c in cols} | set(key)
    values = {name: batch.frame[name].gather(rows).to_list() for name in needed}
    duplicates: list[int] = []
    # A corrupted key column must not make two rows share a key (e.g. two insurance rows of one
    # person both turned into insurance_type "unknown"): that would be an unlabelled duplicate.
    corrupted_keys: set[tuple[object, ...]] = set()
    for i, (row, rule) in enumerate(zip(rows.tolist(), chosen, strict=True)):
        if rule == "duplicate_key":
            duplicates.append(row)
            batch.labels.append(RowLabel(row, "duplicate_key", "two rows with this key in the batch"))
            continue
        candidates = [c for c in rules[rule] if values[c.name][i] is not None]
        if not candidates:
            continue
        column = candidates[int(g.integers(len(candidates)))]
        bad = _corrupt(rule, column, values[column.name][i], g)
        if column.name in key:
            new_key = tuple(bad if k == column.name else values[k][i] for k in key)
            if new_key in corrupted_keys:
                continue
            corrupted_keys.add(new_key)
        batch.overrides.setdefault(column.name, {})[row] = bad
        batch.labels.append(RowLabel(row, rule, f"column={column.name}; value={'' if bad is None else bad}"))
    if duplicates:
        idx = np.array(duplicates)
        batch.frame = pl.concat([batch.frame, batch.frame[idx]], how="vertical")
        batch.protected = np.r_[batch.protected, np.ones(len(idx), dtype=bool)]


def plant_messy_ids(batch: Batch, seed: int, rate: float, index: int) -> None:
    """Write a share of ID numbers in valid but untidy forms (spaces, full-width, x, 15 digits)."""
    contract = batch.contract
    id_columns = [c.name for c in contract.columns if c.identifier_kind == "resident_id"]
    if not id_columns or batch.rows == 0 or rate <= 0:
        return
    g = rng(seed, f"messy/{contract.id}/{index}")
    mask = ~batch.protected
    mask[[lb.row for lb in batch.labels]] = False
    free = np.flatnonzero(mask)
    if len(free) == 0:
        return
    k = int(g.binomial(len(free), rate))
    if k == 0:
        return
    rows = np.sort(g.choice(free, size=k, replace=False))
    column = id_columns[0]
    values = batch.frame[column].gather(rows).to_list()
    for row, value in zip(rows.tolist(), values, strict=True):
        if value is None or row in batch.overrides.get(column, {}):
            continue
        form = MESSY_FORMS[int(g.integers(len(MESSY_FORMS)))]
        if form == "lowercase_x" and not value.endswith("X"):
            form = "spaces"
        if form == "15_digit" and value[6:8] != "19":
            form = "fullwidth"
        batch.overrides.setdefault(column, {})[row] = messy_form(value, form)
        batch.labels.append(RowLabel(row, "normalisable", f"column={column}; form={form}"))


def apply_defects(batch: Batch, seed: int, rate: float, index: int) -> BadBatch | None:
    """All planting for one batch; returns the whole-batch fault it carries, if any."""
    bad = bad_batch_for(batch.contract.id, index)
    if bad is not None:
        batch.fate = bad.reason_kind
        if bad.reason_kind == "too_many_bad_rows":
            plant_row_defects(batch, seed, REJECT_SHARE, index, share_cap=1.0, at_least=int(batch.rows * 0.1) + 2)
        return bad
    plant_row_defects(batch, seed, rate, index)
    plant_messy_ids(batch, seed, rate / 4, index)
    return None
