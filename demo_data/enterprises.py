"""Market entities of the district, their shareholders, and the public employers.

One register of enterprises feeds every department that names an enterprise: market regulation
(registration, shareholders), tax, environment penalties, fire inspections, investment projects,
enterprise appeals, and the employer columns of social insurance and the provident fund. Legal
representatives and shareholders are people of the population (residents or outsiders), never a
member of an assistance household unless the cross-check planting puts them there on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import polars as pl

from demo_data import vocab
from demo_data.common import day_number, rng
from demo_data.geography import Geography
from demo_data.ids import org_bodies, usccs
from demo_data.population import AS_OF_DAY, HISTORY_DAY, LAST_EVENT_DAY, NO_DAY, Population

ENTITY_TYPES = np.array(["company", "sole_proprietor", "partnership", "branch", "cooperative", "individual_business"])
COMPANY, SOLE, PARTNERSHIP, BRANCH, COOPERATIVE, INDIVIDUAL = range(6)
ENTITY_STATUS = np.array(["active", "revoked", "deregistered", "in_liquidation"])
ACTIVE, REVOKED, DEREGISTERED, LIQUIDATION = range(4)


@dataclass
class Enterprises:
    uscc: np.ndarray
    name: np.ndarray
    entity_type: np.ndarray  # index into ENTITY_TYPES
    legal_rep: np.ndarray  # person index
    legal_rep_has_id: np.ndarray
    capital: np.ndarray  # 10k CNY; NaN = not registered
    established: np.ndarray  # day
    status: np.ndarray  # final status
    status_day: np.ndarray  # day of the last status change; NO_DAY if always active
    industry: np.ndarray
    community: np.ndarray
    grid: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    has_location: np.ndarray
    address: np.ndarray
    base_update: np.ndarray  # minute of the last change before the demo window
    planted: np.ndarray  # made by the cross-check planting: keep every record of it intact
    # shareholders, one row each
    sh_enterprise: np.ndarray
    sh_key: np.ndarray
    sh_is_person: np.ndarray
    sh_person: np.ndarray  # person index or -1
    sh_org: np.ndarray  # enterprise index of an organisation shareholder or -1
    sh_capital: np.ndarray
    sh_changed_day: np.ndarray  # day the subscription changed in the demo window, NO_DAY otherwise
    sh_planted: np.ndarray
    # public employers (agencies and institutions): not market entities, never registered here
    agency_uscc: np.ndarray
    agency_name: np.ndarray
    sh_messy: dict[int, str] = field(default_factory=dict)  # shareholder row -> messy ID form (planted)

    @property
    def size(self) -> int:
        return len(self.uscc)

    def status_on(self, day: int) -> np.ndarray:
        """Status as the register showed it on `day`."""
        changed = self.status_day <= day
        return np.where(changed, self.status, ACTIVE)

    def employer_pool(self) -> np.ndarray:
        """Active, established-before-the-window enterprises that employ people."""
        ok = (self.status == ACTIVE) & (self.established < HISTORY_DAY - 200) & ~self.planted
        return np.flatnonzero(ok & (self.entity_type != INDIVIDUAL)) if ok.any() else np.flatnonzero(ok)


def _serials(generator: np.random.Generator, n: int, space: int) -> np.ndarray:
    """Distinct pseudo-random serials below `space` (an affine bijection, no sampling loop)."""
    multiplier = 387_420_489
    while np.gcd(multiplier, space) != 1:
        multiplier += 2
    offset = int(generator.integers(space))
    return (np.arange(n, dtype=np.int64) * multiplier + offset) % space


def make_usccs(generator: np.random.Generator, kind: np.ndarray, modern: np.ndarray, salt: int) -> np.ndarray:
    """Credit codes registered by the market regulator (9) in the district; `salt` separates batches of codes."""
    n = len(kind)
    serial = np.where(
        modern,
        _serials(generator, n, 31**6 - 1000) + salt,
        10_000_000 + _serials(generator, n, 80_000_000 - 1000) + salt,
    )
    return usccs(np.full(n, ord("9")), kind, np.full(n, int(vocab.DISTRICT_CODE)), org_bodies(serial, modern))


def _names(
    generator: np.random.Generator,
    etype: np.ndarray,
    industry_word: np.ndarray,
    shop_word: np.ndarray,
    rep_surname: np.ndarray,
    street_short: np.ndarray,
) -> np.ndarray:
    n = len(etype)
    stem = np.array(vocab.ENTERPRISE_STEMS)[generator.integers(len(vocab.ENTERPRISE_STEMS), size=n)]
    stem2 = np.array(vocab.ENTERPRISE_STEMS)[generator.integers(len(vocab.ENTERPRISE_STEMS), size=n)]
    brand = np.where(generator.random(n) < 0.5, stem, np.char.add(stem, np.array([s[0] for s in stem2])))
    body = np.char.add(brand, industry_word)
    company = np.char.add(np.char.add(vocab.CITY_PREFIX, body), "有限公司")
    names = company.astype(object)
    names[etype == SOLE] = np.char.add(np.char.add(vocab.CITY_PREFIX, body), "厂")[etype == SOLE]
    names[etype == PARTNERSHIP] = np.char.add(
        np.char.add(vocab.CITY_PREFIX, np.char.add(brand, "投资")), "合伙企业（有限合伙）"
    )[etype == PARTNERSHIP]
    names[etype == BRANCH] = np.char.add(np.char.add("佛山市", body), "有限公司南海分公司")[etype == BRANCH]
    names[etype == COOPERATIVE] = np.char.add(np.char.add(vocab.CITY_PREFIX, brand), "农产品专业合作社")[
        etype == COOPERATIVE
    ]
    shop = np.char.add(
        np.char.add(np.char.add(vocab.CITY_PREFIX, street_short), np.char.add(rep_surname, "记")), shop_word
    )
    names[etype == INDIVIDUAL] = shop[etype == INDIVIDUAL]
    return names.astype(str)


def build_enterprises(seed: int, residents: int, pop: Population, geo: Geography, reserved: np.ndarray) -> Enterprises:
    """The enterprise register; `reserved` persons (assistance households) never hold a role here."""
    g = rng(seed, "enterprises")
    n = max(60, round(residents * 0.08))
    etype = g.choice(6, size=n, p=[0.52, 0.05, 0.04, 0.07, 0.02, 0.30])
    # Founding dates lean to recent years; a few appear during the demo window (new registrations).
    years = np.clip(2026.9 - g.exponential(7.0, n), 1993, 2026.87)
    established = (day_number(date(1970, 1, 1)) + (years - 1970) * 365.25).astype(np.int64)
    established = np.minimum(established, LAST_EVENT_DAY)

    u = g.random(n)
    status = np.full(n, ACTIVE, dtype=np.int8)
    status[u < 0.09] = DEREGISTERED
    status[(u >= 0.09) & (u < 0.13)] = REVOKED
    status[(u >= 0.13) & (u < 0.15)] = LIQUIDATION
    status_day = np.full(n, NO_DAY, dtype=np.int64)
    ended = status != ACTIVE
    in_window = g.random(n) < 0.12
    lo = np.maximum(established + 30, day_number(date(2005, 1, 1)))
    hist = lo + (g.random(n) * np.maximum(HISTORY_DAY - 1 - lo, 1)).astype(np.int64)
    late = HISTORY_DAY + g.integers(0, LAST_EVENT_DAY - HISTORY_DAY, n)
    status_day[ended] = np.where(in_window & (established < HISTORY_DAY - 60), late, np.minimum(hist, HISTORY_DAY - 1))[
        ended
    ]
    status[ended & (status_day <= established)] = ACTIVE
    status_day[status == ACTIVE] = NO_DAY

    adults = np.flatnonzero(
        (pop.age_on(AS_OF_DAY) >= 22) & (pop.age_on(AS_OF_DAY) <= 75) & pop.alive_on(AS_OF_DAY) & ~reserved
    )
    resident_adults = adults[adults < pop.n_residents]
    outsider_adults = adults[adults >= pop.n_residents]
    from_outside = g.random(n) < 0.22
    legal_rep = np.where(
        from_outside,
        outsider_adults[g.integers(len(outsider_adults), size=n)],
        resident_adults[g.integers(len(resident_adults), size=n)],
    )
    legal_rep_has_id = g.random(n) > 0.015

    capital = np.round(np.exp(g.normal(np.log(100), 1.3, n)), 2)
    capital = np.where(etype == PARTNERSHIP, np.round(capital * 5, 2), capital)
    capital = np.where(etype == SOLE, np.round(g.uniform(3, 80, n), 2), capital)
    capital = np.where(etype == INDIVIDUAL, np.round(g.uniform(0.5, 15, n), 1), capital)
    capital = np.where(etype == COOPERATIVE, np.round(g.uniform(10, 200, n), 1), capital)
    capital = np.where((etype == BRANCH) | ((etype == INDIVIDUAL) & (g.random(n) < 0.3)), np.nan, capital)
    capital = np.clip(capital, 0.5, 80_000)

    ind = g.integers(len(vocab.INDUSTRIES), size=n)
    shop = g.integers(len(vocab.SHOP_WORDS), size=n)
    industry_word = np.array([w for w, _ in vocab.INDUSTRIES])[ind]
    industry = np.where(
        etype == INDIVIDUAL,
        np.array([c for _, c in vocab.SHOP_WORDS])[shop],
        np.array([c for _, c in vocab.INDUSTRIES])[ind],
    )
    industry = np.where(etype == COOPERATIVE, "A0190", industry)
    community = g.integers(geo.n_communities, size=n)
    grid = geo.random_grid_in(community, g)
    lon, lat = geo.points_in(grid, g)
    has_location = g.random(n) < 0.9
    street = geo.community_street[community]
    street_short = np.array([s[:2] for s in geo.street_name])[street]
    rep_surname = np.array([s[0] for s in pop.name[legal_rep]])
    names = _names(g, etype, industry_word, np.array([w for w, _ in vocab.SHOP_WORDS])[shop], rep_surname, street_short)
    road = np.array(vocab.ROADS)[g.integers(len(vocab.ROADS), size=n)]
    address = (
        pl.DataFrame(
            {"s": geo.street_name[street], "c": geo.community_name[community], "r": road, "n": g.integers(1, 400, n)}
        )
        .select(pl.format(vocab.CITY_PREFIX + "{}{}{}{}号", "s", "c", "r", "n"))
        .to_series()
        .to_numpy()
        .astype(str)
    )
    kind = np.where(etype == INDIVIDUAL, ord("2"), np.where(etype == COOPERATIVE, ord("3"), ord("1")))
    modern = established >= day_number(date(2015, 10, 1))
    uscc = make_usccs(g, kind, modern, salt=0)

    span = np.maximum(HISTORY_DAY - 1 - established, 1)
    base_day = established + (g.random(n) * span).astype(np.int64)
    base_day = np.where(established >= HISTORY_DAY, established, np.minimum(base_day, HISTORY_DAY - 1))
    base_update = base_day * 1440 + g.integers(9 * 60, 18 * 60, n)

    # Shareholders of companies, partnerships and sole proprietorships.
    holders = np.where(etype == COMPANY, g.integers(1, 4, n), 0)
    holders = np.where(etype == PARTNERSHIP, g.integers(2, 5, n), holders)
    holders = np.where(etype == SOLE, 1, holders)
    sh_enterprise = np.repeat(np.arange(n), holders)
    m = len(sh_enterprise)
    first = np.r_[0, np.cumsum(holders)[:-1]]
    rank = np.arange(m) - np.repeat(first, holders)
    sh_key = np.char.add("GD", np.char.zfill((rank + 1).astype(str), 3))
    companies = np.flatnonzero(etype == COMPANY)
    sh_is_person = (g.random(m) < 0.85) | (etype[sh_enterprise] == SOLE) | (len(companies) == 0)
    sh_person = np.where(sh_is_person, adults[g.integers(len(adults), size=m)], -1)
    # The first shareholder of a small company is usually its legal representative.
    owner_is_rep = (rank == 0) & (g.random(m) < 0.7) & sh_is_person
    sh_person = np.where(owner_is_rep, legal_rep[sh_enterprise], sh_person)
    sh_org = np.where(sh_is_person, -1, companies[g.integers(len(companies), size=m)] if len(companies) else -1)
    share = g.dirichlet(np.ones(4), size=m)[:, 0]
    cap = np.nan_to_num(capital[sh_enterprise], nan=10.0)
    sh_capital = np.round(np.maximum(cap * np.where(holders[sh_enterprise] == 1, 1.0, share), 0.1), 2)
    sh_changed_day = np.where(
        (g.random(m) < 0.03) & (established[sh_enterprise] < HISTORY_DAY),
        HISTORY_DAY + g.integers(0, LAST_EVENT_DAY - HISTORY_DAY, m),
        NO_DAY,
    )

    a = len(vocab.AGENCIES)
    agency_kind = np.array([ord(k[1]) for _, k in vocab.AGENCIES])
    agency_serial = 7_000_000 + _serials(g, a, 1_000_000)
    agency_uscc = usccs(
        np.full(a, ord("1")),
        agency_kind,
        np.full(a, int(vocab.DISTRICT_CODE)),
        org_bodies(agency_serial, np.zeros(a, bool)),
    )
    return Enterprises(
        uscc=uscc,
        name=names,
        entity_type=etype.astype(np.int8),
        legal_rep=legal_rep,
        legal_rep_has_id=legal_rep_has_id,
        capital=capital,
        established=established,
        status=status,
        status_day=status_day,
        industry=industry.astype(str),
        community=community,
        grid=grid,
        lon=lon,
        lat=lat,
        has_location=has_location,
        address=address,
        base_update=base_update,
        planted=np.zeros(n, dtype=bool),
        sh_enterprise=sh_enterprise,
        sh_key=sh_key,
        sh_is_person=sh_is_person,
        sh_person=sh_person,
        sh_org=sh_org,
        sh_capital=sh_capital,
        sh_changed_day=sh_changed_day,
        sh_planted=np.zeros(m, dtype=bool),
        agency_uscc=agency_uscc,
        agency_name=np.array([name for name, _ in vocab.AGENCIES]),
    )


def add_enterprise(
    ent: Enterprises,
    generator: np.random.Generator,
    *,
    name: str,
    etype: int,
    legal_rep: int,
    capital: float,
    established: int,
    status: int,
    status_day: int,
    industry: str,
    community: int,
    grid: int,
    lon: float,
    lat: float,
    address: str,
) -> int:
    """Append one enterprise (for the cross-check planting) and return its index."""
    kind = np.array([ord("2") if etype == INDIVIDUAL else ord("1")])
    code = make_usccs(generator, kind, np.array([True]), salt=int(generator.integers(1000)))[0]
    while code in set(ent.uscc.tolist()):
        code = make_usccs(generator, kind, np.array([True]), salt=int(generator.integers(1000)))[0]
    ent.uscc = np.append(ent.uscc, code)
    ent.name = np.append(ent.name, name)
    ent.entity_type = np.append(ent.entity_type, etype).astype(np.int8)
    ent.legal_rep = np.append(ent.legal_rep, legal_rep)
    ent.legal_rep_has_id = np.append(ent.legal_rep_has_id, True)
    ent.capital = np.append(ent.capital, capital)
    ent.established = np.append(ent.established, established)
    ent.status = np.append(ent.status, status).astype(np.int8)
    ent.status_day = np.append(ent.status_day, status_day)
    ent.industry = np.append(ent.industry, industry)
    ent.community = np.append(ent.community, community)
    ent.grid = np.append(ent.grid, grid)
    ent.lon = np.append(ent.lon, lon)
    ent.lat = np.append(ent.lat, lat)
    ent.has_location = np.append(ent.has_location, True)
    ent.address = np.append(ent.address, address)
    ent.base_update = np.append(
        ent.base_update, (max(established, status_day) if status_day != NO_DAY else established) * 1440 + 600
    )
    ent.planted = np.append(ent.planted, True)
    return len(ent.uscc) - 1


def add_shareholder(ent: Enterprises, enterprise: int, person: int, capital: float) -> None:
    """Append a natural-person shareholder (for the cross-check planting)."""
    existing = int((ent.sh_enterprise == enterprise).sum())
    ent.sh_enterprise = np.append(ent.sh_enterprise, enterprise)
    ent.sh_key = np.append(ent.sh_key, f"GD{existing + 1:03d}")
    ent.sh_is_person = np.append(ent.sh_is_person, True)
    ent.sh_person = np.append(ent.sh_person, person)
    ent.sh_org = np.append(ent.sh_org, -1)
    ent.sh_capital = np.append(ent.sh_capital, capital)
    ent.sh_changed_day = np.append(ent.sh_changed_day, NO_DAY)
    ent.sh_planted = np.append(ent.sh_planted, True)
