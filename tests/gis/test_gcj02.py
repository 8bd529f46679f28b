"""GCJ-02 conversion: published reference vectors, round trips, the region test, geometries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import Geod

from gis.gcj02 import (
    CHINA_EXCLUDE,
    CHINA_INCLUDE,
    gcj02_to_wgs84,
    in_china,
    shift_geojson,
    shift_geometries,
    wgs84_to_gcj02,
)

GEOD = Geod(ellps="WGS84")


def metres(lon1, lat1, lon2, lat2) -> np.ndarray:
    """Geodesic distance on the WGS-84 ellipsoid."""
    return np.asarray(GEOD.inv(lon1, lat1, lon2, lat2)[2])


def naive_inverse(lon, lat):
    """The common one-step inverse w = 2g − f(g), i.e. g minus the offset taken at g."""
    flon, flat = wgs84_to_gcj02(lon, lat)
    return 2 * np.asarray(lon) - flon, 2 * np.asarray(lat) - flat


# ---------------------------------------------------------------- published reference vectors

# (wgs_lon, wgs_lat, gcj_lon, gcj_lat). Sources:
# - googollee/eviltransform, python/test.py and go/transform_test.go, TESTS (given there as
#   lat, lng; reordered here): Shanghai, Shenzhen, Beijing.
# - wandergis/coordtransform, test/app.js: wgs84togcj02(116.404, 39.915).
REFERENCE_FORWARD = [
    (121.5272106, 31.1774276, 121.531541859215, 31.17530398364597),  # eviltransform: Shanghai
    (113.912316, 22.543847, 113.9171764808363, 22.540796131694766),  # eviltransform: Shenzhen
    (116.377817, 39.911954, 116.38404722455657, 39.91334545536069),  # eviltransform: Beijing
    (116.404, 39.915, 116.41024449916938, 39.91640428150164),  # coordtransform test/app.js
]


@pytest.mark.parametrize(("wlon", "wlat", "glon", "glat"), REFERENCE_FORWARD)
def test_forward_matches_published_vectors(wlon, wlat, glon, glat):
    lon, lat = wgs84_to_gcj02(wlon, wlat)
    assert isinstance(lon, float) and isinstance(lat, float)
    assert lon == pytest.approx(glon, abs=1e-6)
    assert lat == pytest.approx(glat, abs=1e-6)


@pytest.mark.parametrize(("wlon", "wlat", "glon", "glat"), REFERENCE_FORWARD)
def test_inverse_recovers_published_wgs84_points(wlon, wlat, glon, glat):
    lon, lat = gcj02_to_wgs84(glon, glat)
    # eviltransform's own "exact" inverse only promises 0.5 m; ours is at the centimetre.
    assert metres(lon, lat, wlon, wlat) < 0.01


def test_naive_inverse_matches_coordtransform_gcj02towgs84():
    # wandergis/coordtransform, test/app.js: its gcj02towgs84(116.404, 39.915) is the one-step
    # inverse; reproducing it confirms the forward offset at a second, unrelated point.
    lon, lat = naive_inverse(116.404, 39.915)
    assert lon == pytest.approx(116.39775550083061, abs=1e-9)
    assert lat == pytest.approx(39.91359571849836, abs=1e-9)


def test_inverse_matches_gcoord_vector():
    # hujiulong/gcoord, test/unit/crs/GCJ02.spec.js: GCJ02 → WGS84 of (123, 45) is
    # (122.99395597, 44.99804071), checked there to 5 decimals.
    lon, lat = gcj02_to_wgs84(123.0, 45.0)
    assert lon == pytest.approx(122.99395597, abs=5e-6)
    assert lat == pytest.approx(44.99804071, abs=5e-6)


def test_the_shift_is_hundreds_of_metres_in_hezhou():
    glon, glat = wgs84_to_gcj02(111.57, 24.40)
    assert 200 < metres(111.57, 24.40, glon, glat) < 800


# ---------------------------------------------------------------- round trips

china_points = st.tuples(
    st.floats(73.0, 136.0, allow_nan=False), st.floats(17.0, 55.0, allow_nan=False)
).filter(lambda p: bool(in_china(*p)))


@settings(max_examples=500, deadline=None)
@given(china_points)
def test_round_trip_within_5_cm_anywhere_in_china(p):
    lon, lat = p
    back = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    assert metres(lon, lat, *back) < 0.05


@settings(max_examples=200, deadline=None)
@given(st.lists(china_points, min_size=1, max_size=50))
def test_round_trip_vectorised_matches_scalar(pts):
    lon, lat = np.array(pts).T
    glon, glat = wgs84_to_gcj02(lon, lat)
    wlon, wlat = gcj02_to_wgs84(glon, glat)
    assert wlon.shape == lon.shape
    assert metres(lon, lat, wlon, wlat).max() < 0.05
    one = gcj02_to_wgs84(float(glon[0]), float(glat[0]))
    assert metres(one[0], one[1], wlon[0], wlat[0]) < 0.01


def test_round_trip_on_region_edges_and_corners():
    # Points exactly on a rectangle edge are inside (edges are inclusive); the inverse must not
    # let its last-bit error push them out and hand back the unshifted GCJ-02 point.
    rects = np.array(CHINA_INCLUDE + CHINA_EXCLUDE)
    xs = np.concatenate([rects[:, 0], rects[:, 2], (rects[:, 0] + rects[:, 2]) / 2])
    ys = np.concatenate([rects[:, 1], rects[:, 3], (rects[:, 1] + rects[:, 3]) / 2])
    lon, lat = (a.ravel() for a in np.meshgrid(xs, ys))
    keep = in_china(lon, lat)
    lon, lat = lon[keep], lat[keep]
    assert lon.size > 50
    back = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat))
    assert metres(lon, lat, *back).max() < 0.05
    coarse = gcj02_to_wgs84(*wgs84_to_gcj02(lon, lat), tol_m=1.0)
    assert metres(lon, lat, *coarse).max() < 1.0


def dense_china_sample(n=400_000, seed=7):
    rng = np.random.default_rng(seed)
    lon = rng.uniform(73.0, 136.0, n)
    lat = rng.uniform(17.0, 55.0, n)
    keep = in_china(lon, lat)
    return lon[keep], lat[keep]


def test_iteration_matters_naive_inverse_is_metres_off():
    lon, lat = dense_china_sample()
    assert lon.size > 100_000
    glon, glat = wgs84_to_gcj02(lon, lat)
    err_iter = metres(lon, lat, *gcj02_to_wgs84(glon, glat))
    err_naive = metres(lon, lat, *naive_inverse(glon, glat))
    # Measured: iterative ≈ 1e-6 m worst case; naive ≈ 4 m worst case, > 0.5 m for most points.
    assert err_iter.max() < 0.01
    assert err_naive.max() > 0.5
    assert err_naive.max() > 100 * err_iter.max()


def test_tolerance_controls_accuracy():
    lon, lat = dense_china_sample(50_000)
    glon, glat = wgs84_to_gcj02(lon, lat)
    coarse = metres(lon, lat, *gcj02_to_wgs84(glon, glat, tol_m=5.0, max_iter=1))
    fine = metres(lon, lat, *gcj02_to_wgs84(glon, glat, tol_m=1e-4))
    assert fine.max() < 1e-3 < coarse.max()
    with pytest.raises(ValueError):
        gcj02_to_wgs84(111.0, 24.0, tol_m=0)


def test_outside_china_unchanged_both_ways():
    for lon, lat in [(2.35, 48.85), (-74.0, 40.7), (139.69, 35.69), (121.56, 25.04)]:
        assert wgs84_to_gcj02(lon, lat) == (lon, lat)
        assert gcj02_to_wgs84(lon, lat) == (lon, lat)


def test_shapes_and_nan():
    lon = np.array([[111.57, np.nan], [2.35, 116.4]])
    lat = np.array([[24.40, 30.0], [48.85, np.nan]])
    glon, glat = wgs84_to_gcj02(lon, lat)
    assert glon.shape == (2, 2)
    assert np.isnan(glon[0, 1]) and np.isnan(glat[1, 1])
    wlon, wlat = gcj02_to_wgs84(glon, glat)
    assert wlon.shape == (2, 2)
    assert wlon[0, 0] == pytest.approx(111.57, abs=1e-8)
    assert (wlon[1, 0], wlat[1, 0]) == (2.35, 48.85)
    # broadcasting a scalar latitude against an array of longitudes
    assert wgs84_to_gcj02(np.array([111.0, 112.0]), 24.0)[1].shape == (2,)
    empty = gcj02_to_wgs84(np.array([]), np.array([]))
    assert empty[0].shape == (0,)


# ---------------------------------------------------------------- in China?

INSIDE = {
    "Beijing": (116.40, 39.90), "Shanghai": (121.47, 31.23), "Hezhou": (111.57, 24.40),
    "Urumqi": (87.62, 43.83), "Lhasa": (91.13, 29.65), "Harbin": (126.64, 45.76),
    "Sanya": (109.51, 18.25), "Kashgar": (75.99, 39.47), "Mohe": (122.54, 52.97),
    # Our documented choice: GCJ-02 applies in Hong Kong and Macau (see gis/gcj02.py).
    "Hong Kong": (114.17, 22.32), "Macau": (113.54, 22.19),
}
OUTSIDE = {
    "Taipei": (121.56, 25.04), "Kaohsiung": (120.30, 22.63), "Seoul": (126.98, 37.57),
    "Tokyo": (139.69, 35.69), "Ulaanbaatar": (106.92, 47.92), "Hanoi": (105.85, 21.03),
    "Vladivostok": (131.89, 43.12), "Pacific": (160.0, 20.0), "Singapore": (103.8, 1.35),
}


@pytest.mark.parametrize("name", INSIDE)
def test_inside(name):
    assert bool(in_china(*INSIDE[name]))


@pytest.mark.parametrize("name", OUTSIDE)
def test_outside(name):
    assert not bool(in_china(*OUTSIDE[name]))


def in_bbox(lon, lat):
    return 73.66 <= lon <= 135.05 and 3.86 <= lat <= 53.55


def test_a_bounding_box_gets_neighbours_wrong():
    for name in ("Seoul", "Ulaanbaatar", "Taipei"):
        assert in_bbox(*OUTSIDE[name]), name  # the bbox says China…
        assert not bool(in_china(*OUTSIDE[name])), name  # …the region list does not


def test_in_china_vectorised_and_nan():
    pts = np.array(list(INSIDE.values()) + list(OUTSIDE.values()) + [(np.nan, 30.0)])
    got = in_china(pts[:, 0], pts[:, 1])
    assert got.dtype == bool
    assert got.tolist() == [True] * len(INSIDE) + [False] * (len(OUTSIDE) + 1)
    assert in_china(111.57, 24.40).shape == ()


def test_region_data_is_well_formed():
    for west, south, east, north in CHINA_INCLUDE + CHINA_EXCLUDE:
        assert 70 < west < east < 140 and 15 < south < north < 56


# ---------------------------------------------------------------- geometries and GeoJSON

def test_shift_geometries_round_trip_and_keeps_z():
    poly = shapely.box(111.56, 24.39, 111.58, 24.41)
    pt3 = shapely.Point(111.57, 24.40, 123.0)
    paris = shapely.Point(2.35, 48.85)
    geoms = np.array([poly, pt3, paris, None, shapely.Polygon()], dtype=object)
    g = shift_geometries(geoms, to="gcj02")
    assert g.shape == (5,)
    assert g[3] is None and g[4].is_empty
    assert shapely.has_z(g[1]) and g[1].z == 123.0
    assert not shapely.has_z(g[0])
    assert g[2].equals(paris)
    moved = metres(111.57, 24.40, g[1].x, g[1].y)
    assert 200 < moved < 800
    back = shift_geometries(g, to="wgs84")
    assert shapely.equals_exact(back[0], poly, tolerance=1e-9)
    assert back[1].z == 123.0
    single = shift_geometries(poly, to="gcj02")
    assert isinstance(single, shapely.Polygon) and single.equals_exact(g[0], 0)
    with pytest.raises(ValueError, match="gcj02"):
        shift_geometries(geoms, to="bd09")


def test_shift_geometries_matches_point_functions():
    line = shapely.LineString([(111.0, 24.0), (112.0, 25.0), (113.0, 23.5)])
    got = shapely.get_coordinates(shift_geometries(line, "gcj02"))
    lon, lat = wgs84_to_gcj02([111.0, 112.0, 113.0], [24.0, 25.0, 23.5])
    np.testing.assert_array_equal(got, np.column_stack([lon, lat]))


def sample_collection() -> dict:
    return {
        "type": "FeatureCollection",
        "bbox": [111.56, 24.39, 111.58, 24.41],
        "features": [
            {"type": "Feature", "id": "g1", "properties": {"name": "厦良社区", "n": [1, 2]},
             "geometry": {"type": "Polygon", "coordinates": [
                 [[111.56, 24.39], [111.58, 24.39], [111.58, 24.41], [111.56, 24.41],
                  [111.56, 24.39]]]}},
            {"type": "Feature", "properties": {}, "geometry": {
                "type": "Point", "coordinates": (111.57, 24.40, 88.0)}},  # tuple, with height
            {"type": "Feature", "properties": None, "geometry": None},
            {"type": "Feature", "properties": {}, "geometry": {
                "type": "GeometryCollection", "geometries": [
                    {"type": "MultiLineString", "coordinates": [[[111.56, 24.39],
                                                                 [111.57, 24.40]]]},
                    {"type": "MultiPolygon", "coordinates": []},
                ]}},
        ],
    }


def test_shift_geojson_feature_collection():
    fc = sample_collection()
    before = json.dumps(fc, sort_keys=True)
    out = shift_geojson(fc, to="gcj02")
    assert json.dumps(fc, sort_keys=True) == before  # input untouched
    assert out is not fc and out["features"][0]["properties"] is not fc["features"][0]["properties"]
    assert out["features"][0]["properties"] == {"name": "厦良社区", "n": [1, 2]}
    assert out["features"][0]["id"] == "g1"
    ring = np.array(out["features"][0]["geometry"]["coordinates"][0])
    lon, lat = wgs84_to_gcj02(np.array([111.56, 111.58, 111.58, 111.56, 111.56]),
                              np.array([24.39, 24.39, 24.41, 24.41, 24.39]))
    np.testing.assert_allclose(ring, np.column_stack([lon, lat]), rtol=0, atol=1e-12)
    point = out["features"][1]["geometry"]["coordinates"]
    assert isinstance(point, list) and len(point) == 3 and point[2] == 88.0
    assert out["features"][2]["geometry"] is None
    mls = out["features"][3]["geometry"]["geometries"][0]["coordinates"]
    assert mls[0][1] == list(wgs84_to_gcj02(111.57, 24.40))
    # the bbox is recomputed from the shifted polygon (and the rest)
    assert out["bbox"][0] == pytest.approx(ring[:, 0].min(), abs=1e-12)
    assert out["bbox"][3] == pytest.approx(ring[:, 1].max(), abs=1e-12)
    json.dumps(out)  # still plain JSON


def test_shift_geojson_round_trip_and_plain_geometry():
    fc = sample_collection()
    back = shift_geojson(shift_geojson(fc, "gcj02"), "wgs84")
    a = np.array(fc["features"][0]["geometry"]["coordinates"][0])
    b = np.array(back["features"][0]["geometry"]["coordinates"][0])
    assert metres(a[:, 0], a[:, 1], b[:, 0], b[:, 1]).max() < 0.01
    geom = {"type": "LineString", "coordinates": [[2.35, 48.85], [2.36, 48.86]]}
    assert shift_geojson(geom, "gcj02") == geom  # outside China: unchanged
    feature = {"type": "Feature", "properties": {}, "geometry": {
        "type": "Point", "coordinates": [111.57, 24.40]}}
    shifted = shift_geojson(feature, "gcj02")["geometry"]["coordinates"]
    assert shifted == list(wgs84_to_gcj02(111.57, 24.40))


def test_shift_geojson_rejects_garbage():
    with pytest.raises(ValueError, match="GeoJSON"):
        shift_geojson({"type": "Circle", "coordinates": [0, 0]}, "gcj02")
    with pytest.raises(ValueError, match="wgs84"):
        shift_geojson({"type": "Point", "coordinates": [111.0, 24.0]}, "WGS-84")
