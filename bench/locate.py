"""Benchmark: locating points in grids.

Generates a layer of 10,000 grid polygons (a Voronoi tessellation: irregular, shared
edges, like real grids) and 1,000,000 random points, then times in the same run:

- ``Locator.locate_many`` (STRtree bounding-box candidates + one vectorised
  ``intersects_xy`` on prepared polygons + the smallest-code edge rule);
- ``geopandas.sjoin(points, grids, predicate="within")``, the obvious alternative, both
  including and excluding building the points GeoDataFrame;
- single-point ``Locator.locate`` (median and p99 over 20,000 calls).

It checks the assignments agree wherever sjoin finds exactly one grid (sjoin drops points
on shared edges, which ``locate_many`` assigns). Run: ``python bench/locate.py [--grids N]
[--points N]``.
"""

from __future__ import annotations

import argparse
import time

import geopandas as gpd
import numpy as np
import shapely

from gis.locate import Locator


def make_grids(n: int, seed: int = 1) -> gpd.GeoDataFrame:
    rng = np.random.default_rng(seed)
    box = shapely.box(111.0, 24.0, 112.0, 25.0)
    seeds = shapely.multipoints(np.column_stack([rng.uniform(111, 112, n),
                                                 rng.uniform(24, 25, n)]))
    cells = shapely.get_parts(shapely.voronoi_polygons(seeds, extend_to=box))
    cells = shapely.intersection(cells, box)
    cells = cells[~shapely.is_empty(cells)]
    codes = [f"451102003001{i:06d}" for i in range(len(cells))]
    return gpd.GeoDataFrame({"code": codes, "name": codes, "parent_code": "451102003001",
                             "households": 100}, geometry=cells, crs="EPSG:4326")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=1_000_000)
    args = ap.parse_args()

    grids = make_grids(args.grids)
    rng = np.random.default_rng(2)
    x = rng.uniform(111.0, 112.0, args.points)
    y = rng.uniform(24.0, 25.0, args.points)
    print(f"{len(grids):,} grid polygons, {args.points:,} points")

    t0 = time.perf_counter()
    loc = Locator({"grid": grids})
    print(f"build locator: {time.perf_counter() - t0:.3f} s")

    t0 = time.perf_counter()
    loc._grid.cell_index()  # built once per layer version, on the first large batch
    t_cells = time.perf_counter() - t0
    print(f"build cell index (once per layer version): {t_cells:.3f} s")

    t0 = time.perf_counter()
    ours = loc.locate_many(x, y)["grid_code"].to_numpy()
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(x, y), crs="EPSG:4326")
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    joined = gpd.sjoin(pts, grids[["code", "geometry"]], predicate="within", how="left")
    t_sjoin = time.perf_counter() - t0

    # Agreement where sjoin found exactly one grid.
    counts = joined.index.value_counts()
    single = counts[counts == 1].index
    sj = joined.loc[single, "code"].to_numpy()
    mask = ~joined.loc[single, "code"].isna().to_numpy()
    agree = np.mean(ours[single.to_numpy()][mask] == sj[mask])
    n_multi = int((counts > 1).sum())

    print(f"locate_many:            {t_ours:7.3f} s  {args.points / t_ours:12,.0f} points/s")
    print(f"sjoin (within):         {t_sjoin:7.3f} s  {args.points / t_sjoin:12,.0f} points/s"
          f"  (+{t_build:.3f} s to build the points frame)")
    print(f"ratio sjoin / locate_many: {t_sjoin / t_ours:.2f}x "
          f"(including point build: {(t_sjoin + t_build) / t_ours:.2f}x; counting the "
          f"one-off cell index too: {(t_sjoin + t_build) / (t_ours + t_cells):.2f}x); "
          "target >= 2x")
    print(f"agreement where sjoin has one match: {agree:.6%} "
          f"({n_multi} points matched several grids in sjoin)")

    n = 20_000
    times = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        loc.locate(x[i], y[i])
        times[i] = time.perf_counter_ns() - t0
    print(f"single locate: median {np.median(times) / 1000:.1f} µs, p99 "
          f"{np.percentile(times, 99) / 1000:.1f} µs; target median < 50 µs")


if __name__ == "__main__":
    main()
