"""Point-in-boundary lookup: which street, community, compound and grid a point is in.

Boundary layers are small (hundreds to tens of thousands of polygons), so they are
loaded once into an STRtree per layer; a point is located in microseconds and a
million points in well under a second per hundred thousand.

Edge rule
---------
A point that lies exactly on an edge shared by two grids (or on a vertex shared by
several) intersects all of them. It is assigned to exactly one: **the grid with the
smallest code** among those whose closed polygon contains the point. Grid codes number
grids west→east, north→south, so a point on a shared edge goes to the grid to the west
or the north. The same rule applies to compounds. A point outside every grid is
reported as outside (``grid_code`` None), never raised.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely

from gis.errors import InvalidInput

LEVEL_ORDER = ("street", "community", "compound", "grid")


@dataclass(frozen=True)
class Place:
    """One level of a located chain."""

    level: str
    code: str
    name: str

    def to_dict(self) -> dict:
        return {"code": self.code, "name": self.name}


class _CellIndex:
    """A uniform lattice over a layer's extent for locating large batches.

    Each cell that lies wholly in the interior of one polygon records that polygon, so
    most points are assigned by array indexing. Each other cell keeps the list of
    polygons whose bounding box meets it, so a point there is tested exactly against
    those few only, with no point geometries built and no tree walked. A cell is marked
    only if the polygon *properly* contains it (grown by a hair), so the shortcut never
    changes an answer, the edge rule included.
    """

    def __init__(self, geoms: np.ndarray, rank: np.ndarray, tree: shapely.STRtree,
                 geos_lock: threading.Lock, cells_per_feature: int = 48,
                 max_cells: int = 1 << 20):
        self.geoms, self.rank = geoms, rank
        self._geos = geos_lock  # held around every test on the shared prepared polygons
        x0, y0, x1, y1 = shapely.total_bounds(geoms)
        w, h = max(x1 - x0, 1e-9), max(y1 - y0, 1e-9)
        target = int(min(max_cells, max(256, cells_per_feature * len(geoms))))
        nx = max(1, int(round(np.sqrt(target * w / h))))
        ny = max(1, target // nx)
        self.x0, self.y0, self.x1, self.y1, self.nx, self.ny = x0, y0, x1, y1, nx, ny
        self.dx, self.dy = w / nx, h / ny
        ix, iy = np.meshgrid(np.arange(nx), np.arange(ny))
        ix, iy = ix.ravel(), iy.ravel()
        eps = 1e-9
        boxes = shapely.box(x0 + ix * self.dx - eps, y0 + iy * self.dy - eps,
                            x0 + (ix + 1) * self.dx + eps, y0 + (iy + 1) * self.dy + eps)
        c_idx, g_idx = tree.query(boxes)
        inside = shapely.contains_properly(geoms[g_idx], boxes[c_idx])
        self.owner = np.full(nx * ny, -1, dtype=np.int64)
        self.owner[c_idx[inside]] = g_idx[inside]
        # Candidate lists (CSR) for the mixed cells.
        keep = self.owner[c_idx] < 0
        c_idx, g_idx = c_idx[keep], g_idx[keep]
        # Within a cell, candidates in code order: the first hit is the edge rule's answer.
        order = np.lexsort((rank[g_idx], c_idx))
        self.cand = g_idx[order]
        self.start = np.searchsorted(c_idx[order], np.arange(nx * ny + 1))

    def lookup_one(self, x: float, y: float) -> int:
        """:meth:`lookup` for one point, in plain Python: a point in an interior cell
        (most of them) costs two divisions and an array read, with no geometry built and
        no GEOS call; a point in a mixed cell is tested against that cell's candidates,
        in code order. Same arithmetic as :meth:`lookup`, so the same answers."""
        if not (self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1):
            return -1
        ix = min(int((x - self.x0) / self.dx), self.nx - 1)
        iy = min(int((y - self.y0) / self.dy), self.ny - 1)
        cell = iy * self.nx + ix
        owner = self.owner.item(cell)
        if owner >= 0:
            return owner
        with self._geos:
            for g in self.cand[self.start.item(cell):self.start.item(cell + 1)].tolist():
                if shapely.intersects_xy(self.geoms[g], x, y):
                    return g
        return -1

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the feature holding each point, -1 where none (edge rule applied)."""
        out = np.full(len(x), -1, dtype=np.int64)
        with np.errstate(invalid="ignore"):
            ok = (x >= self.x0) & (x <= self.x1) & (y >= self.y0) & (y <= self.y1)
        pts = np.flatnonzero(ok)
        ix = np.minimum(((x[pts] - self.x0) / self.dx).astype(np.int64), self.nx - 1)
        iy = np.minimum(((y[pts] - self.y0) / self.dy).astype(np.int64), self.ny - 1)
        cell = iy * self.nx + ix
        owner = self.owner[cell]
        out[pts] = owner
        mixed = owner < 0
        pts, cell = pts[mixed], cell[mixed]
        counts = self.start[cell + 1] - self.start[cell]
        has = counts > 0
        pts, cell, counts = pts[has], cell[has], counts[has]
        if len(pts) == 0:
            return out
        # Test the k-th candidate of every still-unassigned point, k = 0, 1, …: one
        # vectorised call per round, and a point leaves as soon as it hits, so each
        # point costs about one or two exact tests instead of one per candidate.
        k = 0
        while len(pts):
            g = self.cand[self.start[cell] + k]
            with self._geos:
                hit = shapely.intersects_xy(self.geoms[g], x[pts], y[pts])
            out[pts[hit]] = g[hit]
            k += 1
            more = ~hit & (counts > k)
            pts, cell, counts = pts[more], cell[more], counts[more]
        return out


class _LayerIndex:
    """An STRtree over one layer plus its codes, ranked so ties resolve to the smallest."""

    def __init__(self, gdf):
        # Its own copies (a WKB round trip is exact): prepared here, they are used by the
        # locator only, never by other code holding the layer's frame (see below).
        geoms = shapely.from_wkb(shapely.to_wkb(np.asarray(gdf.geometry.values,
                                                           dtype=object)))
        self.codes = gdf["code"].astype(str).to_numpy()
        self.names = gdf["name"].astype(str).to_numpy()
        self.parents = gdf["parent_code"].astype(object).to_numpy()
        self.geoms = geoms
        shapely.prepare(geoms)
        self.tree = shapely.STRtree(geoms)
        # rank[i] is the position of feature i in code order: the tie-break key.
        self.rank = np.argsort(np.argsort(self.codes, kind="stable"), kind="stable")
        self._cells: _CellIndex | None = None
        # GEOS builds parts of a prepared polygon's state lazily, on first need by
        # whichever call needs it and unguarded (point-in-area locators, the indexes of
        # other predicates, per part of a multipolygon), and shapely lets go of the GIL
        # during a call: two threads testing the same prepared polygons at once crashed
        # a worker now and then (SIGSEGV; "free(): invalid pointer" even with the point
        # indexes built up front). Every test on these polygons, and the lattice's build,
        # holds this lock; the common single point in an interior lattice cell makes no
        # GEOS call and takes no lock.
        self._geos_lock = threading.Lock()
        self._single = 0  # single-point look-ups answered without the lattice

    # Batches at least this large use (and build, once) the cell index.
    CELL_INDEX_MIN_POINTS = 20_000

    def cell_index(self) -> _CellIndex:
        """The lattice shortcut, built on first use (it costs about as much as locating
        a few hundred thousand points, so small batches and a few single points skip it).
        Built by one thread only, under the GEOS lock: building tests the prepared
        polygons' containment (see ``__init__``)."""
        if self._cells is None:
            with self._geos_lock:
                if self._cells is None:
                    self._cells = _CellIndex(self.geoms, self.rank, self.tree,
                                             self._geos_lock)
        return self._cells

    def lookup_many(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Index of the feature holding each point (closed polygons), -1 where none."""
        if len(x) >= self.CELL_INDEX_MIN_POINTS and len(self.geoms):
            return self.cell_index().lookup(x, y)
        return self._exact_many(x, y)

    def _exact_many(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.full(len(x), -1, dtype=np.int64)
        if len(x) == 0 or len(self.geoms) == 0:
            return out
        points = shapely.points(x, y)
        # Bounding-box candidates from the tree, then one vectorised exact test on
        # prepared polygons: cheaper than a per-pair predicate inside the tree query.
        p_idx, g_idx = self.tree.query(points)
        if len(p_idx) == 0:
            return out
        with self._geos_lock:
            hit = shapely.intersects_xy(self.geoms[g_idx], x[p_idx], y[p_idx])
        p_idx, g_idx = p_idx[hit], g_idx[hit]
        # Sort by point, then by code rank, and keep the first per point (edge rule).
        order = np.lexsort((self.rank[g_idx], p_idx))
        p_sorted, g_sorted = p_idx[order], g_idx[order]
        first = np.ones(len(p_sorted), dtype=bool)
        first[1:] = p_sorted[1:] != p_sorted[:-1]
        out[p_sorted[first]] = g_sorted[first]
        return out

    # After this many single-point look-ups (a server locating its reports), build the
    # lattice and answer single points from it too.
    CELL_INDEX_AFTER_SINGLE = 64

    def lookup_one(self, x: float, y: float) -> int:
        """Index of the feature holding one point, -1 where none."""
        cells = self._cells
        if cells is None:
            self._single += 1
            if self._single >= self.CELL_INDEX_AFTER_SINGLE and len(self.geoms):
                cells = self.cell_index()
        if cells is not None:
            return cells.lookup_one(x, y)
        cand = self.tree.query(shapely.Point(x, y))
        best = -1
        with self._geos_lock:
            for i in cand:
                if shapely.intersects_xy(self.geoms[i], x, y) and (
                    best < 0 or self.rank[i] < self.rank[best]
                ):
                    best = i
        return best


def check_lon_lat(lon: object, lat: object) -> tuple[float, float]:
    """Parse and range-check a coordinate pair; raise ``InvalidInput`` naming the field."""
    vals = []
    for field, value, limit in (("lon", lon, 180.0), ("lat", lat, 90.0)):
        if value is None or value == "":
            raise InvalidInput(f"{field} is required", field=field)
        if isinstance(value, bool):
            raise InvalidInput(f"{field} must be a number, not a boolean", field=field)
        try:
            v = float(value)
        except (TypeError, ValueError, OverflowError):
            raise InvalidInput(f"{field} must be a number, got {value!r}", field=field) from None
        if not math.isfinite(v):
            raise InvalidInput(f"{field} must be a finite number, got {value!r}", field=field)
        if not -limit <= v <= limit:
            raise InvalidInput(f"{field} must be between -{limit:g} and {limit:g}, got {v:g}",
                               field=field)
        vals.append(v)
    return vals[0], vals[1]


class Locator:
    """Locate points in the active boundary layers.

    Parameters
    ----------
    layers : dict of str to GeoDataFrame
        At least ``grid``; ``community``, ``street`` and ``compound`` give names and the
        compound lookup. Each frame has ``code``, ``name``, ``parent_code``, ``geometry``
        in EPSG:4326.
    """

    def __init__(self, layers: dict):
        self.layers = layers
        self._grid = _LayerIndex(layers["grid"])
        comp = layers.get("compound")
        self._compound = _LayerIndex(comp) if comp is not None and len(comp) else None
        self._names = {}
        for level in LEVEL_ORDER:
            gdf = layers.get(level)
            if gdf is not None:
                self._names[level] = dict(zip(gdf["code"].astype(str), gdf["name"].astype(str),
                                              strict=True))
        comm = layers.get("community")
        self._community_parent = (
            dict(zip(comm["code"].astype(str), comm["parent_code"], strict=True))
            if comm is not None else {}
        )
        # Per-grid street code, so locate_many resolves streets by array indexing.
        self._grid_street = np.array(
            [self._community_parent.get(c) for c in self._grid.parents], dtype=object
        )

    def name(self, level: str, code: str | None) -> str | None:
        """The name of feature ``code`` in ``level`` (None if unknown)."""
        return self._names.get(level, {}).get(code) if code else None

    def _chain(self, gi: int, ci: int) -> dict | None:
        if gi < 0:
            return None
        grid_code = self._grid.codes[gi]
        community = self._grid.parents[gi]
        street = self._community_parent.get(community)
        out = {}
        for level, code in (("street", street), ("community", community)):
            out[level] = {"code": code, "name": self.name(level, code)} if code else None
        out["compound"] = (
            {"code": self._compound.codes[ci], "name": self._compound.names[ci]}
            if ci >= 0 else None
        )
        out["grid"] = {"code": grid_code, "name": self._grid.names[gi]}
        return out

    def locate(self, lon: float, lat: float) -> dict | None:
        """The chain street → community → compound (or None) → grid holding a point.

        Returns ``{"street": {"code", "name"}, "community": …, "compound": … or None,
        "grid": …}``, or None when the point is outside every grid (outside the street).
        """
        gi = self._grid.lookup_one(lon, lat)
        if gi < 0:
            return None
        ci = self._compound.lookup_one(lon, lat) if self._compound is not None else -1
        return self._chain(gi, ci)

    def locate_many(self, lons, lats) -> pd.DataFrame:
        """Vectorised :meth:`locate` for arrays of coordinates.

        Returns a DataFrame with one row per input point and columns ``street_code``,
        ``community_code``, ``compound_code`` and ``grid_code`` (None where outside).
        """
        x = np.asarray(lons, dtype=float)
        y = np.asarray(lats, dtype=float)
        if x.shape != y.shape or x.ndim != 1:
            raise InvalidInput("lons and lats must be 1-d arrays of the same length")
        gi = self._grid.lookup_many(x, y)
        inside = gi >= 0
        grid = np.full(len(x), None, dtype=object)
        grid[inside] = self._grid.codes[gi[inside]]
        community = np.full(len(x), None, dtype=object)
        community[inside] = self._grid.parents[gi[inside]]
        street = np.full(len(x), None, dtype=object)
        street[inside] = self._grid_street[gi[inside]]
        compound = np.full(len(x), None, dtype=object)
        if self._compound is not None:
            ci = self._compound.lookup_many(x, y)
            has = ci >= 0
            compound[has] = self._compound.codes[ci[has]]
        # Explicit object dtype: pandas 3 would infer a string dtype and turn None into NaN.
        return pd.DataFrame(
            {"street_code": pd.Series(street, dtype=object),
             "community_code": pd.Series(community, dtype=object),
             "compound_code": pd.Series(compound, dtype=object),
             "grid_code": pd.Series(grid, dtype=object)}
        )
