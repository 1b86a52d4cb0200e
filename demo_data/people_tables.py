"""Batches of the person-centred contracts: household registration, assistance, vehicles, real estate,
social insurance, provident fund, cremations, death certificates and party membership.

Each function turns the world into the deliveries of one contract, following the timeline: snapshot
feeds show the state on their extraction day, incremental feeds carry what became known since the
previous batch (new rows and changed rows with a later `updated_at`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime

import numpy as np
import polars as pl

from demo_data import timeline, vocab
from demo_data.assistance import ABSENT, CASE_STATUS, CASE_TYPES
from demo_data.columns import (
    choices,
    day,
    flag,
    gathered,
    identifiers,
    in_window,
    incremental,
    integer,
    moment,
    number,
    text,
)
from demo_data.common import Batch, RowLabel, day_number, make_batch, rng
from demo_data.holdings import (
    F_NORMAL,
    FUND_STATUS,
    JULY,
    PROPERTY_USES,
    RIGHT_STATUS,
    V_NORMAL,
    VEHICLE_STATUS,
    VEHICLE_TYPES,
    VEHICLE_USES,
)
from demo_data.party import Party
from demo_data.population import NORMAL, RELATIONS, STATUS_NAMES
from demo_data.world import World

INSURANCE_TYPES = ("pension", "medical", "unemployment", "injury")


def household_registration(w: World) -> Iterator[Batch]:
    contract = w.contracts["gongan.household_registration"]
    pop = w.pop
    n = pop.n_residents
    g = rng(w.seed, "household-registration")
    hh = pop.household[:n]
    # The last change before the demo window; babies born just before or during it register late.
    first_day = day_number(date(2012, 1, 1)) + g.integers(0, 5000, n)
    last_day = day_number(timeline.HISTORY_START) - 2
    base_day = np.minimum(np.maximum(pop.reg_start[:n], first_day), last_day)
    base_day = np.where(pop.reg_start[:n] > last_day - 60, pop.reg_start[:n], base_day)
    base_update = base_day * 1440 + g.integers(8 * 60, 18 * 60, n)
    static = pl.DataFrame(
        [
            pop.series("id_number").head(n),
            pop.series("name").head(n),
            choices("gender", ["1", "2"], pop.gender[:n] - 1),
            day("birth_date", pop.birth[:n]),
            gathered("household_id", pop.series("hh_id"), hh),
            choices("relation_to_head", RELATIONS, pop.relation[:n]),
            gathered("address", pop.series("hh_address"), hh, g.random(n) < 0.98),
            choices("division_code", w.geo.community_code, pop.hh_community[hh]),
        ]
    )
    for t in timeline.HOUSEHOLD_SNAPSHOTS:
        today = day_number(t.date())
        present = pop.reg_start[:n] < today
        applied = (pop.status[:n] != NORMAL) & (pop.status_day[:n] < today)
        status = np.where(applied, pop.status[:n], NORMAL)
        changed_at = pop.status_day[:n] * 1440 + 9 * 60 + (np.arange(n) * 37) % 480
        updated = np.where(applied, np.maximum(changed_at, base_update), base_update)
        frame = static.with_columns(
            choices("status", STATUS_NAMES, status),
            day("status_date", pop.status_day[:n], applied),
            moment("updated_at", updated, (np.arange(n) * 13) % 60),
        ).filter(pl.Series(present))
        yield make_batch(contract, t, frame, w.reserved[:n][present], mode="snapshot")


def assistance_cases(w: World) -> Iterator[Batch]:
    contract = w.contracts["minzheng.assistance_cases"]
    c = w.cases
    size = c.household_size()
    for k, t in enumerate(timeline.ASSISTANCE_SNAPSHOTS):
        present = c.status[:, k] != ABSENT
        today = day_number(t.date())
        frame = pl.DataFrame(
            [
                text("case_id", c.case_id),
                text("case_type", CASE_TYPES[c.case_type]),
                text("head_id_number", w.pop.id_number[c.head]),
                text("head_name", w.pop.name[c.head]),
                text("division_code", w.geo.community_code[c.community]),
                integer("household_size", size),
                number("monthly_amount_cny", c.monthly_amount),
                day("approved_date", c.approved_day),
                day("last_review_date", np.minimum(c.review_day, today - 1), c.review_day > c.approved_day),
                text("status", CASE_STATUS[np.maximum(c.status[:, k], 0)]),
                moment("updated_at", c.updated_minute[:, k]),
            ]
        ).filter(pl.Series(present))
        yield make_batch(contract, t, frame, c.planted[present], mode="snapshot")


def assistance_members(w: World) -> Iterator[Batch]:
    contract = w.contracts["minzheng.assistance_members"]
    c = w.cases
    for k, t in enumerate(timeline.ASSISTANCE_SNAPSHOTS):
        present = c.status[c.m_case, k] != ABSENT
        frame = pl.DataFrame(
            [
                text("case_id", c.case_id[c.m_case]),
                text("member_id_number", w.pop.id_number[c.m_person]),
                text("member_name", w.pop.name[c.m_person]),
                text("relation_to_head", RELATIONS[c.m_relation]),
                text("disability_level", np.where(c.m_disability > 0, c.m_disability.astype(str), "")),
            ]
        ).filter(pl.Series(present))
        yield make_batch(contract, t, frame, c.planted[c.m_case][present], mode="snapshot")


def vehicle_registration(w: World) -> Iterator[Batch]:
    contract = w.contracts["gongan.vehicle_registration"]
    v = w.holdings.vehicles
    owner = np.maximum(v.owner_person, 0)
    is_person = v.owner_person >= 0
    plates = text("plate_no", v.plate)
    org_uscc = text("owner_uscc", v.org_uscc)
    org_name = text("owner_name", v.org_name)
    registered = v.registered_day * 1440 + v.update_minute
    changed = np.where(v.status_day > 0, v.status_day * 1440 + v.update_minute, -1)

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        show = in_window(registered, previous, cut) | (in_window(changed, previous, cut) & (registered <= cut))
        rows = np.flatnonzero(show)
        applied = (changed[rows] >= 0) & (changed[rows] <= cut)
        person = is_person[rows]
        ids = gathered("owner_id_number", w.pop.series("id_number"), owner[rows], person)
        id_col, labels = identifiers("owner_id_number", ids, v.messy[rows])
        names = pl.select(
            pl.when(pl.Series(person))
            .then(w.pop.series("name").gather(owner[rows]))
            .otherwise(org_name.gather(rows))
            .alias("owner_name")
        ).to_series()
        frame = pl.DataFrame(
            [
                gathered("plate_no", plates, rows),
                id_col,
                gathered("owner_uscc", org_uscc, rows),
                names,
                choices("vehicle_type", VEHICLE_TYPES, v.vtype[rows]),
                choices("use_nature", VEHICLE_USES, v.use[rows]),
                day("registered_date", v.registered_day[rows]),
                number("invoice_price_cny", v.price[rows]),
                choices("status", VEHICLE_STATUS, np.where(applied, v.status[rows], V_NORMAL)),
                moment("updated_at", np.where(applied, changed[rows], registered[rows])),
            ]
        )
        return frame, v.planted[rows], labels

    yield from incremental(contract, timeline.daily_times(1, 10), build)


def real_estate(w: World) -> Iterator[Batch]:
    contract = w.contracts["ziranziyuan.real_estate"]
    e = w.holdings.estates
    certificates = text("certificate_no", e.certificate_no)
    registered = e.registered_day * 1440 + 10 * 60
    changed = np.where(e.status_day > 0, e.status_day * 1440 + 14 * 60, -1)

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        show = in_window(registered, previous, cut) | (in_window(changed, previous, cut) & (registered <= cut))
        rows = np.flatnonzero(show)
        applied = (changed[rows] >= 0) & (changed[rows] <= cut)
        ids = w.pop.series("id_number").gather(e.owner_person[rows])
        id_col, labels = identifiers("owner_id_number", ids, e.messy[rows])
        frame = pl.DataFrame(
            [
                gathered("certificate_no", certificates, rows),
                id_col,
                gathered("owner_name", w.pop.series("name"), e.owner_person[rows]),
                number("share_ratio", e.share[rows]),
                choices("property_use", PROPERTY_USES, e.use[rows]),
                number("area_m2", e.area[rows]),
                choices("division_code", w.geo.community_code, e.community[rows]),
                day("registered_date", e.registered_day[rows]),
                choices("status", RIGHT_STATUS, np.where(applied, e.status[rows], e.prior_status[rows])),
            ]
        )
        return frame, e.planted[rows], labels

    yield from incremental(contract, timeline.daily_times(2, 30), build)


def social_insurance(w: World) -> Iterator[Batch]:
    contract = w.contracts["renshe.social_insurance"]
    s = w.holdings.insurance
    employer_uscc = text("employer_uscc", s.employer_uscc)
    employer_name = text("employer_name", s.employer_name)
    for k, period in enumerate(timeline.PERIODS):
        enrolled = np.flatnonzero((s.first_period <= k) & (s.last_period >= k))
        employed = enrolled[s.full_types[enrolled]]
        rows = np.concatenate([enrolled, enrolled, employed, employed])
        kinds = np.repeat(np.arange(4), [len(enrolled), len(enrolled), len(employed), len(employed)])
        base = s.base[rows] * np.where(s.raise_in_july[rows] & (k >= JULY), 1.03, 1.0)
        id_col, labels = identifiers("id_number", w.pop.series("id_number").gather(s.person[rows]), s.messy[rows])
        frame = pl.DataFrame(
            [
                id_col,
                gathered("name", w.pop.series("name"), s.person[rows]),
                gathered("employer_uscc", employer_uscc, rows),
                gathered("employer_name", employer_name, rows),
                choices("period", [period], np.zeros(len(rows), dtype=np.int64)),
                choices("insurance_type", INSURANCE_TYPES, kinds),
                number("contribution_base_cny", np.round(base)),
                flag("is_civil_servant", s.civil[rows]),
            ]
        )
        t = timeline.period_extraction(period, 12, 3)
        yield make_batch(contract, t, frame, s.planted[rows], mode="incremental", labels=labels)


def provident_fund(w: World) -> Iterator[Batch]:
    contract = w.contracts["gongjijin.provident_fund"]
    f = w.holdings.funds
    accounts = text("account_no", f.account_no)
    employers = text("employer_uscc", f.employer_uscc)
    for k, period in enumerate(timeline.PERIODS):
        rows = np.flatnonzero((f.first_period <= k) & (f.last_period >= k))
        normal = k < f.status_period[rows]
        status = np.where(normal, F_NORMAL, f.status[rows])
        paid_months = np.clip(np.minimum(k, f.status_period[rows] - 1) - f.first_period[rows] + 1, 0, None)
        balance = f.balance0[rows] + f.deposit[rows] * paid_months
        id_col, labels = identifiers("id_number", w.pop.series("id_number").gather(f.person[rows]), f.messy[rows])
        frame = pl.DataFrame(
            [
                gathered("account_no", accounts, rows),
                id_col,
                gathered("name", w.pop.series("name"), f.person[rows]),
                gathered("employer_uscc", employers, rows),
                choices("period", [period], np.zeros(len(rows), dtype=np.int64)),
                number("monthly_deposit_cny", np.where(normal, f.deposit[rows], 0.0)),
                number("balance_cny", np.round(balance, 2)),
                choices("status", FUND_STATUS, status),
            ]
        )
        t = timeline.period_extraction(period, 8, 4)
        yield make_batch(contract, t, frame, f.planted[rows], mode="incremental", labels=labels)


def cremation_records(w: World) -> Iterator[Batch]:
    contract = w.contracts["minzheng.cremation_records"]
    c = w.holdings.cremations
    available = c.available_day * 1440 + 8 * 60

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        rows = np.flatnonzero(in_window(available, previous, cut))
        id_col, labels = identifiers("id_number", w.pop.id_number[c.person[rows]], c.messy[rows])
        frame = pl.DataFrame(
            [
                text("record_id", c.record_id[rows]),
                id_col,
                text("name", w.pop.name[c.person[rows]]),
                day("death_date", c.death_day[rows]),
                day("cremation_date", c.cremation_day[rows]),
                text("funeral_home", np.array(vocab.FUNERAL_HOMES)[c.home[rows]]),
            ]
        )
        return frame, c.planted[rows], labels

    yield from incremental(contract, timeline.daily_times(1, 40), build)


def death_certificates(w: World) -> Iterator[Batch]:
    contract = w.contracts["weijian.death_certificates"]
    c = w.holdings.certificates
    available = c.available_day * 1440 + 8 * 60

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        rows = np.flatnonzero(in_window(available, previous, cut))
        person = c.person[rows]
        ids = np.where(person >= 0, w.pop.id_number[np.maximum(person, 0)], "")
        id_col, labels = identifiers("id_number", ids, c.messy[rows], valid=c.has_id[rows])
        frame = pl.DataFrame(
            [
                text("certificate_no", c.certificate_no[rows]),
                id_col,
                text("name", c.name[rows]),
                text("gender", c.gender[rows].astype(str)),
                day("birth_date", c.birth_day[rows], c.birth_day[rows] > -(10**5)),
                day("death_date", c.death_day[rows]),
                text("hospital", np.array(vocab.HOSPITALS)[c.hospital[rows]]),
            ]
        )
        return frame, c.planted[rows], labels

    yield from incremental(contract, timeline.daily_times(3), build)


def _party_snapshots() -> list[tuple[int, datetime]]:
    return [(day_number(t.date()), t) for t in timeline.WEEKLY_SNAPSHOTS]


def party_organizations(w: World) -> Iterator[Batch]:
    contract = w.contracts["zuzhibu.party_organizations"]
    p: Party = w.party
    frame = pl.DataFrame(
        [
            text("org_code", p.org_code),
            text("name", p.org_name),
            text("org_type", p.org_type),
            text("parent_org_code", p.org_parent),
            text("division_code", p.org_division),
        ]
    )
    for t in timeline.WEEKLY_SNAPSHOTS:
        yield make_batch(contract, t, frame, mode="snapshot")


def party_members(w: World) -> Iterator[Batch]:
    contract = w.contracts["zuzhibu.party_members"]
    p: Party = w.party
    for today, t in _party_snapshots():
        present = p.joined_day < today
        probationary = p.joined_day > today - 365
        frame = pl.DataFrame(
            [
                text("member_id", p.member_id),
                text("id_number", w.pop.id_number[p.person]),
                text("name", w.pop.name[p.person]),
                text("org_code", p.org_code[p.branch]),
                day("joined_date", p.joined_day),
                text("member_status", np.where(probationary, "probationary", "full")),
                flag("in_service", p.in_service),
            ]
        ).filter(pl.Series(present))
        yield make_batch(contract, t, frame, mode="snapshot")


def household_links(w: World) -> Iterator[Batch]:
    contract = w.contracts["zuzhibu.household_links"]
    p: Party = w.party
    for k, (today, t) in enumerate(_party_snapshots()):
        present = (p.joined_day[p.link_member] < today) & (p.link_day < today)
        visit = p.link_visit[:, k]
        frame = pl.DataFrame(
            [
                text("member_id", p.member_id[p.link_member]),
                text("household_id", w.pop.hh_id[p.link_household]),
                text("grid_code", w.geo.grid_code[w.pop.hh_grid[p.link_household]]),
                day("linked_date", p.link_day),
                day("last_visit_date", visit, visit >= 0),
            ]
        ).filter(pl.Series(present))
        yield make_batch(contract, t, frame, mode="snapshot")
