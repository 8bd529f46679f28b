"""Benchmark: planners' analytics (gis/analysis.py) at city scale.

Measures in one run, each against the obvious alternative:

1. Density clusters of 300,000 cases (40 × 40 km around Hezhou, 60 % scattered thinly
   enough to stay noise, 40 % around 2,000 hot places), radius 50 m, minimum 5 (target
   under 5 s):
   ``gis.analysis.clusters`` end to end; its DBSCAN step (local equidistant projection,
   pairs within the radius from ``scipy.spatial.cKDTree``) against
   ``sklearn.cluster.DBSCAN`` on the same projected points with a k-d tree (the labels
   must be identical), against scikit-learn's haversine distances with a ball tree (time
   and agreement), and against the naive ``algorithm="brute"`` (all pairwise haversine
   distances) on a subsample, with its time scaled by n² to all points (an estimate,
   said so).
2. Getis–Ord Gi* over 10,000 grids (a Voronoi layer with shared vertices) with 999
   permutations (target under 3 s): ``gis.analysis.hotspots`` end to end and its parts
   (Queen weights as a sparse ``libpysal.graph.Graph``, ``esda.G_Local`` with
   ``n_jobs=1``); against the obvious path from the esda and libpysal docs
   (``weights.Queen.from_dataframe`` and ``G_Local`` with its default ``n_jobs=-1``, a
   process pool: without numba installed, as here, that is what a user gets) and against
   the analytical z-scores alone (``permutations=0``: what inference costs).
3. Every coverage indicator for 1,000,000 stored cases grouped by grid for one month
   (target under 1 s): ``gis.coverage.grid_metrics`` (one ``GROUP BY`` in SQLite) against
   loading every row into pandas (``gis.analysis.load_cases_frame``) and computing the
   same indicators there (``metric_flags`` + ``groupby``); the two answers are compared.
   The cases are bulk-inserted with SQLAlchemy Core ``executemany`` straight into
   ``cases`` (no history events; nothing here reads them). The H3 bins of the loaded
   cases are timed too. Two variants of ``grid_metrics``'s SQL are timed as well, as
   evidence for gis/coverage.py (not changed here): forcing a table scan instead of the
   walk along ``ix_cases_grid_status`` SQLite picks for the ``GROUP BY``, and also leaving
   out, in the ``WHERE``, rows that cannot count (neither open at the end, nor reported,
   resolved or closed in the period).

Timings depend on what else the machine runs: the load average is printed first and last.

Run: ``python bench/analytics.py [--quick] [--cases N] [--grids N] [--stored N]
[--db PATH]`` (``--db`` keeps the generated store and reuses it on the next run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from datetime import datetime
from pathlib import Path

import esda
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import sqlalchemy as sa
from libpysal.graph import Graph
from libpysal.weights import Queen
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score

from gis.analysis import (
    EARTH_RADIUS_M,
    HEX_METRICS,
    _dbscan,
    _LocalMetric,
    clusters,
    hex_bins,
    hotspots,
    load_cases_frame,
    metric_flags,
    metrics_from_counts,
)
from gis.cases import OPEN_STATUSES, STATUSES
from gis.coverage import grid_metrics, metrics_query, parse_period
from gis.storage import cases as cases_table
from gis.storage import open_store

LON0, LAT0 = 111.566, 24.403
M_PER_DEG_LAT = 110_790.0
M_PER_DEG_LON = 111_320.0 * np.cos(np.radians(LAT0))


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def case_points(n: int, rng, half_m: float = 20_000.0, places: int = 2_000,
                background: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """``background`` of the cases uniform over a square of side 2·half_m (40 × 40 km:
    about 0.9 other cases within 50 m of each, so the background stays noise at
    min 5), the rest around ``places`` hot places (σ 40 m, about 60 cases each)."""
    nb = int(n * background)
    x = rng.uniform(-half_m, half_m, nb)
    y = rng.uniform(-half_m, half_m, nb)
    cx, cy = rng.uniform(-half_m, half_m, places), rng.uniform(-half_m, half_m, places)
    k = rng.integers(0, places, n - nb)
    x = np.r_[x, cx[k] + rng.normal(0, 40, n - nb)]
    y = np.r_[y, cy[k] + rng.normal(0, 40, n - nb)]
    return LON0 + x / M_PER_DEG_LON, LAT0 + y / M_PER_DEG_LAT


def bench_clusters(n: int, n_brute: int, rng) -> None:
    print(f"\n== 1. density clusters: {n:,} cases, radius 50 m, min 5 ==")
    lon, lat = case_points(n, rng)
    df = pd.DataFrame({
        "id": np.arange(1, n + 1), "lon": lon, "lat": lat,
        "category": rng.choice(["roof_leak", "drainage", "street_light", "road"], n),
        "compound_code": rng.choice(np.array(["C01", "C02", "C03", None], dtype=object), n),
        "created_at": pd.Timestamp("2026-01-01")
        + pd.to_timedelta(rng.integers(0, 300 * 86400, n), unit="s"),
    })
    out, t_all = timed(clusters, df, radius_m=50, min_cases=5)
    print(f"clusters() end to end:              {t_all:7.2f} s  ({len(out):,} clusters, "
          f"{int(out['count'].sum()):,} cases in them); target < 5 s")

    labels, t_ours = timed(_dbscan, lon, lat, 50.0, 5)
    print(f"its DBSCAN step (projection, cKDTree pairs): {t_ours:6.2f} s")

    xy = _LocalMetric(lon, lat).xy(lon, lat)
    sk = DBSCAN(eps=50, min_samples=5, algorithm="kd_tree")
    lab_k, t_k = timed(lambda: sk.fit(xy).labels_)
    same = bool((lab_k == labels).all())
    print(f"sklearn DBSCAN, same projection, k-d tree: {t_k:6.2f} s  ({t_k / t_ours:.1f}x ours;"
          f" identical labels: {same})")
    hav = DBSCAN(eps=50 / EARTH_RADIUS_M, min_samples=5, metric="haversine",
                 algorithm="ball_tree")
    rad = np.radians(np.column_stack([lat, lon]))
    lab_h, t_h = timed(lambda: hav.fit(rad).labels_)
    print(f"sklearn DBSCAN, haversine + ball tree:     {t_h:6.2f} s  ({t_h / t_ours:.1f}x ours;"
          f" adjusted Rand {adjusted_rand_score(labels, lab_h):.4f}, {labels.max() + 1:,} vs "
          f"{lab_h.max() + 1:,} clusters: sphere vs ellipsoid at the 50 m edge)")

    sub = np.sort(rng.choice(n, size=min(n_brute, n), replace=False))
    brute = DBSCAN(eps=50 / EARTH_RADIUS_M, min_samples=5, metric="haversine",
                   algorithm="brute")
    _, t_b = timed(lambda: brute.fit(rad[sub]))
    _, t_s = timed(_dbscan, lon[sub], lat[sub], 50.0, 5)
    scale = (n / len(sub)) ** 2
    print(f"on a {len(sub):,}-case subsample: brute-force haversine {t_b:.2f} s, ours "
          f"{t_s:.3f} s ({t_b / t_s:.0f}x)")
    print(f"brute force scaled by n² to {n:,} cases: ~{t_b * scale:,.0f} s (an estimate) vs "
          f"{t_ours:.2f} s measured (~{t_b * scale / t_ours:,.0f}x)")


def voronoi_grids(n: int, seed: int = 1) -> gpd.GeoDataFrame:
    """``n`` grid polygons tiling a box (Voronoi cells: irregular, shared vertices)."""
    rng = np.random.default_rng(seed)
    side = 0.45 * np.sqrt(n / 10_000)
    box = shapely.box(LON0 - side / 2, LAT0 - side / 2, LON0 + side / 2, LAT0 + side / 2)
    pts = shapely.multipoints(np.column_stack([
        rng.uniform(LON0 - side / 2, LON0 + side / 2, n),
        rng.uniform(LAT0 - side / 2, LAT0 + side / 2, n)]))
    cells = shapely.get_parts(shapely.voronoi_polygons(pts, extend_to=box))
    cells = shapely.intersection(cells, box)
    cells = cells[~shapely.is_empty(cells)]
    order = np.lexsort((shapely.get_x(shapely.centroid(cells)),
                        -shapely.get_y(shapely.centroid(cells))))
    codes = [f"451102003{i // 100:03d}{i % 100:03d}" for i in range(len(cells))]
    return gpd.GeoDataFrame({"code": codes, "name": codes,
                             "parent_code": [c[:12] for c in codes], "households": 300},
                            geometry=cells[order], crs="EPSG:4326")


def bench_hotspots(grids: gpd.GeoDataFrame, rng) -> None:
    n = len(grids)
    print(f"\n== 2. Gi* hot spots: {n:,} grids, 999 permutations ==")
    c = shapely.centroid(grids.geometry.values)
    x, y = shapely.get_x(c), shapely.get_y(c)
    # Spatially structured counts: a few hot areas on a low background.
    hot = np.zeros(n)
    for hx, hy in rng.uniform([x.min(), y.min()], [x.max(), y.max()], (6, 2)):
        hot += 8 * np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / (2 * 0.01 ** 2))
    values = rng.poisson(1 + hot).astype(float)

    out, t_all = timed(hotspots, grids, values, permutations=999, seed=0)
    counts = out["cls"].value_counts().to_dict()
    print(f"hotspots() end to end:              {t_all:6.2f} s  {counts}; target < 3 s")
    print(f"  (permutation p-values stop at {out.attrs['min_p']:.3f}: BH can call a grid only "
          f"when {out.attrs['min_discoveries']:,} grids reach that floor; "
          f"{int((out['p'] <= out.attrs['min_p']).sum()):,} did)")
    normal, t_n = timed(hotspots, grids, values, permutations=999, seed=0,
                        inference="normal")
    print(f"hotspots(inference='normal'):       {t_n:6.2f} s  "
          f"{normal['cls'].value_counts().to_dict()}")

    graph, t_graph = timed(Graph.build_contiguity, grids.reset_index(drop=True), rook=False)
    w, t_w = timed(Queen.from_dataframe, grids, use_index=False, silence_warnings=True)
    print(f"  Queen weights as a sparse Graph (ours): {t_graph:6.2f} s; as weights.Queen "
          f"(dicts): {t_w:.2f} s, {t_w / t_graph:.1f}x (islands: {len(w.islands)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, t_g1 = timed(esda.G_Local, values, graph.transform("B"), transform="R", star=True,
                        permutations=999, seed=0, n_jobs=1)
        w.transform = "B"
        _, t_w1 = timed(esda.G_Local, values, w, transform="R", star=True, permutations=999,
                        seed=0, n_jobs=1)
        w.transform = "B"
        _, t_gd = timed(esda.G_Local, values, w, transform="R", star=True, permutations=999,
                        seed=0)
        _, t_g0 = timed(esda.G_Local, values, graph.transform("B"), transform="R", star=True,
                        permutations=0)
    print(f"  esda.G_Local, Graph, n_jobs=1 (ours): {t_g1:6.2f} s")
    print(f"esda.G_Local, W, n_jobs=1:              {t_w1:6.2f} s  ({t_w1 / t_g1:.2f}x ours)")
    print(f"esda.G_Local, W, default n_jobs=-1:     {t_gd:6.2f} s  ({t_gd / t_g1:.2f}x ours; "
          "numba absent: the process pool costs more than it saves)")
    print(f"whole obvious path (weights.Queen + default G_Local): {t_w + t_gd:.2f} s vs "
          f"{t_graph + t_g1:.2f} s: {(t_w + t_gd) / (t_graph + t_g1):.2f}x")
    print(f"esda.G_Local, permutations=0:           {t_g0:6.2f} s  (analytical z only: the 999 "
          f"permutations cost {t_g1 - t_g0:.2f} s)")


def make_store(path: Path, n: int, codes: list[str], rng) -> None:
    """Bulk-insert ``n`` cases over 2026 into a fresh store (executemany, 50,000 a batch)."""
    store = open_store(f"sqlite:///{path}")
    cats = np.array(["roof_leak", "drainage", "street_light", "road", "sanitation"])
    statuses = np.array(STATUSES, dtype=object)
    p = np.array([0.06, 0.03, 0.03, 0.05, 0.05, 0.02, 0.08, 0.12, 0.50, 0.02, 0.04])
    base = np.datetime64("2026-01-01T00:00:00", "us")
    hour = np.int64(3_600_000_000)
    t0 = time.perf_counter()
    batch = 50_000
    for start in range(0, n, batch):
        m = min(batch, n - start)
        lon, lat = case_points(m, rng)
        st = rng.choice(statuses, size=m, p=p / p.sum())
        created = base + (rng.uniform(0, 365 * 24, m) * hour).astype("timedelta64[us]")
        due = created + (rng.uniform(24, 15 * 24, m) * hour).astype("timedelta64[us]")
        res = created + (rng.exponential(5 * 24, m) * hour).astype("timedelta64[us]")
        clo = res + (rng.exponential(48, m) * hour).astype("timedelta64[us]")
        done = np.isin(st, ["resolved", "closed"])
        closed = np.isin(st, ["closed", "rejected", "closed_not_fixed"])
        upd = np.where(closed, clo, np.where(done, res, created))
        grid = rng.integers(0, len(codes), m)
        obj = {k: v.astype(object) for k, v in
               (("c", created), ("d", due), ("r", res), ("cl", clo), ("u", upd))}
        rows = [{
            "category": cats[i % len(cats)], "title": "t", "description": "",
            "lon": float(lon[i]), "lat": float(lat[i]), "street_code": "451102003",
            "community_code": codes[grid[i]][:12], "compound_code": None,
            "grid_code": codes[grid[i]], "status": st[i], "source": "patrol",
            "created_at": obj["c"][i], "updated_at": obj["u"][i],
            "due_at": obj["d"][i] if i % 10 else None,
            "resolved_at": obj["r"][i] if done[i] or st[i] == "closed_not_fixed" else None,
            "closed_at": obj["cl"][i] if closed[i] else None,
            "row_version": 1, "published": False, "rework_count": 0, "extension_count": 0,
        } for i in range(m)]
        with store.engine.begin() as conn:
            conn.execute(sa.insert(cases_table), rows)
        print(f"\r  inserted {start + m:,} / {n:,} cases ({time.perf_counter() - t0:.0f} s)",
              end="", flush=True)
    print()
    store.dispose()


def sql_variants(store, period) -> None:
    """grid_metrics's SQL as is, with a forced table scan, and with a pruning WHERE too."""
    c = cases_table.c
    left_open = sa.func.coalesce(c.resolved_at, c.closed_at, c.updated_at)
    can_count = sa.or_(c.status.in_(OPEN_STATUSES), left_open >= period.start,
                       c.created_at >= period.start, c.closed_at >= period.start)
    base = metrics_query(period)

    def run(q, scan: bool):
        sql = str(q.compile(store.engine, compile_kwargs={"literal_binds": True}))
        if scan:  # SQLite syntax; SQLAlchemy's SQLite compiler renders no table hints
            sql = sql.replace("FROM cases", "FROM cases NOT INDEXED", 1)
        with store.engine.connect() as conn:
            t0 = time.perf_counter()
            rows = conn.exec_driver_sql(sql).fetchall()
            t = time.perf_counter() - t0
        return {r[0]: tuple(r[1:]) for r in rows}, t

    ref, t_ref = run(base, False)
    zero = (0,) * 7
    for label, q, scan in (("table scan", base, True),
                           ("table scan + pruning WHERE", base.where(can_count), True)):
        got, t = run(q, scan)
        same = all(ref.get(k, zero) == got.get(k, zero) for k in set(ref) | set(got))
        print(f"  its SQL as is {t_ref:.2f} s; {label}: {t:.2f} s "
              f"({t_ref / t:.1f}x faster, same counts: {same})")


def bench_indicators(grids: gpd.GeoDataFrame, n: int, db: str | None, rng) -> None:
    print(f"\n== 3. indicators per grid for a month: {n:,} stored cases, "
          f"{len(grids):,} grids ==")
    tmp = None
    if db:
        path = Path(db)
    else:
        tmp = tempfile.TemporaryDirectory()
        path = Path(tmp.name) / "bench.sqlite3"
    store = open_store(f"sqlite:///{path}")
    with store.engine.connect() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(cases_table)).scalar()
    store.dispose()
    if have != n:
        if have:
            raise SystemExit(f"{path} holds {have:,} cases, not {n:,}: use another --db")
        make_store(path, n, grids["code"].tolist(), rng)
    store = open_store(f"sqlite:///{path}")
    period = parse_period("2026-10")

    runs = [timed(grid_metrics, store, grids, period) for _ in range(3)]
    sql_out = runs[0][0]
    t_sql = [t for _, t in runs]
    print(f"grid_metrics (GROUP BY in SQLite): first {t_sql[0]:.2f} s, median "
          f"{statistics.median(t_sql):.2f} s of 3; target < 1 s")

    frame, t_load = timed(load_cases_frame, store)
    t0 = time.perf_counter()
    flags = metric_flags(frame, period)
    counts = flags.groupby(frame["grid_code"]).sum()
    pd_out = metrics_from_counts(counts).reindex(grids["code"])
    t_pd = time.perf_counter() - t0
    print(f"pandas after loading every row:    {t_load + t_pd:.2f} s  (load {len(frame):,} rows "
          f"{t_load:.2f} s, compute {t_pd:.2f} s); ratio pandas / SQL "
          f"{(t_load + t_pd) / statistics.median(t_sql):.1f}x")
    a = sql_out[list(HEX_METRICS)].to_numpy()
    b = pd_out[list(HEX_METRICS)].to_numpy()
    same = np.allclose(np.nan_to_num(a, nan=-1), np.nan_to_num(b, nan=-1))
    print(f"same indicators both ways: {same}")

    sql_variants(store, period)

    hexes, t_hex = timed(hex_bins, frame, resolution=9, period=period)
    print(f"hex_bins of those cases (H3 res 9, same metrics): {t_hex:.2f} s, "
          f"{len(hexes):,} hexagons")
    store.dispose()
    if tmp is not None:
        tmp.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="small sizes (30,000 cases, 1,000 grids, 100,000 stored cases)")
    ap.add_argument("--cases", type=int, help="cases to cluster (default 300,000)")
    ap.add_argument("--grids", type=int, help="grids for Gi* and indicators (default 10,000)")
    ap.add_argument("--stored", type=int, help="stored cases (default 1,000,000)")
    ap.add_argument("--brute", type=int, help="subsample for brute-force DBSCAN "
                    "(default 20,000)")
    ap.add_argument("--db", help="SQLite file to create once and reuse")
    ap.add_argument("--only", choices=["clusters", "hotspots", "indicators"])
    args = ap.parse_args()
    n_cases = args.cases or (30_000 if args.quick else 300_000)
    n_grids = args.grids or (1_000 if args.quick else 10_000)
    n_stored = args.stored or (100_000 if args.quick else 1_000_000)
    n_brute = args.brute or (5_000 if args.quick else 20_000)
    rng = np.random.default_rng(2026)
    print(f"Hemei Grid analytics bench, {datetime.now():%Y-%m-%d %H:%M}"
          f"{' (quick)' if args.quick else ''}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    if args.only in (None, "clusters"):
        bench_clusters(n_cases, n_brute, rng)
    grids = voronoi_grids(n_grids)
    if args.only in (None, "hotspots"):
        bench_hotspots(grids, rng)
    if args.only in (None, "indicators"):
        bench_indicators(grids, n_stored, args.db, rng)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
