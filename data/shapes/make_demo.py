#!/usr/bin/env python
"""Make the demo data of Jiangnan Street (江南街道), Babu District (八步区), Hezhou (贺州市).

ILLUSTRATIVE, NOT SURVEYED. The street sits roughly where the real one is (south-east of
the Hezhou city centre, south of the river), but every boundary, compound, road and case
below is invented. See README.md beside this file.

Writes, into the folder given by ``--out`` (default: this script's folder):

* ``jiangnan.gpkg``: EPSG:4326, layers ``street``, ``community``, ``compound``, ``grid``;
* ``demo_cases.csv``: about 400 geotagged demo cases (UTF-8, header row).

The output depends on nothing but this file: one seeded random generator consumed in a fixed
order, no clock, no dict/set iteration order. Run it twice and you get the same features.

    .venv/bin/python data/shapes/make_demo.py
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import shapely
from shapely import affinity
from shapely.geometry import LineString, MultiPoint, Point, Polygon

HERE = Path(__file__).resolve().parent
SEED = 451102003

# --- the local metre frame --------------------------------------------------------------
# Shapes are designed in metres in a local frame whose origin is (LON0, LAT0) and mapped to
# degrees by a plain affine scaling (good to well under 1 % over 5 km at this latitude).
LON0, LAT0 = 111.55, 24.38
M_PER_DEG_LON = 101_435.0  # length of 1 degree of longitude at 24.4 N
M_PER_DEG_LAT = 110_764.0  # length of 1 degree of latitude at 24.4 N
GRID_SIZE = 1e-7  # every stored vertex lies on this grid (7 decimals)

COUNTY_CODE = "451102"  # 八步区 (GB/T 2260)
STREET_CODE = COUNTY_CODE + "003"
STREET_NAME = "江南街道"

# Grid numbering: rows are latitude bands of height BAND_HEIGHT counted southward from
# BAND_NORTH; the seed lattice of the grids has one row per band. Inside a community the grids
# are sorted by (band of their representative point, longitude of it) and numbered 001, 002...
BAND_NORTH = 24.4190
BAND_HEIGHT = 0.0048  # degrees of latitude, about 532 m
LATTICE_DX_M = 560.0  # spacing of the grid seed lattice along a row, metres

# --- the communities (code suffix, name, seed of its Voronoi cell in the metre frame) ----------
COMMUNITIES = [
    ("001", "厦良社区", (850.0, 2950.0)),
    ("002", "点灯社区", (3900.0, 1050.0)),
    ("003", "江南社区", (2450.0, 3050.0)),
    ("004", "新兴社区", (1700.0, 1050.0)),
    ("005", "灵峰社区", (4150.0, 2950.0)),
]

# --- the compounds: community suffix -> [(name, built_year, size class, max metres to road)] ---
# old_compound = 1 when built before 2000. Size classes: S small old estate, M, L large estate.
COMPOUNDS = {
    "001": [
        ("香槟城小区", 2012, "L", None),
        ("大修厂小区", 1988, "S", None),
        ("厦良新村小区", 1993, "S", None),
        ("江南名都小区", 2009, "M", None),
        ("瑶韵花园", 2015, "M", None),
        ("滨江苑小区", 2006, "M", None),
    ],
    "002": [
        ("秀峰苑小区", 2001, "M", None),
        ("粮食局宿舍小区", 1985, "S", None),
        ("点灯新村小区", 1991, "S", None),
        ("城南雅苑", 2011, "M", None),
        ("桂花苑小区", 2004, "M", None),
        ("灯塔花园", 2016, "L", None),
    ],
    "003": [
        ("供电局宿舍小区", 1990, "S", None),
        ("江南小区", 1996, "S", None),
        ("锦绣江南花园", 2013, "L", None),
        ("碧桂苑小区", 2008, "M", None),
        ("翠竹苑小区", 2003, "M", None),
    ],
    "004": [
        ("农机厂宿舍小区", 1987, "S", 350.0),
        ("新兴小区", 1997, "S", None),
        ("金色家园小区", 2010, "M", None),
        ("阳光花园", 2007, "M", None),
        ("御景苑小区", 2018, "L", None),
    ],
    "005": [
        ("灵峰花园", 2005, "M", None),
        ("建安小区", 1994, "S", None),
        ("龙湖雅苑", 2014, "M", None),
        ("盛世华庭小区", 2017, "L", None),
        ("紫荆苑小区", 2002, "M", None),
    ],
}
# (width range, depth range, households range) per size class
SIZE_CLASSES = {
    "S": ((110.0, 200.0), (90.0, 170.0), (60, 260)),
    "M": ((170.0, 290.0), (140.0, 240.0), (240, 620)),
    "L": ((270.0, 380.0), (220.0, 320.0), (600, 980)),
}
COMPOUND_EDGE_MARGIN_M = 25.0  # a compound keeps this far inside its community
COMPOUND_GAP_M = 35.0  # and this far from every other compound
COMPOUND_ROAD_GAP_M = 45.0  # and this far from the centre line of 新兴南路

# --- 新兴南路 (Xinxing South Road), metre frame, north to south; runs past the street edges ---
XINXING_SOUTH_ROAD_M = [
    (2330.0, 4400.0),
    (2360.0, 3500.0),
    (2470.0, 2650.0),
    (2420.0, 1800.0),
    (2540.0, 950.0),
    (2620.0, -100.0),
]
ROAD_NAME = "新兴南路"

# --- cases ------------------------------------------------------------------------------------
CATEGORIES = [
    "roof_leak",
    "road_damage",
    "street_light",
    "drainage",
    "sanitation",
    "parking",
    "public_toilet",
    "access_road",
    "neighbour_dispute",
]
SOURCES = ["patrol", "resident", "hotline", "meeting"]
STATUSES = ["reported", "accepted", "in_progress", "resolved", "closed", "rejected"]
N_QUIET_GRIDS = 4  # grids left without any case


def to_deg(geom):
    """Metre frame -> lon/lat degrees."""
    return shapely.transform(
        geom, lambda c: c / np.array([M_PER_DEG_LON, M_PER_DEG_LAT]) + np.array([LON0, LAT0])
    )


def to_m(geom):
    """lon/lat degrees -> metre frame."""
    return shapely.transform(
        geom, lambda c: (c - np.array([LON0, LAT0])) * np.array([M_PER_DEG_LON, M_PER_DEG_LAT])
    )


def band_of(lat: float) -> int:
    """The grid-numbering row (latitude band) of a latitude; 0 is the northernmost."""
    return math.floor((BAND_NORTH - lat) / BAND_HEIGHT)


def numbering_key(geom) -> tuple[int, float]:
    """Sort key for numbering inside a community: north to south by band, then west to east."""
    p = shapely.point_on_surface(geom)
    return (band_of(p.y), p.x)


# ============================================================================================
# Boundaries
# ============================================================================================


def street_outline_m() -> tuple[Polygon, LineString]:
    """The street outline in metres and its river-side (north) edge."""
    north = []
    for x in np.arange(250.0, 4951.0, 100.0):
        y = (
            3880.0
            + 170.0 * math.sin(2 * math.pi * x / 2700.0 + 0.6)
            + 70.0 * math.sin(2 * math.pi * x / 950.0 + 1.3)
        )
        north.append((float(x), round(y, 1)))
    east = [(5010.0, 3150.0), (4820.0, 2480.0), (4930.0, 1720.0), (4720.0, 930.0), (4560.0, 260.0)]
    south = [(3650.0, 190.0), (2920.0, 430.0), (2050.0, 300.0), (1230.0, 520.0), (520.0, 360.0)]
    west = [(330.0, 1180.0), (440.0, 2080.0), (210.0, 2900.0)]
    poly = Polygon(north + east + south + west)
    assert poly.is_valid, "street outline invalid"
    return poly, LineString(north)


def voronoi_pieces(region: Polygon, seeds: list[tuple[float, float]]) -> list:
    """Split ``region`` by the Voronoi cells of ``seeds``; piece i belongs to seed i."""
    cells = shapely.get_parts(
        shapely.voronoi_polygons(MultiPoint(seeds), extend_to=region.buffer(2000.0))
    )
    pieces = []
    for sx, sy in seeds:
        pt = Point(sx, sy)
        cell = [c for c in cells if c.intersects(pt)]
        assert len(cell) == 1
        pieces.append(region.intersection(cell[0]))
    return pieces


def shared_length(a, b) -> float:
    return a.boundary.intersection(b.boundary).length


def tidy_cells(cells: list, min_share: float) -> list:
    """Make every cell one polygon and no cell tiny, by merging into the best neighbour."""
    cells = list(cells)
    # 1. stray parts of multipolygons go to the neighbour they share most boundary with
    changed = True
    while changed:
        changed = False
        for i, c in enumerate(cells):
            if c.geom_type == "Polygon":
                continue
            parts = sorted(shapely.get_parts(c), key=lambda p: -p.area)
            cells[i] = parts[0]
            for part in parts[1:]:
                j = max(
                    (k for k in range(len(cells)) if k != i),
                    key=lambda k: shared_length(part, cells[k]),
                )
                cells[j] = shapely.union(cells[j], part)
            changed = True
            break
    # 2. tiny cells merge into their best neighbour
    while True:
        areas = [c.area for c in cells]
        median = float(np.median(areas))
        small = [i for i, a in enumerate(areas) if a < min_share * median]
        if not small:
            break
        i = min(small, key=lambda k: areas[k])
        j = max(
            (k for k in range(len(cells)) if k != i),
            key=lambda k: shared_length(cells[i], cells[k]),
        )
        merged = shapely.union(cells[j], cells[i])
        cells[j] = merged
        del cells[i]
    for c in cells:
        assert c.geom_type == "Polygon", c.geom_type
    return cells


def snap_coverage(polys_deg: list) -> list:
    """Node a polygon coverage and snap-round it to GRID_SIZE, keeping shared edges shared.

    The boundaries of all polygons are unioned with snap-rounding (so every vertex of one
    polygon that lies on an edge of its neighbour becomes a vertex of both), polygonized,
    and each face is given back to the polygon it overlaps most.
    """
    lines = shapely.union_all([p.boundary for p in polys_deg], grid_size=GRID_SIZE)
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(lines)))
    owner: list[list] = [[] for _ in polys_deg]
    tree = shapely.STRtree(polys_deg)
    for face in faces:
        cands = sorted(int(k) for k in tree.query(face))
        best = max(cands, key=lambda k: (face.intersection(polys_deg[k]).area, -k))
        owner[best].append(face)
    out = []
    for faces_of in owner:
        assert faces_of, "a polygon lost all its faces while snapping"
        out.append(shapely.union_all(faces_of, grid_size=GRID_SIZE))
    return out


@dataclass
class Boundaries:
    street: object
    communities: list  # [(code, name, geom)]
    grids: list  # [(code, name, parent_code, geom)]
    river_edge_m: LineString


def make_boundaries(rng: np.random.Generator) -> Boundaries:
    street_m, river_edge_m = street_outline_m()
    comm_m = voronoi_pieces(street_m, [c[2] for c in COMMUNITIES])
    for (_, name, _), g in zip(COMMUNITIES, comm_m, strict=True):
        assert g.geom_type == "Polygon", (name, g.geom_type)

    # seed lattice: one row per numbering band, offset every other row, jittered
    minx, miny, maxx, maxy = street_m.bounds
    band_h_m = BAND_HEIGHT * M_PER_DEG_LAT
    lattice = []
    k = 0
    while True:
        y = (BAND_NORTH - (k + 0.5) * BAND_HEIGHT - LAT0) * M_PER_DEG_LAT
        if y < miny - band_h_m:
            break
        for i in range(int(maxx // LATTICE_DX_M) + 2):
            x = (i + 0.5 * (k % 2)) * LATTICE_DX_M
            jx = rng.uniform(-0.22, 0.22) * LATTICE_DX_M
            jy = rng.uniform(-0.2, 0.2) * band_h_m
            lattice.append((x + jx, y + jy))
        k += 1

    grid_cells_m = []  # [(community index, geom)]
    for ci, cg in enumerate(comm_m):
        inner = cg.buffer(-80.0)
        seeds = [p for p in lattice if inner.contains(Point(p))]
        pieces = voronoi_pieces(cg, seeds)
        pieces = tidy_cells(pieces, min_share=0.35)
        grid_cells_m.extend((ci, p) for p in pieces)

    snapped = snap_coverage([to_deg(g) for _, g in grid_cells_m])
    communities = []
    grids = []
    for ci, (suffix, cname, _) in enumerate(COMMUNITIES):
        ccode = STREET_CODE + suffix
        mine = [g for (cj, _), g in zip(grid_cells_m, snapped, strict=True) if cj == ci]
        cgeom = shapely.union_all(mine, grid_size=GRID_SIZE)
        communities.append((ccode, cname, cgeom))
        for seq, g in enumerate(sorted(mine, key=numbering_key), start=1):
            grids.append((f"{ccode}{seq:03d}", f"{cname}第{seq}网格", ccode, g))
    street = shapely.union_all([c[2] for c in communities], grid_size=GRID_SIZE)
    return Boundaries(street, communities, grids, river_edge_m)


def compound_shape(rng: np.random.Generator, size: str) -> Polygon:
    """A compound footprint centred on (0, 0): rectangle, chamfered rectangle or L-shape."""
    (w0, w1), (h0, h1), _ = SIZE_CLASSES[size]
    w = rng.uniform(w0, w1)
    h = rng.uniform(h0, h1)
    kind = int(rng.integers(0, 3))
    a, b = w / 2, h / 2
    if kind == 0:
        pts = [(-a, -b), (a, -b), (a, b), (-a, b)]
    elif kind == 1:
        c = rng.uniform(0.2, 0.4) * min(w, h)
        pts = [(-a, -b), (a - c, -b), (a, -b + c), (a, b), (-a, b)]
    else:
        cx = rng.uniform(0.3, 0.5) * w
        cy = rng.uniform(0.3, 0.5) * h
        pts = [(-a, -b), (a, -b), (a, b - cy), (a - cx, b - cy), (a - cx, b), (-a, b)]
    poly = Polygon(pts)
    return affinity.rotate(poly, rng.uniform(-25.0, 25.0), origin=(0, 0))


def make_compounds(rng: np.random.Generator, bnd: Boundaries, road_m: LineString) -> list:
    """27 compounds: [(code, name, parent_code, households, built_year, old, geom)]."""
    placed_m: list = []
    rows = []
    for ci, (suffix, _cname, _) in enumerate(COMMUNITIES):
        ccode = STREET_CODE + suffix
        comm_m = to_m(bnd.communities[ci][2])
        inner = comm_m.buffer(-COMPOUND_EDGE_MARGIN_M)
        minx, miny, maxx, maxy = comm_m.bounds
        mine = []
        for name, year, size, near_road in COMPOUNDS[suffix]:
            for _attempt in range(5000):
                shape = compound_shape(rng, size)
                x = rng.uniform(minx, maxx)
                y = rng.uniform(miny, maxy)
                poly = affinity.translate(shape, x, y)
                if not inner.contains(poly):
                    continue
                d_road = poly.distance(road_m)
                if d_road < COMPOUND_ROAD_GAP_M:
                    continue
                if near_road is not None and d_road > near_road:
                    continue
                if any(poly.distance(o) < COMPOUND_GAP_M for o in placed_m):
                    continue
                break
            else:
                raise RuntimeError(f"could not place {name}")
            placed_m.append(poly)
            hh0, hh1 = SIZE_CLASSES[size][2]
            households = int(rng.integers(hh0, hh1 + 1))
            geom = shapely.set_precision(to_deg(poly), GRID_SIZE)
            mine.append((name, households, year, geom))
        mine.sort(key=lambda r: numbering_key(r[3]))
        for seq, (name, households, year, geom) in enumerate(mine, start=1):
            rows.append(
                (f"{ccode}C{seq:02d}", name, ccode, households, year, int(year < 2000), geom)
            )
    return rows


# ============================================================================================
# Cases
# ============================================================================================

# (title, description) templates by category and by where the case is:
#   compound: inside a compound ({c} compound, {b} building, {u} unit, {f} floor)
#   road: within 40 m of 新兴南路 ({r} road, {n} house number)
#   area: elsewhere in a community ({m} community)
#   river: (drainage only) elsewhere, within 350 m of the river-side edge of the street
TEMPLATES = {
    "roof_leak": {
        "compound": [
            (
                "{c}{b}栋顶楼漏水",
                "{c}{b}栋{u}单元顶楼住户反映，连日下雨后天花板渗水、墙皮脱落，请求维修屋面防水。",
            ),
            ("{c}{b}栋屋顶渗水", "{c}{b}栋楼顶防水层老化开裂，{f}楼两户卧室漏水，住户用盆接水。"),
            (
                "{c}{b}栋楼顶防水层破损",
                "网格员巡查发现{c}{b}栋楼顶防水卷材起翘破损，雨天渗漏到顶楼住户家中。",
            ),
        ],
        "road": [
            (
                "{r}{n}号临街楼顶漏水",
                "{r}{n}号临街商住楼顶楼住户反映屋顶漏水，需协调产权单位维修。",
            ),
        ],
        "area": [
            (
                "{m}居民自建房屋顶漏水",
                "{m}一处居民自建房屋顶瓦面破损，雨天漏水，住户为独居老人，请求帮助维修。",
            ),
        ],
    },
    "road_damage": {
        "compound": [
            ("{c}内道路坑洼", "{c}{b}栋前小区道路破损，坑洼积水，老人出行容易摔倒。"),
            ("{c}门口便道破损", "{c}门口人行便道地砖松动破损，雨天踩踏溅水。"),
        ],
        "road": [
            ("{r}路面坑洼", "{r}{n}号附近路面出现坑洼约{a}平方米，雨天积水，电动车通行不便。"),
            ("{r}人行道破损", "{r}{n}号门前人行道地砖破碎松动约{a}平方米，行人易绊倒。"),
            ("{r}人行道地砖松动", "居民反映{r}{n}号附近人行道地砖松动，下雨踩踏溅水。"),
        ],
        "area": [
            ("{m}背街小巷路面坑洼", "{m}一条背街小巷路面坑洼不平，约{a}平方米，雨后积水难行。"),
        ],
    },
    "street_light": {
        "compound": [
            ("{c}{b}栋旁路灯不亮", "{c}{b}栋旁路灯已连续{k}晚不亮，夜间居民出行不便。"),
            ("{c}内路灯损坏", "{c}内主干道{k}盏路灯不亮，夜间照明不足存在安全隐患。"),
        ],
        "road": [
            ("{r}路灯不亮", "{r}{n}号附近路灯连续{k}晚不亮，夜间行人出行不安全。"),
            ("{r}{n}号附近路灯损坏", "网格员夜间巡查发现{r}{n}号附近{k}盏路灯不亮，需报修。"),
        ],
        "area": [
            ("{m}巷道路灯不亮", "{m}一处巷道路灯不亮，居民夜间回家需打手电。"),
        ],
    },
    "drainage": {
        "compound": [
            ("{c}{b}栋前下水道堵塞", "{c}{b}栋前下水道堵塞，污水外溢，气味难闻。"),
            ("{c}雨后积水", "{c}{b}栋附近地势低洼，每逢大雨积水没过脚踝。"),
        ],
        "road": [
            ("{r}雨后积水", "{r}{n}号附近雨水口堵塞，雨后路面积水，车辆通行溅水。"),
        ],
        "area": [
            ("{m}排水沟堵塞", "{m}一处排水沟被垃圾和淤泥堵塞，雨天排水不畅。"),
        ],
        "river": [
            ("{m}沿江路段雨后积水", "{m}沿江低洼路段雨后积水，居民出行困难。"),
            ("{m}沿江排水口倒灌", "{m}沿江排水口汛期倒灌，低洼处积水，请求疏通并加装拍门。"),
        ],
    },
    "sanitation": {
        "compound": [
            ("{c}垃圾清运不及时", "{c}垃圾桶满溢，垃圾清运不及时，蚊蝇滋生。"),
            ("{c}{b}栋楼道堆放杂物", "{c}{b}栋{u}单元楼道堆放杂物，影响通行且有消防隐患。"),
        ],
        "road": [
            ("{r}路边垃圾堆积", "{r}{n}号附近路边有垃圾堆积，影响市容。"),
        ],
        "area": [
            ("{m}空地垃圾堆积", "{m}一处空地被倾倒建筑垃圾和生活垃圾，需清理。"),
        ],
    },
    "parking": {
        "compound": [
            ("{c}车辆乱停占用消防通道", "{c}{b}栋前车辆乱停放，占用消防通道。"),
            ("{c}停车位不足", "{c}居民反映小区停车位不足，车辆停放无序。"),
        ],
        "road": [
            ("{r}占道停车", "{r}{n}号附近车辆占用人行道停放，行人只能走机动车道。"),
            ("{r}非机动车乱停放", "{r}{n}号附近电动车、自行车乱停乱放，堵塞人行道。"),
            ("{r}停车位不足", "{r}沿街商户和居民反映停车位不足，建议施划停车位。"),
        ],
        "area": [
            ("{m}路口车辆乱停", "{m}一处路口车辆乱停放，影响通行。"),
        ],
    },
    "public_toilet": {
        "compound": [
            ("{c}公厕设施损坏", "{c}公共厕所冲水设施损坏、墙面破旧，居民希望改造。"),
            ("{c}公共厕所异味大", "{c}公共厕所无人保洁，异味大，影响周边住户。"),
        ],
        "road": [
            ("{r}公厕冲水故障", "{r}{n}号附近公厕冲水设备故障，需维修。"),
        ],
        "area": [
            ("{m}公厕无人保洁", "{m}一处公厕无人保洁，卫生状况差。"),
        ],
    },
    "access_road": {
        "compound": [
            ("{c}出入道路破损", "{c}唯一出入道路破损严重，雨天泥泞，居民出行困难。"),
            ("{c}出入通道狭窄", "{c}出入通道狭窄，车辆无法会车，救护车、消防车难以进入。"),
            ("{c}缺少出入道路", "{c}居民在联席会议上提出修建小区出入道路的需求。"),
        ],
        "road": [
            ("{r}{n}号巷口通行不便", "{r}{n}号旁巷口路面狭窄破损，居民进出不便。"),
        ],
        "area": [
            ("{m}巷道通行不便", "{m}一条巷道路面破损狭窄，电动车和行人通行不便。"),
        ],
    },
    "neighbour_dispute": {
        "compound": [
            (
                "{c}{b}栋楼上楼下漏水纠纷",
                "{c}{b}栋{f}楼住户与楼下住户因卫生间渗水发生争执，请网格员协调调解。",
            ),
            ("{c}邻里噪音纠纷", "{c}{b}栋住户反映楼上夜间噪音扰民，双方多次争吵。"),
            ("{c}{b}栋楼道占用纠纷", "{c}{b}栋{u}单元住户在楼道堆放杂物，邻居不满引发矛盾。"),
            ("{c}宠物扰民纠纷", "{c}居民反映邻居饲养犬只夜间吠叫扰民，引发邻里矛盾。"),
        ],
        "road": [
            ("{r}{n}号商户与居民纠纷", "{r}{n}号沿街商户占道经营、噪音扰民，与楼上居民发生纠纷。"),
        ],
        "area": [
            ("{m}邻里排水纠纷", "{m}两户居民因院落排水问题发生争执，请社区调解。"),
        ],
    },
}

# per category: number of cases, typical calendar days to resolve, and source weights
# (patrol, resident, hotline, meeting)
CASE_PLAN = {
    "roof_leak": (58, 7.0, (0.15, 0.55, 0.15, 0.15)),
    "road_damage": (58, 14.0, (0.50, 0.20, 0.20, 0.10)),
    "street_light": (52, 4.0, (0.55, 0.20, 0.20, 0.05)),
    "drainage": (50, 2.0, (0.35, 0.35, 0.25, 0.05)),
    "sanitation": (66, 1.0, (0.50, 0.30, 0.15, 0.05)),
    "parking": (46, 5.0, (0.45, 0.25, 0.20, 0.10)),
    "public_toilet": (11, 14.0, (0.25, 0.30, 0.10, 0.35)),
    "access_road": (17, 30.0, (0.10, 0.30, 0.10, 0.50)),
    "neighbour_dispute": (42, 10.0, (0.15, 0.50, 0.15, 0.20)),
}


@dataclass
class Place:
    compounds: list  # compound rows (see make_compounds)
    comp_m: list  # compound geoms in metres, same order
    old_idx: list  # indices of old compounds
    street_inner_m: object  # where case points may lie
    quiet_m: object  # union of the quiet grids (metres, slightly enlarged)
    road_m: LineString
    river_edge_m: LineString


def sample_in(rng, region, accept, tries=10000) -> Point:
    minx, miny, maxx, maxy = region.bounds
    for _ in range(tries):
        p = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
        if region.contains(p) and accept(p):
            return p
    raise RuntimeError("sampling failed")


def sample_case_point(rng, pl: Place, where: str, compound_idx: int | None = None) -> Point:
    def ok(p: Point) -> bool:
        return pl.street_inner_m.contains(p) and not pl.quiet_m.contains(p)

    if where == "compound":
        region = pl.comp_m[compound_idx].buffer(-8.0)
        return sample_in(rng, region, ok)
    if where == "road":
        road_in = pl.road_m.intersection(pl.street_inner_m.buffer(-30.0))
        for _ in range(10000):
            s = rng.uniform(0.0, road_in.length)
            p0 = road_in.interpolate(max(s - 1.0, 0.0))
            p1 = road_in.interpolate(min(s + 1.0, road_in.length))
            dx, dy = p1.x - p0.x, p1.y - p0.y
            norm = math.hypot(dx, dy)
            side = 1.0 if rng.random() < 0.5 else -1.0
            off = side * rng.uniform(4.0, 25.0)
            c = road_in.interpolate(s)
            p = Point(c.x - dy / norm * off, c.y + dx / norm * off)
            if ok(p) and p.distance(pl.road_m) <= 26.0:
                return p
        raise RuntimeError("road sampling failed")
    if where == "river":
        band = pl.river_edge_m.buffer(350.0).intersection(pl.street_inner_m)
        return sample_in(rng, band, ok)
    return sample_in(rng, pl.street_inner_m, ok)


def pick_compound(rng, pl: Place, pool: list[int]) -> int:
    """A compound from ``pool`` (mostly outside the quiet grids), weighted by households."""
    pool = [i for i in pool if pl.comp_m[i].difference(pl.quiet_m).area > 0.3 * pl.comp_m[i].area]
    w = np.array([pl.compounds[i][3] for i in pool], dtype=float)
    return pool[int(rng.choice(len(pool), p=w / w.sum()))]


def case_locations(rng, pl: Place, cat: str, n: int, by_name: dict) -> list[Point]:
    """Where the ``n`` cases of one category are (metre frame)."""
    all_idx = list(range(len(pl.compounds)))
    new_idx = [i for i in all_idx if i not in pl.old_idx]
    pts = []
    for j in range(n):
        u = rng.random()
        if cat == "roof_leak":
            pool = pl.old_idx if u < 0.8 else new_idx
            pts.append(sample_case_point(rng, pl, "compound", pick_compound(rng, pl, pool)))
        elif cat == "neighbour_dispute":
            if u < 0.65:
                pts.append(
                    sample_case_point(rng, pl, "compound", pick_compound(rng, pl, pl.old_idx))
                )
            elif u < 0.9:
                pts.append(sample_case_point(rng, pl, "compound", pick_compound(rng, pl, new_idx)))
            else:
                pts.append(sample_case_point(rng, pl, "anywhere"))
        elif cat in ("road_damage", "street_light", "parking"):
            share = 0.7 if cat == "road_damage" else 0.75
            if u < share:
                pts.append(sample_case_point(rng, pl, "road"))
            elif u < share + 0.12 or cat == "road_damage":
                pts.append(sample_case_point(rng, pl, "anywhere"))
            else:
                pts.append(sample_case_point(rng, pl, "compound", pick_compound(rng, pl, all_idx)))
        elif cat == "drainage":
            if u < 0.35:
                pts.append(
                    sample_case_point(rng, pl, "compound", pick_compound(rng, pl, pl.old_idx))
                )
            elif u < 0.65:
                pts.append(sample_case_point(rng, pl, "river"))
            else:
                pts.append(sample_case_point(rng, pl, "anywhere"))
        elif cat == "sanitation":
            if u < 0.5:
                pts.append(sample_case_point(rng, pl, "compound", pick_compound(rng, pl, all_idx)))
            else:
                pts.append(sample_case_point(rng, pl, "anywhere"))
        elif cat == "public_toilet":
            if j < 3:  # the rebuilt toilet of the Overhaul-Plant compound
                pts.append(sample_case_point(rng, pl, "compound", by_name["大修厂小区"]))
            elif u < 0.4:
                pts.append(sample_case_point(rng, pl, "road"))
            else:
                pts.append(sample_case_point(rng, pl, "anywhere"))
        elif cat == "access_road":
            if j < 11:  # the access road built for Xiufeng Garden
                pts.append(sample_case_point(rng, pl, "compound", by_name["秀峰苑小区"]))
            else:
                pts.append(
                    sample_case_point(rng, pl, "compound", pick_compound(rng, pl, pl.old_idx))
                )
        else:
            raise ValueError(cat)
    return pts


def describe(rng, cat: str, kind: str, ctx: dict) -> tuple[str, str]:
    options = TEMPLATES[cat][kind]
    title, desc = options[int(rng.integers(0, len(options)))]
    return title.format(**ctx), desc.format(**ctx)


def make_cases(rng, bnd: Boundaries, compounds: list, road_m: LineString) -> list[dict]:
    comp_deg = [r[6] for r in compounds]
    comp_m = [to_m(g) for g in comp_deg]
    old_idx = [i for i, r in enumerate(compounds) if r[5] == 1]
    by_name = {r[1]: i for i, r in enumerate(compounds)}

    # quiet grids: away from the road, old compounds and the two named trouble spots
    avoid = [road_m.buffer(80.0)] + [comp_m[i] for i in old_idx]
    avoid += [comp_m[by_name["大修厂小区"]], comp_m[by_name["秀峰苑小区"]]]
    avoid_deg = to_deg(shapely.union_all(avoid))
    eligible = [g for g in bnd.grids if not g[3].intersects(avoid_deg)]
    eligible.sort(key=lambda g: g[0])
    pick = sorted(int(i) for i in rng.choice(len(eligible), N_QUIET_GRIDS, replace=False))
    quiet = [eligible[i] for i in pick]
    quiet_m = to_m(shapely.union_all([g[3] for g in quiet])).buffer(5.0)

    pl = Place(
        compounds=compounds,
        comp_m=comp_m,
        old_idx=old_idx,
        street_inner_m=to_m(bnd.street).buffer(-10.0),
        quiet_m=quiet_m,
        road_m=road_m,
        river_edge_m=bnd.river_edge_m,
    )
    comm_deg = [(name, g) for _, name, g in bnd.communities]

    raw = []
    for cat in CATEGORIES:
        n, typical_days, src_w = CASE_PLAN[cat]
        for p_m in case_locations(rng, pl, cat, n, by_name):
            p = to_deg(p_m)
            lon, lat = round(p.x, 6), round(p.y, 6)
            raw.append((cat, lon, lat, typical_days, src_w))

    cases = []
    for cat, lon, lat, typical_days, src_w in raw:
        pt = Point(lon, lat)
        assert bnd.street.contains(pt)
        comp = [i for i, g in enumerate(comp_deg) if g.contains(pt)]
        p_m = to_m(pt)
        d_road = p_m.distance(road_m)
        community = next(name for name, g in comm_deg if g.covers(pt))
        along = road_m.project(p_m)
        c0, c1 = road_m.interpolate(along), road_m.interpolate(along + 1.0)
        cross = (c1.x - c0.x) * (p_m.y - c0.y) - (c1.y - c0.y) * (p_m.x - c0.x)
        side = 1 if cross > 0 else 0
        ctx = {
            "c": compounds[comp[0]][1] if comp else "",
            "b": int(rng.integers(1, 13)),
            "u": int(rng.integers(1, 5)),
            "f": int(rng.integers(2, 8)),
            "k": int(rng.integers(2, 6)),
            "a": int(rng.integers(2, 16)),
            "r": ROAD_NAME,
            "n": 2 * int(along // 30.0) + 1 + side,  # odd on one side, even on the other
            "m": community,
        }
        kind = "compound" if comp else ("road" if d_road <= 40.0 else "area")
        if kind == "area" and "river" in TEMPLATES[cat] and p_m.distance(pl.river_edge_m) < 350:
            kind = "river"
        title, desc = describe(rng, cat, kind, ctx)
        source = SOURCES[int(rng.choice(4, p=np.array(src_w)))]
        u = rng.random()
        days = float(rng.uniform(0.0, 90.0)) if u < 0.85 else float(rng.uniform(90.0, 120.0))
        cases.append(
            {
                "category": cat,
                "title": title,
                "description": desc,
                "lon": lon,
                "lat": lat,
                "source": source,
                "days": days,
                "typical": typical_days,
                "noise": float(rng.lognormal(0.0, 0.6)),
                "handle": float(rng.lognormal(0.0, 0.6)),
                "check": float(rng.uniform(0.3, 4.0)),
                "frac": float(rng.uniform(0.1, 0.9)),
            }
        )

    # statuses: a fixed mix, open ones mostly among the recent cases
    n = len(cases)
    n_rej = round(0.05 * n)
    n_open = round(0.25 * n)
    n_res = round(0.15 * n)
    rejected = {int(i) for i in rng.choice(n, n_rej, replace=False)}
    rest = [i for i in range(n) if i not in rejected]
    rest.sort(key=lambda i: (cases[i]["days"] * cases[i]["noise"], i))
    open_ = rest[:n_open]
    resolved = rest[n_open : n_open + n_res]
    for i in range(n):
        cases[i]["status"] = "closed"
    for i in sorted(rejected):
        cases[i]["status"] = "rejected"
    for i in resolved:
        cases[i]["status"] = "resolved"
    n_rep = round(0.35 * n_open)
    n_acc = round(0.30 * n_open)
    for rank, i in enumerate(open_):
        cases[i]["status"] = (
            "reported" if rank < n_rep else "accepted" if rank < n_rep + n_acc else "in_progress"
        )

    out = []
    for c in cases:
        days = round(c["days"], 3)
        res_ago = clo_ago = None
        if c["status"] in ("resolved", "closed"):
            handle = min(c["typical"] * c["handle"], days * c["frac"])
            res_ago = round(days - handle, 3)
            if c["status"] == "closed":
                check = min(c["check"], res_ago * c["frac"])
                clo_ago = round(res_ago - check, 3)
        out.append(
            {
                "category": c["category"],
                "title": c["title"],
                "description": c["description"],
                "lon": c["lon"],
                "lat": c["lat"],
                "source": c["source"],
                "status": c["status"],
                "days_ago": days,
                "resolved_days_ago": res_ago,
                "closed_days_ago": clo_ago,
            }
        )
    # numbered in the order they were reported (oldest first)
    out.sort(key=lambda r: (-r["days_ago"], r["category"], r["lon"], r["lat"], r["title"]))
    for k, r in enumerate(out, start=1):
        r["ref"] = f"DEMO-{k:04d}"
    return out


# ============================================================================================
# Checks and output
# ============================================================================================


def check_coverage(parent, children, what: str) -> None:
    u = shapely.union_all(children)
    gap = u.symmetric_difference(parent).area
    overlap = sum(
        children[i].intersection(children[j]).area
        for i in range(len(children))
        for j in range(i + 1, len(children))
    )
    assert gap < 1e-12, f"{what}: union differs from parent by {gap}"
    assert overlap < 1e-12, f"{what}: children overlap by {overlap}"


def check_all(bnd: Boundaries, compounds: list) -> None:
    geoms = [bnd.street] + [c[2] for c in bnd.communities] + [g[3] for g in bnd.grids]
    geoms += [c[6] for c in compounds]
    for g in geoms:
        assert g.is_valid and not g.is_empty and g.geom_type in ("Polygon", "MultiPolygon")
        xy = shapely.get_coordinates(g)
        assert np.array_equal(np.round(xy, 7), xy), "a vertex is off the 1e-7 grid"
    check_coverage(bnd.street, [c[2] for c in bnd.communities], "street")
    for ccode, name, cgeom in bnd.communities:
        mine = [g[3] for g in bnd.grids if g[2] == ccode]
        assert 5 <= len(mine) <= 15, (name, len(mine))
        check_coverage(cgeom, mine, name)
    for _code, name, parent, _hh, _y, _old, geom in compounds:
        cgeom = next(c[2] for c in bnd.communities if c[0] == parent)
        assert cgeom.buffer(-COMPOUND_EDGE_MARGIN_M / 2 / M_PER_DEG_LAT).contains(geom), name
    assert len(compounds) == 27


def write_outputs(out_dir: Path, bnd: Boundaries, compounds: list, cases: list[dict]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    gpkg = out_dir / "jiangnan.gpkg"
    if gpkg.exists():
        gpkg.unlink()
    # a fixed timestamp in gpkg_contents, so that reruns give the same bytes
    pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": "2024-01-01T00:00:00.000Z"})
    layers = {
        "street": gpd.GeoDataFrame(
            {"code": [STREET_CODE], "name": [STREET_NAME], "parent_code": [COUNTY_CODE]},
            geometry=[bnd.street],
            crs="EPSG:4326",
        ),
        "community": gpd.GeoDataFrame(
            {
                "code": [c[0] for c in bnd.communities],
                "name": [c[1] for c in bnd.communities],
                "parent_code": [STREET_CODE] * len(bnd.communities),
            },
            geometry=[c[2] for c in bnd.communities],
            crs="EPSG:4326",
        ),
        "compound": gpd.GeoDataFrame(
            {
                "code": [c[0] for c in compounds],
                "name": [c[1] for c in compounds],
                "parent_code": [c[2] for c in compounds],
                "households": np.array([c[3] for c in compounds], dtype="int64"),
                "built_year": np.array([c[4] for c in compounds], dtype="int64"),
                "old_compound": np.array([c[5] for c in compounds], dtype="int64"),
            },
            geometry=[c[6] for c in compounds],
            crs="EPSG:4326",
        ),
        "grid": gpd.GeoDataFrame(
            {
                "code": [g[0] for g in bnd.grids],
                "name": [g[1] for g in bnd.grids],
                "parent_code": [g[2] for g in bnd.grids],
                "households": np.array([g[4] for g in bnd.grids], dtype="int64"),
            },
            geometry=[g[3] for g in bnd.grids],
            crs="EPSG:4326",
        ),
    }
    for name, gdf in layers.items():
        gdf.to_file(gpkg, layer=name, driver="GPKG", engine="pyogrio")

    columns = [
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
    with open(out_dir / "demo_cases.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(columns)
        for r in cases:
            w.writerow(
                [
                    r["ref"],
                    r["category"],
                    r["title"],
                    r["description"],
                    f"{r['lon']:.6f}",
                    f"{r['lat']:.6f}",
                    r["source"],
                    r["status"],
                    f"{r['days_ago']:.3f}",
                    "" if r["resolved_days_ago"] is None else f"{r['resolved_days_ago']:.3f}",
                    "" if r["closed_days_ago"] is None else f"{r['closed_days_ago']:.3f}",
                ]
            )


def build():
    """Everything, in memory: (boundaries, compounds, cases)."""
    rng = np.random.default_rng(SEED)
    bnd = make_boundaries(rng)
    # households per grid, drawn in grid-code order
    bnd.grids = [(c, n, p, g, int(rng.integers(150, 601))) for c, n, p, g in bnd.grids]
    road_m = LineString(XINXING_SOUTH_ROAD_M)
    compounds = make_compounds(rng, bnd, road_m)
    check_all(bnd, compounds)
    cases = make_cases(rng, bnd, compounds, road_m)
    return bnd, compounds, cases


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: %(default)s)")
    args = ap.parse_args(argv)
    bnd, compounds, cases = build()
    write_outputs(args.out, bnd, compounds, cases)
    print(
        f"wrote {args.out / 'jiangnan.gpkg'}: 1 street, {len(bnd.communities)} communities, "
        f"{len(compounds)} compounds, {len(bnd.grids)} grids; "
        f"{args.out / 'demo_cases.csv'}: {len(cases)} cases"
    )


if __name__ == "__main__":
    main()
