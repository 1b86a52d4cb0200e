"""The demo district's streets, communities and grids, laid out over the real bounding box of 南海区.

Grids are squares on a lattice spanning lon 113.00-113.20 and lat 22.90-23.20; each community's grids
are neighbours and each street's communities are neighbours, so maps look like a district and every
point generated "in a grid" lies inside that grid's polygon. The number of communities and grids
grows with the scale (a grid holds roughly 1,200 residents, as real 网格 do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from demo_data import vocab
from demo_data.common import rng

LON_MIN, LON_MAX = 113.00, 113.20
LAT_MIN, LAT_MAX = 22.90, 23.20


@dataclass
class Geography:
    street_code: np.ndarray  # per street
    street_name: np.ndarray
    community_code: np.ndarray  # per community (12 digits)
    community_name: np.ndarray
    community_street: np.ndarray  # street index of each community
    grid_code: np.ndarray  # per grid (15 digits)
    grid_name: np.ndarray
    grid_community: np.ndarray  # community index of each grid
    grid_lon: np.ndarray
    grid_lat: np.ndarray
    half_side: float  # half the side of a grid square, degrees
    grid_worker: np.ndarray

    @property
    def n_grids(self) -> int:
        return len(self.grid_code)

    @property
    def n_communities(self) -> int:
        return len(self.community_code)

    def random_grid_in(self, communities: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        """A random grid of each given community."""
        order = np.argsort(self.grid_community, kind="stable")
        counts = np.bincount(self.grid_community, minlength=self.n_communities)
        starts = np.r_[0, np.cumsum(counts)[:-1]]
        offset = (generator.random(len(communities)) * counts[communities]).astype(np.int64)
        return order[starts[communities] + offset]

    def points_in(self, grids: np.ndarray, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Random points strictly inside the given grids, rounded to 6 decimals (about 0.1 m)."""
        margin = self.half_side * 0.95
        lon = self.grid_lon[grids] + generator.uniform(-margin, margin, len(grids))
        lat = self.grid_lat[grids] + generator.uniform(-margin, margin, len(grids))
        return np.round(lon, 6), np.round(lat, 6)

    def polygon_wkt(self, grid: int) -> str:
        lon, lat, h = self.grid_lon[grid], self.grid_lat[grid], self.half_side
        corners = [(lon - h, lat - h), (lon + h, lat - h), (lon + h, lat + h), (lon - h, lat + h), (lon - h, lat - h)]
        return "POLYGON((" + ", ".join(f"{x:.6f} {y:.6f}" for x, y in corners) + "))"

    def street_of_grid(self) -> np.ndarray:
        return self.community_street[self.grid_community]


def build_geography(seed: int, residents: int, scale: float) -> Geography:
    """Streets are fixed; communities and grids scale with the population."""
    r = rng(seed, "geography")
    n_streets = len(vocab.STREETS)
    per_street = int(np.clip(round(3 * math.sqrt(scale)), 2, 42))
    street_code = np.array([s[0] for s in vocab.STREETS])
    street_name = np.array([s[1] for s in vocab.STREETS])

    community_street = np.repeat(np.arange(n_streets), per_street)
    seq_in_street = np.tile(np.arange(per_street), n_streets)
    # Towns (镇) have villages (村, codes 2xx) as well as communities (社区, codes 0xx).
    is_town = np.char.startswith(street_code[community_street].astype(str), "4406051")
    is_village = is_town & (seq_in_street % 3 == 2)
    local_no = np.where(is_village, 201 + seq_in_street, 1 + seq_in_street)
    community_code = np.array([f"{street_code[s]}{n:03d}" for s, n in zip(community_street, local_no, strict=True)])
    stems = list(vocab.COMMUNITY_STEMS)
    names = []
    used: set[str] = set()
    for i, village in enumerate(is_village):
        stem = stems[i % len(stems)]
        suffix = "村" if village else "社区"
        name = stem + suffix
        k = 2
        while name in used:
            name = f"{stem}{'东西南北中新'[k % 6]}{suffix}"
            k += 1
        used.add(name)
        names.append(name)
    community_name = np.array(names)
    n_comm = len(community_code)

    per_community = int(np.clip(round(residents / n_comm / 1200), 2, 20))
    grid_community = np.repeat(np.arange(n_comm), per_community)
    grid_seq = np.tile(np.arange(1, per_community + 1), n_comm)
    grid_code = np.array([f"{community_code[c]}{s:03d}" for c, s in zip(grid_community, grid_seq, strict=True)])
    grid_name = np.array([f"{community_name[c]}第{s}网格" for c, s in zip(grid_community, grid_seq, strict=True)])
    n_grids = len(grid_code)

    # Lattice: columns west to east, rows south to north, filled in a snake so neighbours stay together.
    aspect = (LON_MAX - LON_MIN) / (LAT_MAX - LAT_MIN)
    cols = max(1, math.ceil(math.sqrt(n_grids * aspect)))
    rows = math.ceil(n_grids / cols)
    side = min((LON_MAX - LON_MIN) / cols, (LAT_MAX - LAT_MIN) / rows)
    idx = np.arange(n_grids)
    row = idx // cols
    col = np.where(row % 2 == 0, idx % cols, cols - 1 - idx % cols)
    grid_lon = np.round(LON_MIN + (col + 0.5) * side, 6)
    grid_lat = np.round(LAT_MIN + (row + 0.5) * side, 6)
    worker = np.array([f"WGY{n:06d}" for n in r.permutation(n_grids) + 100])
    return Geography(
        street_code=street_code,
        street_name=street_name,
        community_code=community_code,
        community_name=community_name,
        community_street=community_street,
        grid_code=grid_code,
        grid_name=grid_name,
        grid_community=grid_community,
        grid_lon=grid_lon,
        grid_lat=grid_lat,
        half_side=side / 2,
        grid_worker=worker,
    )
