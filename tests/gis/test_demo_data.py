"""Checks of the shipped demo data: data/shapes/jiangnan.gpkg and data/shapes/demo_cases.csv.

The files are made by data/shapes/make_demo.py; data/shapes/README.md documents them.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import json
import math
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from shapely.geometry import LineString, Point

ROOT = Path(__file__).resolve().parents[2]
SHAPES = ROOT / "data" / "shapes"
GPKG = SHAPES / "jiangnan.gpkg"
CASES = SHAPES / "demo_cases.csv"
SCRIPT = SHAPES / "make_demo.py"
CATALOGUE = ROOT / "gis" / "catalogue.json"

LAYERS = ["street", "community", "compound", "grid"]
STREET_CODE = "451102003"
# grid numbering rule, as documented in data/shapes/README.md
BAND_NORTH = 24.4190
BAND_HEIGHT = 0.0048

CATEGORIES = {
    "roof_leak",
    "road_damage",
    "street_light",
    "drainage",
    "sanitation",
    "parking",
    "public_toilet",
    "access_road",
    "neighbour_dispute",
}
SOURCES = {"patrol", "resident", "hotline", "meeting"}
OPEN = {"reported", "accepted", "in_progress"}
STATUSES = OPEN | {"resolved", "closed", "rejected"}
CASE_COLUMNS = [
    "ref",
    "category",
    "title",
    "description",
    "lon",
    "lat",
    "source",
    "status",
    "days_ago",
    "resolved_days_ago",
    "closed_days_ago",
]
CJK = re.compile(r"^[\u4e00-\u9fff0-9]+$")
AREA_EPS = 1e-12  # deg², for "no gap, no overlap"


@pytest.fixture(scope="module")
def layers() -> dict[str, gpd.GeoDataFrame]:
    return {name: gpd.read_file(GPKG, layer=name, engine="pyogrio") for name in LAYERS}


@pytest.fixture(scope="module")
def cases() -> list[dict[str, str]]:
    with open(CASES, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def make_demo():
    name = "_hemei_demo_make_demo"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(name, None)


def _street(layers):
    return layers["street"].geometry.iloc[0]


def _case_points(cases):
    return [Point(float(c["lon"]), float(c["lat"])) for c in cases]


def _gap_and_overlap(parent, children) -> tuple[float, float]:
    gap = shapely.union_all(children).symmetric_difference(parent).area
    overlap = sum(a.intersection(b).area for a, b in itertools.combinations(children, 2))
    return gap, overlap


# --- the layers ---------------------------------------------------------------------------


def test_layers_and_crs():
    assert sorted(name for name, _ in pyogrio.list_layers(GPKG)) == sorted(LAYERS)
    for name in LAYERS:
        info = pyogrio.read_info(GPKG, layer=name)
        assert info["crs"] == "EPSG:4326", name


def test_counts(layers):
    assert len(layers["street"]) == 1
    assert len(layers["community"]) == 5
    assert len(layers["compound"]) == 27
    grids = layers["grid"]
    per_community = grids.groupby("parent_code").size()
    assert sorted(per_community.index) == sorted(layers["community"].code)
    assert per_community.between(5, 15).all(), per_community.to_dict()
    assert 30 <= len(grids) <= 60


def test_columns_and_types(layers):
    for name, gdf in layers.items():
        for col in ("code", "name", "parent_code"):
            assert col in gdf.columns, (name, col)
            assert all(isinstance(v, str) and v for v in gdf[col]), (name, col)
        assert gdf.code.is_unique, name
    for name in ("grid", "compound"):
        assert layers[name].households.dtype.kind == "i", name
        assert (layers[name].households > 0).all()
    assert layers["grid"].households.between(150, 600).all()
    comp = layers["compound"]
    assert comp.built_year.dtype.kind == "i" and comp.old_compound.dtype.kind == "i"
    assert set(comp.old_compound) == {0, 1}
    assert (comp.old_compound == (comp.built_year < 2000).astype(int)).all()


def test_codes(layers):
    street = layers["street"].iloc[0]
    assert (street["code"], street["name"], street["parent_code"]) == (
        STREET_CODE,
        "江南街道",
        "451102",
    )

    comm = layers["community"]
    assert all(re.fullmatch(r"451102003\d{3}", c) for c in comm.code)
    assert (comm.parent_code == STREET_CODE).all()
    comm_codes = set(comm.code)

    grid = layers["grid"]
    assert all(re.fullmatch(r"\d{15}", c) for c in grid.code)
    assert all(c[:12] == p for c, p in zip(grid.code, grid.parent_code, strict=True))
    assert set(grid.parent_code) <= comm_codes
    for parent, sub in grid.groupby("parent_code"):
        seqs = sorted(int(c[12:]) for c in sub.code)
        assert seqs == list(range(1, len(sub) + 1)), parent

    comp = layers["compound"]
    assert all(re.fullmatch(r"451102003\d{3}C\d{2}", c) for c in comp.code)
    assert all(c[:12] == p for c, p in zip(comp.code, comp.parent_code, strict=True))
    assert set(comp.parent_code) <= comm_codes
    for parent, sub in comp.groupby("parent_code"):
        seqs = sorted(int(c[13:]) for c in sub.code)
        assert seqs == list(range(1, len(sub) + 1)), parent


def test_names(layers):
    comm = layers["community"]
    assert {"厦良社区", "点灯社区"} <= set(comm.name)
    assert all(n.endswith("社区") for n in comm.name)
    comp = layers["compound"]
    assert comp.name.is_unique
    assert {"香槟城小区", "大修厂小区", "秀峰苑小区"} <= set(comp.name)
    for gdf in layers.values():
        assert all(CJK.fullmatch(n) for n in gdf.name), list(gdf.name)
    comm_name = dict(zip(comm.code, comm.name, strict=True))
    grid = layers["grid"]
    for code, name, parent in zip(grid.code, grid.name, grid.parent_code, strict=True):
        assert name == f"{comm_name[parent]}第{int(code[12:])}网格"


def test_named_compounds(layers):
    comm_name = dict(zip(layers["community"].code, layers["community"].name, strict=True))
    comp = layers["compound"].set_index("name")
    for name in ("香槟城小区", "大修厂小区"):
        assert comm_name[comp.loc[name, "parent_code"]] in {"厦良社区", "点灯社区"}
    assert comm_name[comp.loc["秀峰苑小区", "parent_code"]] == "点灯社区"
    assert comp.loc["大修厂小区", "old_compound"] == 1
    assert 1980 <= comp.loc["大修厂小区", "built_year"] < 2000


def test_geometry_valid(layers):
    for name, gdf in layers.items():
        for geom in gdf.geometry:
            assert geom is not None and not geom.is_empty, name
            assert geom.geom_type in ("Polygon", "MultiPolygon"), name
            assert shapely.is_valid(geom), (name, shapely.is_valid_reason(geom))
            xy = shapely.get_coordinates(geom)
            assert np.array_equal(np.round(xy, 7), xy), f"{name}: more than 7 decimals"
            assert ((xy[:, 0] > 111.55) & (xy[:, 0] < 111.60)).all(), name
            assert ((xy[:, 1] > 24.38) & (xy[:, 1] < 24.42)).all(), name


def test_street_is_plausible(layers):
    street = _street(layers)
    assert street.geom_type == "Polygon"
    # about 5 x 4 km, and not a rectangle
    minx, miny, maxx, maxy = street.bounds
    assert 0.035 < maxx - minx < 0.06 and 0.025 < maxy - miny < 0.045
    assert street.area < 0.9 * street.envelope.area
    assert len(street.exterior.coords) > 12


def test_communities_tile_street(layers):
    gap, overlap = _gap_and_overlap(_street(layers), list(layers["community"].geometry))
    assert gap < AREA_EPS and overlap < AREA_EPS


def test_grids_tile_each_community(layers):
    grid = layers["grid"]
    for code, geom in zip(layers["community"].code, layers["community"].geometry, strict=True):
        gap, overlap = _gap_and_overlap(geom, list(grid[grid.parent_code == code].geometry))
        assert gap < AREA_EPS and overlap < AREA_EPS, code
    if hasattr(shapely, "coverage_is_valid"):
        assert shapely.coverage_is_valid(np.array(list(grid.geometry)))
        assert shapely.coverage_is_valid(np.array(list(layers["community"].geometry)))


def _numbering_key(geom) -> tuple[int, float]:
    # row = latitude band of the representative point (north first), then longitude (west first)
    p = shapely.point_on_surface(geom)
    return (math.floor((BAND_NORTH - p.y) / BAND_HEIGHT), p.x)


def test_grid_numbering_west_east_north_south(layers):
    grid = layers["grid"]
    for parent, sub in grid.groupby("parent_code"):
        by_rule = [
            c for _, c in sorted(zip(map(_numbering_key, sub.geometry), sub.code, strict=True))
        ]
        assert by_rule == sorted(sub.code), parent
    comp = layers["compound"]
    for parent, sub in comp.groupby("parent_code"):
        by_rule = [
            c for _, c in sorted(zip(map(_numbering_key, sub.geometry), sub.code, strict=True))
        ]
        assert by_rule == sorted(sub.code), parent


def test_compounds_inside_one_community_and_apart(layers):
    comm = layers["community"].set_index("code")
    comp = layers["compound"]
    for code, parent, geom in zip(comp.code, comp.parent_code, comp.geometry, strict=True):
        # fully inside its community with a margin of about 5 m
        assert comm.loc[parent, "geometry"].buffer(-5e-5).contains(geom), code
    for a, b in itertools.combinations(comp.geometry, 2):
        assert not a.intersects(b)
    # compounds may straddle grid lines (real ones do), and some here do
    grid = layers["grid"]
    crossings = [sum(g.intersection(c).area > 0 for g in grid.geometry) for c in comp.geometry]
    assert max(crossings) >= 2


def test_chinese_names_round_trip(layers):
    """Names come back from the GeoPackage as the same UTF-8 text, by GDAL and by SQLite."""
    expected = {
        "street": {"江南街道"},
        "community": {"厦良社区", "点灯社区"},
        "compound": {"香槟城小区", "大修厂小区", "秀峰苑小区"},
    }
    con = sqlite3.connect(f"file:{GPKG}?mode=ro", uri=True)
    try:
        for layer, names in expected.items():
            assert names <= set(layers[layer].name)
            raw = {row[0] for row in con.execute(f'SELECT name FROM "{layer}"')}
            assert names <= raw
            assert raw == set(layers[layer].name)
    finally:
        con.close()
    assert "大修厂小区".encode() in GPKG.read_bytes()


# --- the cases ----------------------------------------------------------------------------


def test_cases_file_format():
    raw = CASES.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf"), "no BOM"
    text = raw.decode("utf-8")  # strict
    assert text.splitlines()[0] == ",".join(CASE_COLUMNS)
    assert "新兴南路" in text


def test_cases_values(cases):
    assert 300 <= len(cases) <= 500
    assert [c["ref"] for c in cases] == [f"DEMO-{i:04d}" for i in range(1, len(cases) + 1)]
    assert {c["category"] for c in cases} == CATEGORIES
    catalogue = {c["code"] for c in json.loads(CATALOGUE.read_text("utf-8"))["categories"]}
    assert CATEGORIES <= catalogue
    assert {c["source"] for c in cases} == SOURCES
    assert {c["status"] for c in cases} == STATUSES
    for c in cases:
        assert re.fullmatch(r"111\.\d{6}", c["lon"]) and re.fullmatch(r"24\.\d{6}", c["lat"])
        assert re.fullmatch(r"\d+\.\d{3}", c["days_ago"])
        assert c["title"] and c["description"] and len(c["title"]) <= 30
        assert re.search(r"[\u4e00-\u9fff]", c["title"] + c["description"])
        days = float(c["days_ago"])
        assert 0 <= days <= 120
        res, clo = c["resolved_days_ago"], c["closed_days_ago"]
        if c["status"] == "closed":
            assert res and clo
            assert 0 <= float(clo) <= float(res) <= days, c["ref"]
        elif c["status"] == "resolved":
            assert res and not clo
            assert 0 <= float(res) <= days, c["ref"]
        else:
            assert not res and not clo, c["ref"]
    days = [float(c["days_ago"]) for c in cases]
    assert sum(d <= 30 for d in days) > 0.15 * len(days)
    assert sum(d <= 90 for d in days) > 0.7 * len(days)
    # refs are in reporting order, oldest first
    assert days == sorted(days, reverse=True)


def test_status_mix(cases):
    n = len(cases)
    share = {s: sum(c["status"] == s for c in cases) / n for s in STATUSES}
    assert 0.18 <= sum(share[s] for s in OPEN) <= 0.32
    assert 0.10 <= share["resolved"] <= 0.20
    assert 0.45 <= share["closed"] <= 0.65
    assert 0.02 <= share["rejected"] <= 0.08


def test_cases_strictly_inside_street(layers, cases):
    street = _street(layers)
    for c, p in zip(cases, _case_points(cases), strict=True):
        assert street.contains(p), c["ref"]  # contains: interior, not on the edge


def test_case_clusters(layers, cases, make_demo):
    comp = layers["compound"]
    pts = _case_points(cases)

    def compound_of(p):
        hit = [n for n, g in zip(comp.name, comp.geometry, strict=True) if g.contains(p)]
        return hit[0] if hit else None

    where = [compound_of(p) for p in pts]
    old = set(comp.name[comp.old_compound == 1])
    cats = [c["category"] for c in cases]

    def share_in(category, names):
        mine = [w for w, c in zip(where, cats, strict=True) if c == category]
        return sum(w in names for w in mine) / len(mine)

    assert share_in("roof_leak", old) > 0.6
    assert share_in("neighbour_dispute", old) > 0.4
    assert share_in("public_toilet", {"大修厂小区"}) > 0
    assert share_in("access_road", {"秀峰苑小区"}) > 0.4
    assert sum(w is None for w in where) > 0.2 * len(cases)  # plenty outside compounds

    # road cases along 新兴南路, within about 30 m of the polyline the script defines
    road = gpd.GeoSeries(
        [make_demo.to_deg(LineString(make_demo.XINXING_SOUTH_ROAD_M))], crs="EPSG:4326"
    ).to_crs("EPSG:4547")[0]
    road_cases = [p for p, c in zip(pts, cases, strict=True) if c["title"].startswith("新兴南路")]
    assert len(road_cases) > 60
    dist = gpd.GeoSeries(road_cases, crs="EPSG:4326").to_crs("EPSG:4547").distance(road)
    assert dist.max() < 35
    for cat in ("road_damage", "street_light", "parking"):
        assert any(c["category"] == cat for c in cases if c["title"].startswith("新兴南路"))

    # a few grids have no case at all
    grid = layers["grid"]
    empty = [g for g in grid.geometry if not any(g.intersects(p) for p in pts)]
    assert 1 <= len(empty) <= 10


# --- regeneration -------------------------------------------------------------------------


def test_script_regenerates_shipped_files(tmp_path, layers, cases):
    """make_demo.py is deterministic and the shipped files are its current output."""
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    for name in LAYERS:
        new = gpd.read_file(tmp_path / "jiangnan.gpkg", layer=name, engine="pyogrio")
        old = layers[name]
        assert list(new.columns) == list(old.columns), name
        assert new.drop(columns="geometry").equals(old.drop(columns="geometry")), name
        same = shapely.equals_exact(
            shapely.normalize(np.array(list(new.geometry))),
            shapely.normalize(np.array(list(old.geometry))),
            tolerance=0.0,
        )
        assert same.all(), name
    with open(tmp_path / "demo_cases.csv", encoding="utf-8", newline="") as fh:
        assert list(csv.DictReader(fh)) == cases
