"""Field events, citizen appeals, enterprise appeals and ticket outcomes, plus IoT and video registries.

Grid reports and hotline appeals are drawn from the event catalogue (`thematic_libs/reference/
event_catalogue.csv`). Grid workers' reports are worded from templates with the item's own keywords
(they write the catalogue's language); hotline appeals and enterprise appeals are drawn from the
training split of the labelled corpus of everyday appeals (`thematic_libs/urban/corpus/`), so the demo
reads the way citizens and companies write, and the held-out split stays unseen by the classifier.
The true codes are in `_labels/hotline_event_codes.csv`.
A rainstorm on 8-9 November shows in the forecasts, in a burst of 道路积水 reports and in the
water-level sensors' grids, so the emergency library has something to correlate.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources

import numpy as np
import yaml

from demo_data import vocab
from demo_data.common import minute_number, rng
from demo_data.enterprises import ACTIVE, Enterprises
from demo_data.geography import Geography
from demo_data.timeline import EVENTS_START, HOURLY_TIMES
from ingestion.keys import CST, place_dedupe_key, ticket_id
from thematic_libs.reference import load_enterprise_appeal_topics
from thematic_libs.urban.corpus import corpus_split

EPOCH = datetime(1970, 1, 1)  # minute numbers count local minutes from here (common.minute_number)
END_MINUTE = minute_number(HOURLY_TIMES[-1])
START_MINUTE = minute_number(EVENTS_START)
STORM = (minute_number(datetime(2026, 11, 8, 14)), minute_number(datetime(2026, 11, 9, 10)))
FLOODING = "040201"
URBAN_MAJORS = ("01", "02", "03", "04", "05", "06")


@dataclass(frozen=True)
class CatalogueItem:
    event_code: str
    major_code: str
    item_name: str
    priority: str
    keywords: tuple[str, ...]


def load_catalogue() -> list[CatalogueItem]:
    """The urban-management classes (majors 01-06) of the event catalogue shipped in `thematic_libs/reference`.

    Citizens and grid workers report only these; the later majors (enterprise appeals, cross-check,
    IoT / video alerts) come from their own sources.
    """
    text = resources.files("thematic_libs.reference").joinpath("event_catalogue.csv").read_text(encoding="utf-8")
    return [
        CatalogueItem(
            r["event_code"], r["major_code"], r["item_name"], r["default_priority"], tuple(r["keywords"].split("|"))
        )
        for r in csv.DictReader(text.splitlines())
        if r["major_code"] in URBAN_MAJORS
    ]


PRIORITY_WEIGHT = {"urgent": 0.4, "high": 0.8, "normal": 1.6, "low": 1.2}
COMMON = {"010101": 3.0, "010104": 2.5, "050102": 3.0, "050201": 3.0, "050101": 2.0, "020101": 2.0, "030101": 1.5}

TIMES = ("已经好几天了", "持续一个多星期了", "从昨晚开始", "今天早上发现", "这段时间经常这样", "刚刚看到")
IMPACTS = {
    "01": ("影响环境卫生", "气味很难闻", "影响小区居民生活", "蚊虫很多"),
    "02": ("很影响市容", "存在安全隐患", "看起来很乱"),
    "03": ("晚上根本睡不着", "影响周边居民休息", "车辆行人通行困难"),
    "04": ("非常危险", "担心有人受伤", "已经影响通行", "情况比较紧急"),
    "05": ("行人只能走到机动车道上", "堵塞交通", "影响周边商户", "很不安全"),
    "06": ("给生活带来很大不便", "附近居民意见很大", "存在安全隐患"),
}
REPORT_TEMPLATES = (
    "巡查发现{place}{kw}，已拍照上报，请相关部门处置。",
    "{place}存在{kw}现象，{kw2}，现场已劝导，需进一步处理。",
    "网格巡查：{place}{kw}，{impact}，建议尽快处置。",
    "日常巡查中发现{kw}，位置：{place}。",
)
APPEAL_TOPICS = ("land", "financing", "permits", "talent", "utilities", "policy", "other")


@dataclass
class TextEvents:
    """Grid reports or hotline appeals: one row per event, sorted by time."""

    minute: np.ndarray
    second: np.ndarray
    event_code: np.ndarray
    grid: np.ndarray
    lon: np.ndarray
    lat: np.ndarray
    text: np.ndarray
    ident: np.ndarray
    extra: dict[str, np.ndarray]


def _daily_ids(prefix: str, minute: np.ndarray, width: int) -> np.ndarray:
    """`<prefix><YYYYMMDD><running number of the day>` for events sorted by time."""
    day = minute // 1440
    starts = np.r_[0, np.flatnonzero(np.diff(day)) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(day)]))
    seq = np.arange(len(day)) - first + 1
    if len(seq) and seq.max() >= 10**width:
        raise ValueError(
            f"{seq.max():,} {prefix} events on one day do not fit the {width}-digit running number of their id: "
            "lower the scale or the event multiplier"
        )
    dates = (day.astype("datetime64[D]")).astype(str)
    ymd = np.char.replace(dates, "-", "")
    return np.char.add(np.char.add(prefix, ymd), np.char.zfill(seq.astype(str), width))


def _event_times(generator: np.random.Generator, per_day: float, day_hours: tuple[int, int]) -> np.ndarray:
    days = (END_MINUTE - START_MINUTE) // 1440 + 1
    counts = generator.poisson(per_day, days)
    day = np.repeat(np.arange(days), counts)
    minute = START_MINUTE + day * 1440 + generator.integers(day_hours[0] * 60, day_hours[1] * 60, len(day))
    return np.sort(minute[minute <= END_MINUTE])


def _classes(
    generator: np.random.Generator, catalogue: list[CatalogueItem], minute: np.ndarray, storm_grids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    weights = np.array([PRIORITY_WEIGHT[c.priority] * COMMON.get(c.event_code, 1.0) for c in catalogue])
    item = generator.choice(len(catalogue), size=len(minute), p=weights / weights.sum())
    in_storm = (minute >= STORM[0]) & (minute <= STORM[1]) & (generator.random(len(minute)) < 0.6)
    flood = next(i for i, c in enumerate(catalogue) if c.event_code == FLOODING)
    item[in_storm] = flood
    grid = np.full(len(minute), -1)
    grid[in_storm] = storm_grids[generator.integers(len(storm_grids), size=in_storm.sum())]
    return item, grid


def _places(generator: np.random.Generator, geo: Geography, grid: np.ndarray) -> list[str]:
    roads = vocab.ROADS
    estates = vocab.ESTATES
    comm = geo.community_name[geo.grid_community[grid]]
    kind = generator.integers(4, size=len(grid))
    road = generator.integers(len(roads), size=len(grid))
    road2 = generator.integers(len(roads), size=len(grid))
    number = generator.integers(1, 300, size=len(grid))
    estate = generator.integers(len(estates), size=len(grid))
    out = []
    for c, k, r, r2, n, e in zip(
        comm.tolist(), kind.tolist(), road.tolist(), road2.tolist(), number.tolist(), estate.tolist(), strict=True
    ):
        if k == 0:
            out.append(f"{c}{roads[r]}{n}号")
        elif k == 1:
            out.append(f"{c}{estates[e]}门口")
        elif k == 2:
            out.append(f"{roads[r]}与{roads[r2]}交叉口")
        else:
            out.append(f"{c}{roads[r]}菜市场旁")
    return out


def _texts(
    generator: np.random.Generator,
    catalogue: list[CatalogueItem],
    item: np.ndarray,
    places: list[str],
    templates: tuple[str, ...],
) -> list[str]:
    n = len(item)
    tpl = generator.integers(len(templates), size=n).tolist()
    k1 = generator.integers(8, size=n).tolist()
    k2 = generator.integers(8, size=n).tolist()
    tm = generator.integers(len(TIMES), size=n).tolist()
    im = generator.integers(4, size=n).tolist()
    out = []
    for i, it in enumerate(item.tolist()):
        c = catalogue[it]
        kws = c.keywords
        first = kws[k1[i] % len(kws)]
        second = kws[(k1[i] + 1 + k2[i] % max(len(kws) - 1, 1)) % len(kws)]
        impacts = IMPACTS[c.major_code]
        out.append(
            templates[tpl[i]].format(
                place=places[i],
                kw=first,
                kw2=f"{second}的情况也很突出",
                time=TIMES[tm[i]],
                impact=impacts[im[i] % len(impacts)],
            )
        )
    return out


# Calls a 12345 operator also takes that are no urban-management problem at all: questions, thanks,
# wrong numbers. About one hotline appeal in twenty-five; their true code is empty, and the platform's
# classifier should send them to triage rather than invent a ticket.
OFF_CATALOGUE_SHARE = 0.04
OFF_CATALOGUE_APPEALS = (
    "请问社保卡丢了在哪里补办，要带什么材料",
    "我想问一下小孩读小学积分入学什么时候开始申请",
    "上次反映的问题已经解决了，打电话来说声谢谢",
    "公积金提取要多久到账？网上申请了一个星期还没动静",
    "请问居住证续签可以在街道办吗",
    "我老婆生小孩，生育津贴怎么领",
    "快递员把我的件放丢了，快递公司不认账",
    "喂喂，打错了，不好意思",
    "退休金这个月怎么少了两百块，麻烦帮我查一下",
    "新能源车的补贴政策还有没有，想咨询下",
    "医保异地备案怎么弄，我妈在老家看病",
    "我想投诉一下某培训机构不退学费",
    "请问老年人优待证在哪里办理",
    "房东不退押金，说墙面有污渍要扣钱，这个归谁管",
    "请问办护照需要预约吗，在哪个出入境大厅",
    "想了解一下灵活就业人员怎么交社保",
    "網上辦事大廳登錄不了，密碼重置收不到驗證碼",
    "请问高龄津贴每个月几号发",
    "我家小孩疫苗本丢了，去哪里补",
    "公司拖欠工资两个月了，老板电话也不接",
)


@functools.cache
def corpus_texts() -> dict[str, tuple[str, ...]]:
    """Training-split appeal texts of the labelled corpus, by event code."""
    training = corpus_split("train").sort("text_id")
    return {
        code: tuple(frame.get_column("text")) for (code,), frame in training.group_by("event_code", maintain_order=True)
    }


def _corpus_texts(generator: np.random.Generator, codes: np.ndarray) -> list[str]:
    """One training-split text of each code (uniformly among that code's texts)."""
    texts = corpus_texts()
    missing = sorted(set(codes.tolist()) - set(texts))
    if missing:
        raise ValueError(f"the appeal corpus has no training text for event codes {missing}")
    draws = generator.random(len(codes)).tolist()
    return [texts[c][int(d * len(texts[c]))] for c, d in zip(codes.tolist(), draws, strict=True)]


def build_grid_reports(
    seed: int, residents: int, geo: Geography, catalogue: list[CatalogueItem], event_multiplier: float = 1.0
) -> TextEvents:
    g = rng(seed, "grid-reports")
    minute = _event_times(g, max(24.0, residents * 0.0012) * event_multiplier, (8, 19))
    storm_grids = np.flatnonzero(geo.grid_lat < np.quantile(geo.grid_lat, 0.4))
    item, grid = _classes(g, catalogue, minute, storm_grids)
    free = grid < 0
    grid[free] = g.integers(geo.n_grids, size=free.sum())
    lon, lat = geo.points_in(grid, g)
    text = _texts(g, catalogue, item, _places(g, geo, grid), REPORT_TEMPLATES)
    ident = _daily_ids("SB", minute, 5)
    photo = np.where(
        g.random(len(minute)) < 0.85,
        np.char.add(np.char.add("https://oss.nanhai.gov.cn/wgh/photos/", ident), ".jpg"),
        "",
    )
    # The reporter is the grid's own worker, now and then a colleague covering for them.
    reporter = np.where(
        g.random(len(minute)) < 0.92, geo.grid_worker[grid], geo.grid_worker[g.integers(geo.n_grids, size=len(grid))]
    )
    return TextEvents(
        minute=minute,
        second=g.integers(0, 60, len(minute)),
        event_code=np.array([c.event_code for c in catalogue])[item],
        grid=grid,
        lon=lon,
        lat=lat,
        text=np.array(text, dtype=object),
        ident=ident,
        extra={"photo_uri": photo, "reporter_id": reporter},
    )


def build_hotline(
    seed: int, residents: int, geo: Geography, catalogue: list[CatalogueItem], event_multiplier: float = 1.0
) -> TextEvents:
    g = rng(seed, "hotline")
    minute = _event_times(g, max(16.0, residents * 0.0008) * event_multiplier, (7, 23))
    n = len(minute)
    storm_grids = np.flatnonzero(geo.grid_lat < np.quantile(geo.grid_lat, 0.4))
    item, grid = _classes(g, catalogue, minute, storm_grids)
    free = grid < 0
    grid[free] = g.integers(geo.n_grids, size=free.sum())
    lon, lat = geo.points_in(grid, g)
    places = _places(g, geo, grid)
    # About one appeal in twelve concerns another district of the city: no grid of ours, no coordinates.
    elsewhere = g.random(n) < 0.08
    other = g.integers(len(vocab.OTHER_DISTRICTS), size=n)
    district = np.where(elsewhere, np.array([c for c, _ in vocab.OTHER_DISTRICTS])[other], vocab.DISTRICT_CODE)
    street = geo.street_name[geo.street_of_grid()[grid]]
    address = [
        f"{vocab.CITY_NAME}{vocab.OTHER_DISTRICTS[o][1]}{p}" if e else f"{vocab.CITY_PREFIX}{s}{p}"
        for e, o, s, p in zip(elsewhere.tolist(), other.tolist(), street.tolist(), places, strict=True)
    ]
    codes = np.array([c.event_code for c in catalogue])[item]
    text = _corpus_texts(g, codes)
    off = g.random(n) < OFF_CATALOGUE_SHARE
    picks = g.integers(len(OFF_CATALOGUE_APPEALS), size=int(off.sum())).tolist()
    for i, k in zip(np.flatnonzero(off).tolist(), picks, strict=True):
        text[i] = OFF_CATALOGUE_APPEALS[k]
    codes = np.where(off, "", codes)
    geocoded = ~elsewhere & (g.random(n) < 0.88)
    channel = np.array(["phone", "app", "wechat", "web", "email"])[g.choice(5, size=n, p=[0.55, 0.15, 0.2, 0.07, 0.03])]
    phone = np.char.add(
        np.char.add("1", np.array(list("3456789"))[g.integers(7, size=n)]),
        np.char.zfill(g.integers(0, 10**9, n).astype(str), 9),
    )
    phone = np.where((channel == "email") | ((channel == "web") & (g.random(n) < 0.5)), "", phone)
    urgent_item = np.array([c.priority == "urgent" for c in catalogue])[item]
    urgent = np.where(urgent_item, g.random(n) < 0.8, g.random(n) < 0.03)
    return TextEvents(
        minute=minute,
        second=g.integers(0, 60, n),
        event_code=codes,
        grid=np.where(elsewhere, -1, grid),
        lon=np.where(geocoded, lon, np.nan),
        lat=np.where(geocoded, lat, np.nan),
        text=np.array(text, dtype=object),
        ident=_daily_ids("RX", minute, 6),
        extra={
            "channel": channel,
            "caller_phone": phone,
            "address_text": np.array(address, dtype=object),
            "district_code": district,
            "is_urgent": urgent,
        },
    )


@dataclass
class EnterpriseAppeals:
    appeal_id: np.ndarray
    enterprise: np.ndarray
    minute: np.ndarray
    topic: np.ndarray
    content: np.ndarray
    status_minutes: np.ndarray  # (n, 4): when it became open, in_progress, resolved, closed (-1 never)


def build_enterprise_appeals(seed: int, ent: Enterprises, event_multiplier: float = 1.0) -> EnterpriseAppeals:
    g = rng(seed, "enterprise-appeals")
    active = np.flatnonzero((ent.status == ACTIVE) & ~ent.planted)
    minute = _event_times(g, max(2.0, ent.size * 0.0004) * event_multiplier, (9, 18))
    n = len(minute)
    who = active[g.integers(len(active), size=n)]
    topic = g.choice(len(APPEAL_TOPICS), size=n, p=[0.15, 0.2, 0.2, 0.12, 0.13, 0.15, 0.05])
    mapping = load_enterprise_appeal_topics().to_pydict()
    code_of = dict(zip(mapping["topic"], mapping["event_code"], strict=True))
    topic_codes = np.array([code_of[t] for t in APPEAL_TOPICS])
    content = np.array(_corpus_texts(g, topic_codes[topic]), dtype=object)
    status = np.full((n, 4), -1, dtype=np.int64)
    status[:, 0] = minute
    status[:, 1] = minute + g.integers(60, 3 * 1440, n)
    status[:, 2] = status[:, 1] + g.integers(1440, 12 * 1440, n)
    status[:, 3] = status[:, 2] + g.integers(1440, 5 * 1440, n)
    return EnterpriseAppeals(
        appeal_id=_daily_ids("QS", minute, 4),
        enterprise=who,
        minute=minute,
        topic=np.array(APPEAL_TOPICS)[topic],
        content=content,
        status_minutes=status,
    )


DEPARTMENTS = (
    "chengguan",
    "zhujian",
    "shengtai",
    "shichang",
    "gongan",
    "yingji",
    "shuiwuju",
    "jiaotong",
    "jd_guicheng",
    "jd_dali",
)
DEPARTMENT_NAMES = {
    "chengguan": "区城管执法局",
    "zhujian": "区住建水利局",
    "shengtai": "生态环境分局",
    "shichang": "区市场监管局",
    "gongan": "公安分局",
    "yingji": "区应急管理局",
    "shuiwuju": "区水务局",
    "jiaotong": "区交通运输局",
    "jd_guicheng": "桂城街道办",
    "jd_dali": "大沥镇政府",
    "zhihui": "区指挥中心",
}
# Event paths of a ticket: (event, hours after the previous event)
PATHS: tuple[tuple[str, ...], ...] = (
    ("dispatched", "accepted", "resolved", "closed"),
    ("dispatched", "transferred", "accepted", "resolved", "closed"),
    ("dispatched", "transferred", "transferred", "accepted", "resolved", "closed"),
    ("dispatched", "returned", "dispatched", "accepted", "resolved", "closed"),
    ("dispatched", "accepted", "escalated", "resolved", "closed"),
    ("dispatched", "accepted", "resolved", "closed", "reopened", "resolved", "closed"),
    ("dispatched", "accepted"),
)
PATH_WEIGHTS = (0.55, 0.12, 0.05, 0.07, 0.05, 0.04, 0.12)
NOTES = {
    "dispatched": "已派单至{dept}",
    "accepted": "{dept}已签收",
    "returned": "非本部门职责，申请退回",
    "transferred": "转派至{dept}",
    "escalated": "超时未办结，升级督办",
    "resolved": "已到现场处置完毕",
    "closed": "市民确认办结",
    "reopened": "市民不满意，重新办理",
}


@dataclass
class TicketEvents:
    ticket_id: np.ndarray
    seq: np.ndarray
    event: np.ndarray
    minute: np.ndarray
    department: np.ndarray
    satisfaction: np.ndarray  # 0 = none
    note: np.ndarray


def default_window_hours() -> int:
    """The dispatch derivation's packaged default merge window, read as data (thematic_libs/dispatch/defaults.yaml)."""
    text = resources.files("thematic_libs.dispatch").joinpath("defaults.yaml").read_text(encoding="utf-8")
    return int(yaml.safe_load(text)["dispatch"]["merge_window_hours"])


def derived_tickets(reports: TextEvents, hotline: TextEvents, geo: Geography) -> tuple[np.ndarray, np.ndarray]:
    """The ids and creation minutes of the tickets the platform derives from these reports and appeals.

    The dispatch system reports on the platform's tickets, so the outcomes must carry the platform's
    ticket ids: the same dedupe key (event code, place, merge window) and the same id function
    (`ingestion.keys`, which the derivation shares).
    """
    window = default_window_hours()
    # Where the platform places each report: its grid; a hotline appeal without coordinates only in
    # its district. Appeals about other districts are not this platform's tickets.
    geocoded = ~np.isnan(hotline.lon.astype(float))
    hotline_place = np.where(geocoded, geo.grid_code[np.maximum(hotline.grid, 0)], hotline.extra["district_code"])
    codes = np.concatenate([reports.event_code, hotline.event_code])
    places = np.concatenate([geo.grid_code[reports.grid], hotline_place]).astype(str)
    minutes = np.concatenate([reports.minute, hotline.minute])
    # Appeals that are no catalogue problem (empty code) never become tickets.
    ours = np.concatenate([reports.grid >= 0, (hotline.grid >= 0) & (hotline.event_code != "")])
    codes, places, minutes = codes[ours], places[ours], minutes[ours]
    order = np.lexsort((minutes, places, codes))
    labels = {}
    for code, place, minute in zip(codes[order].tolist(), places[order].tolist(), minutes[order].tolist(), strict=True):
        moment = (EPOCH + timedelta(minutes=minute)).replace(tzinfo=CST)
        key = place_dedupe_key(code, place, moment, window)
        labels.setdefault(key, minute)  # sorted by time within a code and place: the first report creates it
    ids = np.array([ticket_id(key) for key in labels])
    created = np.fromiter(labels.values(), dtype=np.int64, count=len(labels))
    by_time = np.argsort(created, kind="stable")
    return ids[by_time], created[by_time]


def build_ticket_outcomes(seed: int, ticket_ids: np.ndarray, created_minute: np.ndarray) -> TicketEvents:
    """Outcomes the dispatch system reports for the platform's derived tickets.

    Each ticket follows one of `PATHS`, dispatched 10-90 minutes after it was created; events after
    the last batch's cut are not known yet and are left out, so open tickets exist. Vectorised: one row
    per event, times by cumulative sums.
    """
    g = rng(seed, "tickets")
    n_tickets = len(ticket_ids)
    start = created_minute + g.integers(10, 90, n_tickets)
    path = g.choice(len(PATHS), size=n_tickets, p=PATH_WEIGHTS)
    width = max(len(p) for p in PATHS)
    matrix = np.array([list(p) + [""] * (width - len(p)) for p in PATHS])
    length = np.array([len(p) for p in PATHS])[path]
    ticket = np.repeat(np.arange(n_tickets), length)
    first = np.repeat(np.r_[0, np.cumsum(length)[:-1]], length)
    k = np.arange(len(ticket)) - first
    event = matrix[path[ticket], k]
    slow = np.isin(event, ["resolved", "closed"])
    gap = np.where(k == 0, 0, g.integers(20, np.where(slow, 30 * 60, 8 * 60)))
    total = np.cumsum(gap)
    minute = start[ticket] + total - total[first]
    # The handling department changes on dispatch and transfer; a returned ticket goes back to the
    # command centre (zhihui) until it is dispatched again.
    change = (k == 0) | np.isin(event, ["transferred", "returned"]) | ((event == "dispatched") & (k > 0))
    holder = np.maximum.accumulate(np.where(change, np.arange(len(ticket)), 0))
    drawn = np.array(DEPARTMENTS)[g.integers(len(DEPARTMENTS), size=len(ticket))]
    department = np.where(event == "returned", "zhihui", drawn)[holder]
    satisfaction = np.where(
        event == "closed", g.choice([5, 4, 3, 2, 1], size=len(ticket), p=[0.55, 0.25, 0.1, 0.06, 0.04]), 0
    )
    note = np.full(len(ticket), "", dtype=object)
    for name, template in NOTES.items():
        rows = event == name
        before, _, after = template.partition("{dept}")
        names = np.array([DEPARTMENT_NAMES[d] for d in department[rows]], dtype=str)
        texts = np.char.add(np.char.add(before, names), after) if "{dept}" in template else template
        note[rows] = texts
    note[g.random(len(ticket)) < 0.3] = ""
    known = minute <= END_MINUTE
    return TicketEvents(
        ticket_id=ticket_ids[ticket][known],
        seq=(k + 1)[known].astype(np.int64),
        event=event[known],
        minute=minute[known].astype(np.int64),
        department=department[known],
        satisfaction=satisfaction[known].astype(np.int64),
        note=note[known],
    )


SENSOR_TYPES = (
    # type, id prefix, metric, threshold range, location suffix
    ("water_level", "WL", "water_depth_cm", (15, 30), "低洼积水点"),
    ("rain_gauge", "RG", "rain_mm_10min", (8, 12), "雨量站"),
    ("manhole_cover", "MC", "tilt_deg", (10, 20), "井盖"),
    ("smoke", "SM", "smoke_ppm", (250, 400), "烟感探测器"),
    ("gas", "GS", "gas_lel_pct", (20, 25), "燃气监测点"),
    ("river_quality", "RQ", "cod_mg_l", (30, 40), "河涌水质监测站"),
)
CAMERA_SCENES = {
    "crossroad": "helmet,illegal_parking",
    "street": "street_vending,garbage_overflow,illegal_parking",
    "riverside": "floating_debris,water_logging",
    "market": "street_vending,garbage_overflow,crowd_gathering",
    "residential": "garbage_overflow,fire_smoke",
    "school": "helmet,crowd_gathering",
}
RESOURCE_TYPES = (
    ("pump", "应急抽水泵", "shuiwuju", (200, 2000)),
    ("shelter", "应急避难场所", "yingji", (200, 3000)),
    ("rescue_team", "应急救援队", "xiaofang", (10, 60)),
    ("sandbag_depot", "防汛沙袋储备点", "shuiwuju", (1000, 20000)),
    ("generator", "移动发电机组", "yingji", (50, 500)),
    ("boat", "冲锋舟", "xiaofang", (6, 12)),
)
