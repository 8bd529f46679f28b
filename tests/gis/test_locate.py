"""Locating points: hand-built layers where the answer is known by construction."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from gis.errors import InvalidInput
from gis.locate import Locator, check_lon_lat


def square_grid(nx=4, ny=3, x0=111.55, y0=24.38, size=0.01) -> dict:
    """``nx × ny`` unit squares sharing edges; codes numbered west→east, north→south."""
    geoms, codes = [], []
    seq = 0
    for row in range(ny):  # north first
        for col in range(nx):
            seq += 1
            left, top = x0 + col * size, y0 + (ny - row) * size
            geoms.append(shapely.box(left, top - size, left + size, top))
            codes.append(f"451102003001{seq:03d}")
    grid = gpd.GeoDataFrame({"code": codes, "name": [f"第{i}网格" for i in range(1, seq + 1)],
                             "parent_code": "451102003001"}, geometry=geoms, crs="EPSG:4326")
    community = gpd.GeoDataFrame(
        {"code": ["451102003001"], "name": ["厦良社区"], "parent_code": ["451102003"]},
        geometry=[shapely.box(x0, y0, x0 + nx * size, y0 + ny * size)], crs="EPSG:4326")
    street = gpd.GeoDataFrame({"code": ["451102003"], "name": ["江南街道"],
                               "parent_code": ["451102"]},
                              geometry=community.geometry.values, crs="EPSG:4326")
    compound = gpd.GeoDataFrame(
        {"code": ["451102003001C01"], "name": ["香槟城小区"], "parent_code": ["451102003001"]},
        geometry=[shapely.box(x0 + 0.005, y0 + 0.005, x0 + 0.015, y0 + 0.015)],
        crs="EPSG:4326")
    return {"street": street, "community": community, "grid": grid, "compound": compound}


LAYERS = square_grid()
LOC = Locator(LAYERS)


def test_point_inside_gets_the_whole_chain():
    chain = LOC.locate(111.555, 24.385)  # bottom-left square = row 3, col 1 → seq 9
    assert chain["grid"] == {"code": "451102003001009", "name": "第9网格"}
    assert chain["community"] == {"code": "451102003001", "name": "厦良社区"}
    assert chain["street"] == {"code": "451102003", "name": "江南街道"}
    assert chain["compound"] == {"code": "451102003001C01", "name": "香槟城小区"}


def test_point_outside_a_compound_has_none():
    assert LOC.locate(111.585, 24.405)["compound"] is None


def test_point_outside_the_street_is_none_not_an_error():
    assert LOC.locate(111.0, 24.0) is None
    df = LOC.locate_many([111.0, 111.555], [24.0, 24.385])
    assert df["grid_code"].tolist() == [None, "451102003001009"]
    assert df["street_code"].tolist() == [None, "451102003"]


def test_point_on_a_shared_edge_goes_to_the_smallest_code():
    # The vertical edge between seq 1 and seq 2 (top row) at x = 111.56.
    assert LOC.locate(111.56, 24.405)["grid"]["code"] == "451102003001001"
    # The horizontal edge between seq 2 (top row) and seq 6 (second row) at y = 24.40.
    assert LOC.locate(111.565, 24.40)["grid"]["code"] == "451102003001002"
    # A vertex shared by four grids (1, 2, 5, 6).
    assert LOC.locate(111.56, 24.40)["grid"]["code"] == "451102003001001"


def test_the_outer_boundary_belongs_to_the_grid():
    assert LOC.locate(111.55, 24.385)["grid"]["code"] == "451102003001009"
    assert LOC.locate(111.59, 24.41)["grid"]["code"] == "451102003001004"


def test_locate_many_edge_rule_matches_locate_on_every_shared_edge_and_vertex():
    xs = 111.55 + 0.01 * np.arange(5)
    ys = 24.38 + 0.01 * np.arange(4)
    gx, gy = np.meshgrid(xs, ys)
    mx, my = np.meshgrid(xs[:-1] + 0.005, ys)  # midpoints of horizontal edges
    x = np.concatenate([gx.ravel(), mx.ravel()])
    y = np.concatenate([gy.ravel(), my.ravel()])
    df = LOC.locate_many(x, y)
    one = [(LOC.locate(a, b) or {"grid": {"code": None}})["grid"]["code"]
           for a, b in zip(x, y, strict=True)]
    assert df["grid_code"].tolist() == one
    assert None not in one


def _truth(x, y, grid) -> list:
    """Per-point shapely check: the smallest code whose closed polygon holds the point."""
    out = []
    for a, b in zip(x, y, strict=True):
        hits = sorted(c for c, g in zip(grid["code"], grid.geometry, strict=True)
                      if g.intersects(shapely.Point(a, b)))
        out.append(hits[0] if hits else None)
    return out


def voronoi_layer(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    box = shapely.box(111.55, 24.38, 111.60, 24.42)
    pts = shapely.multipoints(np.column_stack([rng.uniform(111.55, 111.60, n),
                                               rng.uniform(24.38, 24.42, n)]))
    cells = shapely.intersection(shapely.get_parts(shapely.voronoi_polygons(pts, extend_to=box)),
                                 box)
    codes = [f"451102003001{i:03d}" for i in range(len(cells))]
    grid = gpd.GeoDataFrame({"code": codes, "name": codes, "parent_code": "451102003001"},
                            geometry=cells, crs="EPSG:4326")
    return {"grid": grid}


VOR = voronoi_layer(60, seed=7)
VLOC = Locator(VOR)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(111.54, 111.61), st.floats(24.37, 24.43)), min_size=1,
                max_size=40))
def test_locate_many_agrees_with_a_per_point_shapely_check(points):
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    assert VLOC.locate_many(x, y)["grid_code"].tolist() == _truth(x, y, VOR["grid"])


def test_large_batches_use_the_cell_index_and_agree_with_the_exact_path():
    rng = np.random.default_rng(3)
    n = 30_000  # above the cell-index threshold
    x = rng.uniform(111.54, 111.61, n)
    y = rng.uniform(24.37, 24.43, n)
    # Add points exactly on Voronoi vertices (shared by 3 cells) and on the box edge.
    verts = shapely.get_coordinates(VOR["grid"].geometry.values)
    x = np.concatenate([x, verts[:, 0], [111.55, 111.60]])
    y = np.concatenate([y, verts[:, 1], [24.40, 24.42]])
    fast = VLOC.locate_many(x, y)["grid_code"].to_numpy()
    assert VLOC._grid._cells is not None
    exact = VLOC._grid._exact_many(x, y)
    expected = np.where(exact >= 0, VLOC._grid.codes[exact], None)
    assert (fast == expected).all()
    sample = rng.choice(len(x), 300, replace=False)
    assert fast[sample].tolist() == _truth(x[sample], y[sample], VOR["grid"])


def test_single_points_switch_to_the_lattice_and_give_the_same_answers():
    """A server locating report after report builds the lattice and answers single
    points from it: the same grid as the tree path for random points, Voronoi vertices
    (shared by three cells), the box edge and points outside."""
    loc = Locator(voronoi_layer(60, seed=11))
    rng = np.random.default_rng(5)
    verts = shapely.get_coordinates(loc.layers["grid"].geometry.values)
    x = np.concatenate([rng.uniform(111.54, 111.61, 2000), verts[:, 0], [111.55, 111.60]])
    y = np.concatenate([rng.uniform(24.37, 24.43, 2000), verts[:, 1], [24.40, 24.42]])
    idx = loc._grid
    before = [idx.lookup_one(a, b) for a, b in zip(x[:idx.CELL_INDEX_AFTER_SINGLE - 1],
                                                  y[:idx.CELL_INDEX_AFTER_SINGLE - 1],
                                                  strict=True)]
    assert idx._cells is None  # a few look-ups (a CLI call) do not build it
    after = [idx.lookup_one(a, b) for a, b in zip(x, y, strict=True)]
    assert idx._cells is not None
    exact = idx._exact_many(x, y)
    assert after == exact.tolist()
    assert before == exact[:len(before)].tolist()
    assert (exact >= 0).sum() > 1000 and (exact < 0).sum() > 500  # inside and outside


_THREADS_SCRIPT = """
import sys, threading
import numpy as np
from gis.layers import read_layer_set
from gis.locate import Locator
from gis.settings import setting_default

layers = read_layer_set(str(setting_default("SHAPES")))
x0, y0, x1, y1 = layers["grid"].total_bounds
rng = np.random.default_rng(1)
for _ in range(25):
    loc = Locator(layers)  # fresh prepared polygons, no lattice yet
    pts = list(zip(rng.uniform(x0, x1, 2400).tolist(), rng.uniform(y0, y1, 2400).tolist()))
    start = threading.Barrier(8)

    def work(k):
        start.wait()
        for p in pts[k::8]:
            loc.locate(*p)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
print("ok")
"""


def test_threads_locating_at_once_on_a_fresh_locator_do_not_crash_the_process():
    """A server's threads locate their first reports at the same moment: GEOS builds a
    prepared polygon's indexes lazily and unguarded, and shapely lets go of the GIL, so
    two threads building one together crashed the worker (SIGSEGV, seen under
    bench/intake.py). Run in a child process, so a crash is a failed assertion here."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize("lon, lat, field", [
    (None, 1, "lon"), (1, None, "lat"), ("x", 1, "lon"), (float("nan"), 1, "lon"),
    (1, float("inf"), "lat"), (200, 1, "lon"), (1, -91, "lat"), (True, 1, "lon"),
])
def test_check_lon_lat_names_the_bad_field(lon, lat, field):
    with pytest.raises(InvalidInput) as e:
        check_lon_lat(lon, lat)
    assert e.value.field == field
