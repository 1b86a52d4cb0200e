"""Locating points (WGS-84 lon/lat) in the grid registry (网格), vectorised.

`locate` answers, for each point, the grid it belongs to and how that was decided:

1. `polygon`: the grid whose boundary (`polygon_wkt`, WKT POLYGON or MULTIPOLYGON, holes allowed,
   even-odd rule) contains the point. Where polygons overlap, the lowest grid_code wins.
2. `nearest`: otherwise the grid with the nearest centroid (`center_lon`, `center_lat`), if it lies
   within `max_distance_m` (great-circle metres, default 2,000 m; the caller passes its own
   configured value, e.g. `dispatch.locate_max_distance_m` of the district config). This also covers
   grids delivered without a polygon and points a little off the boundary (GPS error).
3. null: nothing within reach, or a null / NaN coordinate.

Polygons are found through a bucket index (a regular lon/lat grid of cells, each listing the
polygons whose bounding box touches it), so a point is tested only against the few polygons of its
cell; centroids are searched with a KD-tree on unit-sphere vectors (scipy).
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pyarrow as pa
from scipy.spatial import cKDTree

EARTH_RADIUS_M = 6_371_008.8
DEFAULT_MAX_DISTANCE_M = 2_000.0
RESULT_SCHEMA = pa.schema(
    [pa.field("grid_code", pa.string()), pa.field("method", pa.string()), pa.field("distance_m", pa.float64())]
)
REQUIRED_COLUMNS = ("grid_code", "center_lon", "center_lat")
_CHUNK = 250_000  # points per polygon-test chunk: bounds memory on polygons with many edges
_RING = re.compile(r"\(([^()]*)\)")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")

ArrayLike = np.ndarray | pa.Array | pa.ChunkedArray | pl.Series | list[float | None]


class GeometryError(ValueError):
    """A grid registry row whose geometry cannot be used."""


def haversine_m(lon1: ArrayLike, lat1: ArrayLike, lon2: ArrayLike, lat2: ArrayLike) -> np.ndarray:
    """Great-circle distance in metres between points given in degrees (numpy broadcasting; NaN in, NaN out)."""
    lon1, lat1, lon2, lat2 = (np.radians(_floats(v)) for v in (lon1, lat1, lon2, lat2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _floats(values: ArrayLike | float) -> np.ndarray:
    """float64 numpy array with nulls as NaN."""
    if isinstance(values, pl.Series):
        return values.cast(pl.Float64).fill_null(np.nan).to_numpy()
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    return np.asarray([np.nan if v is None else v for v in values] if isinstance(values, list) else values, float)


def parse_wkt_rings(wkt: str, grid_code: str = "?") -> list[np.ndarray]:
    """The rings of a WKT POLYGON / MULTIPOLYGON as (k, 2) lon/lat arrays, each closed."""
    head = wkt.strip().upper()
    if not (head.startswith("POLYGON") or head.startswith("MULTIPOLYGON")):
        raise GeometryError(
            f"grid {grid_code}: polygon_wkt must be a WKT POLYGON or MULTIPOLYGON, got {wkt[:40]!r}; "
            "fix the grid registry row or leave polygon_wkt empty (the centroid is then used)"
        )
    rings = []
    for body in _RING.findall(wkt):
        points = []
        for pair in body.split(","):
            parts = pair.split()
            if len(parts) != 2 or not all(_NUMBER.match(p) for p in parts):
                raise GeometryError(
                    f"grid {grid_code}: polygon_wkt coordinate {pair.strip()!r} is not 'lon lat' (2-D WKT); "
                    "fix the grid registry row"
                )
            points.append((float(parts[0]), float(parts[1])))
        ring = np.array(points, dtype=float)
        if len(ring) and not np.array_equal(ring[0], ring[-1]):
            ring = np.vstack([ring, ring[:1]])
        if len(ring) < 4:
            raise GeometryError(f"grid {grid_code}: a polygon ring needs at least 3 distinct points; fix the row")
        rings.append(ring)
    if not rings:
        raise GeometryError(f"grid {grid_code}: polygon_wkt {wkt[:40]!r} has no coordinates; fix the row")
    return rings


def _unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    lon_r, lat_r = np.radians(lon), np.radians(lat)
    return np.column_stack([np.cos(lat_r) * np.cos(lon_r), np.cos(lat_r) * np.sin(lon_r), np.sin(lat_r)])


class GridIndex:
    """Spatial index over a grid registry; build once, then `locate` many points."""

    def __init__(self, registry: pa.Table | pl.DataFrame) -> None:
        frame = registry if isinstance(registry, pl.DataFrame) else pl.from_arrow(registry)
        missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if missing:
            raise GeometryError(f"grid registry lacks column(s) {missing}; pass the zhengshu.grid_registry table")
        if "polygon_wkt" not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("polygon_wkt"))
        frame = frame.select(
            pl.col("grid_code").cast(pl.String),
            pl.col("center_lon").cast(pl.Float64),
            pl.col("center_lat").cast(pl.Float64),
            pl.col("polygon_wkt").cast(pl.String),
        ).sort("grid_code")
        duplicated = frame.filter(pl.col("grid_code").is_duplicated()).get_column("grid_code").unique().to_list()
        if duplicated or frame.get_column("grid_code").null_count():
            raise GeometryError(f"grid registry: grid_code must be present and unique (twice: {duplicated[:10]})")
        bad = frame.filter(
            pl.col("center_lon").is_null() | pl.col("center_lat").is_null() | pl.col("center_lon").is_nan()
        )
        if bad.height:
            raise GeometryError(
                f"grid registry: grids without a centroid: {bad.get_column('grid_code').to_list()[:10]}; "
                "every grid needs center_lon and center_lat"
            )
        self.grid_codes = frame.get_column("grid_code").to_numpy().astype(object)
        self.center_lon = frame.get_column("center_lon").to_numpy()
        self.center_lat = frame.get_column("center_lat").to_numpy()
        self._tree = cKDTree(_unit_vectors(self.center_lon, self.center_lat))
        self._build_polygons(frame.get_column("polygon_wkt").to_list())

    def _build_polygons(self, wkts: list[str | None]) -> None:
        """Edges per grid (CSR), bounding boxes, and the bucket index over the boxes."""
        edges, owners, boxes, with_polygon = [], [], [], []
        for g, wkt in enumerate(wkts):
            if not wkt or not wkt.strip():
                continue
            rings = parse_wkt_rings(wkt, self.grid_codes[g])
            for ring in rings:
                edges.append(np.hstack([ring[:-1], ring[1:]]))
                owners.append(np.full(len(ring) - 1, g))
            stacked = np.vstack(rings)
            boxes.append((*stacked.min(axis=0), *stacked.max(axis=0)))
            with_polygon.append(g)
        self.polygon_grids = np.array(with_polygon, dtype=np.int64)
        if not with_polygon:
            return
        edge_array = np.vstack(edges)
        owner = np.concatenate(owners)
        order = np.argsort(owner, kind="stable")
        self._edges = edge_array[order]
        counts = np.bincount(owner, minlength=len(self.grid_codes))
        self._edge_start = np.r_[0, np.cumsum(counts)[:-1]]
        self._edge_count = counts
        box = np.array(boxes)
        self._box = np.full((len(self.grid_codes), 4), np.nan)
        self._box[self.polygon_grids] = box
        # Bucket cells about the size of a typical polygon, at most 4096 cells across the extent.
        self._origin = box[:, :2].min(axis=0)
        extent = box[:, 2:].max(axis=0) - self._origin
        typical = np.median(box[:, 2:] - box[:, :2], axis=0)
        self._cell = np.maximum(np.maximum(typical, extent / 4096), 1e-9)
        self._ncols = int(extent[0] // self._cell[0]) + 1
        lo = np.floor((box[:, :2] - self._origin) / self._cell).astype(np.int64)
        hi = np.floor((box[:, 2:] - self._origin) / self._cell).astype(np.int64)
        cell_ids, cell_grids = [], []
        for k, g in enumerate(self.polygon_grids.tolist()):  # one step per polygon, not per point
            xs = np.arange(lo[k, 0], hi[k, 0] + 1)
            ys = np.arange(lo[k, 1], hi[k, 1] + 1)
            ids = (ys[:, None] * self._ncols + xs[None, :]).ravel()
            cell_ids.append(ids)
            cell_grids.append(np.full(len(ids), g))
        ids = np.concatenate(cell_ids)
        grids = np.concatenate(cell_grids)
        order = np.lexsort((grids, ids))
        self._bucket_cell = ids[order]
        self._bucket_grid = grids[order]
        self._nrows = int(extent[1] // self._cell[1]) + 1

    def _in_polygon(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Index of the containing grid per point (-1 when none); points must be finite."""
        found = np.full(len(lon), -1, dtype=np.int64)
        if not len(self.polygon_grids) or not len(lon):
            return found
        cx = np.floor((lon - self._origin[0]) / self._cell[0]).astype(np.int64)
        cy = np.floor((lat - self._origin[1]) / self._cell[1]).astype(np.int64)
        inside_extent = (cx >= 0) & (cx < self._ncols) & (cy >= 0) & (cy < self._nrows)
        cell = np.where(inside_extent, cy * self._ncols + cx, -1)
        left = np.searchsorted(self._bucket_cell, cell, side="left")
        right = np.searchsorted(self._bucket_cell, cell, side="right")
        count = np.where(inside_extent, right - left, 0)
        point = np.repeat(np.arange(len(lon)), count)
        offset = np.arange(len(point)) - np.repeat(np.cumsum(count) - count, count)
        grid = self._bucket_grid[np.repeat(left, count) + offset]
        box = self._box[grid]
        px, py = lon[point], lat[point]
        keep = (px >= box[:, 0]) & (px <= box[:, 2]) & (py >= box[:, 1]) & (py <= box[:, 3])
        point, grid, px, py = point[keep], grid[keep], px[keep], py[keep]
        # Ray casting, one row per (candidate pair, edge of its grid).
        n_edges = self._edge_count[grid]
        pair = np.repeat(np.arange(len(point)), n_edges)
        edge = self._edges[
            np.repeat(self._edge_start[grid], n_edges)
            + np.arange(len(pair))
            - np.repeat(np.cumsum(n_edges) - n_edges, n_edges)
        ]
        x, y = px[pair], py[pair]
        x1, y1, x2, y2 = edge[:, 0], edge[:, 1], edge[:, 2], edge[:, 3]
        straddles = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            cross_x = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        crossings = np.bincount(pair, weights=straddles & (x < cross_x), minlength=len(point))
        inside = crossings % 2 == 1
        point, grid = point[inside], grid[inside]
        if not len(point):
            return found
        # Overlapping polygons: the lowest grid (grids are sorted by grid_code) wins.
        order = np.lexsort((grid, point))
        point, grid = point[order], grid[order]
        first = np.r_[True, point[1:] != point[:-1]]
        found[point[first]] = grid[first]
        return found

    def locate(self, lon: ArrayLike, lat: ArrayLike, max_distance_m: float = DEFAULT_MAX_DISTANCE_M) -> pa.Table:
        """grid_code, method (`polygon` | `nearest` | null) and distance_m (to the grid's centroid) per point."""
        x, y = _floats(lon), _floats(lat)
        if len(x) != len(y):
            raise ValueError(f"lon ({len(x)}) and lat ({len(y)}) differ in length")
        valid = np.isfinite(x) & np.isfinite(y) & (np.abs(y) <= 90)
        grid = np.full(len(x), -1, dtype=np.int64)
        method = np.full(len(x), "", dtype=object)
        rows = np.flatnonzero(valid)
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            grid[chunk] = self._in_polygon(x[chunk], y[chunk])
        method[grid >= 0] = "polygon"
        rest = np.flatnonzero(valid & (grid < 0))
        if len(rest):
            _, nearest = self._tree.query(_unit_vectors(x[rest], y[rest]), k=1)
            distance = haversine_m(x[rest], y[rest], self.center_lon[nearest], self.center_lat[nearest])
            close = distance <= max_distance_m
            grid[rest[close]] = nearest[close]
            method[rest[close]] = "nearest"
        located = grid >= 0
        distance_m = np.full(len(x), np.nan)
        hit = np.flatnonzero(located)
        distance_m[hit] = haversine_m(x[hit], y[hit], self.center_lon[grid[hit]], self.center_lat[grid[hit]])
        kind = np.where(method == "polygon", 0, 1)
        return pa.table(
            [
                pa.array(self.grid_codes.tolist(), pa.string()).take(pa.array(grid, mask=~located)),
                pa.array(["polygon", "nearest"], pa.string()).take(pa.array(kind, mask=~located)),
                pa.array(distance_m, pa.float64(), mask=~located),
            ],
            schema=RESULT_SCHEMA,
        )


def locate(
    lon: ArrayLike,
    lat: ArrayLike,
    registry: pa.Table | pl.DataFrame | GridIndex,
    max_distance_m: float = DEFAULT_MAX_DISTANCE_M,
) -> pa.Table:
    """Locate points in the grid registry: see the module docstring. Pass a `GridIndex` to reuse one."""
    index = registry if isinstance(registry, GridIndex) else GridIndex(registry)
    return index.locate(lon, lat, max_distance_m)
