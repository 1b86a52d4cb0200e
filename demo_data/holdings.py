"""What people hold and what happens to them, as the departments record it.

Vehicles (公安), real estate rights (自然资源), social insurance (人社), the provident fund (公积金),
cremations (民政) and death certificates (卫健), and party membership (组织部). All are drawn for
the background population in bulk; members of assistance households get at most the harmless
records (one home, a low flexible-employment insurance base), so that no ordinary case breaks a
cross-check rule. The planted cases add their own rows later through `Records.add`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from demo_data import vocab
from demo_data.common import day_number, rng
from demo_data.enterprises import INDIVIDUAL, Enterprises
from demo_data.geography import Geography
from demo_data.population import (
    AS_OF_DAY,
    HISTORY_DAY,
    LAST_EVENT_DAY,
    NO_DAY,
    SPOUSE,
    Population,
)
from demo_data.records import Records
from demo_data.timeline import PERIODS

VEHICLE_TYPES = np.array(["small_car", "large_car", "motorcycle", "truck", "trailer", "other"])
SMALL_CAR, LARGE_CAR, MOTORCYCLE, TRUCK, TRAILER, OTHER_VEHICLE = range(6)
VEHICLE_USES = np.array(["private", "commercial", "rental", "government"])
PRIVATE, COMMERCIAL, RENTAL, GOVERNMENT = range(4)
VEHICLE_STATUS = np.array(["normal", "transferred", "scrapped", "seized", "cancelled"])
V_NORMAL, V_TRANSFERRED, V_SCRAPPED, V_SEIZED, V_CANCELLED = range(5)

PROPERTY_USES = np.array(["residential", "commercial", "office", "industrial", "parking", "other"])
RESIDENTIAL, COMMERCIAL_USE, OFFICE, INDUSTRIAL, PARKING, OTHER_USE = range(6)
RIGHT_STATUS = np.array(["valid", "mortgaged", "sealed", "cancelled"])
R_VALID, R_MORTGAGED, R_SEALED, R_CANCELLED = range(4)

FUND_STATUS = np.array(["normal", "sealed", "closed"])
F_NORMAL, F_SEALED, F_CLOSED = range(3)
N_PERIODS = len(PERIODS)
JULY = PERIODS.index("2026-07")

_PLATE_LETTERS = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ"))


@dataclass
class Holdings:
    vehicles: Records
    estates: Records
    insurance: Records
    funds: Records
    cremations: Records
    certificates: Records


def _recent_days(generator: np.random.Generator, n: int, start: date, end_day: int, scale_years: float) -> np.ndarray:
    """Days skewed towards `end_day` (registrations grow over time)."""
    span = end_day - day_number(start)
    back = generator.exponential(scale_years * 365.25, n) % span
    return (end_day - back).astype(np.int64)


def make_plates(generator: np.random.Generator, n: int) -> np.ndarray:
    """Distinct Foshan plates (粤E, 粤X, 粤Y): letter + 4 digits, two letters + 3 digits, or D/F + 5 digits."""
    letters = _PLATE_LETTERS
    sizes = np.array([24 * 10**4, 24 * 24 * 10**3, 2 * 10**5])
    space = 3 * int(sizes.sum())
    if n > space:
        raise ValueError(f"{n} plates do not fit the plate space")
    codes = generator.permutation(space)[:n]
    prefix = np.array(["粤E", "粤Y", "粤X"])[codes % 3]
    v = codes // 3
    kind = np.searchsorted(np.cumsum(sizes), v, side="right")
    v = v - np.r_[0, np.cumsum(sizes)][kind]
    one = np.char.add(letters[v // 10**4 % 24], np.char.zfill((v % 10**4).astype(str), 4))
    two = np.char.add(
        np.char.add(letters[v // 24_000 % 24], letters[v // 1000 % 24]), np.char.zfill((v % 1000).astype(str), 3)
    )
    energy = np.char.add(np.where(v % 2 == 0, "D", "F"), np.char.zfill((v // 2 % 10**5).astype(str), 5))
    return np.char.add(prefix, np.where(kind == 0, one, np.where(kind == 1, two, energy)))


def build_vehicles(seed: int, pop: Population, ent: Enterprises, reserved: np.ndarray) -> Records:
    g = rng(seed, "vehicles")
    age = pop.age_on(AS_OF_DAY)
    adults = (age >= 20) & (age <= 82) & ~reserved
    u = g.random(pop.size)
    resident = pop.is_resident()
    owners = np.flatnonzero(adults & ((resident & (u < 0.3)) | (~resident & (u < 0.15))))
    second = owners[g.random(len(owners)) < 0.08]
    person = np.r_[owners, second]
    n_p = len(person)
    companies = np.flatnonzero((ent.entity_type != INDIVIDUAL) & (ent.established < HISTORY_DAY) & ~ent.planted)
    fleet = companies[g.random(len(companies)) < 0.3]
    fleet = np.r_[fleet, fleet[g.random(len(fleet)) < 0.4]]
    n_c = len(fleet)
    n_a = len(ent.agency_uscc) * 3
    n = n_p + n_c + n_a
    vtype = np.r_[
        g.choice(6, size=n_p, p=[0.8, 0.03, 0.11, 0.02, 0.0, 0.04]),
        g.choice(6, size=n_c, p=[0.45, 0.1, 0.02, 0.3, 0.08, 0.05]),
        np.full(n_a, SMALL_CAR),
    ]
    use = np.r_[
        np.where(g.random(n_p) < 0.96, PRIVATE, RENTAL),
        np.where(g.random(n_c) < 0.7, COMMERCIAL, PRIVATE),
        np.full(n_a, GOVERNMENT),
    ]
    agency = np.repeat(np.arange(len(ent.agency_uscc)), 3)
    org_uscc = np.r_[np.full(n_p, ""), ent.uscc[fleet], ent.agency_uscc[agency]].astype(str)
    org_name = np.r_[np.full(n_p, ""), ent.name[fleet], ent.agency_name[agency]].astype(str)
    owner_person = np.r_[person, np.full(n_c + n_a, -1)]
    registered = _recent_days(g, n, date(2004, 1, 1), LAST_EVENT_DAY, 6.0)
    # A person's car is registered after the person turned 18.
    adult_day = pop.birth[np.maximum(owner_person, 0)] + 18 * 366
    registered = np.where(owner_person >= 0, np.maximum(registered, np.minimum(adult_day, LAST_EVENT_DAY)), registered)
    low = np.array([60e3, 200e3, 4e3, 100e3, 50e3, 20e3])[vtype]
    high = np.array([450e3, 800e3, 30e3, 600e3, 200e3, 200e3])[vtype]
    price = np.round(g.uniform(low, high), -2)
    price[g.random(n) < 0.05] = np.nan
    s = g.random(n)
    status = np.full(n, V_NORMAL, dtype=np.int8)
    status[s < 0.05] = V_SCRAPPED
    status[(s >= 0.05) & (s < 0.08)] = V_TRANSFERRED
    status[(s >= 0.08) & (s < 0.09)] = V_SEIZED
    status[(s >= 0.09) & (s < 0.12)] = V_CANCELLED
    status_day = np.full(n, NO_DAY, dtype=np.int64)
    changed = status != V_NORMAL
    late = (g.random(n) < 0.12) & (registered < HISTORY_DAY - 30)
    hist = registered + (g.random(n) * np.maximum(HISTORY_DAY - 1 - registered, 1)).astype(np.int64)
    status_day[changed] = np.where(late, HISTORY_DAY + g.integers(0, LAST_EVENT_DAY - HISTORY_DAY, n), hist)[changed]
    status[changed & (status_day <= registered)] = V_NORMAL
    status_day[status == V_NORMAL] = NO_DAY
    return Records(
        plate=make_plates(g, n),
        owner_person=owner_person,
        org_uscc=org_uscc,
        org_name=org_name,
        vtype=vtype.astype(np.int8),
        use=use.astype(np.int8),
        registered_day=registered,
        price=price,
        status=status,
        status_day=status_day,
        update_minute=g.integers(8 * 60, 20 * 60, n),
    )


def build_estates(
    seed: int, pop: Population, reserved: np.ndarray, background_households: np.ndarray, n_communities: int
) -> Records:
    g = rng(seed, "estates")
    n_hh = pop.n_households
    hh_reserved = np.zeros(n_hh, dtype=bool)
    hh_reserved[pop.household[: pop.n_residents][reserved[: pop.n_residents]]] = True
    heads = pop.hh_start
    spouse_pos = heads + 1
    has_spouse = (pop.hh_size >= 2) & (pop.relation[np.minimum(spouse_pos, pop.size - 1)] == SPOUSE)
    u = g.random(n_hh)
    own_home = (~hh_reserved & (u < 0.55)) | (np.isin(np.arange(n_hh), background_households) & (u < 0.3))
    co_owned = own_home & has_spouse & (g.random(n_hh) < np.where(hh_reserved, 0.3, 0.45))
    free = ~hh_reserved & (pop.age_on(AS_OF_DAY)[heads] >= 25)
    second = free & own_home & (g.random(n_hh) < 0.12)
    business = free & (g.random(n_hh) < 0.04)
    parking = free & own_home & (g.random(n_hh) < 0.10)
    outsiders = np.flatnonzero(~pop.is_resident() & (g.random(pop.size) < 0.06))

    cert_owner = np.r_[heads[own_home], heads[second], heads[business], heads[parking], outsiders]
    cert_use = np.r_[
        np.full(own_home.sum(), RESIDENTIAL),
        np.full(second.sum(), RESIDENTIAL),
        g.choice([COMMERCIAL_USE, OFFICE, INDUSTRIAL, OTHER_USE], size=business.sum(), p=[0.5, 0.25, 0.15, 0.1]),
        np.full(parking.sum(), PARKING),
        np.full(len(outsiders), RESIDENTIAL),
    ]
    cert_co = np.r_[co_owned[own_home], np.zeros(len(cert_owner) - own_home.sum(), dtype=bool)]
    home_community = pop.hh_community[np.maximum(pop.household[cert_owner], 0)]
    elsewhere = (cert_use != RESIDENTIAL) | (g.random(len(cert_owner)) < 0.3) | (cert_owner >= pop.n_residents)
    cert_community = np.where(elsewhere, g.integers(n_communities, size=len(cert_owner)), home_community)
    c = len(cert_owner)
    registered = _recent_days(g, c, date(2001, 1, 1), LAST_EVENT_DAY, 7.0)
    lo = np.array([45, 20, 50, 300, 12, 10])[cert_use]
    hi = np.array([180, 300, 600, 5000, 16, 200])[cert_use]
    area = np.round(g.uniform(lo, hi), 2)
    s = g.random(c)
    reserved_owner = reserved[cert_owner]
    status = np.where(s < 0.66, R_VALID, np.where(s < 0.95, R_MORTGAGED, np.where(s < 0.96, R_SEALED, R_CANCELLED)))
    status = np.where(reserved_owner, np.where(s < 0.7, R_VALID, R_MORTGAGED), status).astype(np.int8)
    # Status changes during the window (loans paid off, new mortgages); the prior status is what
    # earlier batches showed.
    change = (g.random(c) < 0.05) & (registered < HISTORY_DAY - 60) & (status <= R_MORTGAGED) & ~reserved_owner
    status_day = np.where(change, HISTORY_DAY + g.integers(0, LAST_EVENT_DAY - HISTORY_DAY, c), NO_DAY)
    prior = np.where(change, 1 - status, status).astype(np.int8)
    seq = g.permutation(c) + 1_000
    year = registered.astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970
    cert_no = np.char.add(
        np.char.add(np.char.add("粤(", year.astype(str)), ")佛南不动产权第"),
        np.char.add(np.char.zfill(seq.astype(str), 7), "号"),
    )

    # One row per owner: co-owned homes have the spouse as a second row with half the share each.
    rows = np.r_[np.arange(c), np.flatnonzero(cert_co)]
    owner = np.r_[cert_owner, cert_owner[cert_co] + 1]
    share = np.where(cert_co[rows], 0.5, 1.0)
    return Records(
        certificate_no=cert_no[rows],
        owner_person=owner,
        share=share,
        use=cert_use[rows].astype(np.int8),
        area=area[rows],
        community=cert_community[rows],
        registered_day=registered[rows],
        status=status[rows],
        status_day=status_day[rows],
        prior_status=prior[rows],
    )


def build_insurance(seed: int, pop: Population, ent: Enterprises, reserved: np.ndarray, members: np.ndarray) -> Records:
    """Insurance enrollments: one per person, valid from `first_period` to `last_period` (indices)."""
    g = rng(seed, "insurance")
    age = pop.age_on(AS_OF_DAY)
    working = (age >= 18) & (age < 60) & ~reserved
    u = g.random(pop.size)
    insured = np.flatnonzero(working & (u < np.where(pop.is_resident(), 0.6, 0.5)))
    n = len(insured)
    kind = g.random(n)
    pool = ent.employer_pool()
    civil = kind < 0.04
    flexible = (kind >= 0.04) & (kind < 0.16)
    agency = g.integers(len(ent.agency_uscc), size=n)
    firm = pool[g.integers(len(pool), size=n)]
    employer_uscc = np.where(civil, ent.agency_uscc[agency], np.where(flexible, "", ent.uscc[firm])).astype(str)
    employer_name = np.where(civil, ent.agency_name[agency], np.where(flexible, "", ent.name[firm])).astype(str)
    base = np.clip(np.round(np.exp(g.normal(np.log(6000), 0.45, n))), 2300, 36000)
    base = np.where(civil, np.round(g.uniform(7000, 15000, n)), base)
    base = np.where(flexible, np.round(g.uniform(2300, 5000, n)), base)
    first = np.where(g.random(n) < 0.9, 0, g.integers(0, N_PERIODS, n))
    last = np.where(g.random(n) < 0.96, N_PERIODS - 1, np.maximum(first, g.integers(0, N_PERIODS, n)))
    # Nobody contributes after death: the last period is the month before the month of death.
    # Nobody contributes for a month they did not live through.
    death = pop.death_day[insured]
    period_end = np.array([day_number(date(int(p[:4]) + int(p[5:]) // 12, int(p[5:]) % 12 + 1, 1)) for p in PERIODS])
    last = np.minimum(last, np.searchsorted(period_end, death, side="right") - 1)
    keep = last >= first

    # Ordinary assistance members of working age: some do flexible work at the lowest bases.
    working_members = members[(age[members] >= 18) & (age[members] < 60)]
    low = working_members[g.random(len(working_members)) < 0.3]
    m = len(low)
    return Records(
        person=np.r_[insured[keep], low],
        employer_uscc=np.r_[employer_uscc[keep], np.full(m, "")].astype(str),
        employer_name=np.r_[employer_name[keep], np.full(m, "")].astype(str),
        base=np.r_[base[keep], np.round(g.uniform(2300, 2800, m))],
        civil=np.r_[civil[keep], np.zeros(m, dtype=bool)],
        full_types=np.r_[~flexible[keep], np.zeros(m, dtype=bool)],
        first_period=np.r_[first[keep], np.zeros(m, dtype=np.int64)],
        last_period=np.r_[last[keep], np.full(m, N_PERIODS - 1)],
        raise_in_july=np.r_[~civil[keep], np.ones(m, dtype=bool)],
    )


def build_funds(seed: int, insurance: Records) -> Records:
    """Provident-fund accounts of civil servants and of most well-paid employees."""
    g = rng(seed, "funds")
    n = len(insurance)
    has = (
        insurance.civil | ((insurance.employer_uscc != "") & (insurance.base >= 4500) & (g.random(n) < 0.55))
    ) & ~insurance.planted
    rows = np.flatnonzero(has)
    k = len(rows)
    rate = g.choice([0.05, 0.07, 0.08, 0.10, 0.12], size=k)
    deposit = np.round(insurance.base[rows] * rate * 2)
    s = g.random(k)
    status = np.where(s < 0.9, F_NORMAL, np.where(s < 0.97, F_SEALED, F_CLOSED)).astype(np.int8)
    status_period = np.where(status == F_NORMAL, N_PERIODS, g.integers(0, N_PERIODS, k))
    return Records(
        account_no=np.char.add("4406", np.char.zfill((g.permutation(k) + 10_000_000).astype(str), 8)),
        person=insurance.person[rows],
        employer_uscc=insurance.employer_uscc[rows],
        balance0=np.round(g.uniform(1000, 150_000, k), 2),
        deposit=deposit,
        first_period=insurance.first_period[rows],
        last_period=insurance.last_period[rows],
        status=status,
        status_period=status_period,
    )


def build_deaths(seed: int, pop: Population, members: np.ndarray) -> tuple[Records, Records]:
    """Cremation records and death certificates since 2024, from the population's deaths.

    A few certificates of unidentified people carry no ID number; their name, sex and birth date never
    coincide with an assistance member's, so a probabilistic linker has nothing to find in them.
    """
    g = rng(seed, "deaths")
    since = day_number(date(2024, 1, 1))
    dead = np.flatnonzero((pop.death_day >= since) & (pop.death_day < LAST_EVENT_DAY + 1))
    n = len(dead)
    cremated = dead[g.random(n) < 0.93]
    c = len(cremated)
    c_death = pop.death_day[cremated]
    c_day = c_death + g.integers(2, 7, c)
    cremations = Records(
        record_id=np.char.add("HZ", np.char.zfill((g.permutation(c) + 200_000).astype(str), 8)),
        person=cremated,
        death_day=c_death,
        cremation_day=c_day,
        home=g.integers(len(vocab.FUNERAL_HOMES), size=c),
        available_day=c_day + 1,
    )
    certified = dead[g.random(n) < 0.96]
    k = len(certified)
    has_id = g.random(k) > 0.02
    # Certificates without an ID number: unidentified people (无名氏) and a few whose number was not
    # recorded. None shares a name with an assistance member, so only planted ones can link to members.
    member_names = set(pop.name[members].tolist())
    u = max(3, k // 40)
    births = day_number(date(1935, 1, 1)) + g.integers(0, 60 * 365, u)
    drawn = pop.name[g.integers(pop.size, size=u)].tolist()
    names = np.array([n if n not in member_names and i % 2 else "无名氏" for i, n in enumerate(drawn)])
    not_id = ~has_id & np.array([n not in member_names for n in pop.name[certified].tolist()], dtype=bool)
    death_u = HISTORY_DAY - 300 + g.integers(0, LAST_EVENT_DAY - HISTORY_DAY + 300, u)
    person = np.r_[certified, np.full(u, -1)]
    death = np.r_[pop.death_day[certified], death_u]
    certificates = Records(
        certificate_no=np.char.add("SW44", np.char.zfill((g.permutation(k + u) + 3_000_000).astype(str), 8)),
        person=person,
        has_id=np.r_[~not_id, np.zeros(u, dtype=bool)],
        name=np.r_[pop.name[certified], names].astype(str),
        gender=np.r_[pop.gender[certified], np.where(g.random(u) < 0.5, 1, 2)].astype(np.int8),
        birth_day=np.r_[pop.birth[certified], np.where(names == "无名氏", NO_DAY, births)],
        death_day=death,
        hospital=g.integers(len(vocab.HOSPITALS), size=k + u),
        available_day=death + g.integers(1, 4, k + u),
    )
    return cremations, certificates


def build_holdings(
    seed: int,
    pop: Population,
    ent: Enterprises,
    geo: Geography,
    reserved: np.ndarray,
    background_households: np.ndarray,
    members: np.ndarray,
) -> Holdings:
    insurance = build_insurance(seed, pop, ent, reserved, members)
    cremations, certificates = build_deaths(seed, pop, np.flatnonzero(reserved))
    return Holdings(
        vehicles=build_vehicles(seed, pop, ent, reserved),
        estates=build_estates(seed, pop, reserved, background_households, geo.n_communities),
        insurance=insurance,
        funds=build_funds(seed, insurance),
        cremations=cremations,
        certificates=certificates,
    )
