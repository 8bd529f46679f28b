"""Planners' analytics on hand-built data whose answers are known by construction:
a planted cluster, a planted hot (and cold) block of grids, hexagon bins that must hold
every case, and repeats at a compound inside and outside the window."""

from __future__ import annotations

from datetime import datetime, timedelta

import esda
import geopandas as gpd
import h3
import numpy as np
import pandas as pd
import pyproj
import pytest
import shapely
import sqlalchemy as sa
from libpysal.weights import Queen

from gis.analysis import (
    CASE_COLUMNS,
    FRAME_COLUMNS,
    HEX_METRICS,
    bh_qvalues,
    clusters,
    dbscan_points,
    hex_bins,
    hotspots,
    load_cases_frame,
    metric_flags,
    metrics_from_counts,
    recurring,
)
from gis.cases import OPEN_STATUSES, STATUSES
from gis.coverage import grid_metrics, parse_period
from gis.errors import InvalidInput
from gis.storage import open_store

GEOD = pyproj.Geod(ellps="WGS84")
LON0, LAT0 = 111.566, 24.4  # Jiangnan Street, Hezhou
OCT = parse_period("2026-10")


def offset(lon, lat, east_m, north_m):
    """The point ``east_m`` east and ``north_m`` north of (lon, lat), along geodesics."""
    lon, lat, east_m, north_m = (np.array(a, dtype=float) for a in np.broadcast_arrays(
        np.asarray(lon, float), np.asarray(lat, float), np.asarray(east_m, float),
        np.asarray(north_m, float)))
    lon1, lat1, _ = GEOD.fwd(lon, lat, np.full(lon.shape, 90.0), east_m)
    lon2, lat2, _ = GEOD.fwd(lon1, lat1, np.zeros(lon.shape), north_m)
    return lon2, lat2


def frame(lon, lat, *, category="roof_leak", compound=None, created=None, start_id=1):
    n = len(lon)
    created = created if created is not None else [datetime(2026, 10, 1)] * n
    return pd.DataFrame({
        "id": np.arange(start_id, start_id + n), "lon": np.asarray(lon, float),
        "lat": np.asarray(lat, float),
        "category": category if isinstance(category, list) else [category] * n,
        "compound_code": compound if isinstance(compound, list) else [compound] * n,
        "created_at": pd.to_datetime(created),
    })


@pytest.fixture(scope="module")
def planted():
    """300 background cases scattered over 6 km × 6 km (none within 150 m of the planted
    spot) and 30 planted cases within 20 m of one point."""
    rng = np.random.default_rng(42)
    bx, by = rng.uniform(-3000, 3000, 600), rng.uniform(-3000, 3000, 600)
    far = np.hypot(bx - 500, by - 500) > 150
    bx, by = bx[far][:300], by[far][:300]
    r, a = 20 * np.sqrt(rng.uniform(0, 1, 30)), rng.uniform(0, 2 * np.pi, 30)
    x = np.r_[bx, 500 + r * np.cos(a)]
    y = np.r_[by, 500 + r * np.sin(a)]
    lon, lat = offset(LON0, LAT0, x, y)
    cats = ["roof_leak"] * 300 + ["drainage"] * 20 + ["street_light"] * 10
    compounds = [None] * 300 + ["451102003001C01"] * 25 + ["451102003001C02"] * 5
    created = [datetime(2026, 10, 1) + timedelta(hours=i) for i in range(330)]
    df = frame(lon, lat, category=cats, compound=compounds, created=created)
    return df, set(range(301, 331))


# -- clusters ------------------------------------------------------------------------------
def test_planted_cluster_is_found_exactly(planted):
    df, ids = planted
    out = clusters(df, radius_m=50, min_cases=10)
    assert out.crs == "EPSG:4326"
    assert len(out) == 1
    row = out.iloc[0]
    assert set(row["case_ids"]) == ids and row["count"] == 30
    assert row["categories"] == {"drainage": 20, "street_light": 10}
    assert row["categories_text"] == "drainage:20, street_light:10"
    assert row["compounds"] == ["451102003001C01", "451102003001C02"]
    assert row["first_case"] == pd.Timestamp(datetime(2026, 10, 1) + timedelta(hours=300))
    assert row["last_case"] == pd.Timestamp(datetime(2026, 10, 1) + timedelta(hours=329))
    hull = row.geometry
    assert hull.geom_type == "Polygon" and hull.is_valid
    members = df[df["id"].isin(ids)]
    assert shapely.covers(hull, shapely.points(members["lon"], members["lat"])).all()


def test_no_cluster_when_min_cases_exceeds_its_size(planted):
    df, _ = planted
    out = clusters(df, radius_m=50, min_cases=31)
    assert len(out) == 0 and out.crs == "EPSG:4326"
    assert {"cluster_id", "count", "case_ids", "geometry"} <= set(out.columns)


def test_category_filter(planted):
    df, _ = planted
    assert len(clusters(df, radius_m=50, min_cases=10, category="roof_leak")) == 0
    only = clusters(df, radius_m=50, min_cases=10, category="drainage")
    assert len(only) == 1 and only.iloc[0]["categories"] == {"drainage": 20}


@pytest.mark.parametrize("east, north", [(40, 0), (0, 40)])
@pytest.mark.parametrize("lon, lat", [(LON0, LAT0), (LON0 + 9.0, LAT0 + 0.5)])
def test_metres_are_metres(lon, lat, east, north):
    """Two cases 40 m apart (east–west or north–south) are neighbours at 45 m, not at 35 m.
    The second place makes the points span ~900 km, so the haversine fallback is used."""
    lon2, lat2 = offset(lon, lat, east, north)
    lons, lats = [lon, float(lon2)], [lat, float(lat2)]
    if lon != LON0:  # a far-away companion pair forces the wide-area path
        lons += [LON0, LON0]
        lats += [LAT0, LAT0 + 0.1]
    df = frame(lons, lats)
    near = clusters(df, radius_m=45, min_cases=2)
    assert [set(c) for c in near["case_ids"]] == [{1, 2}]
    assert len(clusters(df, radius_m=35, min_cases=2)) == 0


def test_identical_and_collinear_cases_give_small_valid_polygons():
    same = frame([LON0] * 5, [LAT0] * 5)
    out = clusters(same, radius_m=10, min_cases=5)
    assert len(out) == 1 and out.iloc[0]["count"] == 5
    poly = out.iloc[0].geometry
    assert poly.geom_type == "Polygon" and poly.is_valid
    assert poly.contains(shapely.Point(LON0, LAT0))
    area = gpd.GeoSeries([poly], crs="EPSG:4326").to_crs("EPSG:4547").area.iloc[0]
    assert 2.5 < area < 3.5  # a 1 m buffer: about π m²
    assert len(clusters(same, radius_m=10, min_cases=6)) == 0  # five cases are five

    lon, lat = offset(LON0, LAT0, np.arange(5) * 8.0, 0)
    line = clusters(frame(lon, lat), radius_m=10, min_cases=2).iloc[0].geometry
    assert line.geom_type == "Polygon" and line.is_valid
    assert shapely.covers(line, shapely.points(lon, lat)).all()


def test_clusters_are_numbered_largest_first():
    a_lon, a_lat = offset(LON0, LAT0, np.zeros(6), np.arange(6) * 3.0)
    b_lon, b_lat = offset(LON0, LAT0, 1000 + np.zeros(9), np.arange(9) * 3.0)
    df = frame(np.r_[a_lon, b_lon], np.r_[a_lat, b_lat])
    out = clusters(df, radius_m=10, min_cases=3)
    assert out["cluster_id"].tolist() == [1, 2]
    assert out["count"].tolist() == [9, 6]
    assert out.iloc[0]["case_ids"] == list(range(7, 16))


@pytest.mark.parametrize("kwargs, field", [
    ({"radius_m": 0}, "radius_m"), ({"radius_m": 5001}, "radius_m"),
    ({"radius_m": "50"}, "radius_m"), ({"radius_m": True}, "radius_m"),
    ({"radius_m": float("nan")}, "radius_m"),
    ({"min_cases": 1}, "min_cases"), ({"min_cases": 1001}, "min_cases"),
    ({"min_cases": 2.5}, "min_cases"), ({"category": ""}, "category"),
])
def test_clusters_checks_its_parameters(planted, kwargs, field):
    with pytest.raises(InvalidInput) as err:
        clusters(planted[0], **kwargs)
    assert err.value.field == field


def test_clusters_checks_the_frame(planted):
    with pytest.raises(InvalidInput) as err:
        clusters(planted[0].drop(columns=["compound_code"]))
    assert err.value.field == "cases" and "compound_code" in err.value.message
    bad = planted[0].copy()
    bad.loc[3, "lat"] = np.nan
    with pytest.raises(InvalidInput) as err:
        clusters(bad)
    assert err.value.field == "lat"
    with pytest.raises(InvalidInput) as err:
        clusters([1, 2, 3])
    assert err.value.field == "cases"


@pytest.mark.parametrize("seed", range(6))
def test_dbscan_points_gives_sklearn_labels(seed):
    """Same labels as scikit-learn, border points included, with and without weights."""
    from sklearn.cluster import DBSCAN

    rng = np.random.default_rng(seed)
    X = np.r_[rng.uniform(0, 300, (400, 2)).round(0), rng.normal(150, 8, (60, 2))]
    weight = rng.integers(1, 4, len(X)) if seed % 2 else None
    for eps, k in ((6.0, 3), (10.0, 5), (15.0, 12)):
        ours = dbscan_points(X, eps, k, weight)
        ref = DBSCAN(eps=eps, min_samples=k).fit(X, sample_weight=weight).labels_
        assert ours.tolist() == ref.tolist()
        assert (ours >= 0).any()


def test_clusters_match_sklearn_on_projected_and_repeated_points():
    """Cases at repeated spots (clustered once, weighted) give scikit-learn's clusters of
    every case on the same projection."""
    from sklearn.cluster import DBSCAN

    rng = np.random.default_rng(7)
    x, y = rng.uniform(0, 400, 300).round(-1), rng.uniform(0, 400, 300).round(-1)
    lon, lat = offset(LON0, LAT0, x, y)
    df = frame(lon, lat)
    out = clusters(df, radius_m=15, min_cases=4)
    lon0 = (lon.min() + lon.max()) / 2
    lat0 = (lat.min() + lat.max()) / 2
    proj = pyproj.Transformer.from_crs("EPSG:4326", f"+proj=aeqd +lat_0={lat0:.9f} "
                                       f"+lon_0={lon0:.9f} +datum=WGS84", always_xy=True)
    ref = DBSCAN(eps=15, min_samples=4).fit(np.column_stack(proj.transform(lon, lat)))
    theirs = {frozenset(df["id"][ref.labels_ == k]) for k in set(ref.labels_) - {-1}}
    assert {frozenset(c) for c in out["case_ids"]} == theirs
    assert len(theirs) > 3


def test_wide_area_clusters_match_haversine():
    """Points ~1,000 km apart: great-circle distances, as sklearn's haversine DBSCAN."""
    from sklearn.cluster import DBSCAN

    rng = np.random.default_rng(8)
    centres = np.array([[LON0, LAT0], [LON0 + 10, LAT0 + 2], [LON0 - 3, LAT0 + 8]])
    pts = np.concatenate([c + rng.normal(0, 0.0004, (150, 2)) for c in centres])
    df = frame(pts[:, 0], pts[:, 1])
    out = clusters(df, radius_m=20, min_cases=4)
    ref = DBSCAN(eps=20 / 6_371_008.8, min_samples=4, metric="haversine",
                 algorithm="ball_tree").fit(np.radians(pts[:, ::-1])).labels_
    theirs = {frozenset(df["id"][ref == k]) for k in set(ref) - {-1}}
    assert {frozenset(c) for c in out["case_ids"]} == theirs
    assert len(theirs) >= 3


# -- hot and cold spots --------------------------------------------------------------------
def lattice(n: int = 10) -> gpd.GeoDataFrame:
    """An n × n layer of square grids sharing exact vertices; row-major, code G<row><col>."""
    xs = LON0 + np.arange(n + 1) * 0.002
    ys = LAT0 + np.arange(n + 1) * 0.002
    rows, cols = np.divmod(np.arange(n * n), n)
    geoms = shapely.box(xs[cols], ys[rows], xs[cols + 1], ys[rows + 1])
    codes = [f"G{r:02d}{c:02d}" for r, c in zip(rows, cols, strict=True)]
    return gpd.GeoDataFrame({"code": codes, "name": codes}, geometry=geoms, crs="EPSG:4326")


BLOCK = [r * 10 + c for r in (4, 5, 6) for c in (4, 5, 6)]
CENTRE = 55


def test_planted_hot_block():
    rng = np.random.default_rng(0)
    values = rng.uniform(0, 1, 100)
    values[BLOCK] = rng.uniform(9, 10, 9)
    out = hotspots(lattice(), values, confidence=0.95)
    assert out.loc[CENTRE, "cls"] == "hot"
    hot = set(np.flatnonzero(out["cls"] == "hot"))
    assert hot <= set(BLOCK)
    assert not (out.loc[BLOCK, "cls"] == "cold").any()
    assert out.loc[CENTRE, "z"] > 1.96 and out.loc[CENTRE, "q"] <= 0.05
    assert out.attrs["tested"] == 100 and out.attrs["p_threshold"] <= 0.05
    assert (out.loc[out["cls"] == "hot", "p"] <= out.attrs["p_threshold"]).all()
    assert list(out.columns) == ["code", "name", "value", "neighbours", "z", "p", "q", "cls",
                                 "geometry"]
    assert out.loc[0, "neighbours"] == 3 and out.loc[CENTRE, "neighbours"] == 8


def test_planted_cold_block():
    rng = np.random.default_rng(1)
    values = rng.uniform(9, 10, 100)
    values[BLOCK] = rng.uniform(0, 1, 9)
    out = hotspots(lattice(), values)
    assert out.loc[CENTRE, "cls"] == "cold"
    assert set(np.flatnonzero(out["cls"] == "cold")) <= set(BLOCK)
    assert out.loc[CENTRE, "z"] < -1.96


def test_stricter_confidence_finds_no_more():
    rng = np.random.default_rng(2)
    values = rng.uniform(0, 1, 100)
    values[BLOCK] = rng.uniform(3, 4, 9)
    flagged = {c: int((hotspots(lattice(), values, confidence=c)["cls"] == "hot").sum())
               for c in (0.90, 0.95, 0.99)}
    assert flagged[0.90] >= flagged[0.95] >= flagged[0.99]


def test_random_layout_has_few_false_discoveries():
    """iid values: every discovery is false; BH keeps them rare."""
    layer = lattice()
    one = hotspots(layer, np.random.default_rng(100).uniform(0, 1, 100), seed=0)
    assert one["cls"].isin(["hot", "cold"]).sum() <= 5
    flagged = [int(hotspots(layer, np.random.default_rng(s).exponential(1, 100),
                            seed=s)["cls"].isin(["hot", "cold"]).sum()) for s in range(20)]
    assert sum(flagged) / len(flagged) <= 0.5, flagged
    assert sum(1 for f in flagged if f) <= 3, flagged


def test_large_layers_need_normal_inference():
    """1,600 grids: with 999 permutations Benjamini–Hochberg needs 64 grids at the
    p-value floor before it can call any, so a planted 3 × 3 block goes unreported;
    the normal tail at the permutation z-score finds its centre."""
    layer = lattice(40)
    rng = np.random.default_rng(17)
    values = rng.uniform(0, 1, 1600)
    block = [r * 40 + c for r in (19, 20, 21) for c in (19, 20, 21)]
    values[block] = rng.uniform(9, 10, 9)
    perm = hotspots(layer, values)
    assert perm.attrs["min_discoveries"] == 64 and perm.attrs["min_p"] == 0.002
    assert not perm["cls"].isin(["hot", "cold"]).any()
    assert perm.loc[20 * 40 + 20, "p"] == 0.002
    normal = hotspots(layer, values, inference="normal")
    assert normal.attrs["min_discoveries"] == 1 and normal.attrs["inference"] == "normal"
    assert normal.loc[20 * 40 + 20, "cls"] == "hot"
    # Gi* judges neighbourhoods: grids touching the block hold high values too.
    ring = {r * 40 + c for r in range(18, 23) for c in range(18, 23)}
    assert set(np.flatnonzero(normal["cls"] == "hot")) <= ring
    assert not (normal["cls"] == "cold").any()


def test_normal_inference_random_layout_has_few_false_discoveries():
    layer = lattice()
    flagged = [int(hotspots(layer, np.random.default_rng(s).uniform(0, 1, 100), seed=s,
                            inference="normal")["cls"].isin(["hot", "cold"]).sum())
               for s in range(20)]
    assert sum(flagged) / len(flagged) <= 0.5, flagged


def test_zero_counts_are_not_cold_spots():
    """Mostly-zero counts (overdue cases): a grid of zeros among zeros ties most
    permutations. esda's p_sim folds the ties into the low tail and calls such grids
    significantly cold; hotspots counts ties against significance."""
    rng = np.random.default_rng(3)
    values = np.zeros(100)
    values[rng.choice(100, 20, replace=False)] = rng.integers(1, 4, 20)
    layer = lattice()
    out = hotspots(layer, values)
    assert (out["cls"] == "none").all()
    w = Queen.from_dataframe(layer, use_index=False)
    w.transform = "B"
    with pytest.warns(DeprecationWarning):
        g = esda.G_Local(values, w, transform="R", star=True, permutations=999, seed=0,
                         n_jobs=1)
    assert ((g.p_sim < esda.fdr(g.p_sim, 0.05)) & (g.Zs < 0)).sum() > 5  # the trap


def test_no_data_and_islands():
    rng = np.random.default_rng(4)
    values = rng.uniform(0, 1, 100)
    values[BLOCK] = rng.uniform(9, 10, 9)
    values[[1, 10, 11]] = np.nan  # grid 0 (a corner) loses every neighbour
    out = hotspots(lattice(), values)
    assert out.loc[[1, 10, 11], "cls"].eq("no_data").all()
    assert out.loc[[1, 10, 11], ["z", "p", "q"]].isna().all().all()
    assert out.loc[0, "cls"] == "island" and out.loc[0, "neighbours"] == 0
    assert np.isnan(out.loc[0, "q"]) and out.loc[0, "p"] == 1.0
    assert out.attrs["tested"] == 96
    assert out.loc[CENTRE, "cls"] == "hot"


def test_values_by_column_by_code_and_constant():
    layer = lattice()
    rng = np.random.default_rng(5)
    values = rng.uniform(0, 1, 100)
    values[BLOCK] = 10.0
    layer["open"] = values
    by_column = hotspots(layer, "open")
    by_code = hotspots(layer, pd.Series(values[::-1], index=layer["code"][::-1].to_numpy()))
    by_array = hotspots(layer, list(values))
    assert by_column["cls"].tolist() == by_code["cls"].tolist() == by_array["cls"].tolist()
    # A Series indexed by code that misses grids: those have no data.
    partial = hotspots(layer, pd.Series(values[:50], index=layer["code"][:50].to_numpy()))
    assert partial["cls"].iloc[50:].eq("no_data").all()
    flat = hotspots(layer, np.full(100, 3.0))
    assert flat["cls"].eq("none").all() and flat["p"].eq(1.0).all()


def test_neighbours_are_queen_contiguity():
    """The sparse Graph builder gives the neighbours of weights.Queen.from_dataframe on an
    irregular (Voronoi) layer, in the layer's row order (corners: see the lattice tests)."""
    rng = np.random.default_rng(16)
    pts = shapely.multipoints(rng.uniform(0, 1, (200, 2)))
    cells = shapely.get_parts(shapely.voronoi_polygons(pts, extend_to=shapely.box(0, 0, 1, 1)))
    cells = shapely.intersection(cells, shapely.box(0, 0, 1, 1))
    layer = gpd.GeoDataFrame({"code": [f"V{i:03d}" for i in range(len(cells))]},
                             geometry=cells, index=np.arange(len(cells))[::-1] + 1000)
    w = Queen.from_dataframe(layer, use_index=False, silence_warnings=True)
    expected = [w.cardinalities[i] for i in range(len(layer))]
    out = hotspots(layer, rng.uniform(0, 1, len(layer)))
    assert out["neighbours"].tolist() == expected
    assert out.index.equals(layer.index)


def test_same_seed_same_answer_and_global_random_state_untouched():
    rng = np.random.default_rng(6)
    values = rng.uniform(0, 1, 100)
    values[BLOCK] += 2
    np.random.seed(123)
    expected = np.random.random()
    np.random.seed(123)
    a = hotspots(lattice(), values, seed=11)
    assert np.random.random() == expected
    b = hotspots(lattice(), values, seed=11)
    assert a["p"].tolist() == b["p"].tolist()


@pytest.mark.parametrize("kwargs, field", [
    ({"confidence": 0.8}, "confidence"), ({"confidence": 95}, "confidence"),
    ({"confidence": "0.95"}, "confidence"), ({"permutations": 10}, "permutations"),
    ({"permutations": 999.5}, "permutations"), ({"seed": -1}, "seed"),
    ({"values": np.ones(99)}, "values"), ({"values": -np.ones(100)}, "values"),
    ({"values": "nope"}, "values"), ({"values": np.full(100, np.inf)}, "values"),
    ({"values": pd.Series([1.0], index=["elsewhere"])}, "values"),
    ({"inference": "bootstrap"}, "inference"),
])
def test_hotspots_checks_its_parameters(kwargs, field):
    args = {"values": np.ones(100), **kwargs}
    with pytest.raises(InvalidInput) as err:
        hotspots(lattice(), **args)
    assert err.value.field == field


def test_bh_qvalues():
    p = np.array([0.042, 0.001, 0.205, 0.039, 0.008, 0.041, 0.074, 0.06])
    q = bh_qvalues(p)
    expected = {0.001: 0.008, 0.008: 0.032, 0.039: 0.0672, 0.041: 0.0672, 0.042: 0.0672,
                0.06: 0.08, 0.074: 0.084571, 0.205: 0.205}
    assert np.allclose(q, [expected[v] for v in p], atol=1e-6)
    rng = np.random.default_rng(8)
    for _ in range(50):
        p = np.r_[rng.uniform(0, 1, 90), rng.uniform(0, 0.003, 10)]
        cut = esda.fdr(p, 0.05)
        assert set(np.flatnonzero(bh_qvalues(p) <= 0.05)) == set(np.flatnonzero(p < cut))


# -- a store of cases ----------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/t.sqlite3")
    yield s
    s.dispose()


def random_rows(rng, n, grids, *, lon=LON0, lat=LAT0):
    """Cases with every status and realistic timestamps around October 2026."""
    rows = []
    base = datetime(2026, 9, 1)
    for i in range(n):
        status = str(rng.choice(STATUSES))
        created = base + timedelta(seconds=int(rng.uniform(0, 80 * 86400)))
        due = (created + timedelta(seconds=int(rng.uniform(3600, 20 * 86400)))
               if rng.random() < 0.8 else None)
        resolved = (created + timedelta(seconds=int(rng.uniform(0, 20 * 86400)))
                    if status in ("resolved", "closed") or (
                        status in ("reopened", "in_progress") and rng.random() < 0.5)
                    else None)
        closed = ((resolved or created) + timedelta(seconds=int(rng.uniform(0, 9 * 86400)))
                  if status in ("closed", "rejected", "closed_not_fixed") else None)
        if status == "closed" and due is not None and rng.random() < 0.3:
            closed = due  # exactly on time
        stamps = [t for t in (created, resolved, closed) if t is not None]
        rows.append({
            "category": str(rng.choice(["roof_leak", "drainage", "street_light"])),
            "title": f"case {i}", "description": "d",
            "lon": float(lon + rng.uniform(0, 0.02)), "lat": float(lat + rng.uniform(0, 0.02)),
            "compound_code": str(rng.choice(["C01", "C02"])) if rng.random() < 0.6 else None,
            "grid_code": str(rng.choice(grids)), "status": status, "source": "patrol",
            "created_at": created, "due_at": due, "resolved_at": resolved,
            "closed_at": closed,
            "updated_at": max(stamps) + timedelta(seconds=int(rng.uniform(0, 2 * 86400))),
            "row_version": 1,
        })
    return rows


def insert(store, rows):
    store.import_cases(rows, [[] for _ in rows])


def test_load_cases_frame_is_one_query_with_filters(store):
    rng = np.random.default_rng(9)
    rows = random_rows(rng, 200, ["G1", "G2"])
    insert(store, rows)
    seen = []

    def listener(conn, cursor, statement, *args):
        seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", listener)
    try:
        df = load_cases_frame(store)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", listener)
    assert len([s for s in seen if s.lstrip().upper().startswith("SELECT")]) == 1
    assert tuple(df.columns) == FRAME_COLUMNS
    assert "title" not in df and "reporter_phone" not in df
    assert len(df) == sum(r["status"] != "rejected" for r in rows)
    assert df["id"].is_monotonic_increasing
    for col in ("created_at", "due_at", "resolved_at", "closed_at", "updated_at"):
        assert str(df[col].dtype).startswith("datetime64")
    first = df.iloc[0]
    src = rows[int(first["id"]) - 1]
    assert first["created_at"] == pd.Timestamp(src["created_at"])
    assert first["lon"] == src["lon"] and first["category"] == src["category"]

    oct_open = load_cases_frame(store, period="2026-10", category="drainage", status="open")
    expect = [r for r in rows if r["category"] == "drainage" and r["status"] in OPEN_STATUSES
              and OCT.start <= r["created_at"] < OCT.end]
    assert len(oct_open) == len(expect) > 0
    rejected = load_cases_frame(store, status=["rejected"])
    assert len(rejected) == sum(r["status"] == "rejected" for r in rows)
    assert len(load_cases_frame(store, period=OCT)) == sum(
        OCT.start <= r["created_at"] < OCT.end and r["status"] != "rejected" for r in rows)


@pytest.mark.parametrize("kwargs, field", [
    ({"status": "lost"}, "status"), ({"status": ["open"]}, "status"), ({"status": []}, "status"),
    ({"period": "2026-13"}, "period"), ({"period": 30}, "period"),
    ({"category": 5}, "category"),
])
def test_load_cases_frame_checks_its_filters(store, kwargs, field):
    with pytest.raises(InvalidInput) as err:
        load_cases_frame(store, **kwargs)
    assert err.value.field == field


@pytest.mark.parametrize("seed, period", [(10, "2026-10"), (11, "2026-09-15..2026-10-14"),
                                          (12, "2026-11")])
def test_metric_flags_reproduce_grid_metrics(store, seed, period):
    """Summing the per-case flags by grid gives what the database computes: the hexagon
    metrics are the coverage metrics."""
    codes = ["G1", "G2", "G3", "G4"]
    insert(store, random_rows(np.random.default_rng(seed), 300, codes[:3]))
    grids = gpd.GeoDataFrame({"code": codes, "name": codes, "parent_code": "C",
                              "households": 100}, geometry=[shapely.box(0, 0, 1, 1)] * 4,
                             crs="EPSG:4326")
    per = parse_period(period)
    expected = grid_metrics(store, grids, per)
    df = load_cases_frame(store)
    flags = metric_flags(df, per)
    counts = flags.groupby(df["grid_code"]).sum().reindex(codes, fill_value=0)
    got = metrics_from_counts(counts)
    pd.testing.assert_frame_equal(got, expected[list(HEX_METRICS)], check_names=False)
    for col in ("reported_in_period", "closed_on_time", "overdue"):
        assert counts[col].tolist() == expected[col].astype(int).tolist()


def test_hotspots_on_grid_metrics(store):
    """End to end: many new cases in a 3 × 3 block of a 10 × 10 layer → its centre is hot
    on the "new" metric of grid_metrics."""
    layer = lattice()
    layer["parent_code"] = "C"
    layer["households"] = 100
    rng = np.random.default_rng(13)
    per_grid = rng.poisson(1, 100)
    per_grid[BLOCK] = rng.poisson(15, 9)
    rows = []
    for i, k in enumerate(per_grid):
        for r in random_rows(rng, int(k), [layer["code"][i]]):
            r.update(status="reported", created_at=datetime(2026, 10, 5), resolved_at=None,
                     closed_at=None, updated_at=datetime(2026, 10, 5))
            rows.append(r)
    insert(store, rows)
    gm = grid_metrics(store, layer, OCT)
    out = hotspots(gm, "new")
    assert out.loc["G0505", "cls"] == "hot"
    assert set(out.index[out["cls"] == "hot"]) <= {layer["code"][i] for i in BLOCK}


# -- hexagon bins --------------------------------------------------------------------------
def test_hex_bins_hold_every_case_in_its_cell():
    rng = np.random.default_rng(14)
    n = 500
    df = pd.DataFrame({
        "lon": LON0 + rng.uniform(0, 0.03, n), "lat": LAT0 + rng.uniform(0, 0.03, n),
        "status": "reported", "created_at": datetime(2026, 10, 3),
        "due_at": datetime(2026, 10, 20), "resolved_at": None, "closed_at": None,
        "updated_at": datetime(2026, 10, 3),
    })
    out = hex_bins(df, resolution=9, period=OCT)
    assert out.crs == "EPSG:4326"
    assert out["cases"].sum() == n and out["new"].sum() == n and out["open"].sum() == n
    assert out["overdue"].sum() == n  # due 20 October, still open at the end of October
    assert out["cell"].is_unique
    assert out.geometry.is_valid.all() and (out.geometry.geom_type == "Polygon").all()
    assert all(h3.get_resolution(c) == 9 for c in out["cell"])
    by_cell = out.set_index("cell")
    cells = [h3.latlng_to_cell(la, lo, 9) for lo, la in zip(df["lon"], df["lat"], strict=True)]
    assert pd.Series(cells).value_counts().sort_index().tolist() == \
        by_cell.loc[sorted(set(cells)), "cases"].tolist()
    polys = by_cell.loc[cells].geometry.values
    assert shapely.covers(polys, shapely.points(df["lon"], df["lat"])).all()
    coarse = hex_bins(df, resolution=7, period=OCT)
    assert coarse["cases"].sum() == n and len(coarse) < len(out)
    assert [m["key"] for m in out.attrs["metrics"]] == list(HEX_METRICS)


def test_hex_bins_use_the_coverage_definitions(store):
    insert(store, random_rows(np.random.default_rng(15), 300, ["G1"]))
    df = load_cases_frame(store)
    out = hex_bins(df, resolution=8, period="2026-10")
    grid = grid_metrics(store, gpd.GeoDataFrame(
        {"code": ["G1"], "name": ["g"], "parent_code": ["C"], "households": [10]},
        geometry=[shapely.box(0, 0, 1, 1)], crs="EPSG:4326"), OCT).iloc[0]
    for key in ("open", "new", "overdue"):
        assert out[key].sum() == grid[key]
    assert out["resolved_of_reported"].sum() / out["reported_in_period"].sum() == \
        pytest.approx(grid["resolution_rate"])
    assert out["cases"].sum() == (df["created_at"] < OCT.end).sum()
    rates = out["resolution_rate"]
    assert (rates.isna() == (out["reported_in_period"] == 0)).all()


def test_hex_bins_empty_and_bad_input():
    empty = pd.DataFrame({c: [] for c in ("lon", "lat", "status", "created_at", "due_at",
                                          "resolved_at", "closed_at", "updated_at")})
    out = hex_bins(empty, period=OCT)
    assert len(out) == 0 and "cell" in out.columns
    for bad in (4, 13, 9.5, "9"):
        with pytest.raises(InvalidInput) as err:
            hex_bins(empty, resolution=bad)
        assert err.value.field == "resolution"
    with pytest.raises(InvalidInput) as err:
        hex_bins(empty.drop(columns=["due_at"]))
    assert err.value.field == "cases"
    with pytest.raises(InvalidInput) as err:
        hex_bins(empty, period="last week")
    assert err.value.field == "period"


# -- recurring problems --------------------------------------------------------------------
def repeats(days, *, category="roof_leak", compound="451102003001C01", start_id=1,
            lon=LON0, lat=LAT0):
    created = [datetime(2026, 3, 1) + timedelta(days=d) for d in days]
    return frame([lon] * len(days), [lat] * len(days), category=category, compound=compound,
                 created=created, start_id=start_id)


def test_four_leaks_in_sixty_days_are_listed():
    df = pd.concat([
        repeats([0, 20, 41, 60]),                               # 4 leaks within 60 days
        repeats([5, 30], category="drainage", start_id=10),     # same compound, other kind
        repeats([0, 133, 266, 400], compound="451102003001C02", start_id=20),  # spread out
    ], ignore_index=True)
    out = recurring(df, window_days=90, min_repeats=3)
    assert len(out) == 1
    row = out.iloc[0]
    assert row["compound_code"] == "451102003001C01" and row["category"] == "roof_leak"
    assert row["count"] == 4 and row["max_in_window"] == 4
    assert row["case_ids"] == [1, 2, 3, 4]
    assert row["first"] == pd.Timestamp("2026-03-01")
    assert row["last"] == pd.Timestamp("2026-04-30")
    assert pd.isna(row["cluster_id"])
    assert list(out.columns) == ["compound_code", "cluster_id", "category", "count",
                                 "max_in_window", "first", "last", "case_ids", "lon", "lat"]


def test_spread_out_repeats_are_not_listed():
    assert len(recurring(repeats([0, 133, 266, 400]), window_days=90, min_repeats=3)) == 0
    assert len(recurring(repeats([0, 133, 266, 400]), window_days=140, min_repeats=2)) == 1


def test_other_categories_are_not_mixed_in():
    df = pd.concat([repeats([0, 10]), repeats([5, 15], category="drainage", start_id=10)],
                   ignore_index=True)
    assert len(recurring(df, window_days=90, min_repeats=3)) == 0
    assert len(recurring(df, window_days=90, min_repeats=2)) == 2


def test_window_edges_and_partial_runs():
    exact = recurring(repeats([0, 45, 90]), window_days=90, min_repeats=3)
    assert exact["count"].tolist() == [3]  # first and last exactly window_days apart
    assert len(recurring(repeats([0, 45, 90.001]), window_days=90, min_repeats=3)) == 0
    # A burst of three, a lone case a year later: only the burst counts.
    burst = recurring(repeats([0, 2, 4, 370]), window_days=30, min_repeats=3).iloc[0]
    assert burst["count"] == 3 and burst["case_ids"] == [1, 2, 3]
    # Two bursts: both are counted, the peak is the bigger one.
    two = recurring(repeats([0, 1, 2, 200, 201, 202, 203]), window_days=30,
                    min_repeats=3).iloc[0]
    assert two["count"] == 7 and two["max_in_window"] == 4


def test_cases_without_a_compound_grouped_by_proximity():
    lon, lat = offset(LON0, LAT0, [0, 10, 20, 2000, 2010], [0, 5, 0, 0, 0])
    created = [datetime(2026, 5, d) for d in (1, 8, 15, 1, 8)]
    loose = frame(lon, lat, compound=None, created=created, start_id=100)
    listed = pd.concat([repeats([0, 20, 41, 60]), repeats([0, 30], start_id=50,
                                                          compound="451102003001C02")],
                       ignore_index=True)
    df = pd.concat([listed, loose], ignore_index=True)
    assert recurring(df, window_days=90, min_repeats=3)["category"].size == 1
    out = recurring(df, window_days=90, min_repeats=3, radius_m=30)
    assert len(out) == 2
    near = out[out["compound_code"].isna()].iloc[0]
    assert near["case_ids"] == [100, 101, 102] and near["cluster_id"] == 1
    assert near["lon"] == pytest.approx(np.mean(lon[:3]))
    assert out["count"].tolist() == sorted(out["count"], reverse=True)
    # Cases 2 km apart are not one place: the pair far away is a place of its own.
    pairs = recurring(df, window_days=90, min_repeats=2, radius_m=30)
    assert sorted(map(sorted, pairs.loc[pairs["compound_code"].isna(), "case_ids"])) == \
        [[100, 101, 102], [103, 104]]
    assert len(pairs) == 4


@pytest.mark.parametrize("kwargs, field", [
    ({"window_days": 0}, "window_days"), ({"window_days": 3661}, "window_days"),
    ({"min_repeats": 1}, "min_repeats"), ({"min_repeats": "3"}, "min_repeats"),
    ({"radius_m": 0.5}, "radius_m"), ({"radius_m": 6000}, "radius_m"),
])
def test_recurring_checks_its_parameters(kwargs, field):
    with pytest.raises(InvalidInput) as err:
        recurring(repeats([0, 1, 2]), **kwargs)
    assert err.value.field == field


def test_recurring_needs_times_and_columns():
    df = repeats([0, 1, 2])
    df.loc[1, "created_at"] = pd.NaT
    with pytest.raises(InvalidInput) as err:
        recurring(df)
    assert err.value.field == "created_at"
    with pytest.raises(InvalidInput) as err:
        recurring(df.drop(columns=["category"]))
    assert err.value.field == "cases"
    assert set(CASE_COLUMNS) <= set(FRAME_COLUMNS)
