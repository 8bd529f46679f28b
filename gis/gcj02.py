"""GCJ-02 ("Mars coordinates", 火星坐标) ↔ WGS-84, for display only.

AMap (高德), Tencent and other mainland web maps draw their tiles in GCJ-02: WGS-84 data laid
on them appears 300–700 m off. The service stores WGS-84 (see docs DOMAIN.md, "Coordinates in
China") and shifts geometries to GCJ-02 only when a page uses GCJ-02 tiles.

Forward (:func:`wgs84_to_gcj02`)
    The well-known public formula (the "transformLat/transformLon" series on the Krasovsky 1940
    ellipsoid, a = 6378245.0, e² = 0.00669342162296594323), as implemented in
    googollee/eviltransform, wandergis/coordtransform and many others. It matches their
    published test vectors to better than 1e-9°.

Inverse (:func:`gcj02_to_wgs84`)
    There is no closed form. The forward map is ``f(w) = w + δ(w)`` where the offset δ varies
    slowly (its derivative is of order 1e-2), so the fixed-point iteration
    ``w ← w − (f(w) − g)`` is a strong contraction: each step shrinks the error about a
    hundredfold and 3–4 steps reach millimetres. The common one-step inverse ``g − δ(g)``
    is off by up to a few metres, which is visible at grid scale.

Which points are shifted (:func:`in_china`)
    GCJ-02 applies in mainland China only. A single bounding box wrongly shifts Taiwan,
    Mongolia, Korea, the Russian Far East, northern Vietnam…; we use the widely copied
    include-rectangles-minus-exclude-rectangles list (see ``CHINA_INCLUDE``), the same list
    as the ``IsInChina``/``InsideChina`` functions of the coordtransform/eviltransform family,
    so that conversions made by those tools round-trip here.

    Hong Kong and Macau: **inside** (shifted). This follows that list unchanged and the
    mainland providers whose tiles we target: AMap's tiles run seamlessly across the Shenzhen
    River, and Huawei Map Kit documents GCJ-02 for "the Chinese mainland, Hong Kong and
    Macao". (Google's own maps and Artoria2e5/PRCoords treat HK/Macau as WGS-84; if a
    deployment needs that, add their rectangles to ``CHINA_EXCLUDE``.) Taiwan is outside.

    The list is coarse near borders by design (it decides which *tiles* are distorted, and
    every implementation that shares it shares its edges): it includes e.g. Kathmandu,
    Thimphu, Bishkek and the north of North Korea, and excludes a sliver of Heilongjiang along
    the Amur (parts of Heihe and Xunke) and the South China Sea islands.

Everything is numpy-vectorised; scalars in give floats out, arrays give arrays of the
broadcast shape. NaN coordinates are returned unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import numpy as np
import shapely

__all__ = [
    "CHINA_EXCLUDE",
    "CHINA_INCLUDE",
    "gcj02_to_wgs84",
    "in_china",
    "shift_geojson",
    "shift_geometries",
    "wgs84_to_gcj02",
]

# Krasovsky 1940 ellipsoid, as in the leaked reference code every public implementation copies.
KRASOVSKY_A = 6378245.0
KRASOVSKY_EE = 0.00669342162296594323

# Metres per degree of latitude, only to turn the stopping tolerance (given in metres) into
# degrees; the exact ellipsoid does not matter for a convergence test.
_M_PER_DEG = 111_320.0

# Mainland-China region as rectangles (west, south, east, north) in degrees. Source: the list
# first published by Aimeast, "中国区域判断优化", cnblogs.com/Aimeast/archive/2012/08/09/2629614
# (2012), copied verbatim into many coordtransform/eviltransform ports (IsInChina/InsideChina).
# Kept verbatim so results agree with those tools.
CHINA_INCLUDE: tuple[tuple[float, float, float, float], ...] = (
    (79.446200, 42.889900, 96.330000, 49.220400),  # Xinjiang north of the Tianshan
    (109.687200, 39.374200, 135.000200, 54.141500),  # Northeast, Inner Mongolia east, Hebei
    (73.124600, 29.529700, 124.143255, 42.889900),  # the central belt, Xinjiang → Shandong
    (82.968400, 26.718600, 97.035200, 29.529700),  # southern Tibet
    (97.025300, 20.414096, 124.367395, 29.529700),  # the south, Yunnan → Zhejiang
    (107.975793, 17.871542, 111.744104, 20.414096),  # Hainan
)
CHINA_EXCLUDE: tuple[tuple[float, float, float, float], ...] = (
    (119.921265, 21.785006, 122.497559, 25.398623),  # Taiwan
    (101.865200, 20.098800, 106.665000, 22.284000),  # northern Vietnam (Hanoi), Laos
    (106.452500, 20.487800, 108.051000, 21.542200),  # Vietnam's Gulf of Tonkin coast
    (109.032300, 50.325700, 119.127000, 55.817500),  # Russia / Mongolia north of Hulunbuir
    (127.456800, 49.557400, 137.022700, 55.817500),  # Russia across the Amur
    (131.266200, 42.569200, 137.022700, 44.892200),  # Primorye (Vladivostok)
)

_INCLUDE = np.array(CHINA_INCLUDE)
_EXCLUDE = np.array(CHINA_EXCLUDE)


def _region(lon: np.ndarray, lat: np.ndarray, slack=0.0) -> np.ndarray:
    """Inside an include rectangle and not inside an exclude rectangle.

    ``slack`` (degrees, scalar or per point) grows the include rectangles and shrinks the
    exclude ones, i.e. gives points within ``slack`` of an edge the benefit of the doubt;
    the inverse uses it so that its own residual error cannot push a point across an edge.
    """
    # Edges are inclusive, as in the reference implementations. Broadcast over a trailing
    # axis of rectangles: (..., 1) against (n_rects,).
    lo, la = lon[..., None], lat[..., None]
    s = np.asarray(slack, dtype=float)[..., None]
    inc, exc = _INCLUDE, _EXCLUDE
    inside = ((inc[:, 0] - s <= lo) & (lo <= inc[:, 2] + s)
              & (inc[:, 1] - s <= la) & (la <= inc[:, 3] + s)).any(axis=-1)
    excluded = ((exc[:, 0] + s <= lo) & (lo <= exc[:, 2] - s)
                & (exc[:, 1] + s <= la) & (la <= exc[:, 3] - s)).any(axis=-1)
    return inside & ~excluded


def in_china(lon, lat) -> np.ndarray:
    """Whether each point is in the region where GCJ-02 applies (mainland China, HK, Macau).

    Parameters
    ----------
    lon, lat : float or array_like
        Longitude and latitude in degrees; broadcast against each other.

    Returns
    -------
    numpy.ndarray of bool
        Same shape as the broadcast inputs (0-d for scalars). NaN is never inside.

    Notes
    -----
    Include rectangles minus exclude rectangles (``CHINA_INCLUDE`` / ``CHINA_EXCLUDE``), the
    approach of the coordtransform/eviltransform family; see the module docstring for its
    source, its choice for Hong Kong and Macau, and its known edges.
    """
    lon, lat = np.broadcast_arrays(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float))
    return _region(lon, lat)


def _offset(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 offset (dlon, dlat) in degrees at WGS-84 (lon, lat), ignoring the region test."""
    x = lon - 105.0
    y = lat - 35.0
    # Both series share this term (and only this one depends on x for the latitude series).
    common = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    sqrt_abs_x = np.sqrt(np.abs(x))
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x + common
            + (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
            + (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0)
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x + common
            + (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
            + (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0)
    # The series above are in metres; convert with the meridian / parallel radii of curvature
    # of the Krasovsky ellipsoid (the operation order follows the reference code so that
    # results agree with it to the last few bits).
    rad_lat = lat / 180.0 * np.pi
    magic = 1.0 - KRASOVSKY_EE * np.sin(rad_lat) ** 2
    sqrt_magic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((KRASOVSKY_A * (1.0 - KRASOVSKY_EE)) / (magic * sqrt_magic) * np.pi)
    dlon = (dlon * 180.0) / (KRASOVSKY_A / sqrt_magic * np.cos(rad_lat) * np.pi)
    return dlon, dlat


def _as_arrays(lon, lat) -> tuple[np.ndarray, np.ndarray, bool]:
    scalar = np.ndim(lon) == 0 and np.ndim(lat) == 0
    lon_a, lat_a = np.broadcast_arrays(np.asarray(lon, dtype=float),
                                       np.asarray(lat, dtype=float))
    return lon_a, lat_a, scalar


def _out(lon: np.ndarray, lat: np.ndarray, scalar: bool):
    if scalar:
        return float(lon), float(lat)
    return lon, lat


def wgs84_to_gcj02(lon, lat):
    """Convert WGS-84 longitude/latitude to GCJ-02.

    Parameters
    ----------
    lon, lat : float or array_like
        WGS-84 coordinates in degrees; broadcast against each other.

    Returns
    -------
    (lon, lat) : tuple of float, or tuple of numpy.ndarray
        GCJ-02 coordinates. Points outside :func:`in_china` are returned unchanged.

    Examples
    --------
    >>> lon, lat = wgs84_to_gcj02(116.404, 39.915)
    >>> round(lon, 6), round(lat, 6)
    (116.410244, 39.916404)
    """
    lon, lat, scalar = _as_arrays(lon, lat)
    dlon, dlat = _offset(lon, lat)
    inside = in_china(lon, lat)
    return _out(np.where(inside, lon + dlon, lon), np.where(inside, lat + dlat, lat), scalar)


def gcj02_to_wgs84(lon, lat, tol_m: float = 0.01, max_iter: int = 30):
    """Convert GCJ-02 longitude/latitude back to WGS-84 by fixed-point iteration.

    Parameters
    ----------
    lon, lat : float or array_like
        GCJ-02 coordinates in degrees; broadcast against each other.
    tol_m : float, default 0.01
        Stop when no point moved more than this many metres in the last step.
    max_iter : int, default 30
        Upper bound on the number of steps (about 4 are needed for 0.01 m).

    Returns
    -------
    (lon, lat) : tuple of float, or tuple of numpy.ndarray
        WGS-84 coordinates ``w`` with ``wgs84_to_gcj02(w)`` equal to the input to within
        ``tol_m`` (in practice far better: the iteration contracts ~100× per step).

    Notes
    -----
    Starting at ``w = g``, repeat ``w ← w − (f(w) − g)`` with ``f`` the unrestricted forward
    formula. The region test is applied to the *solution*: if ``w`` is in China, ``g`` was a
    shifted point and ``w`` is returned; otherwise ``g`` was never shifted and is returned
    as is. Deciding on ``w`` rather than on ``g`` makes WGS→GCJ→WGS exact for every point
    in China, including those whose GCJ-02 image falls just outside the region's edges.
    Within ~1 km outside an edge a GCJ-02 point can have two preimages (itself, and a shifted
    point inside); the inside one is returned.
    """
    if tol_m <= 0:
        raise ValueError("tol_m must be positive")
    if max_iter < 1:
        raise ValueError("max_iter must be at least 1")
    g_lon, g_lat, scalar = _as_arrays(lon, lat)
    w_lon, w_lat = g_lon.copy(), g_lat.copy()
    for _ in range(max_iter):
        dlon, dlat = _offset(w_lon, w_lat)
        step_lon = w_lon + dlon - g_lon
        step_lat = w_lat + dlat - g_lat
        w_lon = w_lon - step_lon
        w_lat = w_lat - step_lat
        moved = np.hypot(step_lon * np.cos(np.radians(w_lat)), step_lat) * _M_PER_DEG
        # nanmax: NaN inputs never converge and must not keep the loop going.
        if moved.size == 0 or np.all(np.isnan(moved)) or np.nanmax(moved) < tol_m:
            break
    # The iteration contracts, so the remaining error is below the last step. A point of the
    # region that lies on (or within that error of) an edge must not be judged outside
    # because the solution came out a hair across it: give it that much slack (+ 1e-9°,
    # ~0.1 mm, for rounding).
    slack = np.maximum(np.abs(step_lon), np.abs(step_lat)) + 1e-9
    inside = _region(w_lon, w_lat, slack)
    return _out(np.where(inside, w_lon, g_lon), np.where(inside, w_lat, g_lat), scalar)


_TARGETS = ("gcj02", "wgs84")


def _converter(to: str):
    if to == "gcj02":
        return wgs84_to_gcj02
    if to == "wgs84":
        return gcj02_to_wgs84
    raise ValueError(f"to must be one of {_TARGETS}, got {to!r}")


def shift_geometries(geoms, to: str):
    """Shift shapely geometries between WGS-84 and GCJ-02.

    Parameters
    ----------
    geoms : shapely.Geometry or array_like of shapely.Geometry
        Geometries in the other datum (e.g. a GeoSeries' ``.values``). ``None`` and empty
        geometries pass through.
    to : {"gcj02", "wgs84"}
        Target datum: ``"gcj02"`` for WGS-84 input, ``"wgs84"`` for GCJ-02 input.

    Returns
    -------
    shapely.Geometry or numpy.ndarray of object
        New geometries (same shape as the input); Z values are kept untouched.
    """
    convert = _converter(to)

    def _shift(coords: np.ndarray) -> np.ndarray:
        out = coords.copy()
        out[:, 0], out[:, 1] = convert(coords[:, 0], coords[:, 1])
        return out

    if isinstance(geoms, shapely.Geometry):
        return shapely.transform(geoms, _shift, include_z=True)
    # include_z=True passes (N, 3) arrays (z NaN for 2-D geometries) and keeps each
    # geometry's own dimensionality, so 3-D survey data keeps its heights.
    return shapely.transform(np.asarray(geoms, dtype=object), _shift, include_z=True)


# Nesting depth of a position inside each geometry type's "coordinates".
_DEPTH = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2,
          "MultiPolygon": 3}


def _positions(coords: Any, depth: int) -> Iterator[Any]:
    if depth == 0:
        yield coords
    else:
        for c in coords:
            yield from _positions(c, depth - 1)


def _geometries(obj: dict) -> Iterator[dict]:
    """Every simple geometry (not GeometryCollection) inside a GeoJSON object."""
    kind = obj.get("type")
    if kind == "FeatureCollection":
        for feature in obj.get("features", []):
            yield from _geometries(feature)
    elif kind == "Feature":
        if obj.get("geometry") is not None:
            yield from _geometries(obj["geometry"])
    elif kind == "GeometryCollection":
        for geom in obj.get("geometries", []):
            yield from _geometries(geom)
    elif kind in _DEPTH:
        yield obj
    else:
        raise ValueError(f"not a GeoJSON object: type {kind!r}")


def _rebuild(coords: Any, depth: int, shifted: Iterator[tuple[float, float]]) -> Any:
    if depth == 0:
        x, y = next(shifted)
        return [x, y, *coords[2:]]
    return [_rebuild(c, depth - 1, shifted) for c in coords]


def _fix_bboxes(obj: dict) -> None:
    # A "bbox" member would still describe the old coordinates: recompute it (RFC 7946 §5).
    kind = obj.get("type")
    children: list[dict] = []
    if kind == "FeatureCollection":
        children = obj.get("features", [])
    elif kind == "Feature" and obj.get("geometry") is not None:
        children = [obj["geometry"]]
    elif kind == "GeometryCollection":
        children = obj.get("geometries", [])
    for child in children:
        _fix_bboxes(child)
    if "bbox" not in obj:
        return
    pts = [p for g in _geometries(obj) for p in _positions(g["coordinates"], _DEPTH[g["type"]])]
    if not pts:
        return
    xy = np.array([p[:2] for p in pts], dtype=float)
    old = list(obj["bbox"])
    if len(old) == 6:  # 3-D bbox: heights did not change
        obj["bbox"] = [float(xy[:, 0].min()), float(xy[:, 1].min()), old[2],
                       float(xy[:, 0].max()), float(xy[:, 1].max()), old[5]]
    else:
        obj["bbox"] = [float(xy[:, 0].min()), float(xy[:, 1].min()),
                       float(xy[:, 0].max()), float(xy[:, 1].max())]


def shift_geojson(obj: dict, to: str) -> dict:
    """Shift a GeoJSON object between WGS-84 and GCJ-02.

    Parameters
    ----------
    obj : dict
        A FeatureCollection, Feature or geometry (including GeometryCollection). Positions
        may be lists or tuples and may carry a third (height) value, which is kept.
    to : {"gcj02", "wgs84"}
        Target datum: ``"gcj02"`` for WGS-84 input, ``"wgs84"`` for GCJ-02 input.

    Returns
    -------
    dict
        A new object (the input is not modified); properties and other members are deep
        copies, positions become lists, and any ``bbox`` member is recomputed.
    """
    convert = _converter(to)
    out = copy.deepcopy(obj)
    geoms = list(_geometries(out))
    # One vectorised call for the whole object, not one per position.
    pts = [p for g in geoms for p in _positions(g["coordinates"], _DEPTH[g["type"]])]
    if pts:
        xy = np.array([p[:2] for p in pts], dtype=float)
        lon, lat = convert(xy[:, 0], xy[:, 1])
        shifted = iter(zip(lon.tolist(), lat.tolist(), strict=True))
        for g in geoms:
            g["coordinates"] = _rebuild(g["coordinates"], _DEPTH[g["type"]], shifted)
    _fix_bboxes(out)
    return out
