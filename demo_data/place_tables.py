"""Batches of the place-centred contracts: the grid registry, cameras, IoT sensors, emergency
resources, grid reports, hotline appeals, ticket outcomes and rainfall forecasts. Everything that has
coordinates lies inside a real grid of `geography`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime

import numpy as np
import polars as pl

from demo_data import timeline, vocab
from demo_data.columns import day, flag, in_window, incremental, integer, moment, number, text
from demo_data.common import Batch, RowLabel, day_number, make_batch, minute_number, rng
from demo_data.events import CAMERA_SCENES, RESOURCE_TYPES, SENSOR_TYPES, STORM, TextEvents
from demo_data.world import World


def grid_registry(w: World) -> Iterator[Batch]:
    contract = w.contracts["zhengshu.grid_registry"]
    geo = w.geo
    street = geo.street_of_grid()
    polygons = np.array([geo.polygon_wkt(i) for i in range(geo.n_grids)])
    workers = geo.grid_worker.copy()
    g = rng(w.seed, "grid-registry")
    for k, t in enumerate(timeline.WEEKLY_SNAPSHOTS):
        if k == len(timeline.WEEKLY_SNAPSHOTS) - 1:
            # A grid worker hand-over shows up in the last weekly snapshot.
            swap = int(g.integers(geo.n_grids))
            workers[swap] = f"WGY{900_000 + swap:06d}"
        frame = pl.DataFrame(
            [
                text("grid_code", geo.grid_code),
                text("grid_name", geo.grid_name),
                text("community_code", geo.community_code[geo.grid_community]),
                text("community_name", geo.community_name[geo.grid_community]),
                text("street_code", geo.street_code[street]),
                text("street_name", geo.street_name[street]),
                text("district_code", np.full(geo.n_grids, vocab.DISTRICT_CODE)),
                text("district_name", np.full(geo.n_grids, vocab.DISTRICT_NAME)),
                number("center_lon", geo.grid_lon),
                number("center_lat", geo.grid_lat),
                text("polygon_wkt", polygons),
                text("grid_worker_id", workers.copy()),
            ]
        )
        yield make_batch(contract, t, frame, mode="snapshot")


def _statuses(g: np.random.Generator, n: int, snapshots: int, options: tuple[str, ...], p: list[float]) -> np.ndarray:
    """(n, snapshots) statuses that mostly persist from one snapshot to the next."""
    out = np.empty((n, snapshots), dtype=object)
    out[:, 0] = np.array(options)[g.choice(len(options), size=n, p=p)]
    for k in range(1, snapshots):
        flip = g.random(n) < 0.04
        out[:, k] = np.where(flip, np.array(options)[g.choice(len(options), size=n, p=p)], out[:, k - 1])
    return out


def video_cameras(w: World) -> Iterator[Batch]:
    contract = w.contracts["zhengshu.video_cameras"]
    g = rng(w.seed, "cameras")
    n = max(30, round(w.geo.n_grids * 1.5))
    grid = g.integers(w.geo.n_grids, size=n)
    lon, lat = w.geo.points_in(grid, g)
    scenes = np.array(list(CAMERA_SCENES))
    scene = scenes[g.choice(len(scenes), size=n, p=[0.25, 0.3, 0.1, 0.1, 0.15, 0.1])]
    algorithms = np.array([CAMERA_SCENES[s] for s in scene])
    camera_id = np.char.add("4406050000132", np.char.zfill((g.permutation(n) + 1).astype(str), 7))
    status = _statuses(g, n, len(timeline.WEEKLY_SNAPSHOTS), ("online", "offline", "maintenance"), [0.9, 0.07, 0.03])
    for k, t in enumerate(timeline.WEEKLY_SNAPSHOTS):
        frame = pl.DataFrame(
            [
                text("camera_id", camera_id),
                text("grid_code", w.geo.grid_code[grid]),
                number("lon", lon),
                number("lat", lat),
                text("scene", scene),
                text("algorithms", algorithms),
                text("status", status[:, k].astype(str)),
            ]
        )
        yield make_batch(contract, t, frame, mode="snapshot")


def sensor_devices(w: World) -> Iterator[Batch]:
    contract = w.contracts["yingji.sensor_devices"]
    g = rng(w.seed, "sensors")
    n = max(24, round(w.geo.n_grids * 0.6))
    kind = g.choice(len(SENSOR_TYPES), size=n, p=[0.3, 0.1, 0.25, 0.15, 0.1, 0.1])
    # Water-level sensors sit in the low-lying southern grids that flood in the storm.
    low = np.flatnonzero(w.geo.grid_lat < np.quantile(w.geo.grid_lat, 0.4))
    grid = np.where(kind == 0, low[g.integers(len(low), size=n)], g.integers(w.geo.n_grids, size=n))
    lon, lat = w.geo.points_in(grid, g)
    prefix = np.array([s[1] for s in SENSOR_TYPES])[kind]
    device_id = np.char.add(np.char.add("YJ", prefix), np.char.zfill((g.permutation(n) + 1).astype(str), 6))
    lo = np.array([s[3][0] for s in SENSOR_TYPES])[kind]
    hi = np.array([s[3][1] for s in SENSOR_TYPES])[kind]
    threshold = np.round(g.uniform(lo, hi), 0)
    road = np.array(vocab.ROADS)[g.integers(len(vocab.ROADS), size=n)]
    location = np.char.add(
        np.char.add(w.geo.community_name[w.geo.grid_community[grid]], road),
        np.array([s[4] for s in SENSOR_TYPES])[kind],
    )
    installed = day_number(date(2019, 3, 1)) + g.integers(
        0, day_number(date(2026, 10, 1)) - day_number(date(2019, 3, 1)), n
    )
    status = _statuses(g, n, len(timeline.SENSOR_SNAPSHOTS), ("active", "offline", "retired"), [0.9, 0.08, 0.02])
    for k, t in enumerate(timeline.SENSOR_SNAPSHOTS):
        frame = pl.DataFrame(
            [
                text("device_id", device_id),
                text("device_type", np.array([s[0] for s in SENSOR_TYPES])[kind]),
                text("grid_code", w.geo.grid_code[grid]),
                number("lon", lon),
                number("lat", lat),
                text("location_name", location),
                text("metric", np.array([s[2] for s in SENSOR_TYPES])[kind]),
                number("alert_threshold", threshold),
                day("installed_date", installed),
                text("status", status[:, k].astype(str)),
            ]
        )
        yield make_batch(contract, t, frame, mode="snapshot")


def emergency_resources(w: World) -> Iterator[Batch]:
    contract = w.contracts["yingji.emergency_resources"]
    g = rng(w.seed, "resources")
    n = max(15, round(w.geo.n_grids * 0.25))
    kind = g.choice(len(RESOURCE_TYPES), size=n, p=[0.25, 0.2, 0.15, 0.2, 0.12, 0.08])
    grid = g.integers(w.geo.n_grids, size=n)
    lon, lat = w.geo.points_in(grid, g)
    street = w.geo.street_name[w.geo.street_of_grid()[grid]]
    community = w.geo.community_name[w.geo.grid_community[grid]]
    label = np.array([r[1] for r in RESOURCE_TYPES])[kind]
    name = np.array(
        [
            f"{s}{c}{lb}{i % 9 + 1}号"
            for i, (s, c, lb) in enumerate(zip(street.tolist(), community.tolist(), label.tolist(), strict=True))
        ]
    )
    lo = np.array([r[3][0] for r in RESOURCE_TYPES])[kind]
    hi = np.array([r[3][1] for r in RESOURCE_TYPES])[kind]
    capacity = np.round(g.uniform(lo, hi), 0)
    capacity[g.random(n) < 0.05] = np.nan
    owner = np.array([r[2] for r in RESOURCE_TYPES])[kind]
    ident = np.char.add("YJZY", np.char.zfill((np.arange(n) + 1).astype(str), 5))
    # One new pump arrives in the second week.
    added = np.zeros(n, dtype=bool)
    added[-1] = True
    for k, t in enumerate(timeline.WEEKLY_SNAPSHOTS):
        keep = ~added | (k >= 1)
        frame = pl.DataFrame(
            [
                text("resource_id", ident),
                text("resource_type", np.array([r[0] for r in RESOURCE_TYPES])[kind]),
                text("name", name),
                number("lon", lon),
                number("lat", lat),
                number("capacity", capacity),
                text("owner_department", owner),
            ]
        ).filter(pl.Series(keep))
        yield make_batch(contract, t, frame, mode="snapshot")


def grid_reports(w: World) -> Iterator[Batch]:
    contract = w.contracts["chengguan.grid_reports"]
    r: TextEvents = w.reports

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        rows = np.flatnonzero(in_window(r.minute, previous, cut))
        frame = pl.DataFrame(
            [
                text("report_id", r.ident[rows]),
                text("grid_code", w.geo.grid_code[r.grid[rows]]),
                text("reporter_id", r.extra["reporter_id"][rows]),
                moment("reported_at", r.minute[rows], r.second[rows]),
                text("event_code", r.event_code[rows]),
                text("description", r.text[rows].astype(str)),
                number("lon", r.lon[rows]),
                number("lat", r.lat[rows]),
                text("photo_uri", r.extra["photo_uri"][rows]),
            ]
        )
        return frame, np.zeros(len(rows), dtype=bool), []

    yield from incremental(contract, timeline.HOURLY_TIMES, build)


def hotline_appeals(w: World) -> Iterator[Batch]:
    contract = w.contracts["zhengshu.hotline_appeals"]
    h: TextEvents = w.hotline

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        rows = np.flatnonzero(in_window(h.minute, previous, cut))
        frame = pl.DataFrame(
            [
                text("appeal_id", h.ident[rows]),
                moment("received_at", h.minute[rows], h.second[rows]),
                text("channel", h.extra["channel"][rows]),
                text("caller_phone", h.extra["caller_phone"][rows]),
                text("content", h.text[rows].astype(str)),
                text("address_text", h.extra["address_text"][rows].astype(str)),
                number("lon", h.lon[rows]),
                number("lat", h.lat[rows]),
                text("district_code", h.extra["district_code"][rows]),
                flag("is_urgent", h.extra["is_urgent"][rows]),
            ]
        )
        return frame, np.zeros(len(rows), dtype=bool), []

    yield from incremental(contract, timeline.HOURLY_TIMES, build)


def ticket_outcomes(w: World) -> Iterator[Batch]:
    contract = w.contracts["zhihui.ticket_outcomes"]
    t = w.tickets

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        rows = np.flatnonzero(in_window(t.minute, previous, cut))
        frame = pl.DataFrame(
            [
                text("ticket_id", t.ticket_id[rows]),
                integer("event_seq", t.seq[rows]),
                text("event", t.event[rows]),
                moment("event_at", t.minute[rows]),
                text("department_code", t.department[rows]),
                integer("satisfaction", t.satisfaction[rows], null_below=1),
                text("note", t.note[rows].astype(str)),
            ]
        )
        return frame, np.zeros(len(rows), dtype=bool), []

    yield from incremental(contract, timeline.HOURLY_TIMES, build)


def rainfall_forecast(w: World) -> Iterator[Batch]:
    """Hourly forecasts for the city's districts since 1 November, with the 8-9 November rainstorm."""
    contract = w.contracts["qixiang.rainfall_forecast"]
    g = rng(w.seed, "rainfall")
    first = minute_number(datetime(2026, 11, 1))
    issues = np.arange(first, minute_number(timeline.HOURLY_TIMES[-1]) + 1, 60)
    districts = np.array([vocab.DISTRICT_CODE, *[c for c, _ in vocab.OTHER_DISTRICTS]])
    windows = np.array([(0, 60), (60, 180), (180, 360)])
    issued = np.repeat(issues, len(districts) * len(windows))
    district = np.tile(np.repeat(districts, len(windows)), len(issues))
    start = issued + np.tile(windows[:, 0], len(issues) * len(districts))
    end = issued + np.tile(windows[:, 1], len(issues) * len(districts))
    hours = (end - start) / 60
    centre = (STORM[0] + STORM[1]) / 2
    storm = np.exp(-((((start + end) / 2 - centre) / (10 * 60)) ** 2))
    intensity = np.maximum(0, g.normal(0.2, 0.3, len(issued))) + storm * g.uniform(25, 55, len(issued))
    rain = np.round(intensity * hours, 1)
    per_hour = rain / hours
    level = np.where(
        per_hour >= 50,
        "red",
        np.where(per_hour >= 30, "orange", np.where(per_hour >= 20, "yellow", np.where(per_hour >= 10, "blue", ""))),
    )

    def build(previous: int | None, cut: int) -> tuple[pl.DataFrame, np.ndarray, list[RowLabel]]:
        rows = np.flatnonzero(in_window(issued, previous, cut))
        frame = pl.DataFrame(
            [
                moment("issued_at", issued[rows]),
                text("district_code", district[rows]),
                moment("valid_from", start[rows]),
                moment("valid_to", end[rows]),
                number("rain_mm", rain[rows]),
                text("warning_level", level[rows]),
            ]
        )
        return frame, np.zeros(len(rows), dtype=bool), []

    yield from incremental(contract, timeline.HOURLY_TIMES, build)
