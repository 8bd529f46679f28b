"""Planners' analytics: density clusters, hot and cold spots, hexagon bins, recurring problems.

Four tools a street or community office uses to decide where to act, all on the case
table (:func:`load_cases_frame` reads the few columns they need in one query):

- :func:`clusters` — places where cases are dense: DBSCAN with a radius in metres and a
  minimum count, each cluster as a polygon with its count, categories, compounds touched,
  first and last case;
- :func:`hotspots` — grids that are significantly hot or cold on a metric (Getis–Ord Gi*
  with permutation inference and a Benjamini–Hochberg false-discovery-rate correction),
  not just the dark ones on a choropleth;
- :func:`hex_bins` — the coverage metrics per H3 hexagon, for areas where the grid layer
  is too coarse;
- :func:`recurring` — the same category at the same compound (or within a small radius)
  again and again within a window: the list a planner takes to a renovation meeting.

Decisions
---------
Distances are metres on the WGS-84 ellipsoid, never degrees. :func:`clusters` projects the
points once to a local azimuthal equidistant projection (``+proj=aeqd`` on WGS-84) centred
on the middle of their bounding box and clusters them with Euclidean distances. Within
300 km of the centre the projection's scale error is below 0.04 % (about d²/6R²), smaller
than the up to 0.4 % by which a spherical haversine distance is off on the ellipsoid at
Hezhou's latitude. Points spread further than 300 km from the centre are clustered by
great-circle distance on the sphere of radius 6371008.8 m instead (the haversine
criterion; see :func:`_dbscan`). Each distinct spot is clustered once, weighted by the
number of cases reported there. Cluster hulls are built in the same projection and
transformed back to EPSG:4326.

The clustering is DBSCAN, the algorithm of ``sklearn.cluster.DBSCAN`` with the same labels
(the tests compare them), computed by :func:`dbscan_points` from the pairs of points within
the radius that ``scipy.spatial.cKDTree.query_pairs`` finds: at 300,000 cases about 2.5
times faster than scikit-learn's DBSCAN with a k-d tree on the same projected points, and
about 9 times faster than its ``metric="haversine"`` with ``algorithm="ball_tree"``
(``bench/analytics.py``).

Hot spots follow the usual reading of "hot at 95 % confidence": a two-sided test at 5 %
per grid (twice the smaller permutation tail, ties counted against significance), then
Benjamini–Hochberg over all grids tested so that at most 5 % of the grids called hot or
cold are expected to be false discoveries. See :func:`hotspots` for why the p-values are
recomputed from esda's simulations rather than taken from ``p_sim``, and for
``inference="normal"``: permutation p-values cannot go below ``2 / (permutations + 1)``,
so on layers of thousands of grids the correction can call nothing at all.

Hexagon metrics are the coverage metrics of :mod:`gis.coverage` with the same definitions:
:func:`metric_flags` gives each case's contribution to every count exactly as
:func:`gis.coverage.metrics_query` counts it, so summing the flags by grid reproduces
:func:`gis.coverage.grid_metrics` (the tests check this) and summing them by hexagon gives
the same metrics per hexagon.

Nothing here loops over geometries in Python except where a library offers no array API:
``h3.latlng_to_cell`` and ``h3.cell_to_boundary`` take one cell at a time, so they are
called once per distinct coordinate pair and once per distinct cell.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable

import esda
import geopandas as gpd
import h3
import h3.api.numpy_int
import numpy as np
import pandas as pd
import pyproj
import shapely
import sqlalchemy as sa
from libpysal.graph import Graph
from scipy import sparse, stats
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

from gis.cases import OPEN_STATUSES, STATUSES
from gis.coverage import DONE_STATUSES, HELPER_COLUMNS, METRICS, Period, parse_period
from gis.errors import InvalidInput
from gis.storage import cases

__all__ = [
    "CASE_COLUMNS", "CONFIDENCES", "EARTH_RADIUS_M", "FLAG_COLUMNS", "FRAME_COLUMNS",
    "HEX_METRICS", "HOTSPOT_CLASSES", "bh_qvalues", "clusters", "dbscan_points", "hex_bins",
    "hotspots",
    "load_cases_frame", "metric_flags", "metrics_from_counts", "recurring",
]

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean Earth radius, for the haversine fallback
# Beyond this distance from the centre of the points the local projection's scale error
# (about d²/6R²) passes 0.04 %, and clustering falls back to haversine distances.
MAX_PROJECTED_RADIUS_M = 300_000.0
# Hulls grow by this much, so every case lies inside its cluster's polygon (not on its
# edge, where rounding could put it outside) and 1–2 or collinear cases still make one.
HULL_BUFFER_M = 1.0
CONFIDENCES = (0.90, 0.95, 0.99)
# What the analytics need from a case: clusters and recurring use the first six,
# hex_bins and metric_flags the status and timestamps as well.
CASE_COLUMNS = ("id", "lon", "lat", "category", "compound_code", "created_at")
STATUS_COLUMNS = ("status", "due_at", "resolved_at", "closed_at", "updated_at")
FRAME_COLUMNS = (*CASE_COLUMNS, "grid_code", *STATUS_COLUMNS)
_TIME_COLUMNS = ("created_at", "due_at", "resolved_at", "closed_at", "updated_at")
FLAG_COLUMNS = ("open", "overdue", *HELPER_COLUMNS)
# The coverage metrics that make sense per hexagon: households and patrol check-ins
# belong to grids, so "per 1,000 households" and "days since patrol" are left out.
HEX_METRICS = ("open", "new", "resolution_rate", "on_time_rate", "overdue")
HOTSPOT_CLASSES = ("hot", "cold", "none", "island", "no_data")


# -- input checks --------------------------------------------------------------------------
def _number(value: object, field: str, lo: float, hi: float, *, integer: bool = False):
    """``value`` as an int or float within ``[lo, hi]``, or ``InvalidInput`` naming ``field``."""
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"{field} must be {kind} from {lo:g} to {hi:g}, got {value!r}",
                           field=field)
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi or (integer and v != int(v)):
        raise InvalidInput(f"{field} must be {kind} from {lo:g} to {hi:g}, got {value!r}",
                           field=field)
    return int(v) if integer else v


def _category(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise InvalidInput(f"category must be a category code, got {value!r}",
                           field="category")
    return value.strip()


def _period(value: object) -> Period:
    if isinstance(value, Period):
        return value
    if value is None or isinstance(value, str):
        return parse_period(value)
    raise InvalidInput(f"period must be text such as 30d or 2026-10, got {value!r}",
                       field="period")


def _statuses(value: object) -> tuple[str, ...]:
    """The statuses a ``status`` filter names: None = every status but rejected."""
    if value is None:
        return tuple(s for s in STATUSES if s != "rejected")
    if value == "open":
        return OPEN_STATUSES
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable) or isinstance(items, bytes | dict):
        raise InvalidInput(f"status must be a status, a list of them or 'open', got {value!r}",
                           field="status")
    items = list(items)
    bad = [s for s in items if not isinstance(s, str) or s not in STATUSES]
    if bad or not items:
        raise InvalidInput(f"unknown status {bad[0] if bad else value!r}; expected 'open' or "
                           f"one of: {', '.join(STATUSES)}", field="status")
    return tuple(dict.fromkeys(items))


def _naive_utc(series: pd.Series) -> pd.Series:
    t = pd.to_datetime(series, errors="raise")
    if getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    return t


def _frame(cases_df: object, needed: Iterable[str], *, coords: bool = True) -> pd.DataFrame:
    """A checked copy of the needed columns: timestamps as naive UTC, coordinates finite
    and in range (``InvalidInput`` naming ``cases``, ``lon`` or ``lat`` otherwise)."""
    if not isinstance(cases_df, pd.DataFrame):
        raise InvalidInput("cases must be a DataFrame (see load_cases_frame)", field="cases")
    needed = list(needed)
    missing = [c for c in needed if c not in cases_df.columns]
    if missing:
        raise InvalidInput(f"cases lacks the column(s) {', '.join(missing)}", field="cases")
    df = cases_df[needed].reset_index(drop=True)
    for col in _TIME_COLUMNS:
        if col in df:
            try:
                df[col] = _naive_utc(df[col])
            except (TypeError, ValueError) as exc:
                raise InvalidInput(f"{col} must hold timestamps ({exc})", field=col) from None
    if coords:
        for col, limit in (("lon", 180.0), ("lat", 90.0)):
            v = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
            bad = ~np.isfinite(v) | (np.abs(v) > limit)
            if bad.any():
                raise InvalidInput(f"{int(bad.sum())} case(s) have no valid {col} "
                                   f"(first: {df[col].iloc[int(np.argmax(bad))]!r})",
                                   field=col)
            df[col] = v
    return df


# -- reading cases -------------------------------------------------------------------------
def load_cases_frame(store, period: Period | str | None = None, category: str | None = None,
                     status: str | Iterable[str] | None = None) -> pd.DataFrame:
    """The cases the analytics need, as a DataFrame, from one SQL query.

    Parameters
    ----------
    store : gis.storage.SqlCaseStore
        The case store (its ``engine`` is queried once).
    period : Period or str, optional
        Keep cases *reported* within this period (``parse_period`` text or a ``Period``);
        default every case. For :func:`hex_bins`, whose open and overdue counts are
        snapshots at the period end, load without a period so earlier cases still open
        are counted.
    category : str, optional
        Keep one category code.
    status : str or list of str, optional
        A status, a list of statuses or ``"open"`` (any of
        :data:`gis.cases.OPEN_STATUSES`). Default: every status except ``rejected``
        (reports refused on verification are not problems on the ground).

    Returns
    -------
    DataFrame
        One row per case, ordered by id, with the columns of :data:`FRAME_COLUMNS`:
        ``id, lon, lat, category, compound_code, created_at`` (what :func:`clusters`
        and :func:`recurring` use), ``grid_code``, and ``status, due_at, resolved_at,
        closed_at, updated_at`` (what :func:`hex_bins` uses). Timestamps are naive UTC
        ``datetime64``; missing ones are ``NaT``. No title, description or reporter.

    Raises
    ------
    InvalidInput
        For a bad ``period``, ``category`` or ``status`` (the field is named).
    """
    conds = [cases.c.status != "rejected" if status is None
             else cases.c.status.in_(_statuses(status))]
    if period is not None:
        p = _period(period)
        conds += [cases.c.created_at >= p.start, cases.c.created_at < p.end]
    cat = _category(category)
    if cat is not None:
        conds.append(cases.c.category == cat)
    cols = []
    for name in FRAME_COLUMNS:
        col = cases.c[name]
        # Read timestamps as stored text (parsed below in one vectorised call) rather than
        # one Python datetime per value; drivers that return datetimes work as well.
        cols.append(sa.type_coerce(col, sa.String).label(name) if name in _TIME_COLUMNS
                    else col)
    q = sa.select(*cols).where(*conds).order_by(cases.c.id)
    with store.engine.connect() as conn:
        rows = conn.execute(q).fetchall()
    # Column by column: pandas would probe every Row object for named-tuple fields.
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(FRAME_COLUMNS)
    data = {}
    for name, values in zip(FRAME_COLUMNS, columns, strict=True):
        if name == "id":
            data[name] = np.fromiter(values, dtype=np.int64, count=len(rows))
        elif name in ("lon", "lat"):
            data[name] = np.fromiter(values, dtype=float, count=len(rows))
        elif name in _TIME_COLUMNS:
            data[name] = pd.to_datetime(pd.Series(values, dtype=object),
                                        format="ISO8601").astype("datetime64[us]")
        else:
            data[name] = pd.Series(values, dtype="str")  # None stays missing
    return pd.DataFrame(data)


# -- distances -----------------------------------------------------------------------------
class _LocalMetric:
    """A local azimuthal equidistant projection (metres, WGS-84) centred on some points."""

    def __init__(self, lon: np.ndarray, lat: np.ndarray):
        lon0 = (float(lon.min()) + float(lon.max())) / 2 if len(lon) else 0.0
        lat0 = (float(lat.min()) + float(lat.max())) / 2 if len(lat) else 0.0
        crs = pyproj.CRS.from_proj4(f"+proj=aeqd +lat_0={lat0:.9f} +lon_0={lon0:.9f} "
                                    "+datum=WGS84 +units=m +no_defs")
        self.fwd = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        self.inv = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def xy(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        x, y = self.fwd.transform(lon, lat)
        return np.column_stack([x, y])

    def to_lonlat(self, geoms: np.ndarray) -> np.ndarray:
        def back(c: np.ndarray) -> np.ndarray:
            lon, lat = self.inv.transform(c[:, 0], c[:, 1])
            return np.column_stack([lon, lat])
        return shapely.transform(geoms, back)


def _distinct(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct (lon, lat) pairs as an (m, 2) array and each point's row in it
    (hashing the pair as one complex number: exact, and faster than sorting)."""
    codes, uniq = pd.factorize(np.asarray(lon, float) + 1j * np.asarray(lat, float))
    return codes.astype(np.int64), np.column_stack([uniq.real, uniq.imag])


def _dbscan(lon: np.ndarray, lat: np.ndarray, radius_m: float, min_cases: int,
            metric: _LocalMetric | None = None) -> np.ndarray:
    """DBSCAN labels (``-1`` = noise) with a radius in metres; see the module docstring."""
    if len(lon) < min_cases:
        return np.full(len(lon), -1, dtype=np.int64)
    inverse, spots = _distinct(lon, lat)
    weight = np.bincount(inverse, minlength=len(spots))
    metric = metric or _LocalMetric(lon, lat)
    xy = metric.xy(spots[:, 0], spots[:, 1])
    if np.hypot(xy[:, 0], xy[:, 1]).max() <= MAX_PROJECTED_RADIUS_M:
        labels = dbscan_points(xy, radius_m, min_cases, weight)
    else:
        # On the sphere the straight-line (chord) distance grows with the great-circle
        # distance, so "within radius_m" is "chord within 2R·sin(radius_m / 2R)": exactly
        # the haversine criterion, found with the same tree.
        lam, phi = np.radians(spots[:, 0]), np.radians(spots[:, 1])
        xyz = EARTH_RADIUS_M * np.column_stack([np.cos(phi) * np.cos(lam),
                                                np.cos(phi) * np.sin(lam), np.sin(phi)])
        chord = 2 * EARTH_RADIUS_M * np.sin(radius_m / (2 * EARTH_RADIUS_M))
        labels = dbscan_points(xyz, chord, min_cases, weight)
    return labels[inverse]


def dbscan_points(X: np.ndarray, eps: float, min_samples: float,
                  sample_weight: np.ndarray | None = None) -> np.ndarray:
    """DBSCAN of points in a metric space: the labels ``sklearn.cluster.DBSCAN(eps,
    min_samples).fit(X, sample_weight=sample_weight).labels_`` gives, from the pairs of
    points within ``eps`` that ``scipy.spatial.cKDTree.query_pairs`` finds.

    A point is *core* when the weights of the points within ``eps`` of it (itself
    included) add up to ``min_samples``; clusters are the connected groups of core points
    within ``eps`` of each other; a non-core point within ``eps`` of core points joins the
    cluster that comes first (clusters are numbered by their first core point, as
    scikit-learn does); the rest is noise (``-1``). The tree's pair search is faster than
    scikit-learn's radius queries, and the weights are summed with ``bincount`` rather
    than point by point.
    """
    n = len(X)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    labels = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return labels
    pairs = cKDTree(X).query_pairs(eps, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    mass = (w + np.bincount(i, weights=w[j], minlength=n)
            + np.bincount(j, weights=w[i], minlength=n))
    core = mass >= min_samples
    if not core.any():
        return labels
    core_ids = np.flatnonzero(core)
    rank = np.full(n, -1, dtype=np.int64)
    rank[core_ids] = np.arange(len(core_ids))
    both = core[i] & core[j]
    links = sparse.coo_matrix((np.ones(int(both.sum()), dtype=np.int8),
                               (rank[i[both]], rank[j[both]])),
                              shape=(len(core_ids), len(core_ids)))
    # Components are numbered in the order of their first core point.
    _, component = csgraph.connected_components(links, directed=False)
    labels[core_ids] = component
    point, other = np.r_[i, j], np.r_[j, i]
    reach = ~core[point] & core[other]
    if reach.any():
        first = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(first, point[reach], labels[other[reach]])
        border = first != np.iinfo(np.int64).max
        labels[border] = first[border]
    return labels


# -- clusters ------------------------------------------------------------------------------
def _split(keys: np.ndarray, values: np.ndarray, n: int) -> list[np.ndarray]:
    """``values`` split by their (sorted, 1-based) ``keys`` into ``n`` arrays, one per key
    1..n, empty where a key has no value."""
    cuts = np.searchsorted(keys, np.arange(1, n + 1), side="left")
    return np.split(values, cuts[1:])


_CLUSTER_COLUMNS = ["cluster_id", "count", "categories", "categories_text", "compounds",
                    "first_case", "last_case", "case_ids"]


def clusters(cases_df: pd.DataFrame, radius_m: float = 50, min_cases: int = 5,
             category: str | None = None) -> gpd.GeoDataFrame:
    """Dense places: DBSCAN clusters of cases with a radius in metres.

    A case is in a cluster when at least ``min_cases`` cases (itself included) lie within
    ``radius_m`` metres of it, or it lies within ``radius_m`` of such a case (DBSCAN core
    and border points). Distances are metres on the WGS-84 ellipsoid (see the module
    docstring for the projection and its haversine fallback).

    Parameters
    ----------
    cases_df : DataFrame
        Columns ``id, lon, lat, category, compound_code, created_at`` (see
        :func:`load_cases_frame`); other columns are ignored.
    radius_m : float
        The DBSCAN radius in metres, 1–5000.
    min_cases : int
        The DBSCAN minimum count, 2–1000.
    category : str, optional
        Cluster only this category; default all cases together.

    Returns
    -------
    GeoDataFrame
        EPSG:4326, one row per cluster, largest first: ``cluster_id`` (1, 2, … in that
        order), ``count``, ``categories`` (dict code → count, most frequent first),
        ``categories_text`` (``"roof_leak:12, drainage:3"``), ``compounds`` (sorted list of
        the compound codes its cases carry), ``first_case`` and ``last_case`` (earliest and
        latest ``created_at``), ``case_ids`` (sorted list) and ``geometry``: the convex
        hull of its cases computed in metres and grown by 1 m, so it is always a valid
        polygon holding every case of the cluster, even for identical or collinear cases.

    Raises
    ------
    InvalidInput
        For a parameter out of range or a frame missing a column or with invalid
        coordinates (the field is named).
    """
    radius = _number(radius_m, "radius_m", 1, 5000)
    k = _number(min_cases, "min_cases", 2, 1000, integer=True)
    cat = _category(category)
    df = _frame(cases_df, CASE_COLUMNS)
    if cat is not None:
        df = df[df["category"] == cat].reset_index(drop=True)
    lon, lat = df["lon"].to_numpy(), df["lat"].to_numpy()
    metric = _LocalMetric(lon, lat)
    labels = _dbscan(lon, lat, radius, k, metric)
    member = labels >= 0
    if not member.any():
        empty = {c: pd.Series([], dtype=object) for c in _CLUSTER_COLUMNS}
        return gpd.GeoDataFrame(empty, geometry=gpd.GeoSeries([], crs="EPSG:4326"))

    part = df[member].assign(label=labels[member])
    g = part.groupby("label", sort=True)
    summary = pd.DataFrame({"count": g.size(), "first_case": g["created_at"].min(),
                            "last_case": g["created_at"].max()})
    summary = summary.sort_values(["count", "first_case"], ascending=[False, True],
                                  kind="stable")
    renumber = pd.Series(np.arange(1, len(summary) + 1), index=summary.index)
    part["cluster_id"] = part["label"].map(renumber).to_numpy()
    part = part.sort_values(["cluster_id", "id"], kind="stable")

    # Hulls: one multipoint per cluster, hulls and buffers as array operations, in metres.
    xy = metric.xy(part["lon"].to_numpy(), part["lat"].to_numpy())
    ids = part["cluster_id"].to_numpy() - 1
    hulls = shapely.convex_hull(shapely.multipoints(xy, indices=ids))
    geoms = metric.to_lonlat(shapely.buffer(hulls, HULL_BUFFER_M, quad_segs=4))

    n_clusters = len(summary)
    cid = part["cluster_id"].to_numpy()
    case_ids = _split(cid, part["id"].to_numpy(dtype=np.int64), n_clusters)
    cats = (part.groupby(["cluster_id", "category"]).size().rename("n").reset_index()
            .sort_values(["cluster_id", "n", "category"], ascending=[True, False, True],
                         kind="stable"))
    cat_names = _split(cats["cluster_id"].to_numpy(), cats["category"].to_numpy(dtype=object),
                       n_clusters)
    cat_n = _split(cats["cluster_id"].to_numpy(), cats["n"].to_numpy(), n_clusters)
    comp = part[["cluster_id", "compound_code"]].dropna()
    comp = comp.assign(compound_code=comp["compound_code"].astype(str).str.strip())
    comp = comp[comp["compound_code"] != ""].drop_duplicates().sort_values(
        ["cluster_id", "compound_code"], kind="stable")
    compounds = _split(comp["cluster_id"].to_numpy(),
                       comp["compound_code"].to_numpy(dtype=object), n_clusters)
    categories, texts = [], []
    for names, ns in zip(cat_names, cat_n, strict=True):  # one iteration per cluster
        pairs = list(zip(map(str, names), map(int, ns), strict=True))
        categories.append(dict(pairs))
        texts.append(", ".join(f"{c}:{n}" for c, n in pairs))
    out = gpd.GeoDataFrame({
        "cluster_id": np.arange(1, n_clusters + 1),
        "count": summary["count"].to_numpy().astype("int64"),
        "categories": categories,
        "categories_text": texts,
        "compounds": [c.tolist() for c in compounds],
        "first_case": summary["first_case"].to_numpy(),
        "last_case": summary["last_case"].to_numpy(),
        "case_ids": [c.tolist() for c in case_ids],
    }, geometry=geoms, crs="EPSG:4326")
    out.attrs.update(radius_m=radius, min_cases=k, category=cat)
    return out


# -- hot and cold spots --------------------------------------------------------------------
def _values(grids: gpd.GeoDataFrame, values: object) -> np.ndarray:
    """``values`` as floats in the row order of ``grids`` (NaN = no data)."""
    if isinstance(values, str):
        if values not in grids.columns:
            raise InvalidInput(f"values names no column of the grids: {values!r}",
                               field="values")
        series = grids[values]
    elif isinstance(values, pd.Series):
        if values.index.equals(grids.index):
            series = values
        elif values.index.isin(grids["code"].astype(str)).any():
            if values.index.has_duplicates:
                raise InvalidInput("values has duplicate grid codes", field="values")
            series = values.reindex(grids["code"].astype(str).to_numpy())
        else:
            raise InvalidInput("values must be indexed like the grids or by grid code",
                               field="values")
    else:
        try:
            series = pd.Series(np.asarray(values).ravel())
        except (TypeError, ValueError):
            raise InvalidInput("values must be numbers, one per grid", field="values") from None
        if len(series) != len(grids):
            raise InvalidInput(f"values has {len(series)} entries for {len(grids)} grids",
                               field="values")
    try:
        y = pd.to_numeric(pd.Series(np.asarray(series, dtype=object)), errors="raise")
    except (TypeError, ValueError):
        raise InvalidInput("values must be numbers (NaN or None = no data)",
                           field="values") from None
    y = y.to_numpy(dtype=float, na_value=np.nan)
    if np.isinf(y).any():
        raise InvalidInput("values must be finite numbers (NaN = no data)", field="values")
    if (y < 0).any():
        raise InvalidInput("Getis–Ord Gi* needs values of 0 or more", field="values")
    return y


def bh_qvalues(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values): a test is significant at false
    discovery rate ``alpha`` exactly when its q-value is ``<= alpha``."""
    p = np.asarray(p, dtype=float)
    n = len(p)
    if n == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return out


def _tail_counts(sims: np.ndarray, observed: np.ndarray, chunk: int = 2048):
    """How many simulated values are >= and <= each observed one, ties counted in both
    (a relative tolerance absorbs floating-point noise between the two computations)."""
    n = len(observed)
    hi = np.empty(n, dtype=np.int64)
    lo = np.empty(n, dtype=np.int64)
    for s in range(0, n, chunk):  # chunks of grids bound the temporary arrays
        obs = observed[s:s + chunk, None]
        tol = 1e-9 * np.maximum(np.abs(obs), np.finfo(float).tiny)
        sim = sims[s:s + chunk]
        hi[s:s + chunk] = (sim >= obs - tol).sum(axis=1)
        lo[s:s + chunk] = (sim <= obs + tol).sum(axis=1)
    return hi, lo


def hotspots(grids_gdf: gpd.GeoDataFrame, values, confidence: float = 0.95,
             permutations: int = 999, seed: int | None = 0,
             inference: str = "permutation") -> gpd.GeoDataFrame:
    """Grids that are significantly hot or cold on a metric (Getis–Ord Gi*).

    Gi* compares the sum of a grid's value and its neighbours' (Queen contiguity: grids
    sharing an edge or a corner) with what random placement of the same values would give.

    Parameters
    ----------
    grids_gdf : GeoDataFrame
        The grid layer (a ``code`` column and polygons), e.g. the output of
        :func:`gis.coverage.grid_metrics`. Neighbours are grids sharing at least one
        vertex, as in a layer that passed :mod:`gis.validate`.
    values : str, Series or array-like
        The metric: a column of ``grids_gdf`` (``"open"``), a Series indexed like
        ``grids_gdf`` or by grid code, or one number per row. Values must be ≥ 0; NaN or
        None means no data.
    confidence : {0.90, 0.95, 0.99}
        The confidence level; ``alpha = 1 - confidence`` is both the two-sided test level
        of each grid and the false discovery rate over all grids.
    permutations : int
        Conditional permutations per grid, 99–9999. The smallest p-value possible is
        ``2 / (permutations + 1)``.
    seed : int, optional
        Seed of the permutations (same seed, same answer); ``None`` for a random one.
        The global NumPy random state is left as it was.
    inference : {"permutation", "normal"}
        Where ``p`` comes from. ``"permutation"`` (default): the rank of the observed Gi*
        among its conditional permutations, exact but never below
        ``2 / (permutations + 1)``; Benjamini–Hochberg can then call any grid only when
        at least ``attrs["min_discoveries"]`` grids reach that floor (16 of 400 grids, 400
        of 10,000 at 999 permutations and 95 %), so on large layers a real hot area can
        go unreported. ``"normal"``: a normal tail at the permutation z-score
        (``(Gi* - mean) / sd`` of the same permutations, esda's ``z_sim``), which has no
        floor but trusts the normal shape far into the tail, where very skewed values make
        it somewhat liberal. Use it for layers of more than a few hundred grids.

    Returns
    -------
    GeoDataFrame
        One row per grid, in the order and CRS of ``grids_gdf``: ``code``, ``value``,
        ``neighbours`` (Queen neighbours that have data), ``z`` (esda's ``Zs``), ``p``
        (two-sided permutation p-value), ``q`` (Benjamini–Hochberg adjusted p-value),
        ``cls`` and ``geometry``. ``cls`` is ``"hot"`` (q ≤ alpha and high values cluster
        there), ``"cold"`` (q ≤ alpha, low values), ``"none"`` (not significant),
        ``"island"`` (no neighbour with data: not tested) or ``"no_data"`` (NaN value:
        left out of the weights, the statistic and the correction). ``attrs`` holds
        ``confidence``, ``alpha``, ``permutations``, ``inference``, ``tested`` (grids in
        the FDR correction), ``p_threshold`` (the Benjamini–Hochberg cut-off on ``p``; NaN
        when nothing is significant), ``min_p`` (the smallest ``p`` possible) and
        ``min_discoveries`` (how many grids must reach ``min_p`` before any can be called:
        ``ceil(tested · min_p / alpha)``, 1 or more).

    Raises
    ------
    InvalidInput
        For a bad ``confidence``, ``permutations``, ``seed``, ``inference``, ``values``
        or layer.

    Notes
    -----
    The weights are Queen contiguity among the grids that have data, built with
    ``libpysal.graph.Graph.build_contiguity(rook=False)``: the neighbours of
    ``libpysal.weights.Queen.from_dataframe`` (a test checks they agree), held as sparse
    arrays instead of dicts, on which ``G_Local`` runs 2–3 times faster at 10,000 grids.
    ``esda.G_Local(y, w, transform="R", star=True, permutations, seed, n_jobs=1)`` is given
    them binary, so it sets the self-weight to 1 and row-standardises itself, as its
    documentation recommends. ``n_jobs=1`` because without numba esda's process pool is
    slower than one process (``bench/analytics.py``).

    esda's ``p_sim`` is not used as is: it counts the simulated values ``>=`` the observed
    one and folds that count, so a tie falls on the low side. With counts that are often
    0 (most grids have no overdue case) a grid of zeros among zeros ties most
    permutations and ``p_sim`` calls it a cold spot at the smallest possible p. Here ties
    count against significance in both tails: ``p = min(1, 2 · min(#(sim ≥ obs) + 1,
    #(sim ≤ obs) + 1) / (permutations + 1))``, and the side of the smaller tail says hot
    or cold (normally, not necessarily, the sign of ``z``).

    The permutation test judges ranks, the analytical ``z`` a normal approximation. With
    very skewed values (a few grids far above the rest) a grid whose neighbourhood holds
    the lowest of the ordinary values can be a significant cold spot while its ``z`` is
    small: the few extreme values inflate the variance ``z`` divides by. That is a real
    cluster of low values, not an error; read ``cls`` with ``value`` and ``z``.
    """
    alpha = _alpha(confidence)
    perms = _number(permutations, "permutations", 99, 9999, integer=True)
    if seed is not None:
        seed = _number(seed, "seed", 0, 2**32 - 1, integer=True)
    if inference not in ("permutation", "normal"):
        raise InvalidInput(f"inference must be 'permutation' or 'normal', got {inference!r}",
                           field="inference")
    if not isinstance(grids_gdf, gpd.GeoDataFrame) or "code" not in grids_gdf.columns:
        raise InvalidInput("grids must be a GeoDataFrame with a code column", field="grids")
    geoms = grids_gdf.geometry.values
    if len(geoms) and not np.isin(shapely.get_type_id(geoms),
                                  [shapely.GeometryType.POLYGON,
                                   shapely.GeometryType.MULTIPOLYGON]).all():
        raise InvalidInput("grids must be polygons", field="grids")
    y = _values(grids_gdf, values)

    n = len(grids_gdf)
    z = np.full(n, np.nan)
    p = np.full(n, np.nan)
    q = np.full(n, np.nan)
    neighbours = np.zeros(n, dtype=np.int64)
    cls = np.full(n, "no_data", dtype=object)
    has = np.flatnonzero(~np.isnan(y))
    threshold, tested = float("nan"), 0
    if len(has):
        sub = gpd.GeoDataFrame(geometry=geoms[has])
        # Queen contiguity (shared vertices), as weights.Queen.from_dataframe, held as
        # sparse arrays rather than dicts (see the Notes).
        w = Graph.build_contiguity(sub, rook=False)
        card = w.cardinalities.to_numpy()
        neighbours[has] = card
        cls[has] = np.where(card > 0, "none", "island")
        ys = y[has]
        test = card > 0
        p[has] = 1.0
        # Fewer than 3 grids, or one value everywhere: nothing can stand out.
        if test.sum() >= 1 and len(has) >= 3 and np.ptp(ys) > 0:
            w = w.transform("B")  # binary: G_Local adds self-weight 1, row-standardises
            state = np.random.get_state()  # esda seeds NumPy's global generator
            try:
                with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
                    warnings.simplefilter("ignore", DeprecationWarning)
                    warnings.filterwarnings("ignore", message=".*not fully connected.*")
                    warnings.filterwarnings("ignore", message=".*islands.*")
                    g = esda.G_Local(ys, w, transform="R", star=True, permutations=perms,
                                     seed=seed, n_jobs=1, keep_simulations=True)
            finally:
                np.random.set_state(state)
            sims, observed = np.asarray(g.rGs), np.asarray(g.Gs)
            if inference == "permutation":
                upper, lower = _tail_counts(sims, observed)
                p_sub = np.minimum(1.0, 2 * (np.minimum(upper, lower) + 1) / (perms + 1))
            else:
                sd = sims.std(axis=1)
                z_sim = np.divide(observed - sims.mean(axis=1), sd, out=np.zeros(len(sd)),
                                  where=sd > 1e-12 * np.abs(observed).max())
                p_sub = 2 * stats.norm.sf(np.abs(z_sim))
                upper, lower = -z_sim, z_sim  # the smaller "tail" is the side of z_sim
            p_sub[~test] = 1.0
            z_sub = np.where(test, np.asarray(g.Zs, dtype=float), np.nan)
            q_sub = np.full(len(has), np.nan)
            q_sub[test] = bh_qvalues(p_sub[test])
            sig = test & (q_sub <= alpha)
            cls_sub = np.where(test, "none", "island").astype(object)
            cls_sub[sig & (upper < lower)] = "hot"
            cls_sub[sig & (lower < upper)] = "cold"
            z[has], p[has], q[has], cls[has] = z_sub, p_sub, q_sub, cls_sub
            if sig.any():
                threshold = float(p_sub[sig].max())
        else:
            z[has] = np.where(test, 0.0, np.nan)
            q[has] = np.where(test, 1.0, np.nan)
        tested = int(test.sum())

    front = {"code": grids_gdf["code"].astype(str).to_numpy()}
    if "name" in grids_gdf.columns:
        front["name"] = grids_gdf["name"].to_numpy()
    out = gpd.GeoDataFrame({**front, "value": y, "neighbours": neighbours, "z": z, "p": p,
                            "q": q, "cls": cls}, geometry=geoms, crs=grids_gdf.crs,
                           index=grids_gdf.index)
    min_p = 2 / (perms + 1) if inference == "permutation" else 0.0
    out.attrs.update(confidence=1 - alpha, alpha=alpha, permutations=perms,
                     inference=inference, tested=tested, p_threshold=threshold, min_p=min_p,
                     min_discoveries=max(1, math.ceil(tested * min_p / alpha - 1e-9)))
    return out


def _alpha(confidence: object) -> float:
    if not isinstance(confidence, bool) and isinstance(confidence, numbers.Real):
        for c in CONFIDENCES:
            if math.isclose(float(confidence), c, abs_tol=1e-9):
                return round(1 - c, 2)
    raise InvalidInput(f"confidence must be one of {', '.join(f'{c:.2f}' for c in CONFIDENCES)}"
                       f", got {confidence!r}", field="confidence")


# -- the coverage metrics per case ---------------------------------------------------------
def metric_flags(cases_df: pd.DataFrame, period: Period | str | None = None) -> pd.DataFrame:
    """Each case's 0/1 contribution to the coverage counts over ``period``.

    The same definitions as :func:`gis.coverage.metrics_query` (see :mod:`gis.coverage`),
    so summing these flags by ``grid_code`` gives the counts behind
    :func:`gis.coverage.grid_metrics`, and summing them by any other key (an H3 cell, a
    cluster) gives the same metrics for that key via :func:`metrics_from_counts`.

    Parameters
    ----------
    cases_df : DataFrame
        Columns ``status, created_at, due_at, resolved_at, closed_at, updated_at`` (see
        :func:`load_cases_frame`).
    period : Period or str, optional
        Default the last 30 days, as on the coverage map.

    Returns
    -------
    DataFrame
        Integer columns ``counted`` (1 when the case is in the population of the metrics:
        reported before the period end and not rejected) and :data:`FLAG_COLUMNS`
        (``open``, ``overdue`` and the :data:`gis.coverage.HELPER_COLUMNS`), aligned with
        ``cases_df``'s rows.
    """
    per = _period(period)
    df = _frame(cases_df, ["status", *_TIME_COLUMNS], coords=False)
    start, end = pd.Timestamp(per.start), pd.Timestamp(per.end)
    status = df["status"].astype(object)
    counted = (status != "rejected").to_numpy() & (df["created_at"] < end).to_numpy()
    left_open = df["resolved_at"].fillna(df["closed_at"]).fillna(df["updated_at"])
    open_at_end = status.isin(OPEN_STATUSES).to_numpy() | (left_open >= end).to_numpy()
    due_before_end = (df["due_at"] < end).to_numpy()
    reported = (df["created_at"] >= start).to_numpy()
    closed_in = ((status == "closed").to_numpy() & (df["closed_at"] >= start).to_numpy()
                 & (df["closed_at"] < end).to_numpy())
    flags = {
        "counted": counted,
        "open": open_at_end,
        "overdue": open_at_end & due_before_end,
        "reported_in_period": reported,
        "resolved_of_reported": (reported & status.isin(DONE_STATUSES).to_numpy()
                                 & (left_open < end).to_numpy()),
        "closed_in_period": closed_in,
        "closed_with_due": closed_in & df["due_at"].notna().to_numpy(),
        "closed_on_time": closed_in & (df["closed_at"] <= df["due_at"]).to_numpy(),
    }
    out = pd.DataFrame({k: (v & counted).astype("int64") for k, v in flags.items()},
                       index=cases_df.index)
    out.attrs["period"] = per
    return out


def metrics_from_counts(counts: pd.DataFrame) -> pd.DataFrame:
    """The metrics of :data:`HEX_METRICS` from summed :func:`metric_flags` (floats; a rate
    with a zero denominator is NaN, no data, as in :func:`gis.coverage.area_metrics`)."""
    reported = counts["reported_in_period"]
    with_due = counts["closed_with_due"]
    return pd.DataFrame({
        "open": counts["open"].astype(float),
        "new": reported.astype(float),
        "resolution_rate": counts["resolved_of_reported"] / reported.where(reported > 0),
        "on_time_rate": counts["closed_on_time"] / with_due.where(with_due > 0),
        "overdue": counts["overdue"].astype(float),
    }, index=counts.index).astype(float)


# -- hexagon bins --------------------------------------------------------------------------
def _h3_cells(lat: np.ndarray, lon: np.ndarray, resolution: int) -> np.ndarray:
    """The H3 cell of each point as a 64-bit integer (h3-py has no array API: one call per
    distinct point)."""
    if not len(lat):
        return np.array([], dtype=np.uint64)
    inverse, spots = _distinct(lon, lat)
    to_cell = h3.api.numpy_int.latlng_to_cell
    cells = np.fromiter((to_cell(a, b, resolution) for b, a in spots.tolist()),
                        dtype=np.uint64, count=len(spots))
    return cells[inverse]


def _h3_polygons(cells: Iterable[str]) -> np.ndarray:
    """Polygons (lon, lat) of H3 cells; ``cell_to_boundary`` gives (lat, lng) pairs."""
    rings = [h3.cell_to_boundary(c) for c in cells]
    if not rings:
        return np.array([], dtype=object)
    sizes = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
    latlng = np.array([pt for r in rings for pt in r], dtype=float)
    lines = shapely.linearrings(latlng[:, ::-1], indices=np.repeat(np.arange(len(rings)),
                                                                   sizes))
    return shapely.polygons(lines)


def hex_bins(cases_df: pd.DataFrame, resolution: int = 9,
             period: Period | str | None = None) -> gpd.GeoDataFrame:
    """The coverage metrics per H3 hexagon instead of per grid.

    Parameters
    ----------
    cases_df : DataFrame
        Columns ``lon, lat, status, created_at, due_at, resolved_at, closed_at,
        updated_at`` (:func:`load_cases_frame` without a period gives them all, including
        earlier cases still open at the period end).
    resolution : int
        The H3 resolution, 5–12 (9: hexagons of about 0.1 km², 174 m edges; 10: about
        0.015 km²; 8: about 0.74 km²).
    period : Period or str, optional
        As in :func:`gis.coverage.parse_period`; default the last 30 days.

    Returns
    -------
    GeoDataFrame
        EPSG:4326, one row per hexagon holding at least one counted case (reported before
        the period end and not rejected), ordered by cell: ``cell`` (H3 index),
        ``cases`` (counted cases there), the metrics of :data:`HEX_METRICS` (floats, NaN =
        no data, defined as in :data:`gis.coverage.METRICS`), the integer
        :data:`gis.coverage.HELPER_COLUMNS`, and the hexagon as ``geometry``. ``attrs``
        holds ``resolution``, ``period`` (its key) and ``metrics`` (the definitions).

    Raises
    ------
    InvalidInput
        For a bad ``resolution`` or ``period``, or a frame missing a column or with
        invalid coordinates.
    """
    res = _number(resolution, "resolution", 5, 12, integer=True)
    per = _period(period)
    df = _frame(cases_df, ["lon", "lat", "status", *_TIME_COLUMNS])
    flags = metric_flags(df, per)
    keep = flags["counted"].to_numpy().astype(bool)
    cells = _h3_cells(df["lat"].to_numpy()[keep], df["lon"].to_numpy()[keep], res)
    counts = flags.loc[keep, ["counted", *FLAG_COLUMNS]].groupby(cells).sum()
    names = [h3.int_to_str(int(c)) for c in counts.index]  # one per hexagon
    counts.index = pd.Index(names, dtype=object)
    counts = counts.sort_index()
    metrics = metrics_from_counts(counts)
    out = gpd.GeoDataFrame({
        "cell": counts.index.to_numpy(dtype=object),
        "cases": counts["counted"].to_numpy().astype("int64"),
        **{k: metrics[k].to_numpy() for k in HEX_METRICS},
        **{k: counts[k].to_numpy().astype("int64") for k in HELPER_COLUMNS},
    }, geometry=_h3_polygons(counts.index), crs="EPSG:4326")
    out.attrs.update(resolution=res, period=per.key,
                     metrics=[METRICS[k].to_dict() for k in HEX_METRICS])
    return out


# -- recurring problems --------------------------------------------------------------------
_RECURRING_COLUMNS = ["compound_code", "cluster_id", "category", "count", "max_in_window",
                      "first", "last", "case_ids", "lon", "lat"]


def _in_some_window(t: np.ndarray, window: int, k: int) -> tuple[np.ndarray, int]:
    """For sorted times ``t``: which fall in a span of at most ``window`` holding at least
    ``k`` of them, and the largest number any such span holds."""
    end = np.searchsorted(t, t + window, side="right")  # cases i..end-1 are in t_i + window
    held = end - np.arange(len(t))
    starts = np.flatnonzero(held >= k)
    if not len(starts):
        return np.zeros(len(t), dtype=bool), int(held.max(initial=0))
    edge = np.zeros(len(t) + 1, dtype=np.int64)
    np.add.at(edge, starts, 1)
    np.add.at(edge, end[starts], -1)
    return np.cumsum(edge)[:-1] > 0, int(held.max())


def recurring(cases_df: pd.DataFrame, window_days: int = 90, min_repeats: int = 3,
              radius_m: float | None = None) -> pd.DataFrame:
    """The same problem at the same place again and again.

    A place is a compound (``compound_code``); with ``radius_m``, cases outside every
    compound are grouped into places by proximity instead (DBSCAN per category with that
    radius and ``min_repeats`` as the minimum count). A (place, category) is listed when
    at least ``min_repeats`` of its cases were reported within some span of at most
    ``window_days`` days (a sliding window over ``created_at``).

    Parameters
    ----------
    cases_df : DataFrame
        Columns ``id, lon, lat, category, compound_code, created_at``.
    window_days : int
        The window, 1–3660 days; the first and last case of a span may be exactly
        ``window_days`` apart.
    min_repeats : int
        How many cases make a repeat, 2–1000.
    radius_m : float, optional
        1–5000 metres: also group cases without a compound by proximity. Default: cases
        without a compound are left out.

    Returns
    -------
    DataFrame
        One row per (place, category), most cases first: ``compound_code`` (None for a
        proximity place), ``cluster_id`` (1, 2, … for proximity places, in output order;
        <NA> for compounds), ``category``, ``count`` (cases that fall in some qualifying
        window), ``max_in_window`` (most cases in one window), ``first`` and ``last``
        (earliest and latest of those cases), ``case_ids`` (their ids, oldest first),
        ``lon`` and ``lat`` (their mean position).

    Raises
    ------
    InvalidInput
        For a parameter out of range or a frame missing a column or with invalid
        coordinates.
    """
    days = _number(window_days, "window_days", 1, 3660, integer=True)
    k = _number(min_repeats, "min_repeats", 2, 1000, integer=True)
    radius = None if radius_m is None else _number(radius_m, "radius_m", 1, 5000)
    df = _frame(cases_df, CASE_COLUMNS)
    if df["created_at"].isna().any():
        raise InvalidInput("every case needs a created_at time", field="created_at")
    code = df["compound_code"].astype(object)
    has = (code.notna() & (code.astype(str).str.strip() != "")).to_numpy()
    df["place"] = np.where(has, "c:" + code.astype(str), None)
    if radius is not None and (~has).any():
        loose = df.loc[~has]
        for cat, idx in loose.groupby("category").indices.items():  # one per category
            rows = loose.index[idx]
            lab = _dbscan(df.loc[rows, "lon"].to_numpy(), df.loc[rows, "lat"].to_numpy(),
                          radius, k)
            keep = lab >= 0
            df.loc[rows[keep], "place"] = [f"p:{cat}:{v}" for v in lab[keep]]
    df = df[df["place"].notna()]
    if df.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in _RECURRING_COLUMNS})

    t_all = df["created_at"].to_numpy(dtype="datetime64[us]").astype(np.int64)
    window = days * 86_400 * 1_000_000
    rows = []
    for (place, cat), idx in df.groupby(["place", "category"]).indices.items():
        if len(idx) < k:
            continue
        idx = idx[np.argsort(t_all[idx], kind="stable")]
        marked, peak = _in_some_window(t_all[idx], window, k)
        if not marked.any():
            continue
        sel = df.iloc[idx[marked]]
        rows.append({
            "compound_code": place[2:] if place.startswith("c:") else None,
            "proximity": not place.startswith("c:"),
            "category": cat, "count": int(marked.sum()), "max_in_window": peak,
            "first": sel["created_at"].min(), "last": sel["created_at"].max(),
            "case_ids": [int(v) for v in sel["id"]],
            "lon": float(sel["lon"].mean()), "lat": float(sel["lat"].mean()),
        })
    if not rows:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in _RECURRING_COLUMNS})
    out = pd.DataFrame(rows).sort_values(["count", "last", "category"],
                                         ascending=[False, False, True], kind="stable")
    out = out.reset_index(drop=True)
    prox = out.pop("proximity").to_numpy()
    cluster = pd.array([pd.NA] * len(out), dtype="Int64")
    cluster[prox] = np.arange(1, int(prox.sum()) + 1)
    out["cluster_id"] = cluster
    out.attrs.update(window_days=days, min_repeats=k, radius_m=radius)
    return out[_RECURRING_COLUMNS]
