"""Social-assistance cases (低保, 特困, 低保边缘) of the ordinary, rule-abiding kind.

The households chosen here are picked before any other department's data is made, so that every
other generator can keep their members out of what would break a cross-check rule: they own no car
and no second home, run no company, earn below the pension threshold, are no civil servants, hold
no provident-fund account, stay alive and registered, and belong to one case only. That is what makes
the planted cases (see `crosscheck`) the only true positives, so precision can be measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from demo_data.common import day_number, rng
from demo_data.population import AS_OF_DAY, Population
from demo_data.timeline import ASSISTANCE_SNAPSHOTS

CASE_TYPES = np.array(["dibao", "tekun", "dibao_edge"])
CASE_STATUS = np.array(["active", "suspended", "terminated"])
ACTIVE, SUSPENDED, TERMINATED, ABSENT = 0, 1, 2, -1
N_SNAPSHOTS = len(ASSISTANCE_SNAPSHOTS)


@dataclass
class Cases:
    case_type: np.ndarray
    head: np.ndarray  # person index of the applicant
    community: np.ndarray
    monthly_amount: np.ndarray
    approved_day: np.ndarray
    review_day: np.ndarray
    status: np.ndarray  # (n, N_SNAPSHOTS) status per assistance snapshot, ABSENT before approval
    updated_minute: np.ndarray  # (n, N_SNAPSHOTS)
    planted: np.ndarray
    m_case: np.ndarray  # members, one row each
    m_person: np.ndarray
    m_relation: np.ndarray  # index into population.RELATIONS
    m_disability: np.ndarray  # 0 = none, 1-4
    case_id: np.ndarray | None = None

    @property
    def size(self) -> int:
        return len(self.head)

    def household_size(self) -> np.ndarray:
        return np.bincount(self.m_case, minlength=self.size)


def clean_households(pop: Population) -> np.ndarray:
    """Households none of whose members has a life event and whose head is an adult."""
    residents = pop.n_residents
    hh = pop.household[:residents]
    bad = np.bincount(hh, weights=pop.eventful[:residents].astype(float), minlength=pop.n_households) > 0
    head_age = pop.age_on(AS_OF_DAY)[pop.hh_start]
    return np.flatnonzero(~bad & (head_age >= 20))


def choose_households(seed: int, pop: Population, planted_needed: int) -> tuple[np.ndarray, np.ndarray]:
    """Background assistance households and a disjoint pool for the planted cases."""
    g = rng(seed, "assistance-households")
    clean = g.permutation(clean_households(pop))
    n_background = max(4, round(pop.n_households * 0.012))
    n_pool = min(len(clean) - n_background, planted_needed + 40)
    if n_pool < planted_needed:
        raise ValueError("population too small for the planted cross-check cases; raise the scale")
    pool = clean[:n_pool]
    background = clean[n_pool : n_pool + n_background]
    return np.sort(background), pool


def reserved_persons(pop: Population, households: np.ndarray) -> np.ndarray:
    """Mask of every member of the given households."""
    mask = np.zeros(pop.size, dtype=bool)
    mask[: pop.n_residents] = np.isin(pop.household[: pop.n_residents], households)
    return mask


def build_background_cases(seed: int, pop: Population, households: np.ndarray) -> Cases:
    g = rng(seed, "assistance-cases")
    n = len(households)
    sizes = pop.hh_size[households]
    case_type = np.where(sizes == 1, np.where(g.random(n) < 0.5, 1, 0), np.where(g.random(n) < 0.7, 0, 2))
    per_person = np.where(
        case_type == 0, g.uniform(850, 1250, n), np.where(case_type == 1, g.uniform(1800, 2500, n), 0)
    )
    amount = np.where(case_type == 2, g.uniform(300, 600, n), per_person * sizes)
    approved = day_number(date(2014, 1, 1)) + (
        g.random(n) * (day_number(date(2026, 8, 20)) - day_number(date(2014, 1, 1)))
    )
    approved = approved.astype(np.int64)
    # A few cases are approved during the window, a few end.
    late = g.random(n) < 0.06
    approved[late] = day_number(ASSISTANCE_SNAPSHOTS[0].date()) + g.integers(5, 55, late.sum())
    status = np.full((n, N_SNAPSHOTS), ACTIVE, dtype=np.int8)
    snap_days = np.array([day_number(s.date()) for s in ASSISTANCE_SNAPSHOTS])
    status[approved[:, None] > snap_days[None, :]] = ABSENT
    u = g.random(n)
    status[(u < 0.05)[:, None] & (status != ABSENT)] = SUSPENDED
    ended_before = (u >= 0.05) & (u < 0.12)
    status[ended_before[:, None] & (status != ABSENT)] = TERMINATED
    ends_now = (u >= 0.12) & (u < 0.16) & ~late
    status[ends_now, -1] = TERMINATED
    review = np.minimum(
        np.maximum(approved, day_number(date(2025, 9, 1)) + g.integers(0, 330, n)), snap_days[-1] - 1
    ).astype(np.int64)
    updated = np.empty((n, N_SNAPSHOTS), dtype=np.int64)
    base = np.maximum(review, approved) * 1440 + g.integers(9 * 60, 17 * 60, n)
    for k in range(N_SNAPSHOTS):
        updated[:, k] = np.minimum(base, (snap_days[k] - 1) * 1440 + 600)
    updated[ends_now, -1] = (snap_days[-1] - g.integers(2, 25, ends_now.sum())) * 1440 + 630

    m_case = np.repeat(np.arange(n), sizes)
    first = pop.hh_start[households]
    offsets = np.arange(len(m_case)) - np.repeat(np.r_[0, np.cumsum(sizes)[:-1]], sizes)
    m_person = np.repeat(first, sizes) + offsets
    disability = np.where(g.random(len(m_case)) < 0.12, g.integers(1, 5, len(m_case)), 0)
    return Cases(
        case_type=case_type.astype(np.int8),
        head=first,
        community=pop.hh_community[households],
        monthly_amount=np.round(amount, 2),
        approved_day=approved,
        review_day=review,
        status=status,
        updated_minute=updated,
        planted=np.zeros(n, dtype=bool),
        m_case=m_case,
        m_person=m_person,
        m_relation=pop.relation[m_person].astype(np.int8),
        m_disability=disability.astype(np.int8),
    )


def add_case(
    cases: Cases,
    *,
    head: int,
    community: int,
    persons: list[int],
    relations: list[int],
    case_type: int = 0,
    status: int = ACTIVE,
    amount: float = 2400.0,
    approved_day: int | None = None,
) -> int:
    """Append one planted case (active in every snapshot unless `status` says otherwise)."""
    approved = day_number(date(2022, 3, 15)) if approved_day is None else approved_day
    snap_days = [day_number(s.date()) for s in ASSISTANCE_SNAPSHOTS]
    cases.case_type = np.r_[cases.case_type, case_type].astype(np.int8)
    cases.head = np.r_[cases.head, head]
    cases.community = np.r_[cases.community, community]
    cases.monthly_amount = np.r_[cases.monthly_amount, amount]
    cases.approved_day = np.r_[cases.approved_day, approved]
    cases.review_day = np.r_[cases.review_day, day_number(date(2026, 6, 20))]
    cases.status = np.vstack([cases.status, np.full((1, N_SNAPSHOTS), status, dtype=np.int8)])
    cases.updated_minute = np.vstack(
        [cases.updated_minute, np.array([[min(day_number(date(2026, 6, 20)), d - 1) * 1440 + 615 for d in snap_days]])]
    )
    cases.planted = np.r_[cases.planted, True]
    index = cases.size - 1
    cases.m_case = np.r_[cases.m_case, np.full(len(persons), index)]
    cases.m_person = np.r_[cases.m_person, np.asarray(persons, dtype=np.int64)]
    cases.m_relation = np.r_[cases.m_relation, np.asarray(relations, dtype=np.int8)]
    cases.m_disability = np.r_[cases.m_disability, np.zeros(len(persons), dtype=np.int8)]
    return index


def assign_case_ids(seed: int, cases: Cases) -> None:
    """Case numbers in a shuffled order, so that planted cases do not stand out by number."""
    g = rng(seed, "assistance-ids")
    order = g.permutation(cases.size)
    cases.case_id = np.array([f"JZ440605{n:06d}" for n in order + 1001])
