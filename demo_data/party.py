"""Party organisations, members and member-household links (组织部) for the party-building library.

The hierarchy follows the district: one district committee, a (working) committee per street or
town, a general branch per community and two to four branches under it. Members in service
(在职党员) are exactly the people whose insurance says civil servant, so the two departments agree.
Most members are linked to two or three households of their own community (每名党员至少挂点联系2户),
a few to fewer, which is what a party-building KPI should find.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np

from demo_data import vocab
from demo_data.common import day_number, rng
from demo_data.geography import Geography
from demo_data.population import AS_OF_DAY, HISTORY_DAY, Population
from demo_data.records import Records
from demo_data.timeline import WEEKLY_SNAPSHOTS


@dataclass
class Party:
    org_code: np.ndarray
    org_name: np.ndarray
    org_type: np.ndarray
    org_parent: np.ndarray  # "" for the top
    org_division: np.ndarray
    member_id: np.ndarray
    person: np.ndarray
    branch: np.ndarray  # org index
    joined_day: np.ndarray
    in_service: np.ndarray
    link_member: np.ndarray  # member index
    link_household: np.ndarray
    link_day: np.ndarray
    link_visit: np.ndarray  # (n_links, n_snapshots) last visit day per weekly snapshot, -1 = none


def build_organisations(
    geo: Geography, generator: np.random.Generator
) -> tuple[list[tuple[str, str, str, str, str]], np.ndarray]:
    """(code, name, type, parent, division) rows and the branch org indices of each community."""
    top = "D" + vocab.DISTRICT_CODE + "000000000"
    rows = [(top, f"中共{vocab.CITY_PREFIX}委员会", "committee", "", vocab.DISTRICT_CODE + "000000")]
    street_codes = []
    for code, name in zip(geo.street_code, geo.street_name, strict=True):
        org = f"D{code}000000"
        street_codes.append(org)
        title = (
            f"中共{vocab.CITY_PREFIX}{name}工作委员会"
            if name.endswith("街道")
            else f"中共{vocab.CITY_PREFIX}{name}委员会"
        )
        rows.append((org, title, "committee", top, code + "000"))
    branches: list[list[int]] = []
    for c, (code, name) in enumerate(zip(geo.community_code, geo.community_name, strict=True)):
        parent = street_codes[geo.community_street[c]]
        general = f"D{code}00"
        rows.append(
            (
                general,
                f"中共{geo.street_name[geo.community_street[c]]}{name}总支部委员会",
                "general_branch",
                parent,
                code,
            )
        )
        own = []
        for k in range(1, int(generator.integers(2, 5)) + 1):
            own.append(len(rows))
            rows.append((f"D{code}{k:02d}", f"中共{name}第{'一二三四五'[k - 1]}支部委员会", "branch", general, code))
        branches.append(own)
    width = max(len(b) for b in branches)
    table = np.full((len(branches), width), -1, dtype=np.int64)
    for c, own in enumerate(branches):
        table[c, : len(own)] = own
    return rows, table


def build_party(seed: int, pop: Population, geo: Geography, insurance: Records, reserved: np.ndarray) -> Party:
    g = rng(seed, "party")
    org_rows, branch_table = build_organisations(geo, g)
    residents = pop.n_residents
    age = pop.age_on(AS_OF_DAY)[:residents]
    civil = np.zeros(pop.size, dtype=bool)
    civil[insurance.person[insurance.civil]] = True
    eligible = (age >= 19) & ~pop.eventful[:residents] & ~reserved[:residents]
    chance = np.where(civil[:residents], 0.45, 0.055)
    members = np.flatnonzero(eligible & (g.random(residents) < chance))
    n = len(members)
    community = pop.hh_community[pop.household[members]]
    counts = (branch_table[community] >= 0).sum(axis=1)
    branch = branch_table[community, (g.random(n) * counts).astype(np.int64)]
    adult = pop.birth[members] + 18 * 366
    joined = adult + (g.random(n) * np.maximum(AS_OF_DAY - 30 - adult, 1)).astype(np.int64)
    # A handful join during the window: they appear in the later weekly snapshots as probationary.
    newcomers = g.random(n) < 0.01
    joined[newcomers] = HISTORY_DAY + g.integers(0, AS_OF_DAY - HISTORY_DAY - 7, newcomers.sum())

    links = g.choice([0, 1, 2, 3], size=n, p=[0.03, 0.05, 0.85, 0.07])
    hh_by_comm = np.argsort(pop.hh_community, kind="stable")
    comm_counts = np.bincount(pop.hh_community, minlength=geo.n_communities)
    comm_start = np.r_[0, np.cumsum(comm_counts)[:-1]]
    links = np.minimum(links, comm_counts[community])
    link_member = np.repeat(np.arange(n), links)
    rank = np.arange(len(link_member)) - np.repeat(np.cumsum(links) - links, links)
    start = (g.random(n) * comm_counts[community]).astype(np.int64)
    c = community[link_member]
    slot = (start[link_member] + rank) % comm_counts[c]
    link_household = hh_by_comm[comm_start[c] + slot]
    m = len(link_member)
    link_day = np.maximum(joined[link_member], day_number(date(2021, 3, 1))) + g.integers(0, 200, m)
    link_day = np.minimum(link_day, AS_OF_DAY - 60)
    snap_days = np.array([day_number(s.date()) for s in WEEKLY_SNAPSHOTS])
    visit = np.full((m, len(snap_days)), -1, dtype=np.int64)
    last = link_day + (g.random(m) * np.maximum(snap_days[0] - 1 - link_day, 1)).astype(np.int64)
    has_visit = g.random(m) < 0.88
    for k, d in enumerate(snap_days):
        fresh = g.random(m) < 0.25
        new_visit = d - g.integers(1, 7, m)
        last = np.where(fresh & has_visit, np.maximum(last, new_visit), last)
        visit[:, k] = np.where(has_visit & (last >= link_day), last, -1)
    return Party(
        org_code=np.array([r[0] for r in org_rows]),
        org_name=np.array([r[1] for r in org_rows]),
        org_type=np.array([r[2] for r in org_rows]),
        org_parent=np.array([r[3] for r in org_rows]),
        org_division=np.array([r[4] for r in org_rows]),
        member_id=np.char.add("DY", np.char.zfill((g.permutation(n) + 10_000_000).astype(str), 8)),
        person=members,
        branch=branch,
        joined_day=joined,
        in_service=civil[members],
        link_member=link_member,
        link_household=link_household,
        link_day=link_day,
        link_visit=visit,
    )
