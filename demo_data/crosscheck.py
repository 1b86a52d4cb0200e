"""Planted assistance households for the social-assistance cross-check (R01-R09), true and near misses.

Each planted case breaks exactly one rule (expected `flag`) or looks as if it might but does not
(expected `no_flag`): a scrapped car, a deregistered company, a civil-servant record older than six
months, a namesake's death certificate... The planted households come from a pool of clean households
that no other generator touched, so the only thing linking them to a rule is what is planted here.
Several links go through messy-but-valid ID forms in the other department's data (full-width digits,
spaces, lower-case x, 15-digit numbers), and two deaths are known only from certificates without an
ID number, which a probabilistic linker must match on name, sex and birth date.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
import opencc

from demo_data import vocab
from demo_data.assistance import ACTIVE, TERMINATED, Cases, add_case
from demo_data.common import day_number, rng
from demo_data.enterprises import ACTIVE as E_ACTIVE
from demo_data.enterprises import (
    COMPANY,
    DEREGISTERED,
    INDIVIDUAL,
    PARTNERSHIP,
    Enterprises,
    add_enterprise,
    add_shareholder,
)
from demo_data.geography import Geography
from demo_data.holdings import (
    COMMERCIAL_USE,
    F_CLOSED,
    F_NORMAL,
    F_SEALED,
    LARGE_CAR,
    MOTORCYCLE,
    N_PERIODS,
    PARKING,
    PRIVATE,
    R_CANCELLED,
    R_MORTGAGED,
    R_VALID,
    RESIDENTIAL,
    SMALL_CAR,
    TRUCK,
    V_NORMAL,
    V_SCRAPPED,
    Holdings,
)
from demo_data.party import Party
from demo_data.population import (
    AS_OF_DAY,
    CANCELLED,
    DECEASED,
    HEAD,
    MOVED_OUT,
    NO_DAY,
    OTHER,
    SPOUSE,
    Population,
)

PLANTED_HOUSEHOLDS = 60  # upper bound of households the planting below uses


@dataclass
class PlantedCase:
    case: int  # index into Cases
    rule_code: str
    expected: str  # flag | no_flag
    description: str


@dataclass
class Planter:
    seed: int
    pop: Population
    geo: Geography
    ent: Enterprises
    holdings: Holdings
    cases: Cases
    pool: np.ndarray
    used_persons: np.ndarray
    planted: list[PlantedCase] = field(default_factory=list)
    _taken: set[int] = field(default_factory=set)
    _serial: int = 0

    def __post_init__(self) -> None:
        self.g = rng(self.seed, "crosscheck")
        self.age = self.pop.age_on(AS_OF_DAY)
        self.plates = set(self.holdings.vehicles.plate.tolist())

    # -- choosing households ------------------------------------------------------------------
    def household(
        self, member_ok: Callable[[int], bool] = lambda p: True, need_spouse: bool = False
    ) -> tuple[int, int]:
        """The first unused pool household with a member satisfying `member_ok`: (household, that member)."""
        for hh in self.pool.tolist():
            if hh in self._taken:
                continue
            members = self.pop.members(hh)
            if need_spouse and (
                len(members) < 2 or self.pop.relation[members[1]] != SPOUSE or self.age[members[1]] < 20
            ):
                continue
            for p in members:
                if member_ok(int(p)):
                    self._taken.add(hh)
                    return hh, int(p)
        raise ValueError("planted-case pool exhausted; raise the scale")

    def working(self, p: int) -> bool:
        return 20 <= self.age[p] < 60

    def elderly(self, p: int) -> bool:
        return self.age[p] >= 55

    def elderly_with_homophone(self, p: int) -> bool:
        return self.elderly(p) and homophone_slip(str(self.pop.name[p])) is not None

    def elderly_swappable_birth(self, p: int) -> bool:
        born = EPOCH_DATE + timedelta(days=int(self.pop.birth[p]))
        return self.elderly(p) and born.day <= 12 and born.day != born.month

    def with_x(self, p: int) -> bool:
        return self.pop.id_number[p].endswith("X") and self.age[p] >= 18

    def born_19xx(self, p: int) -> bool:
        return self.pop.id_number[p][6:8] == "19" and self.age[p] >= 20

    def open_case(self, hh: int, rule: str, expected: str, description: str, status: int = ACTIVE) -> int:
        members = self.pop.members(hh)
        index = add_case(
            self.cases,
            head=int(members[0]),
            community=int(self.pop.hh_community[hh]),
            persons=[int(p) for p in members],
            relations=[int(self.pop.relation[p]) for p in members],
            status=status,
            amount=float(round(1100 * len(members), 2)),
        )
        self.planted.append(PlantedCase(index, rule, expected, description))
        return index

    def serial(self) -> int:
        self._serial += 1
        return self._serial

    # -- records --------------------------------------------------------------------------------
    def plate(self) -> str:
        while True:
            candidate = f"粤Y{'ABCDEFGHJKLMN'[int(self.g.integers(13))]}{int(self.g.integers(10_000)):04d}"
            if candidate not in self.plates:
                self.plates.add(candidate)
                return candidate

    def vehicle(self, person: int, vtype: int, status: int = V_NORMAL, messy: str = "", **org: str) -> None:
        self.holdings.vehicles.add(
            plate=self.plate(),
            owner_person=person,
            org_uscc=org.get("uscc", ""),
            org_name=org.get("name", ""),
            vtype=vtype,
            use=PRIVATE,
            registered_day=day_number(date(2019, 5, 10)) + int(self.g.integers(0, 1500)),
            price=float(np.round(self.g.uniform(60e3, 300e3), -2)),
            status=status,
            status_day=NO_DAY if status == V_NORMAL else day_number(date(2025, 6, 18)),
            update_minute=600,
            messy=messy,
        )

    def estate(
        self, person: int, use: int, status: int = R_VALID, share: float = 1.0, messy: str = "", cert: str = ""
    ) -> str:
        number = cert or f"粤(2018)佛南不动产权第{9_500_000 + self.serial():07d}号"
        self.holdings.estates.add(
            certificate_no=number,
            owner_person=person,
            share=share,
            use=use,
            area=88.5 if use == RESIDENTIAL else 45.0,
            community=int(self.pop.hh_community[self.pop.household[person]]),
            registered_day=day_number(date(2018, 7, 2)),
            status=status,
            status_day=NO_DAY,
            prior_status=status,
            messy=messy,
        )
        return number

    def insurance(
        self,
        person: int,
        base: float,
        first: int,
        last: int,
        civil: bool = False,
        messy: str = "",
        employer: int | None = None,
    ) -> None:
        if civil:
            uscc, name = self.ent.agency_uscc[0], self.ent.agency_name[0]
        else:
            firm = self.ent.employer_pool()[0] if employer is None else employer
            uscc, name = self.ent.uscc[firm], self.ent.name[firm]
        self.holdings.insurance.add(
            person=person,
            employer_uscc=uscc,
            employer_name=name,
            base=base,
            civil=civil,
            full_types=not civil,
            first_period=first,
            last_period=last,
            raise_in_july=False,
            messy=messy,
        )

    def fund(self, person: int, balance: float, deposit: float, status: int = F_NORMAL, messy: str = "") -> None:
        firm = self.ent.employer_pool()[1 % len(self.ent.employer_pool())]
        self.holdings.funds.add(
            account_no=f"44069{self.serial():07d}",
            person=person,
            employer_uscc=self.ent.uscc[firm],
            balance0=balance,
            deposit=deposit if status == F_NORMAL else 0.0,
            first_period=0,
            last_period=N_PERIODS - 1,
            status=status,
            status_period=0 if status != F_NORMAL else N_PERIODS,
            messy=messy,
        )

    def cremation(self, person: int, death: int, messy: str = "") -> None:
        self.holdings.cremations.add(
            record_id=f"HZ9{self.serial():07d}",
            person=person,
            death_day=death,
            cremation_day=death + 3,
            home=0,
            available_day=death + 4,
            messy=messy,
        )

    def certificate(
        self,
        person: int,
        death: int,
        has_id: bool = True,
        messy: str = "",
        like: int | None = None,
        birth: int | None = None,
        available: int | None = None,
        name: str | None = None,
        gender: int | None = None,
    ) -> None:
        """A death certificate of `person`, or (person -1) of someone who shares `like`'s name and sex;
        `name`, `gender` and `birth` write other values than the person's own (a variant or a near miss)."""
        p = person if person >= 0 else int(like if like is not None else 0)
        self.holdings.certificates.add(
            certificate_no=f"SW449{self.serial():07d}",
            person=person,
            has_id=has_id,
            name=str(self.pop.name[p]) if name is None else name,
            gender=int(self.pop.gender[p]) if gender is None else gender,
            birth_day=int(self.pop.birth[p]) if birth is None else birth,
            death_day=death,
            hospital=0,
            available_day=death + 2 if available is None else available,
            messy=messy,
        )

    def die(self, person: int, death: int, registered: bool = False) -> None:
        self.pop.death_day[person] = death
        if registered:
            self.pop.status[person] = DECEASED
            self.pop.status_day[person] = death + 12

    def company(self, rep: int, etype: int, capital: float, status: int = E_ACTIVE, status_day: int = NO_DAY) -> int:
        hh_comm = int(self.g.integers(self.geo.n_communities))
        grid = int(self.geo.random_grid_in(np.array([hh_comm]), self.g)[0])
        lon, lat = self.geo.points_in(np.array([grid]), self.g)
        stem = vocab.ENTERPRISE_STEMS[int(self.g.integers(len(vocab.ENTERPRISE_STEMS)))]
        word, code = vocab.INDUSTRIES[int(self.g.integers(len(vocab.INDUSTRIES)))]
        if etype == INDIVIDUAL:
            shop, code = vocab.SHOP_WORDS[int(self.g.integers(len(vocab.SHOP_WORDS)))]
            name = f"{vocab.CITY_PREFIX}{self.pop.name[rep][0]}记{shop}"
        elif etype == PARTNERSHIP:
            name = f"{vocab.CITY_PREFIX}{stem}投资合伙企业（有限合伙）"
        else:
            name = f"{vocab.CITY_PREFIX}{stem}{word}有限公司"
        number = int(self.g.integers(1, 300))
        return add_enterprise(
            self.ent,
            self.g,
            name=name,
            etype=etype,
            legal_rep=rep,
            capital=capital,
            established=day_number(date(2020, 4, 8)),
            status=status,
            status_day=status_day,
            industry=code,
            community=hh_comm,
            grid=grid,
            lon=float(lon[0]),
            lat=float(lat[0]),
            address=f"{vocab.CITY_PREFIX}{self.geo.community_name[hh_comm]}{vocab.ROADS[0]}{number}号",
        )

    def background_adult(self) -> int:
        """An adult of the ordinary population (not in any assistance household) to fill a role."""
        candidates = np.flatnonzero((self.age >= 30) & (self.age < 60) & ~self.used_persons)
        return int(candidates[int(self.g.integers(len(candidates)))])

    def clean_outsider(self) -> int:
        candidates = np.flatnonzero(~self.pop.is_resident() & ~self.used_persons & (self.age >= 25) & (self.age < 70))
        return int(candidates[int(self.g.integers(len(candidates)))])


EPOCH_DATE = date(1970, 1, 1)
TO_TRADITIONAL = opencc.OpenCC("s2t")
MINORITY_NAMES = ("买买提·艾力", "阿依古丽·买买提")  # male, female
# Given-name characters of the demo population and a character of the same pinyin and tone that a
# clerk typing by ear might write instead (tests/test_names.py checks each pair with pypinyin).
HOMOPHONES = {
    "伟": "玮",
    "强": "蔷",
    "军": "均",
    "杰": "洁",
    "俊": "骏",
    "浩": "皓",
    "明": "铭",
    "辉": "晖",
    "志": "智",
    "健": "建",
    "文": "雯",
    "斌": "彬",
    "建": "健",
    "国": "帼",
    "家": "佳",
    "宏": "鸿",
    "锦": "瑾",
    "勇": "永",
    "振": "震",
    "宇": "雨",
    "鹏": "朋",
    "涛": "滔",
    "嘉": "佳",
    "永": "勇",
    "敏": "闽",
    "芳": "方",
    "丽": "俐",
    "娟": "鹃",
    "婷": "庭",
    "静": "靖",
    "霞": "侠",
    "燕": "艳",
    "秀": "绣",
    "玲": "龄",
    "慧": "惠",
    "颖": "影",
    "欣": "馨",
    "怡": "宜",
    "凤": "奉",
    "琳": "林",
    "晓": "筱",
    "玉": "钰",
    "珊": "姗",
    "莹": "滢",
    "倩": "茜",
    "红": "鸿",
    "梅": "玫",
    "兰": "岚",
}


def homophone_slip(name: str) -> str | None:
    """`name` with its last given-name character that has a listed homophone replaced; None if none has."""
    for i in range(len(name) - 1, 0, -1):
        if name[i] in HOMOPHONES:
            return name[:i] + HOMOPHONES[name[i]] + name[i + 1 :]
    return None


def plant(planter: Planter) -> list[PlantedCase]:
    """Plant every scenario; returns the expected outcomes by case index."""
    p = planter
    d = day_number

    # R01 death of a counted member.
    for when, registered in ((date(2026, 9, 20), True), (date(2026, 10, 8), False), (date(2026, 10, 25), False)):
        hh, m = p.household(p.elderly)
        p.die(m, d(when), registered)
        p.cremation(m, d(when))
        p.open_case(
            hh, "R01", "flag", f"member cremated, death {when}" + (" (registry shows deceased)" if registered else "")
        )
    hh, m = p.household(p.elderly)
    p.die(m, d(date(2026, 10, 12)))
    p.certificate(m, d(date(2026, 10, 12)))
    p.open_case(hh, "R01", "flag", "death certificate with the member's ID number, death 2026-10-12")
    for when in (date(2026, 9, 28), date(2026, 10, 30)):
        hh, m = p.household(p.elderly)
        p.die(m, d(when))
        p.certificate(m, d(when), has_id=False)
        p.open_case(
            hh, "R01", "flag", f"death certificate WITHOUT ID number (name, sex, birth date match), death {when}"
        )
    hh, m = p.household(p.with_x)
    p.die(m, d(date(2026, 10, 5)))
    p.cremation(m, d(date(2026, 10, 5)), messy="lowercase_x")
    p.open_case(hh, "R01", "flag", "cremation record with the ID number in lower-case x form")
    hh, m = p.household(p.born_19xx)
    p.die(m, d(date(2026, 9, 14)))
    p.certificate(m, d(date(2026, 9, 14)), messy="15_digit")
    p.open_case(hh, "R01", "flag", "death certificate with the 15-digit first-generation ID number")
    hh, m = p.household(p.elderly)
    p.certificate(-1, d(date(2026, 10, 2)), has_id=False, like=m, birth=int(p.pop.birth[m]) - 2_650)
    p.open_case(
        hh, "R01", "no_flag", "namesake: ID-less death certificate with the same name and sex, other birth date"
    )
    # ID-less certificates whose name or birth date another department wrote differently (issue 10).
    when = d(date(2026, 10, 16))
    hh, m = p.household(p.elderly)
    p.die(m, when)
    p.certificate(m, when, has_id=False, name=TO_TRADITIONAL.convert(str(p.pop.name[m])))
    p.open_case(hh, "R01", "flag", "ID-less death certificate, name in traditional characters")
    hh, m = p.household(p.elderly_with_homophone)
    p.die(m, when)
    p.certificate(m, when, has_id=False, name=homophone_slip(str(p.pop.name[m])))
    p.open_case(hh, "R01", "flag", "ID-less death certificate, one character of the name a homophone slip")
    hh, m = p.household(p.elderly_with_homophone)
    p.die(m, when)
    p.certificate(m, when, has_id=False, name=TO_TRADITIONAL.convert(homophone_slip(str(p.pop.name[m]))))
    p.open_case(hh, "R01", "flag", "ID-less death certificate, traditional characters and a homophone slip")
    hh, m = p.household(p.elderly)
    name = str(p.pop.name[m])
    p.die(m, when)
    p.certificate(m, when, has_id=False, name=f"{name[0]}\u3000{name[1:]}")
    p.open_case(hh, "R01", "flag", "ID-less death certificate, full-width space between surname and given name")
    hh, m = p.household(p.elderly)
    p.pop.name = p.pop.name.astype(f"<U{max(p.pop.name.dtype.itemsize // 4, 16)}")  # room for a longer name
    p.pop.name[m] = MINORITY_NAMES[int(p.pop.gender[m]) - 1]
    p.die(m, when)
    p.certificate(m, when, has_id=False, name=p.pop.name[m].replace("·", "•"))
    p.open_case(hh, "R01", "flag", "ID-less death certificate, another middle dot in an ethnic-minority name")
    hh, m = p.household(p.elderly_swappable_birth)
    born = EPOCH_DATE + timedelta(days=int(p.pop.birth[m]))
    p.die(m, when)
    p.certificate(m, when, has_id=False, birth=day_number(born.replace(month=born.day, day=born.month)))
    p.open_case(hh, "R01", "flag", "ID-less death certificate, birth month and day swapped")
    hh, m = p.household(p.elderly_with_homophone)
    p.certificate(
        -1, when, has_id=False, like=m, name=homophone_slip(str(p.pop.name[m])), gender=3 - int(p.pop.gender[m])
    )
    p.open_case(hh, "R01", "no_flag", "near miss: ID-less certificate, homophone name and birth date, the other sex")
    hh, m = p.household(p.elderly)
    name = str(p.pop.name[m])
    other = next(c for c in "伟强军杰芳丽娟婷" if c != name[-1] and name[:-1] + c != name)
    p.certificate(-1, when, has_id=False, like=m, name=name[:-1] + other)
    p.open_case(
        hh, "R01", "no_flag", "near miss: ID-less certificate, same surname, sex and birth date, another given name"
    )
    hh, m = p.household(p.elderly)
    p.certificate(m, AS_OF_DAY + 2, available=AS_OF_DAY - 1)
    p.open_case(hh, "R01", "no_flag", "death certificate dated two days after the as-of date")

    # R02 vehicles.
    for vtype, label in ((SMALL_CAR, "small car"), (LARGE_CAR, "large car"), (TRUCK, "truck")):
        hh, m = p.household(p.working)
        p.vehicle(m, vtype)
        p.open_case(hh, "R02", "flag", f"member owns a {label}, status normal, private use")
    hh, m = p.household(p.working)
    p.vehicle(m, SMALL_CAR, messy="fullwidth")
    p.open_case(hh, "R02", "flag", "member owns a small car; vehicle register has the ID number in full-width digits")
    hh, m = p.household(p.working)
    p.vehicle(m, SMALL_CAR, status=V_SCRAPPED)
    p.open_case(hh, "R02", "no_flag", "member's car is scrapped")
    hh, m = p.household(p.working)
    p.vehicle(m, MOTORCYCLE)
    p.open_case(hh, "R02", "no_flag", "member owns only a motorcycle")
    hh, m = p.household(p.working)
    firm = int(p.ent.employer_pool()[2 % len(p.ent.employer_pool())])
    p.insurance(m, 2600, 0, N_PERIODS - 1, employer=firm)
    p.vehicle(-1, SMALL_CAR, uscc=str(p.ent.uscc[firm]), name=str(p.ent.name[firm]))
    p.open_case(hh, "R02", "no_flag", "the member's employer owns a car (owner_uscc, no owner ID number)")
    hh, m = p.household(p.working)
    p.vehicle(m, SMALL_CAR)
    p.open_case(
        hh, "R02", "no_flag", "terminated case whose member owns a car (not a counted member)", status=TERMINATED
    )

    # R03 enterprises.
    hh, m = p.household(p.working)
    p.company(m, COMPANY, 50.0)
    p.open_case(hh, "R03", "flag", "member is legal representative of an active company")
    hh, m = p.household(p.working)
    partnership = p.company(p.background_adult(), PARTNERSHIP, 300.0)
    add_shareholder(p.ent, partnership, m, 30.0)
    p.open_case(hh, "R03", "flag", "member is a natural-person partner (shareholder) of an active partnership")
    hh, m = p.household(p.working)
    p.company(m, INDIVIDUAL, 20.0)
    p.open_case(hh, "R03", "flag", "member runs an active individual business with registered capital 20 (>= 10)")
    hh, m = p.household(p.working)
    firm = p.company(p.background_adult(), COMPANY, 100.0)
    add_shareholder(p.ent, firm, m, 20.0)
    p.ent.sh_messy[len(p.ent.sh_enterprise) - 1] = "spaces"
    p.open_case(hh, "R03", "flag", "member is a shareholder of an active company; ID number delivered with spaces")
    hh, m = p.household(p.working)
    p.company(m, COMPANY, 100.0, status=DEREGISTERED, status_day=d(date(2025, 3, 1)))
    p.open_case(hh, "R03", "no_flag", "member was legal representative of a company deregistered in 2025")
    hh, m = p.household(p.working)
    p.company(m, INDIVIDUAL, 5.0)
    p.open_case(hh, "R03", "no_flag", "member runs a small individual business, registered capital 5 (< 10)")

    # R04 real estate.
    hh, m = p.household(lambda q: p.pop.relation[q] == HEAD)
    p.estate(m, RESIDENTIAL)
    p.estate(m, RESIDENTIAL, status=R_MORTGAGED)
    p.open_case(hh, "R04", "flag", "head owns two residential properties")
    hh, m = p.household(lambda q: p.pop.relation[q] == HEAD)
    p.estate(m, COMMERCIAL_USE)
    p.open_case(hh, "R04", "flag", "head owns a commercial property")
    hh, m = p.household(lambda q: p.pop.relation[q] == HEAD, need_spouse=True)
    p.estate(m, RESIDENTIAL)
    p.estate(m + 1, RESIDENTIAL)
    p.open_case(hh, "R04", "flag", "head and spouse own one residential property each (two together)")
    hh, m = p.household(lambda q: p.pop.relation[q] == HEAD)
    p.estate(m, RESIDENTIAL)
    p.estate(m, RESIDENTIAL, messy="spaces")
    p.open_case(hh, "R04", "flag", "head owns two homes; one certificate has the ID number with spaces")
    hh, m = p.household(lambda q: p.pop.relation[q] == HEAD)
    p.estate(m, RESIDENTIAL)
    p.estate(m, COMMERCIAL_USE, status=R_CANCELLED)
    p.open_case(hh, "R04", "no_flag", "one home plus a cancelled commercial right")
    hh, m = p.household(lambda q: p.pop.relation[q] == HEAD)
    p.estate(m, RESIDENTIAL)
    p.estate(m, PARKING)
    p.open_case(hh, "R04", "no_flag", "one home plus a parking space")
    hh, m = p.household(lambda q: p.pop.relation[q] == HEAD, need_spouse=True)
    cert = p.estate(m, RESIDENTIAL, share=0.5)
    p.estate(m + 1, RESIDENTIAL, share=0.5, cert=cert)
    p.open_case(hh, "R04", "no_flag", "one home co-owned by head and spouse (two rows, one certificate)")

    # R05 pension base (periods 2026-04 .. 2026-10; the last six are 05-10).
    hh, m = p.household(p.working)
    p.insurance(m, 3500, 0, N_PERIODS - 1)
    p.open_case(hh, "R05", "flag", "pension base 3500 in every month")
    hh, m = p.household(p.working)
    p.insurance(m, 2600, 0, 3)
    p.insurance(m, 3200, 4, N_PERIODS - 1)
    p.open_case(hh, "R05", "flag", "pension base 3200 in exactly three months (2026-08..10)")
    hh, m = p.household(p.working)
    p.insurance(m, 4000, 3, N_PERIODS - 1)
    p.open_case(hh, "R05", "flag", "pension base 4000 in four months (2026-07..10)")
    hh, m = p.household(p.born_19xx)
    p.insurance(m, 3800, 0, N_PERIODS - 1, messy="15_digit")
    p.open_case(hh, "R05", "flag", "pension base 3800; insurance has the 15-digit first-generation ID number")
    hh, m = p.household(p.working)
    p.insurance(m, 2600, 0, 4)
    p.insurance(m, 3600, 5, N_PERIODS - 1)
    p.open_case(hh, "R05", "no_flag", "pension base >= 3000 in only two months (2026-09..10)")

    # R06 civil servants.
    hh, m = p.household(p.working)
    p.insurance(m, 5200, 5, N_PERIODS - 1, civil=True)
    p.open_case(hh, "R06", "flag", "civil-servant insurance records in 2026-09 and 2026-10")
    hh, m = p.household(p.working)
    p.insurance(m, 2900, 0, N_PERIODS - 1, civil=True)
    p.open_case(hh, "R06", "flag", "civil-servant (public institution) records every month, base 2900")
    hh, m = p.household(p.working)
    p.insurance(m, 6000, N_PERIODS - 1, N_PERIODS - 1, civil=True)
    p.open_case(hh, "R06", "flag", "civil-servant record in 2026-10 only")
    hh, m = p.household(p.working)
    p.insurance(m, 5000, 0, 0, civil=True)
    p.open_case(hh, "R06", "no_flag", "civil-servant record only in 2026-04, older than six months")

    # R07 provident fund.
    hh, m = p.household(p.working)
    p.fund(m, 68_000, 600)
    p.open_case(hh, "R07", "flag", "provident fund normal, balance 68000+")
    hh, m = p.household(p.working)
    p.fund(m, 9_000, 1_200)
    p.open_case(hh, "R07", "flag", "provident fund normal, monthly deposit 1200")
    hh, m = p.household(p.working)
    p.fund(m, 46_000, 800)
    p.open_case(hh, "R07", "flag", "provident fund balance crosses 50000 in 2026-08")
    hh, m = p.household(p.with_x)
    p.fund(m, 90_000, 500, messy="lowercase_x")
    p.open_case(hh, "R07", "flag", "provident fund balance 90000; ID number with lower-case x")
    hh, m = p.household(p.working)
    p.fund(m, 85_000, 0, status=F_CLOSED)
    p.open_case(hh, "R07", "no_flag", "closed provident fund account with balance 85000")
    hh, m = p.household(p.working)
    p.fund(m, 70_000, 0, status=F_SEALED)
    p.open_case(hh, "R07", "no_flag", "sealed provident fund account with balance 70000")

    # R08 household registration.
    hh, _ = p.household()
    index = p.open_case(hh, "R08", "flag", "member (relation other) has no household registration in the district")
    outsider = p.clean_outsider()
    p.cases.m_case = np.r_[p.cases.m_case, index]
    p.cases.m_person = np.r_[p.cases.m_person, outsider]
    p.cases.m_relation = np.r_[p.cases.m_relation, OTHER].astype(np.int8)
    p.cases.m_disability = np.r_[p.cases.m_disability, 0].astype(np.int8)
    for status, when, label in (
        (MOVED_OUT, date(2025, 12, 1), "moved_out"),
        (CANCELLED, date(2024, 6, 10), "cancelled"),
    ):
        hh, m = p.household(lambda q: p.pop.relation[q] != HEAD and p.age[q] >= 18)
        p.pop.status[m] = status
        p.pop.status_day[m] = d(when)
        p.open_case(hh, "R08", "flag", f"member registered as {label} since {when}")

    # R09 one person counted in two active cases.
    for _ in range(3):
        hh_a, m = p.household(p.working)
        hh_b, _ = p.household()
        p.open_case(hh_a, "R09", "flag", "a member of this case is also counted in another active case")
        b = p.open_case(hh_b, "R09", "flag", "a member of this case is also counted in another active case")
        p.cases.m_case = np.r_[p.cases.m_case, b]
        p.cases.m_person = np.r_[p.cases.m_person, m]
        p.cases.m_relation = np.r_[p.cases.m_relation, OTHER].astype(np.int8)
        p.cases.m_disability = np.r_[p.cases.m_disability, 0].astype(np.int8)
    hh_a, m = p.household(p.working)
    hh_b, _ = p.household()
    p.open_case(hh_a, "R09", "no_flag", "a member is also in another case, but that case is terminated")
    b = p.open_case(
        hh_b, "R09", "no_flag", "terminated case that also lists a member of an active case", status=TERMINATED
    )
    p.cases.m_case = np.r_[p.cases.m_case, b]
    p.cases.m_person = np.r_[p.cases.m_person, m]
    p.cases.m_relation = np.r_[p.cases.m_relation, OTHER].astype(np.int8)
    p.cases.m_disability = np.r_[p.cases.m_disability, 0].astype(np.int8)
    return p.planted


def used_persons(pop: Population, ent: Enterprises, holdings: Holdings, party: Party) -> np.ndarray:
    """Everyone who already has a record that a cross-check rule could read."""
    used = np.zeros(pop.size, dtype=bool)
    for people in (
        holdings.vehicles.owner_person,
        holdings.estates.owner_person,
        holdings.insurance.person,
        holdings.funds.person,
        holdings.cremations.person,
        holdings.certificates.person,
        ent.legal_rep,
        ent.sh_person,
        party.person,
    ):
        people = people[people >= 0]
        used[people] = True
    used |= pop.death_day < 10**7
    used |= pop.status != 0
    return used
