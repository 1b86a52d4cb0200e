"""The people of the demo district and of its surroundings, with households and life events.

Residents live in households in real grids and carry valid ID numbers built from their birth date
and sex. Outsiders (commuters, buyers and migrants registered elsewhere) appear in city- and
province-level data (insurance, vehicles, real estate, deaths) but never in the district's household
registration, as in reality. Life events during the demo window (deaths, moves, births) are fixed
here once, so that every department that sees a person sees the same story: a death on 2026-10-03
shows as `deceased` in the next household snapshot and as a cremation record in a later batch.
Everything is vectorised: five million people take a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl

from demo_data import vocab
from demo_data.common import day_number, rng
from demo_data.geography import Geography
from demo_data.ids import resident_ids
from demo_data.timeline import AS_OF, HISTORY_START

NORMAL, DECEASED, MOVED_OUT, CANCELLED = 0, 1, 2, 3
STATUS_NAMES = np.array(["normal", "deceased", "moved_out", "cancelled"])
RELATIONS = np.array(["head", "spouse", "child", "parent", "grandchild", "sibling", "other"])
HEAD, SPOUSE, CHILD, PARENT, GRANDCHILD, SIBLING, OTHER = range(7)

AS_OF_DAY = day_number(AS_OF)
HISTORY_DAY = day_number(HISTORY_START)
LAST_EVENT_DAY = AS_OF_DAY - 1
NO_DAY = -(10**6)


@dataclass
class Population:
    n_residents: int
    id_number: np.ndarray  # <U18
    name: np.ndarray  # <U4
    gender: np.ndarray  # 1 male, 2 female
    birth: np.ndarray  # day numbers
    area: np.ndarray  # address code inside the ID number
    household: np.ndarray  # household index; -1 for outsiders
    relation: np.ndarray  # index into RELATIONS
    reg_start: np.ndarray  # day registered in the district (births in the demo window register late)
    status: np.ndarray  # final registration status (index into STATUS_NAMES)
    status_day: np.ndarray  # day the registry recorded the status; NO_DAY for normal
    death_day: np.ndarray  # day of death; NO_DAY when alive
    eventful: np.ndarray  # anything happens to the person: never an ordinary assistance member
    hh_size: np.ndarray
    hh_start: np.ndarray
    hh_community: np.ndarray
    hh_grid: np.ndarray
    hh_id: np.ndarray
    hh_address: np.ndarray
    _series: dict[str, pl.Series] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        return len(self.id_number)

    @property
    def n_households(self) -> int:
        return len(self.hh_size)

    def series(self, column: str) -> pl.Series:
        """A polars copy of a string column, made once: gathers from it are fast."""
        if column not in self._series:
            self._series[column] = pl.Series(column, getattr(self, column))
        return self._series[column]

    def age_on(self, day: int) -> np.ndarray:
        return (day - self.birth) / 365.25

    def alive_on(self, day: int) -> np.ndarray:
        return self.death_day > day

    def is_resident(self) -> np.ndarray:
        return self.household >= 0

    def birth_yyyymmdd(self) -> np.ndarray:
        return yyyymmdd(self.birth)

    def members(self, household: int) -> np.ndarray:
        start = self.hh_start[household]
        return np.arange(start, start + self.hh_size[household])


def yyyymmdd(days: np.ndarray) -> np.ndarray:
    """Day numbers as YYYYMMDD integers (the birth-date part of an ID number)."""
    d = days.astype("datetime64[D]")
    y = d.astype("datetime64[Y]").astype(int) + 1970
    m = d.astype("datetime64[M]").astype(int) % 12 + 1
    dd = (d - d.astype("datetime64[M]")).astype(int) + 1
    return y * 10000 + m * 100 + dd


def _household_sizes(generator: np.random.Generator, residents: int) -> np.ndarray:
    sizes = generator.choice([1, 2, 3, 4, 5, 6], size=residents // 2 + 10, p=[0.16, 0.26, 0.27, 0.17, 0.09, 0.05])
    total = np.cumsum(sizes)
    cut = int(np.searchsorted(total, residents)) + 1
    sizes = sizes[:cut].copy()
    sizes[-1] -= int(total[cut - 1] - residents)
    return sizes[sizes > 0]


def _roles(generator: np.random.Generator, size: np.ndarray, pos: np.ndarray) -> np.ndarray:
    u = generator.random(len(pos))
    role = np.full(len(pos), CHILD, dtype=np.int8)
    role[pos == 0] = HEAD
    role[(pos == 1) & (u < 0.85)] = SPOUSE
    role[(pos == 1) & (u >= 0.85) & (u < 0.92)] = SIBLING
    last = (pos == size - 1) & (size >= 4) & (pos >= 2)
    role[last & (u < 0.35)] = PARENT
    role[(pos >= 3) & (size >= 5) & (role == CHILD) & (u > 0.8)] = GRANDCHILD
    role[(pos >= 2) & (role == CHILD) & (u > 0.97)] = OTHER
    return role


def _ages(generator: np.random.Generator, role: np.ndarray, head_age: np.ndarray) -> np.ndarray:
    n = len(role)
    age = np.empty(n)
    age[:] = head_age - generator.uniform(22, 38, n)
    age = np.where(role == HEAD, head_age, age)
    age = np.where(role == SPOUSE, head_age + generator.normal(-2, 4, n), age)
    age = np.where(role == PARENT, head_age + generator.uniform(22, 32, n), age)
    age = np.where(role == GRANDCHILD, head_age - generator.uniform(46, 62, n), age)
    age = np.where(role == SIBLING, head_age + generator.normal(0, 6, n), age)
    age = np.where(role == OTHER, generator.uniform(18, 80, n), age)
    age = np.where((role == SPOUSE) | (role == SIBLING), np.maximum(age, 18), age)
    young = age < 0
    age[young] = generator.uniform(0, 4, young.sum())
    return np.clip(age, 0, 101)


def _sequences(generator: np.random.Generator, area: np.ndarray, birth: np.ndarray, male: np.ndarray) -> np.ndarray:
    """Sequence numbers unique per (area, birth date) with the right parity: odd for men."""
    key = (area.astype(np.int64) * 100_000 + (birth.astype(np.int64) + 40_000)) * 2 + male
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_key)) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(key)]))
    rank = np.empty(len(key), dtype=np.int64)
    rank[order] = np.arange(len(key)) - group_start
    offset = (key // 2 * 2654435761) % 150
    seq = 2 * (offset + rank) + male
    overflow = seq > 999
    seq[overflow] = 2 * rank[overflow] + male[overflow]
    if (seq > 999).any():
        raise ValueError("too many people share an address code and birth date")
    return seq


def _names(generator: np.random.Generator, gender: np.ndarray, surname_idx: np.ndarray) -> np.ndarray:
    n = len(gender)
    surnames = np.array(vocab.SURNAMES)[surname_idx]
    male = np.array(vocab.GIVEN_MALE)
    female = np.array(vocab.GIVEN_FEMALE)
    first = np.where(
        gender == 1, male[generator.integers(len(male), size=n)], female[generator.integers(len(female), size=n)]
    )
    second = np.where(
        gender == 1, male[generator.integers(len(male), size=n)], female[generator.integers(len(female), size=n)]
    )
    two = generator.random(n) < 0.72
    given = np.where(two, np.char.add(first, second), first)
    return np.char.add(surnames, given)


def build_population(seed: int, residents: int, geo: Geography) -> Population:
    """Households, residents, outsiders and their life events."""
    g = rng(seed, "population")
    sizes = _household_sizes(g, residents)
    n_hh = len(sizes)
    hh_start = np.r_[0, np.cumsum(sizes)[:-1]]
    hh_of = np.repeat(np.arange(n_hh), sizes)
    pos = np.arange(residents) - hh_start[hh_of]
    role = _roles(g, sizes[hh_of], pos)
    head_age = np.clip(g.normal(50, 15, n_hh), 21, 95)
    age = _ages(g, role, head_age[hh_of])

    head_male = g.random(n_hh) < 0.7
    gender = np.where(g.random(residents) < 0.5, 1, 2).astype(np.int8)
    gender[role == HEAD] = np.where(head_male, 1, 2)
    gender[role == SPOUSE] = np.where(head_male[hh_of[role == SPOUSE]], 2, 1)

    n_out = max(50, round(residents * 0.25))
    out_age = g.uniform(20, 70, n_out)
    out_gender = np.where(g.random(n_out) < 0.55, 1, 2).astype(np.int8)
    age_all = np.r_[age, out_age]
    gender_all = np.r_[gender, out_gender]
    n = residents + n_out
    birth = (AS_OF_DAY - np.floor(age_all * 365.25)).astype(np.int64) - g.integers(0, 365, n)
    birth = np.maximum(birth, day_number(date(1921, 1, 1)))

    # Address codes: mostly the district, migrants' households keep their origin (children born here
    # after 2000 are registered here). Outsiders come from elsewhere.
    other = np.array(vocab.OTHER_AREAS)
    hh_origin = np.where(g.random(n_hh) < 0.72, int(vocab.DISTRICT_CODE), other[g.integers(len(other), size=n_hh)])
    area = hh_origin[hh_of]
    born_here = birth[:residents] >= day_number(date(2000, 1, 1))
    area = np.where(born_here & (g.random(residents) < 0.8), int(vocab.DISTRICT_CODE), area)
    area = np.r_[area, other[g.integers(len(other), size=n_out)]]

    male = (gender_all == 1).astype(np.int64)
    seq = _sequences(g, area, birth, male)
    ids = resident_ids(area, yyyymmdd(birth), seq)

    surname_idx = g.choice(len(vocab.SURNAMES), size=n, p=np.array(vocab.SURNAME_WEIGHTS) / sum(vocab.SURNAME_WEIGHTS))
    head_surname = surname_idx[hh_start]
    inherit = np.isin(role, [CHILD, GRANDCHILD, SIBLING]) & head_male[hh_of]
    surname_idx[:residents] = np.where(inherit, head_surname[hh_of], surname_idx[:residents])
    names = _names(g, gender_all, surname_idx)

    # Where households live.
    hh_community = g.integers(geo.n_communities, size=n_hh)
    hh_grid = geo.random_grid_in(hh_community, g)
    street = geo.community_street[hh_community]
    road = np.array(vocab.ROADS)[g.integers(len(vocab.ROADS), size=n_hh)]
    estate = np.array(vocab.ESTATES)[g.integers(len(vocab.ESTATES), size=n_hh)]
    number = g.integers(1, 300, size=n_hh)
    building = g.integers(1, 30, size=n_hh)
    room = g.integers(1, 33, size=n_hh) * 100 + g.integers(1, 9, size=n_hh)
    hh_address = (
        pl.DataFrame(
            {
                "s": geo.street_name[street],
                "c": geo.community_name[hh_community],
                "r": road,
                "n": number,
                "e": estate,
                "b": building,
                "m": room,
            }
        )
        .select(pl.format(vocab.CITY_PREFIX + "{}{}{}{}号{}{}座{}房", "s", "c", "r", "n", "e", "b", "m"))
        .to_series()
        .to_numpy()
        .astype(str)
    )
    hh_id = np.char.add("44060", (g.permutation(n_hh) + 1_000_000).astype(str))

    household = np.r_[hh_of, np.full(n_out, -1)]
    relation = np.r_[role, np.full(n_out, OTHER, dtype=np.int8)]
    status = np.zeros(n, dtype=np.int8)
    status_day = np.full(n, NO_DAY, dtype=np.int64)
    death_day = np.full(n, 10**7, dtype=np.int64)
    reg_start = np.full(n, day_number(date(1990, 1, 1)), dtype=np.int64)
    reg_start[:residents] = np.maximum(birth[:residents] + 30, reg_start[:residents] - 10_000)

    u = g.random(n)
    resident = np.arange(n) < residents
    old = age_all >= 70
    # Historic events (before the demo window): still visible in the household register.
    hist_dead = resident & old & (u < 0.03)
    death_day[hist_dead] = g.integers(day_number(date(2015, 1, 1)), HISTORY_DAY - 20, hist_dead.sum())
    moved = resident & ~hist_dead & (age_all >= 18) & (u > 0.99)
    cancelled = resident & ~hist_dead & ~moved & (u > 0.6) & (u < 0.6012)
    # Demo-window events.
    v = g.random(n)
    demo_dead = resident & ~hist_dead & ~moved & ~cancelled & old & (v < 0.012)
    death_day[demo_dead] = g.integers(HISTORY_DAY, LAST_EVENT_DAY, demo_dead.sum())
    demo_moved = resident & ~hist_dead & ~moved & ~cancelled & ~demo_dead & (age_all >= 18) & (v > 0.997)
    out_dead_hist = ~resident & (v < 0.03)
    death_day[out_dead_hist] = g.integers(day_number(date(2024, 1, 1)), HISTORY_DAY - 1, out_dead_hist.sum())
    out_dead_demo = ~resident & (v > 0.996)
    death_day[out_dead_demo] = g.integers(HISTORY_DAY, LAST_EVENT_DAY, out_dead_demo.sum())

    dead_res = hist_dead | demo_dead
    status[dead_res] = DECEASED
    status_day[dead_res] = death_day[dead_res] + g.integers(3, 40, n)[dead_res]
    status[moved] = MOVED_OUT
    status_day[moved] = g.integers(day_number(date(2012, 1, 1)), HISTORY_DAY - 1, moved.sum())
    status[cancelled] = CANCELLED
    status_day[cancelled] = g.integers(day_number(date(2012, 1, 1)), HISTORY_DAY - 1, cancelled.sum())
    status[demo_moved] = MOVED_OUT
    status_day[demo_moved] = g.integers(HISTORY_DAY, LAST_EVENT_DAY, demo_moved.sum())

    # Babies born shortly before or during the window register a few weeks after birth.
    newborn = resident & (birth >= HISTORY_DAY - 40)
    reg_start[newborn] = birth[newborn] + g.integers(10, 30, n)[newborn]

    eventful = (status != NORMAL) | (death_day < 10**7) | newborn
    return Population(
        n_residents=residents,
        id_number=ids,
        name=names,
        gender=gender_all,
        birth=birth,
        area=area,
        household=household,
        relation=relation,
        reg_start=reg_start,
        status=status,
        status_day=status_day,
        death_day=death_day,
        eventful=eventful,
        hh_size=sizes,
        hh_start=hh_start,
        hh_community=hh_community,
        hh_grid=hh_grid,
        hh_id=hh_id,
        hh_address=hh_address,
    )
