"""Grid location: containing polygon, else nearest centroid within reach, else null."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from demo_data import generate_landing_zone
from thematic_libs.geo import GeometryError, GridIndex, haversine_m, locate, parse_wkt_rings


def square(cx: float, cy: float, h: float) -> str:
    return f"POLYGON(({cx - h} {cy - h}, {cx + h} {cy - h}, {cx + h} {cy + h}, {cx - h} {cy + h}, {cx - h} {cy - h}))"


def registry(rows: list[tuple[str, float, float, str | None]]) -> pa.Table:
    codes, lon, lat, wkt = zip(*rows, strict=True)
    return pa.table(
        {
            "grid_code": list(codes),
            "center_lon": list(lon),
            "center_lat": list(lat),
            "polygon_wkt": pa.array(list(wkt), pa.string()),
        }
    )


def test_haversine() -> None:
    # One degree of latitude is about 111.2 km; one of longitude at 60 degrees is half of that at the equator.
    assert haversine_m(113.0, 22.0, 113.0, 23.0) == pytest.approx(111_195, rel=1e-3)
    got = haversine_m(np.array([0.0, 10.0]), np.array([60.0, 0.0]), np.array([1.0, 10.0]), np.array([60.0, 0.0]))
    assert got[0] == pytest.approx(111_195 * math.cos(math.radians(60)), rel=1e-3) and got[1] == 0.0
    assert np.isnan(haversine_m(np.nan, 0.0, 1.0, 1.0))


def test_concave_polygons_holes_multipolygons_and_nearest_fallback() -> None:
    # A U shape (concave), a square with a hole, a multipolygon of two squares, and a grid without a polygon.
    u_shape = "POLYGON((0 0, 3 0, 3 3, 2 3, 2 1, 1 1, 1 3, 0 3, 0 0))"
    holed = "POLYGON((10 0, 13 0, 13 3, 10 3, 10 0), (11 1, 12 1, 12 2, 11 2, 11 1))"
    multi = "MULTIPOLYGON(((20 0, 21 0, 21 1, 20 1, 20 0)), ((22 0, 23 0, 23 1, 22 1, 22 0)))"
    grids = registry(
        [
            ("A", 1.5, 0.5, u_shape),
            ("B", 11.5, 1.5, holed),
            ("C", 21.5, 0.5, multi),
            ("D", 30.0, 0.0, None),
        ]
    )
    lon = [0.5, 1.5, 10.5, 11.5, 20.5, 22.5, 21.5, 30.001, 40.0, None, float("nan")]
    lat = [2.5, 2.5, 0.5, 1.5, 0.5, 0.5, 0.5, 0.001, 0.0, 1.0, 1.0]
    result = locate(lon, lat, grids, max_distance_m=250_000).to_pylist()
    got = [(r["grid_code"], r["method"]) for r in result]
    assert got == [
        ("A", "polygon"),  # inside the left arm of the U
        ("A", "nearest"),  # in the notch of the U: outside, A's centroid 222 km away
        ("B", "polygon"),
        ("B", "nearest"),  # inside the hole: outside B's polygon, B's centroid is right there
        ("C", "polygon"),
        ("C", "polygon"),  # the second part of the multipolygon
        ("C", "nearest"),  # between the two parts
        ("D", "nearest"),  # D has no polygon
        (None, None),  # 10 degrees from anything
        (None, None),
        (None, None),
    ]
    assert result[7]["distance_m"] == pytest.approx(haversine_m(30.001, 0.001, 30.0, 0.0))
    # With a smaller reach the point in the notch stays unlocated.
    assert locate([1.5], [2.5], grids, max_distance_m=200_000).column("grid_code").to_pylist() == [None]


def test_overlapping_polygons_go_to_the_lowest_grid_code() -> None:
    grids = registry([("G2", 0.5, 0.5, square(0.5, 0.5, 0.5)), ("G1", 0.9, 0.5, square(0.9, 0.5, 0.5))])
    assert locate([0.7], [0.5], grids).column("grid_code").to_pylist() == ["G1"]


def test_bad_registries_are_refused_with_the_grid() -> None:
    with pytest.raises(GeometryError, match="grid X1: polygon_wkt must be a WKT POLYGON"):
        GridIndex(registry([("X1", 0.0, 0.0, "LINESTRING(0 0, 1 1)")]))
    with pytest.raises(GeometryError, match="grid X2: polygon_wkt coordinate '0 0 5'"):
        parse_wkt_rings("POLYGON((0 0 5, 1 0 5, 1 1 5, 0 0 5))", "X2")
    with pytest.raises(GeometryError, match="unique"):
        GridIndex(registry([("X3", 0.0, 0.0, None), ("X3", 1.0, 1.0, None)]))
    # An unclosed ring is closed rather than refused.
    assert len(parse_wkt_rings("POLYGON((0 0, 1 0, 1 1))")[0]) == 4


def test_demo_grid_reports_are_located_in_their_own_grid(tmp_path_factory: pytest.TempPathFactory) -> None:
    out = tmp_path_factory.mktemp("landing")
    generate_landing_zone(out, scale=0.05, seed=11, progress=False)
    latest = sorted(out.glob("district/zhengshu/grid_registry/*/part-*.csv"))[-1]
    grids = pl.read_csv(latest, infer_schema=False).with_columns(
        pl.col("center_lon").cast(pl.Float64), pl.col("center_lat").cast(pl.Float64)
    )
    reports = []
    for part in out.glob("district/chengguan/grid_reports/*/part-*.jsonl"):
        for line in part.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(r.get("lon"), float) and isinstance(r.get("lat"), float):
                reports.append((r.get("grid_code"), r["lon"], r["lat"]))
    codes, lon, lat = (list(v) for v in zip(*reports, strict=True))
    known = set(grids.get_column("grid_code"))
    result = locate(lon, lat, grids.to_arrow())
    got = result.to_pydict()
    rows = [(c, g, m) for c, g, m in zip(codes, got["grid_code"], got["method"], strict=True) if c in known]
    assert len(rows) > 500
    assert all(m == "polygon" for _, _, m in rows)
    agree = sum(c == g for c, g, _ in rows) / len(rows)
    assert agree == 1.0, f"{agree:.4f} of the reports located in their own grid"


def test_a_million_points_over_a_thousand_grids() -> None:
    n, h = 32, 0.005
    xs, ys = np.meshgrid(113.0 + np.arange(n) * 2 * h, 22.8 + np.arange(n) * 2 * h)
    cx, cy = xs.ravel(), ys.ravel()
    codes = [f"G{i:04d}" for i in range(len(cx))]
    # Every other grid without a polygon: those are found through their centroids.
    wkt = [square(x, y, h) if i % 2 == 0 else None for i, (x, y) in enumerate(zip(cx, cy, strict=True))]
    grids = pa.table({"grid_code": codes, "center_lon": cx, "center_lat": cy, "polygon_wkt": pa.array(wkt)})
    rng = np.random.default_rng(1)
    lon = rng.uniform(113.0 - h, 113.0 + (2 * n - 1) * h, 1_000_000)
    lat = rng.uniform(22.8 - h, 22.8 + (2 * n - 1) * h, 1_000_000)
    started = time.perf_counter()
    result = locate(lon, lat, grids)
    elapsed = time.perf_counter() - started
    col = np.floor((lon - (113.0 - h)) / (2 * h)).astype(int)
    row = np.floor((lat - (22.8 - h)) / (2 * h)).astype(int)
    expected = np.array(codes, dtype=object)[row * n + col]
    got = np.array(result.column("grid_code").to_pylist(), dtype=object)
    method = np.array(result.column("method").to_pylist(), dtype=object)
    # Points in a polygon grid are located by polygon, exactly.
    in_polygon = (row * n + col) % 2 == 0
    assert np.all(method[in_polygon] == "polygon") and np.all(got[in_polygon] == expected[in_polygon])
    # The others by the nearest centroid: polygons of the neighbours never claim them.
    assert np.all(method[~in_polygon] == "nearest")
    assert np.all(got[~in_polygon] == expected[~in_polygon])
    assert elapsed < 15, f"1M points x 1,024 grids took {elapsed:.1f} s"
