"""Batches of the enterprise-centred contracts: registration, shareholders, tax, environment penalties,
fire inspections, investment projects and enterprise appeals. They all name enterprises of the one
register in `enterprises`, so a credit code links across every department.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import numpy as np
import polars as pl

from demo_data import timeline
from demo_data.columns import day, identifiers, in_window, incremental, integer, moment, number, text
from demo_data.common import Batch, RowLabel, day_number, make_batch, rng
from demo_data.enterprises import ACTIVE, COMPANY, ENTITY_STATUS, ENTITY_TYPES
from demo_data.events import END_MINUTE
from demo_data.population import LAST_EVENT_DAY, NO_DAY
from demo_data.world import World


def split_last(batches: Iterator[Batch]) -> Iterator[Batch]:
    """Deliver the last batch in two parts with `-1` / `-2` suffixes (a source that re-ran its export)."""
    previous: Batch | None = None
    for batch in batches:
        if previous is not None:
            yield previous
        previous = batch
    if previous is None:
        return
    last = previous
    half = last.rows // 2
    first_labels = [lb for lb in last.labels if lb.row < half]
    second_labels = [RowLabel(lb.row - half, lb.rule, lb.note) for lb in last.labels if lb.row >= half]
    one = make_batch(
        last.contract, last.extracted_at, last.frame.head(half), last.protected[:half], last.mode, "-1", first_labels
    )
    two = make_batch(
        last.contract, last.extracted_at, last.frame.slice(half), last.protected[half:], last.mode, "-2", second_labels
    )
    yield one
    yield two


def enterprise_registration(w: World) -> Iterator[Batch]:
    contract = w.contracts["shichang.enterprise_registration"]
    e = w.ent
    n = e.size
    established = e.established * 1440 + 9 * 60 + (np.arange(n) * 7) % 480
    changed = np.where(e.status_day > 0, e.status_day * 1440 + 10 * 60 + (np.arange(n) * 11) % 420, -1)
    base = np.maximum(e.base_update, established)
    rep_ids = np.where(e.legal_rep_has_id, w.pop.id_number[e.legal_rep], "")

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        rows = np.flatnonzero(
            in_window(established, previous, cut) | (in_window(changed, previous, cut) & (established <= cut))
        )
        applied = (changed[rows] >= 0) & (changed[rows] <= cut)
        located = e.has_location[rows]
        frame = pl.DataFrame(
            [
                text("uscc", e.uscc[rows]),
                text("name", e.name[rows]),
                text("entity_type", ENTITY_TYPES[e.entity_type[rows]]),
                text("legal_rep_name", w.pop.name[e.legal_rep[rows]]),
                text("legal_rep_id_number", rep_ids[rows]),
                number("registered_capital_wan_cny", e.capital[rows]),
                day("established_date", e.established[rows]),
                text("status", ENTITY_STATUS[np.where(applied, e.status[rows], ACTIVE)]),
                text("industry_code", e.industry[rows]),
                text("address", e.address[rows]),
                text("division_code", w.geo.community_code[e.community[rows]]),
                number("lon", np.where(located, e.lon[rows], np.nan)),
                number("lat", np.where(located, e.lat[rows], np.nan)),
                moment("updated_at", np.where(applied, np.maximum(changed[rows], base[rows]), base[rows])),
            ]
        )
        return frame, e.planted[rows], []

    yield from split_last(incremental(contract, timeline.daily_times(0, 30), build))


def shareholders(w: World) -> Iterator[Batch]:
    contract = w.contracts["shichang.shareholders"]
    e = w.ent
    owner = e.sh_enterprise
    available = e.established[owner] * 1440 + 9 * 60 + 30
    changed = np.where(e.sh_changed_day > 0, e.sh_changed_day * 1440 + 15 * 60, -1)
    person = e.sh_person
    names = np.where(e.sh_is_person, w.pop.name[np.maximum(person, 0)], e.name[np.maximum(e.sh_org, 0)])
    ids = np.where(e.sh_is_person, w.pop.id_number[np.maximum(person, 0)], "")
    messy = np.full(len(owner), "", dtype=object)
    for row, form in e.sh_messy.items():
        messy[row] = form

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        rows = np.flatnonzero(
            in_window(available, previous, cut) | (in_window(changed, previous, cut) & (available <= cut))
        )
        applied = (changed[rows] >= 0) & (changed[rows] <= cut)
        id_col, labels = identifiers("shareholder_id_number", ids[rows], messy[rows])
        frame = pl.DataFrame(
            [
                text("uscc", e.uscc[owner[rows]]),
                text("shareholder_key", e.sh_key[rows]),
                text("shareholder_type", np.where(e.sh_is_person[rows], "person", "organisation")),
                text("shareholder_name", names[rows]),
                id_col,
                number("subscribed_capital_wan_cny", np.round(e.sh_capital[rows] * np.where(applied, 1.5, 1.0), 2)),
            ]
        )
        return frame, e.sh_planted[rows], labels

    yield from incremental(contract, timeline.daily_times(0, 45), build)


def enterprise_tax(w: World) -> Iterator[Batch]:
    contract = w.contracts["shuiwu.enterprise_tax"]
    e = w.ent
    g = rng(w.seed, "tax")
    n = e.size
    scale = np.log(np.maximum(np.nan_to_num(e.capital, nan=20.0), 2.0) * 3)
    revenue = {y: np.round(np.exp(g.normal(scale, 0.9, n)), 2) for y in timeline.TAX_YEARS}
    rate = g.uniform(0.01, 0.08, n)
    rating = np.array(["A", "B", "M", "C", "D"])[g.choice(5, size=n, p=[0.25, 0.45, 0.2, 0.07, 0.03])]
    for year, t in zip(timeline.TAX_YEARS, timeline.TAX_TIMES, strict=False):
        year_end = day_number(date(year, 12, 31))
        alive = (e.established <= year_end) & ((e.status_day == NO_DAY) | (e.status_day > day_number(date(year, 1, 1))))
        rows = np.flatnonzero(alive)
        new = e.established[rows] > day_number(date(year, 1, 1))
        frame = pl.DataFrame(
            [
                text("uscc", e.uscc[rows]),
                integer("tax_year", np.full(len(rows), year)),
                number("revenue_wan_cny", revenue[year][rows]),
                number("tax_paid_wan_cny", np.round(revenue[year][rows] * rate[rows], 2)),
                text("credit_rating", np.where(new, "", rating[rows])),
            ]
        )
        yield make_batch(contract, t, frame, e.planted[rows], mode="incremental")
    # Corrections: a later batch re-delivers a few rows of the last tax year with revised figures.
    pick = np.sort(g.choice(frame.height, size=max(1, frame.height // 50), replace=False))
    fixed = frame[pick].with_columns(
        (pl.col("revenue_wan_cny") * 1.08).round(2), (pl.col("tax_paid_wan_cny") * 1.11).round(2)
    )
    yield make_batch(contract, timeline.TAX_TIMES[-1], fixed, e.planted[rows][pick], mode="incremental")


def environment_penalties(w: World) -> Iterator[Batch]:
    contract = w.contracts["shengtai.environment_penalties"]
    e = w.ent
    g = rng(w.seed, "penalties")
    makers = np.flatnonzero(np.char.startswith(e.industry.astype(str), "C") & ~e.planted)
    k = max(12, round(len(makers) * 0.05))
    who = makers[g.integers(len(makers), size=k)]
    decided = np.sort(g.integers(day_number(date(2024, 1, 1)), LAST_EVENT_DAY, k))
    year = decided.astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970
    seq = np.zeros(k, dtype=np.int64)
    for y in np.unique(year):
        seq[year == y] = np.arange(1, (year == y).sum() + 1)
    case_no = np.array([f"佛南环罚〔{y}〕{s}号" for y, s in zip(year.tolist(), seq.tolist(), strict=True)])
    violation = np.array(["waste_water", "waste_gas", "solid_waste", "noise", "unlicensed_discharge", "other"])[
        g.choice(6, size=k, p=[0.3, 0.3, 0.15, 0.1, 0.1, 0.05])
    ]
    penalty = np.round(g.uniform(10_000, 500_000, k), -3)
    available = (decided + 1) * 1440 + 9 * 60

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        rows = np.flatnonzero(in_window(available, previous, cut))
        frame = pl.DataFrame(
            [
                text("case_no", case_no[rows]),
                text("uscc", e.uscc[who[rows]]),
                text("violation_type", violation[rows]),
                number("penalty_cny", penalty[rows]),
                day("decided_date", decided[rows]),
            ]
        )
        return frame, np.zeros(len(rows), dtype=bool), []

    yield from incremental(contract, timeline.daily_times(2), build)


def fire_inspections(w: World) -> Iterator[Batch]:
    contract = w.contracts["xiaofang.fire_inspections"]
    e = w.ent
    g = rng(w.seed, "fire")
    start = day_number(date(2026, 1, 1))
    k = max(40, round(e.size * 0.5))
    inspected = np.sort(g.integers(start, LAST_EVENT_DAY, k))
    premises = g.random(k) < 0.7
    targets = np.flatnonzero(~e.planted)
    firm = targets[g.integers(len(targets), size=k)]
    grid = np.where(premises, e.grid[firm], g.integers(w.geo.n_grids, size=k))
    result = np.array(["pass", "hazard_rectify", "fail_closed"])[g.choice(3, size=k, p=[0.7, 0.25, 0.05])]
    hazards = np.where(result == "pass", 0, g.integers(1, 9, k))
    dates = inspected.astype("datetime64[D]").astype(str)
    starts = np.r_[0, np.flatnonzero(np.diff(inspected)) + 1]
    seq = np.arange(k) - np.repeat(starts, np.diff(np.r_[starts, k])) + 1
    ident = np.char.add(np.char.add("XFJC", np.char.replace(dates, "-", "")), np.char.zfill(seq.astype(str), 4))
    available = (inspected + 1) * 1440 + 7 * 60

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        rows = np.flatnonzero(in_window(available, previous, cut))
        frame = pl.DataFrame(
            [
                text("inspection_id", ident[rows]),
                text("uscc", np.where(premises[rows], e.uscc[firm[rows]], "")),
                text("grid_code", w.geo.grid_code[grid[rows]]),
                day("inspected_date", inspected[rows]),
                text("result", result[rows]),
                integer("hazard_count", hazards[rows]),
            ]
        )
        return frame, np.zeros(len(rows), dtype=bool), []

    yield from incremental(contract, timeline.daily_times(1, 20), build)


PROJECT_WORDS = (
    "生产线扩建项目",
    "智能制造产业园项目",
    "总部大楼建设项目",
    "技术改造项目",
    "仓储物流中心项目",
    "研发中心建设项目",
)


def investment_projects(w: World) -> Iterator[Batch]:
    contract = w.contracts["fagai.investment_projects"]
    e = w.ent
    g = rng(w.seed, "projects")
    companies = np.flatnonzero((e.entity_type == COMPANY) & (e.status == ACTIVE) & ~e.planted)
    k = max(8, round(e.size * 0.012))
    who = companies[g.integers(len(companies), size=k)]
    year = g.integers(2023, 2027, k)
    industry_digits = np.array([int(code[1:3]) if code[1:3].isdigit() else 99 for code in e.industry[who]])
    code = np.array(
        [
            f"{y}-440605-{d:02d}-03-{s:06d}"
            for y, d, s in zip(
                year.tolist(), industry_digits.tolist(), (g.permutation(k) + 10_001).tolist(), strict=True
            )
        ]
    )
    name = np.char.add(e.name[who], np.array(PROJECT_WORDS)[g.integers(len(PROJECT_WORDS), size=k)])
    total = np.round(np.exp(g.normal(np.log(8000), 1.0, k)), 1)
    grid = np.where(g.random(k) < 0.9, e.grid[who], -1)
    planned = day_number(date(2024, 1, 1)) + g.integers(0, 1200, k)
    delay = g.integers(0, 90, k)
    suspended = g.random(k) < 0.05
    weekly = g.uniform(0.5, 3.0, k)
    for t in timeline.WEEKLY_SNAPSHOTS:
        today = day_number(t.date())
        started = planned + delay < today
        progress = np.where(started, np.minimum(100.0, np.round((today - planned - delay) / 7 * weekly, 1)), 0.0)
        status = np.where(
            ~started,
            np.where(planned - today < 90, "preparing", "approved"),
            np.where(progress >= 100, "completed", "under_construction"),
        )
        status = np.where(suspended & started & (progress < 100), "suspended", status)
        frame = pl.DataFrame(
            [
                text("project_code", code),
                text("name", name),
                text("uscc", e.uscc[who]),
                number("total_investment_wan_cny", total),
                text("grid_code", np.where(grid >= 0, w.geo.grid_code[np.maximum(grid, 0)], "")),
                day("planned_start", planned),
                day("actual_start", planned + delay, started),
                number("progress_pct", progress),
                text("status", status),
            ]
        )
        yield make_batch(contract, t, frame, mode="snapshot")


APPEAL_STATUS = np.array(["open", "in_progress", "resolved", "closed"])


def enterprise_appeals(w: World) -> Iterator[Batch]:
    contract = w.contracts["zhengshu.enterprise_appeals"]
    a = w.appeals
    e = w.ent
    times = np.minimum(a.status_minutes, END_MINUTE + 10**6)

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        touched = np.zeros(len(a.minute), dtype=bool)
        for k in range(4):
            touched |= in_window(times[:, k], previous, cut)
        rows = np.flatnonzero(touched & (a.minute <= cut))
        state = (times[rows] <= cut).sum(axis=1) - 1
        frame = pl.DataFrame(
            [
                text("appeal_id", a.appeal_id[rows]),
                text("uscc", e.uscc[a.enterprise[rows]]),
                moment("submitted_at", a.minute[rows]),
                text("topic", a.topic[rows]),
                text("content", a.content[rows].astype(str)),
                text("status", APPEAL_STATUS[state]),
            ]
        )
        return frame, np.zeros(len(rows), dtype=bool), []

    yield from incremental(contract, timeline.HOURLY_TIMES, build)
