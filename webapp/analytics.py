"""Planners' analytics: the planner's page, its drill-down lists and the analytics API.

Two blueprints:

- ``analytics`` under ``/api/v1`` (public read: aggregates and case ids, never reporter
  data): ``GET /clusters``, ``/hotspots``, ``/indicators``, ``/hexbins``, ``/recurring``.
  Bad parameters are the app's JSON error body with the field named (400); every
  response carries an ETag and answers ``If-None-Match`` with 304.
- ``planner``: ``GET /planner`` (planners, administrators and grid workers) — filters by
  period, category and area (street → community → grid); a map of clusters and hot spots
  over the grid choropleth; three charts drawn on the server (:mod:`gis.charts`); the
  indicators with 环比/同比 and their definitions; grids ranked by closure rate; the oldest
  open cases; the recurring problems — and ``GET /planner/cases``, the cases behind any
  number on the page.

Periods: one that starts after now is refused (400, ``period``); the current month is
counted to date and marked so (:func:`gis.coverage.up_to_now`). Every indicator on the
page (headline, table, ranking) counts the cases of the chosen category inside the chosen
area.

Drill-down: every count on the page links to ``/planner/cases`` with the page's filters
and what the number counts (``what``):

- ``reported``: cases reported in the period (or in one ``week``), not rejected;
- ``closed``: cases closed in the period (or ``week``), optionally only those that took
  ``days=lo-hi`` days from report to closure (a bar of the histogram);
- ``open``: cases open now;
- ``indicator`` (``indicator``, ``level``, ``code``): the cases an indicator of
  :mod:`gis.indicators` counted for one area. They are found by running the indicator's
  own statement (:func:`gis.indicators.indicator_queries`) grouped by case as well as by
  area, so the list is exactly the cases behind the number, by the same definition and
  with the same filters (the category, and only the cases inside the chosen grid or
  community: a compound straddling the chosen grid counts its cases in that grid);
- ``cluster`` (``cluster``, ``radius_m``, ``min_cases``) and ``recurring`` (``compound``,
  ``window_days``, ``min_repeats``): the cases of one cluster or recurring problem,
  recomputed with the same parameters.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa
from flask import Blueprint, current_app, render_template, request, url_for
from flask_babel import gettext as _

from gis import analysis
from gis.cases import OPEN_STATUSES, status_label, utcnow
from gis.catalogue import get_category, load_catalogue
from gis.coverage import METRICS, Period, check_year, get_metric, parse_period, up_to_now
from gis.errors import InvalidInput
from gis.geojson import feature_collection
from gis.indicators import (
    CHANGE_NOTE,
    HELPERS,
    INDICATORS,
    LEVELS,
    get_indicator,
    indicator_queries,
    indicators,
    year_before,
)
from gis.localtime import beijing_midnight, to_beijing
from gis.storage import cases
from webapp.apidoc import document, geojson, nullable, query, ref, schema, tag
from webapp.auth import web_user
from webapp.cache import PageCache, respond

api = Blueprint("analytics", __name__, url_prefix="/api/v1")
bp = Blueprint("planner", __name__)

READERS = ("planner", "admin", "grid_worker")
PERIODS = ("7d", "30d", "90d", "365d")
DEFAULT_PERIOD = "90d"
CONFIDENCES = ("0.90", "0.95", "0.99")
TOP_OPEN = 20
MAX_LISTED = 1000
WHATS = ("reported", "closed", "open", "indicator", "cluster", "recurring")
# Indicators whose number counts evaluations, not cases: shown, not linked.
_NOT_CASES = ("evaluations", "satisfied", "satisfaction_rate")
_PARTS = ("cases", "events", "resolutions")


def hemei():
    return current_app.extensions["hemei"]


@bp.record_once
def _setup(state) -> None:
    state.app.extensions["hemei_planner"] = PageCache(size=32)


@bp.after_request
def _remember_language(resp):
    from webapp.pages import remember_language

    return remember_language(resp)


# -- parameters --------------------------------------------------------------------------------
def _raw(name: str) -> str | None:
    v = request.args.get(name)
    return None if v is None or not v.strip() else v.strip()


def _float_arg(name: str, default: float | None) -> float | None:
    raw = _raw(name)
    if raw is None:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be a number, got {raw!r}", field=name) from None


def _int_arg(name: str, default: int | None) -> int | None:
    raw = _raw(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[+-]?\d{1,9}", raw):
        raise InvalidInput(f"{name} must be a whole number, got {raw!r}", field=name)
    return int(raw)


def _range(name: str, value, lo, hi):
    """``value`` within ``[lo, hi]`` or ``InvalidInput`` naming ``name`` (the analysis
    functions check again; the page checks first so that nothing is computed in vain)."""
    if value is not None and not (np.isfinite(value) and lo <= value <= hi):
        raise InvalidInput(f"{name} must be from {lo:g} to {hi:g}, got {value:g}", field=name)
    return value


def _category_arg() -> str | None:
    raw = _raw("category")
    return None if raw is None else get_category(raw).code


def _period_arg(default: str | None = None, *, compared: bool = False) -> Period:
    """The ``period`` parameter, as far as it has happened (:func:`gis.coverage.up_to_now`:
    one that starts after now is refused, the current month is cut at now and marked
    partial); ``compared``: it must also have a previous period and a year before
    (环比/同比). The years :func:`gis.coverage.parse_period` accepts always have both; the
    check stays so that no period can reach the comparisons without them."""
    at = _at_arg()
    # ``at`` pins the cut of the current month too (a drill-down lists the cases behind
    # the number as computed), but never beyond now.
    now = utcnow()
    period = up_to_now(parse_period(_raw("period") or default, now=at),
                       min(at, now) if at is not None else now)
    if compared:
        try:
            period.previous()
            year_before(period.previous())
            year_before(period)
        except (ValueError, OverflowError):
            raise InvalidInput(f"period {period.key!r} is too early to compare with the "
                               "period before and the year before", field="period") from None
    return period


def _at_arg() -> datetime | None:
    """``at``: when a relative period (``90d``) ends, or where the current month was cut
    (:func:`gis.coverage.up_to_now`), in epoch seconds. The page puts it into its
    drill-down links, so a list shows the cases behind the number as it was computed,
    even when the page came from the cache an hour ago."""
    raw = _raw("at")
    if raw is None:
        return None
    if not re.fullmatch(r"\d{1,11}", raw) or not 0 < int(raw) < 253_402_300_800:
        raise InvalidInput(f"at must be a time in epoch seconds, got {raw!r}", field="at")
    at = datetime.fromtimestamp(int(raw), UTC).replace(tzinfo=None)
    check_year(at.year, raw, field="at")  # the periods' years: see gis.coverage.MIN_YEAR
    return at


def check_area(level: str, code: str) -> pd.Series:
    """The row of the active boundary layer ``level`` with ``code``, or ``InvalidInput``
    naming the parameter (``unknown grid '999'``). The one check of an area filter: the
    analytics API, the planner's pages and the exports (:mod:`webapp.exports`)."""
    layer = hemei().layers.get(level)
    match = layer[layer["code"] == code] if layer is not None else None
    if match is None or match.empty:
        raise InvalidInput(f"unknown {level} {code!r}", field=level)
    return match.iloc[0]


def _area_args() -> tuple[str | None, str | None]:
    """The ``community`` and ``grid`` filters, checked against the active layers; a grid
    brings its community (a grid wins over a community it is not in)."""
    grid, community = _raw("grid"), _raw("community")
    if grid is not None:
        community = check_area("grid", grid)["parent_code"]
    elif community is not None:
        check_area("community", community)
    return community, grid


def _confidence_arg() -> float:
    conf = _float_arg("confidence", 0.95)
    analysis._alpha(conf)  # InvalidInput (field confidence) unless 0.90, 0.95 or 0.99
    return float(conf)


def _level_arg(default: str) -> str:
    level = _raw("level") or default
    if level not in LEVELS:
        raise InvalidInput(f"unknown level {level!r}; expected one of: {', '.join(LEVELS)}",
                           field="level")
    return level


# -- shared computations --------------------------------------------------------------------
def _ids_in_community(code: str) -> set[int]:
    q = sa.select(cases.c.id).where(cases.c.community_code == code)
    with hemei().store.engine.connect() as conn:
        return {int(r[0]) for r in conn.execute(q)}


def cases_frame(period: Period | None = None, category: str | None = None,
                community: str | None = None, grid: str | None = None) -> pd.DataFrame:
    """:func:`gis.analysis.load_cases_frame` (rejected cases left out) narrowed to an area:
    a grid by the grid code stored on the case, a community by its community code."""
    df = analysis.load_cases_frame(hemei().store, period=period, category=category)
    if grid is not None:
        df = df[df["grid_code"] == grid]
    elif community is not None:
        df = df[df["id"].isin(_ids_in_community(community))]
    return df.reset_index(drop=True)


def grid_values(period: Period, category: str | None = None):
    """The grid layer with every coverage metric for ``period``
    (:meth:`gis.service.Hemei.coverage`); with a ``category``, the metrics that can be
    counted per category (:data:`gis.analysis.HEX_METRICS` and cases per 1,000
    households) are those of that category's cases, by the same definitions
    (:func:`gis.analysis.metric_flags`)."""
    h = hemei()
    grids = h.coverage(period)
    if category is None:
        return grids
    frame = analysis.load_cases_frame(h.store, category=category)
    flags = analysis.metric_flags(frame, period)
    keep = frame["grid_code"].notna().to_numpy()
    counts = (flags[keep].groupby(frame.loc[keep, "grid_code"].to_numpy()).sum()
              .reindex(grids["code"].astype(str).to_numpy()).fillna(0))
    metrics = analysis.metrics_from_counts(counts)
    for key in analysis.HEX_METRICS:
        grids[key] = metrics[key].to_numpy()
    hh = pd.to_numeric(grids["households"], errors="coerce").astype(float)
    grids["per_1000_households"] = (grids["new"] / hh * 1000).where(hh > 0)
    return grids


def _iso(v) -> str | None:
    if v is None or pd.isna(v):
        return None
    return pd.Timestamp(v).isoformat(timespec="seconds") + "Z"


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple | np.ndarray):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, pd.Timestamp | datetime):
        return _iso(v)
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def _etag(name: str, period: Period | None, *params) -> str:
    """A weak ETag known before anything is computed: the endpoint, its parameters, the
    data version and, for a period, its start and end to the hour. A relative period
    (``30d``) ends "now", so its answer differs from second to second; like the overview
    map's cache and ``/api/v1/coverage``, it counts as unchanged within the hour while the
    data version stays, so a revalidation costs no computing."""
    digest = hashlib.sha256(json.dumps([name, *params], default=str).encode()).hexdigest()
    when = f"{period.start:%Y%m%d%H}-{period.end:%Y%m%d%H}" if period is not None else "all"
    return f"{name}-{digest[:20]}-{when}-{hemei().store.data_version()}"


def _not_modified(etag: str):
    """A 304 when the client holds ``etag`` already, else None."""
    if request.if_none_match.contains_weak(etag):
        resp = current_app.response_class(status=304)
        resp.set_etag(etag, weak=True)
        resp.headers["Cache-Control"] = "no-cache"
        return resp
    return None


def _respond(body: dict, etag: str, mimetype: str = "application/json"):
    """A JSON response carrying ``etag`` (see :func:`_etag`)."""
    resp = current_app.response_class(
        json.dumps(_jsonable(body), ensure_ascii=False, allow_nan=False), mimetype=mimetype)
    resp.set_etag(etag, weak=True)
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def _category_names(locale: str | None = None) -> dict:
    cats = load_catalogue()
    if locale is None:
        return {c.code: {"zh": c.zh, "en": c.en} for c in cats.values()}
    return {c.code: c.label(locale) for c in cats.values()}


def _names(level: str) -> dict:
    layer = hemei().layers.get(level)
    return {} if layer is None else dict(zip(layer["code"], layer["name"], strict=True))


# -- the API: its description (webapp/apidoc.py) -------------------------------------------
def _api_schemas() -> None:
    when = {"type": "string", "format": "date-time"}
    str_or_null = {"type": ["string", "null"]}
    num_or_null = {"type": ["number", "null"]}
    int_list = {"type": "array", "items": {"type": "integer"}}
    str_list = {"type": "array", "items": {"type": "string"}}
    zh_en = {"type": "object", "required": ["zh", "en"],
             "properties": {"zh": {"type": "string"}, "en": {"type": "string"}}}
    cat_names = {"type": "object", "additionalProperties": zh_en,
                 "description": "category code → its names"}

    def collection(name: str, props: dict, required: list, top: dict, top_required: list,
                   geometry: dict, description: str) -> dict:
        return schema(name, {
            "type": "object", "description": description,
            "required": ["type", "features", *top_required],
            "properties": {
                "type": {"const": "FeatureCollection"},
                "features": {"type": "array", "items": {
                    "type": "object", "required": ["type", "geometry", "properties"],
                    "properties": {"type": {"const": "Feature"}, "geometry": geometry,
                                   "properties": {"type": "object", "required": required,
                                                  "properties": props}}}},
                **top,
            },
        })

    cluster = {
        "cluster_id": {"type": "integer", "minimum": 1, "description": "1 = largest"},
        "count": {"type": "integer", "minimum": 1},
        "categories": {"type": "object", "additionalProperties": {"type": "integer"},
                       "description": "category code → cases, most first"},
        "categories_text": {"type": "string"},
        "compounds": {**str_list, "description": "compound codes its cases carry"},
        "compound_names": str_list, "first_case": when, "last_case": when,
        "case_ids": int_list,
    }
    collection("Clusters", cluster, list(cluster), {
        "period": ref("Period"), "radius_m": {"type": "number"},
        "min_cases": {"type": "integer"}, "category": str_or_null,
        "community": str_or_null, "grid": str_or_null,
        "cases": {"type": "integer", "description": "cases clustered (after the filters)"},
        "category_names": cat_names,
    }, ["period", "radius_m", "min_cases", "cases"], ref("Geometry"),
        "Case clusters as hulls (EPSG:4326), largest first.")
    spot = {
        "code": {"type": "string"}, "name": str_or_null,
        "value": {**num_or_null, "description": "the metric; null = no data"},
        "neighbours": {"type": "integer", "description": "Queen neighbours with data"},
        "z": {**num_or_null, "description": "Gi* z-score"},
        "p": {**num_or_null, "description": "two-sided permutation p-value"},
        "q": {**num_or_null, "description": "Benjamini–Hochberg adjusted p-value"},
        "cls": {"type": "string", "enum": list(analysis.HOTSPOT_CLASSES)},
    }
    collection("Hotspots", spot, list(spot), {
        "metric": ref("Metric"), "period": ref("Period"), "category": str_or_null,
        "confidence": {"type": "number"}, "alpha": {"type": "number"},
        "permutations": {"type": "integer"},
        "tested": {"type": "integer", "description": "grids in the FDR correction"},
        "p_threshold": {**num_or_null, "description": "the BH cut-off on p; null when "
                                                      "nothing is significant"},
        "correction": {"const": "benjamini_hochberg"},
        "weights": {"const": "queen_contiguity"},
    }, ["metric", "period", "confidence", "alpha", "permutations", "tested", "p_threshold"],
        ref("Geometry"), "Every grid with its Getis–Ord Gi* result.")
    schema("IndicatorDefinition", {
        "type": "object", "required": ["key", "zh", "en", "formula_zh", "formula_en", "kind",
                                       "better"],
        "properties": {"key": {"type": "string", "enum": list(INDICATORS)},
                       "zh": {"type": "string"}, "en": {"type": "string"},
                       "formula_zh": {"type": "string"}, "formula_en": {"type": "string"},
                       "kind": {"type": "string", "enum": ["count", "rate", "hours"]},
                       "better": {"enum": ["higher", "lower", None]},
                       "unit_zh": {"type": "string"}, "unit_en": {"type": "string"},
                       "numerator": str_or_null, "denominator": str_or_null},
    })
    row_props = {"code": {"type": ["string", "integer"],
                          "description": "area code (organisation id for org)"},
                 "name": str_or_null}
    for key in INDICATORS:
        for suffix in ("", "_prev", "_yoy", "_mom_change", "_yoy_change"):
            row_props[key + suffix] = num_or_null
    schema("Indicators", {
        "type": "object",
        "required": ["level", "period", "previous", "year_before", "definitions", "rows"],
        "properties": {
            "level": {"type": "string", "enum": list(LEVELS)},
            "period": ref("Period"),
            "previous": {**ref("Period"), "description": "the 环比 base"},
            "year_before": {**ref("Period"), "description": "the 同比 base"},
            "definitions": {"type": "array", "items": ref("IndicatorDefinition")},
            "helpers": str_list, "change_note": zh_en,
            "rows": {"type": "array", "items": {
                "type": "object", "required": list(row_props), "properties": row_props,
                "additionalProperties": num_or_null}},
        },
    })
    hexp = {"cell": {"type": "string", "description": "H3 index"},
            "cases": {"type": "integer", "minimum": 1}}
    hexp.update({k: num_or_null for k in analysis.HEX_METRICS})
    collection("HexBins", hexp, list(hexp), {
        "resolution": {"type": "integer"}, "period": ref("Period"), "category": str_or_null,
        "cases": {"type": "integer", "minimum": 0},
        "metrics": {"type": "array", "items": ref("Metric")},
    }, ["resolution", "period", "cases", "metrics"], ref("Geometry"),
        "Coverage metrics per H3 hexagon.")
    rec = {"compound_code": str_or_null, "compound_name": str_or_null,
           "cluster_id": {"type": ["integer", "null"],
                          "description": "proximity places (radius_m) only"},
           "category": {"type": "string"}, "count": {"type": "integer", "minimum": 1},
           "max_in_window": {"type": "integer", "minimum": 1}, "first": when, "last": when,
           "case_ids": int_list}
    collection("Recurring", rec, list(rec), {
        "window_days": {"type": "integer"}, "min_repeats": {"type": "integer"},
        "radius_m": num_or_null, "period": nullable(ref("Period")), "category": str_or_null,
        "category_names": cat_names,
    }, ["window_days", "min_repeats"], ref("Point"),
        "Recurring problems, most cases first; the point is their mean position.")


_api_schemas()
ANALYTICS = tag("analytics", "Planners' analytics: clusters, hot and cold spots, indicators "
                             "with 环比/同比, hexagon bins, recurring problems")
_PERIOD_Q = query("period", {"type": "string", "default": "30d"},
                  "30d (last N days, 1–3660), 2026-10 (a month) or 2026-10-01..2026-10-31; "
                  "months and days are Beijing time (UTC+8)",
                  example="90d")
_CATEGORY_Q = query("category", {"type": "string", "enum": list(load_catalogue())},
                    "one category (catalogue code)")
_AREA_Q = [query("community", {"type": "string"}, "only this community (code)"),
           query("grid", {"type": "string"}, "only this grid (code)")]


# -- the API ----------------------------------------------------------------------------------
@api.get("/clusters")
@document("Case clusters (DBSCAN, radius in metres) as GeoJSON hulls with counts",
          tags=[ANALYTICS], params=[
              query("radius_m", {"type": "number", "minimum": 1, "maximum": 5000,
                                 "default": 50}, "the DBSCAN radius in metres"),
              query("min_cases", {"type": "integer", "minimum": 2, "maximum": 1000,
                                  "default": 5}, "the DBSCAN minimum count"),
              _CATEGORY_Q, _PERIOD_Q, *_AREA_Q],
          responses={200: geojson(ref("Clusters"))}, errors=(400,))
def api_clusters():
    """Dense places: DBSCAN clusters of the cases reported in a period.

    Query: ``radius_m`` (metres, 1–5000, default 50), ``min_cases`` (2–1000, default 5),
    ``category`` (a catalogue code), ``period`` (``30d``, ``2026-10``,
    ``2026-10-01..2026-10-31``; default 30d), optionally ``community`` or ``grid``.
    Returns a GeoJSON FeatureCollection of hulls (EPSG:4326), largest first, each with
    ``cluster_id``, ``count``, ``categories`` (code → count), ``compounds`` (codes),
    ``first_case``, ``last_case`` and ``case_ids``. 400 with the field for a bad parameter.
    """
    radius = _float_arg("radius_m", 50.0)
    k = _int_arg("min_cases", 5)
    cat = _category_arg()
    period = _period_arg()
    community, grid = _area_args()
    etag = _etag("clusters", period, radius, k, cat, community, grid)
    if (hit := _not_modified(etag)) is not None:
        return hit
    frame = cases_frame(period, cat, community, grid)
    out = analysis.clusters(frame, radius_m=radius, min_cases=k)
    comps = _names("compound")
    gdf = out.copy()
    for col in ("first_case", "last_case"):
        gdf[col] = [_iso(v) for v in gdf[col]]
    gdf["compound_names"] = [[comps.get(c, c) for c in cs] for cs in gdf["compounds"]]
    props = ["cluster_id", "count", "categories", "categories_text", "compounds",
             "compound_names", "first_case", "last_case", "case_ids"]
    body = feature_collection(gdf, props, precision=6)
    body.update(period=period.to_dict(), radius_m=radius, min_cases=k, category=cat,
                community=community, grid=grid, cases=len(frame),
                category_names=_category_names())
    return _respond(body, etag, "application/geo+json")


@api.get("/hotspots")
@document("Hot and cold spots per grid (Getis–Ord Gi*, Benjamini–Hochberg FDR)",
          tags=[ANALYTICS], params=[
              query("metric", {"type": "string", "enum": list(METRICS), "default": "new"},
                    "the coverage metric tested"),
              _PERIOD_Q,
              query("confidence", {"type": "number", "enum": [0.9, 0.95, 0.99],
                                   "default": 0.95},
                    "the confidence level; 1 − confidence is the test level and the FDR"),
              _CATEGORY_Q],
          responses={200: geojson(ref("Hotspots"))}, errors=(400,))
def api_hotspots():
    """Grids that are significantly hot or cold on a coverage metric (Getis–Ord Gi*).

    Query: ``metric`` (a key of the coverage metrics, default ``new``), ``period``
    (default 30d), ``confidence`` (0.90, 0.95 or 0.99; default 0.95), optionally
    ``category`` (the per-category metrics). Returns a GeoJSON FeatureCollection with
    every grid: ``code``, ``name``, ``value``, ``neighbours``, ``z`` (Gi* z-score), ``p``
    (two-sided permutation p-value), ``q`` (Benjamini–Hochberg adjusted) and ``cls``
    (``hot``, ``cold``, ``none``, ``island`` or ``no_data``); the test's settings
    (``confidence``, ``alpha``, ``permutations``, ``tested``, ``p_threshold``) and the
    metric's definition alongside.
    """
    metric = get_metric(_raw("metric") or "new")
    period = _period_arg()
    conf = _confidence_arg()
    cat = _category_arg()
    etag = _etag("hotspots", period, metric.key, conf, cat)
    if (hit := _not_modified(etag)) is not None:
        return hit
    grids = grid_values(period, cat)
    out = analysis.hotspots(grids, metric.key, confidence=conf)
    props = ["code", "name", "value", "neighbours", "z", "p", "q", "cls"]
    body = feature_collection(out, props, precision=6)
    for feat in body["features"]:
        for key in ("value", "z", "p", "q"):
            v = feat["properties"][key]
            feat["properties"][key] = None if v is None or not np.isfinite(v) else v
    a = out.attrs
    body.update(metric=metric.to_dict(), period=period.to_dict(), category=cat,
                confidence=a["confidence"], alpha=a["alpha"], permutations=a["permutations"],
                tested=a["tested"], p_threshold=a["p_threshold"],
                correction="benjamini_hochberg", weights="queen_contiguity")
    return _respond(body, etag, "application/geo+json")


@api.get("/indicators")
@document("The national indicators per area with 环比 and 同比", tags=[ANALYTICS], params=[
              query("level", {"type": "string", "enum": list(LEVELS),
                              "default": "community"}, "the areas"),
              _PERIOD_Q, _CATEGORY_Q],
          responses={200: ref("Indicators")}, errors=(400,))
def api_indicators():
    """The national indicators per area with 环比 and 同比.

    Query: ``level`` (``grid``, ``compound``, ``community``, ``street`` or ``org``; default
    ``community``), ``period`` (default 30d; one that starts after now is refused, the
    current month is counted to date and marked ``"partial": true``), optionally
    ``category`` (only that category's cases). Returns ``rows`` (one per area: ``code``,
    ``name`` and, for every indicator ``<key>``, ``<key>``, ``<key>_prev`` (环比 base),
    ``<key>_yoy`` (同比 base), ``<key>_mom_change``, ``<key>_yoy_change`` and ``rank_<key>``
    where it is ranked; then the numerators and denominators), the ``definitions`` of the
    indicators in both languages, the three periods and the ``change_note``.
    """
    level = _level_arg("community")
    period = _period_arg(compared=True)
    cat = _category_arg()
    etag = _etag("indicators", period, level, cat)
    if (hit := _not_modified(etag)) is not None:
        return hit
    df = indicators(hemei().store, level, period, category=cat)
    rows = json.loads(df.reset_index(drop=True).to_json(orient="records", force_ascii=False,
                                                         double_precision=10))
    return _respond({"level": level, **{k: v for k, v in df.attrs.items() if k != "level"},
                     "definitions": [i.to_dict() for i in INDICATORS.values()],
                     "helpers": list(HELPERS), "change_note": CHANGE_NOTE, "rows": rows}, etag)


@api.get("/hexbins")
@document("Coverage metrics per H3 hexagon", tags=[ANALYTICS], params=[
              query("resolution", {"type": "integer", "minimum": 5, "maximum": 12,
                                   "default": 9}, "H3 resolution (9: about 0.1 km²)"),
              _PERIOD_Q, _CATEGORY_Q],
          responses={200: geojson(ref("HexBins"))}, errors=(400,))
def api_hexbins():
    """The coverage metrics per H3 hexagon.

    Query: ``resolution`` (5–12, default 9), ``period`` (default 30d), optionally
    ``category``. Returns a GeoJSON FeatureCollection: ``cell``, ``cases`` (cases counted
    in the hexagon: reported before the period end, not rejected), ``open``, ``new``,
    ``resolution_rate``, ``on_time_rate``, ``overdue`` (null = no data) and the
    numerators and denominators, with the metric definitions.
    """
    res = _int_arg("resolution", 9)
    period = _period_arg()
    cat = _category_arg()
    etag = _etag("hexbins", period, res, cat)
    if (hit := _not_modified(etag)) is not None:
        return hit
    frame = analysis.load_cases_frame(hemei().store, category=cat)
    out = analysis.hex_bins(frame, resolution=res, period=period)
    props = ["cell", "cases", *analysis.HEX_METRICS,
             *[c for c in out.columns if c not in ("cell", "cases", "geometry",
                                                   *analysis.HEX_METRICS)]]
    g = out.copy()
    for k in analysis.HEX_METRICS:
        g[k] = g[k].astype(object).where(g[k].notna(), None)
    body = feature_collection(g, props, precision=6)
    body.update(resolution=res, period=period.to_dict(), category=cat,
                cases=int(out["cases"].sum()) if len(out) else 0,
                metrics=out.attrs.get("metrics", []))
    return _respond(body, etag, "application/geo+json")


@api.get("/recurring")
@document("Recurring problems: the same category at the same place within a window",
          tags=[ANALYTICS], params=[
              query("window_days", {"type": "integer", "minimum": 1, "maximum": 3660,
                                    "default": 90}, "the sliding window in days"),
              query("min_repeats", {"type": "integer", "minimum": 2, "maximum": 1000,
                                    "default": 3}, "how many cases make a repeat"),
              query("radius_m", {"type": "number", "minimum": 1, "maximum": 5000},
                    "also group cases outside every compound within this many metres"),
              query("period", {"type": "string"}, "only cases reported in this period "
                    "(default: every case)", example="365d"),
              _CATEGORY_Q, *_AREA_Q],
          responses={200: geojson(ref("Recurring"))}, errors=(400,))
def api_recurring():
    """The same problem at the same place again and again.

    Query: ``window_days`` (1–3660, default 90), ``min_repeats`` (2–1000, default 3),
    ``radius_m`` (1–5000: also group cases outside every compound by proximity),
    optionally ``period`` (only cases reported then; default every case), ``category``,
    ``community`` or ``grid``. Returns a GeoJSON FeatureCollection of points (the mean
    position of each problem's cases), most cases first: ``compound_code``,
    ``compound_name``, ``cluster_id`` (proximity places), ``category``, ``count``,
    ``max_in_window``, ``first``, ``last``, ``case_ids``.
    """
    days = _int_arg("window_days", 90)
    k = _int_arg("min_repeats", 3)
    radius = _float_arg("radius_m", None)
    period = _period_arg() if _raw("period") else None
    cat = _category_arg()
    community, grid = _area_args()
    etag = _etag("recurring", period, days, k, radius, cat, community, grid)
    if (hit := _not_modified(etag)) is not None:
        return hit
    frame = cases_frame(period, cat, community, grid)
    out = analysis.recurring(frame, window_days=days, min_repeats=k, radius_m=radius)
    body = _recurring_geojson(out)
    body.update(window_days=days, min_repeats=k, radius_m=radius,
                period=period.to_dict() if period else None, category=cat,
                category_names=_category_names())
    return _respond(body, etag, "application/geo+json")


def _recurring_geojson(out: pd.DataFrame) -> dict:
    comps = _names("compound")
    feats = []
    for r in out.itertuples(index=False):
        cid = None if pd.isna(r.cluster_id) else int(r.cluster_id)
        feats.append({
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [round(float(r.lon), 6),
                                                          round(float(r.lat), 6)]},
            "properties": {
                "compound_code": r.compound_code, "cluster_id": cid,
                "compound_name": comps.get(r.compound_code) if r.compound_code else None,
                "category": r.category, "count": int(r.count),
                "max_in_window": int(r.max_in_window), "first": _iso(r.first),
                "last": _iso(r.last), "case_ids": [int(x) for x in r.case_ids]},
        })
    return {"type": "FeatureCollection", "features": feats}


# -- the drill-down: which cases are behind a number -------------------------------------------
def indicator_case_ids(level: str, code, key: str, period: Period, *,
                       category: str | None = None, community: str | None = None,
                       grid: str | None = None) -> list[int]:
    """The cases an indicator (or one of its numerators and denominators) counted for one
    area: the indicator's own statement grouped by case as well (see the module
    docstring), with the same filters as the number (``category``, and ``community`` or
    ``grid``: only the cases stored with that code). Indicators in hours give the cases
    resolved in the period (those the times are measured on)."""
    if key in INDICATORS and INDICATORS[key].kind == "hours":
        key = "resolved"
    elif key in INDICATORS and INDICATORS[key].kind == "rate":
        key = INDICATORS[key].numerator
    if key not in INDICATORS and key not in HELPERS:
        get_indicator(key)  # InvalidInput naming the field
    col = f"{key}__0"
    if level == "org":
        if not re.fullmatch(r"\d{1,18}", str(code)):
            raise InvalidInput(f"an organisation is a number, got {code!r}", field="code")
        code = int(code)
    else:
        code = str(code)
    qs = indicator_queries(level, (period, period.previous(), year_before(period)), [code],
                           category=category, community=community, grid=grid)
    part = next((p for p in _PARTS if col in qs[p].selected_columns), None)
    if part is None:
        raise InvalidInput(f"{key} is not counted per case", field="indicator")
    per_case = qs[part].add_columns(cases.c.id.label("case_id")).group_by(cases.c.id).subquery()
    q = sa.select(per_case.c.case_id).where(per_case.c[col] > 0)
    with hemei().store.engine.connect() as conn:
        return sorted(int(r[0]) for r in conn.execute(q))


def _area_name(level: str, code: str) -> str:
    """The name of the area ``code`` of ``level`` (an organisation's for ``org``), or
    ``InvalidInput`` naming ``code`` when there is no such area: not in the active layer
    and on no case (a grid since redrawn is still found through its cases)."""
    from gis.accounts import organisations as o

    if level == "org":
        if not re.fullmatch(r"\d{1,18}", str(code)):
            raise InvalidInput(f"an organisation is a number, got {code!r}", field="code")
        name_q = sa.select(o.c.name).where(o.c.id == int(code))
        used_q = sa.select(cases.c.id).where(cases.c.assignee_org == int(code)).limit(1)
    else:
        name = _names(level).get(code)
        if name is not None:
            return name
        name_q = None
        used_q = sa.select(cases.c.id).where(cases.c[f"{level}_code"] == code).limit(1)
    with hemei().store.engine.connect() as conn:
        name = conn.execute(name_q).scalar() if name_q is not None else None
        if name is None and conn.execute(used_q).first() is None:
            raise InvalidInput(f"unknown {level} {code!r}", field="code")
    return name or str(code)


def _week_arg() -> tuple[datetime, datetime] | None:
    """``week``: the Beijing day a week starts on (``YYYY-MM-DD``, the chart's Monday), as
    the naive UTC span of those seven Beijing days."""
    raw = _raw("week")
    if raw is None:
        return None
    try:
        start = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(f"week must be a date YYYY-MM-DD, got {raw!r}", field="week") from None
    # The periods' years (gis.coverage.MIN_YEAR): a week in 9999 would overflow below.
    check_year(start.year, raw, field="week")
    start = beijing_midnight(start.date())
    return start, start + timedelta(days=7)


def _days_arg() -> tuple[float, float] | None:
    raw = _raw("days")
    if raw is None:
        return None
    m = re.fullmatch(r"(\d{1,5}(?:\.\d+)?)-(\d{1,5}(?:\.\d+)?)", raw)
    if not m or float(m.group(1)) >= float(m.group(2)):
        raise InvalidInput(f"days must be a range such as 0-3, got {raw!r}", field="days")
    return float(m.group(1)), float(m.group(2))


def _in(series: pd.Series, start, end) -> np.ndarray:
    t = pd.to_datetime(series)
    return ((t >= pd.Timestamp(start)) & (t < pd.Timestamp(end))).to_numpy()


def drill_ids(what: str, args: dict) -> tuple[list[int], dict]:
    """The case ids behind a number and a description of it (see the module docstring)."""
    period: Period = args["period"]
    cat, community, grid = args["category"], args["community"], args["grid"]
    info: dict = {}
    if what == "indicator":
        key = _raw("indicator") or ""
        if key not in INDICATORS and key not in HELPERS:
            get_indicator(key)
        level = _level_arg("community")
        code = _raw("code")
        if code is None:
            raise InvalidInput("code (the area) is missing", field="code")
        info.update(indicator=key, level=level, code=code, name=_area_name(level, code))
        # The page counts the cases inside the chosen area (a compound's cases in the
        # chosen grid) and of the chosen category, so its drill-down does too.
        return indicator_case_ids(level, code, key, period, **_indicator_filters(args)), info
    if what in ("reported", "closed", "open"):
        frame = cases_frame(None, cat, community, grid)
        week = _week_arg()
        start, end = week if week else (period.start, period.end)
        if what == "reported":
            keep = _in(frame["created_at"], start, end)
        elif what == "closed":
            keep = (frame["status"] == "closed").to_numpy() & _in(frame["closed_at"], start, end)
            days = _days_arg()
            if days is not None:
                took = ((pd.to_datetime(frame["closed_at"]) - pd.to_datetime(frame["created_at"]))
                        .dt.total_seconds() / 86400).to_numpy()
                keep &= (took >= days[0]) & (took < days[1])
                info["days"] = days
        else:
            keep = frame["status"].isin(OPEN_STATUSES).to_numpy()
        if week and what != "open":
            info["week"] = week[0]
        return sorted(frame.loc[keep, "id"].astype(int).tolist()), info
    frame = cases_frame(period, cat, community, grid)
    if what == "cluster":
        cid = _int_arg("cluster", None)
        radius = _range("radius_m", _float_arg("radius_m", 50.0), 1, 5000)
        k = _range("min_cases", _int_arg("min_cases", 5), 2, 1000)
        out = analysis.clusters(frame, radius_m=radius, min_cases=k)
        match = out[out["cluster_id"] == cid] if cid is not None else out.iloc[:0]
        if match.empty:
            raise InvalidInput(f"there is no cluster {cid} with these filters", field="cluster")
        info.update(cluster=cid, radius_m=radius, min_cases=k)
        return sorted(match.iloc[0]["case_ids"]), info
    if what == "recurring":
        comp = _raw("compound")
        days = _int_arg("window_days", 90)
        k = _int_arg("min_repeats", 3)
        out = analysis.recurring(frame, window_days=days, min_repeats=k)
        match = out[(out["compound_code"] == comp)]
        if match.empty:
            raise InvalidInput(f"no recurring problem at {comp!r} with these filters",
                               field="compound")
        info.update(compound=comp, window_days=days, min_repeats=k)
        return sorted({i for ids in match["case_ids"] for i in ids}), info
    raise InvalidInput(f"unknown what {what!r}; expected one of: {', '.join(WHATS)}",
                       field="what")


def case_rows(ids: list[int] | None = None, *, oldest_open: dict | None = None,
              limit: int | None = None) -> tuple[list[dict], int]:
    """Rows to list (id, title, category, status, times, codes; never reporter data):
    the cases ``ids`` newest first, or the oldest open ones matching ``oldest_open``
    (``category``, ``community``, ``grid``). Returns the rows and how many match."""
    locale = _locale()
    c = cases.c
    cols = [c.id, c.title, c.category, c.status, c.created_at, c.due_at, c.closed_at,
            c.grid_code, c.community_code, c.compound_code]
    if oldest_open is not None:
        conds = [c.status.in_(OPEN_STATUSES)]
        for key in ("category", "community", "grid"):
            v = oldest_open.get(key)
            if v:
                conds.append((c.category if key == "category" else c[f"{key}_code"]) == v)
        order = [c.created_at.asc(), c.id.asc()]
    else:
        conds = [c.id.in_(ids or [])]
        order = [c.created_at.desc(), c.id.desc()]
    q = sa.select(*cols).where(*conds).order_by(*order)
    if limit is not None:
        q = q.limit(limit)
    with hemei().store.engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
        total = conn.execute(sa.select(sa.func.count()).select_from(cases).where(*conds)).scalar()
    now = utcnow()
    grids, comps = _names("grid"), _names("compound")
    out = []
    for r in rows:
        created = pd.Timestamp(r["created_at"]).to_pydatetime()
        due = pd.Timestamp(r["due_at"]).to_pydatetime() if r["due_at"] is not None else None
        out.append({
            "id": int(r["id"]), "title": r["title"], "status": r["status"],
            "status_label": status_label(r["status"], locale),
            "category_label": get_category(r["category"]).label(locale)
            if r["category"] in load_catalogue() else r["category"],
            "created_at": created, "due_at": due,
            "closed_at": pd.Timestamp(r["closed_at"]).to_pydatetime()
            if r["closed_at"] is not None else None,
            "age_days": max((now - created).days, 0),
            "overdue": r["status"] in OPEN_STATUSES and due is not None and due < now,
            "overdue_days": (now - due).total_seconds() / 86400 if due else None,
            "grid_code": r["grid_code"], "grid_name": grids.get(r["grid_code"]),
            "compound_name": comps.get(r["compound_code"]),
        })
    return out, int(total)


# -- the pages -------------------------------------------------------------------------------
def _locale() -> str:
    from webapp.i18n import get_locale

    return get_locale()


def _tiles():
    from webapp.pages import tiles

    return tiles()


def _filters(user, *, default_area: bool = True) -> dict:
    """The page's filters, checked: period, category, community, grid. A community's
    planner starts on their community (``default_area``) until they choose another."""
    community, grid = _area_args()
    if (default_area and "community" not in request.args and "grid" not in request.args
            and user.role == "planner" and user.area_code):
        # A community's planner starts on their community.
        if (hemei().layers["community"]["code"] == user.area_code).any():
            community = user.area_code
    return {"period": _period_arg(DEFAULT_PERIOD, compared=True),
            "category": _category_arg(), "community": community, "grid": grid}


def _link_args(f: dict, *, at: bool = True) -> dict:
    """The filters as link parameters; ``at`` pins the end of a relative period or of a
    month cut at now (see :func:`_at_arg`)."""
    out = {"period": f["period"].key}
    if at and (re.fullmatch(r"\d+d", f["period"].key) or f["period"].partial):
        out["at"] = int(f["period"].end.replace(tzinfo=UTC).timestamp())
    for key in ("category", "community", "grid"):
        if f.get(key):
            out[key] = f[key]
    return out


def _span(period: Period) -> str:
    """``2026-10-01 – 2026-10-31``: the first and last Beijing day of a period (end
    excluded)."""
    last = to_beijing(period.end - timedelta(microseconds=1))
    return f"{to_beijing(period.start):%Y-%m-%d} – {last:%Y-%m-%d}"


def _month_keys(now: datetime, n: int = 12) -> list[str]:
    """The ``n`` Beijing months up to the one holding ``now`` (naive UTC), newest first."""
    local = to_beijing(now)
    keys, y, m = [], local.year, local.month
    for _i in range(n):
        keys.append(f"{y:04d}-{m:02d}")
        y, m = (y - 1, 12) if m == 1 else (y, m - 1)
    return keys


def _area_level(f: dict) -> tuple[str, str]:
    """The level and code of the area the filters choose (the street by default)."""
    if f["grid"]:
        return "grid", f["grid"]
    if f["community"]:
        return "community", f["community"]
    return "street", str(hemei().layers["street"]["code"].iloc[0])


def _level_codes(level: str, f: dict) -> list | None:
    """The areas of ``level`` inside the chosen area (None: all of them)."""
    layers = hemei().layers
    if level == "org" or (not f["community"] and not f["grid"]):
        return None
    if level == "street":
        return None
    if level == "community":
        return [f["community"]]
    if level == "grid":
        g = layers["grid"]
        return [f["grid"]] if f["grid"] else g.loc[g["parent_code"] == f["community"],
                                                    "code"].tolist()
    comps = layers.get("compound")
    if comps is None:
        return []
    if f["grid"]:
        geom = layers["grid"].set_index("code").geometry[f["grid"]]
        # Overlapping the grid, not only touching its edge (interiors meet): a
        # predicate, so no area is measured in degrees.
        hit = comps[comps.intersects(geom)]
        return hit[~hit.touches(geom)]["code"].tolist()
    return comps.loc[comps["parent_code"] == f["community"], "code"].tolist()


def _indicator_filters(f: dict) -> dict:
    """The filters as :func:`gis.indicators.indicators` takes them: the category, and the
    most specific area chosen (a grid, else a community)."""
    out = {"category": f["category"]}
    if f["grid"]:
        out["grid"] = f["grid"]
    elif f["community"]:
        out["community"] = f["community"]
    return out


def _change_class(ind, change) -> str:
    if change is None or pd.isna(change) or change == 0 or ind.better is None:
        return "flat"
    good = (change < 0) if ind.better == "lower" else (change > 0)
    return "better" if good else "worse"


def _indicator_cells(df: pd.DataFrame, level: str, period: Period, locale: str,
                     link_args: dict) -> list[dict]:
    """One row per area, with every indicator's value, 环比/同比 and drill-down links."""
    rows = []
    for code, r in df.iterrows():
        cells = []
        for key, ind in INDICATORS.items():
            text = ind.format(r[key], locale)
            if ind.kind == "hours" and not pd.isna(r[key]):
                text += " " + ind.unit_label(locale)
            cell = {"key": key, "text": text,
                    "mom": ind.format_change(r[f"{key}_mom_change"], locale),
                    "yoy": ind.format_change(r[f"{key}_yoy_change"], locale),
                    "prev": ind.format(r[f"{key}_prev"], locale),
                    "prev_yoy": ind.format(r[f"{key}_yoy"], locale),
                    "mom_class": _change_class(ind, r[f"{key}_mom_change"]),
                    "yoy_class": _change_class(ind, r[f"{key}_yoy_change"]),
                    "rank": (None if f"rank_{key}" not in r or pd.isna(r[f"rank_{key}"])
                             else int(r[f"rank_{key}"])),
                    "kind": ind.kind, "link": None, "count": None, "parts": None}

            def drill(name: str, code=code) -> str:
                return url_for("planner.drill", what="indicator", indicator=name, level=level,
                               code=code, period=period.key, **link_args)

            if key in _NOT_CASES:
                pass
            elif ind.kind == "count":
                cell["count"] = int(r[key])
                cell["link"] = drill(key)
            elif ind.kind == "rate":
                cell["parts"] = [(int(r[ind.numerator]), drill(ind.numerator)),
                                 (int(r[ind.denominator]), drill(ind.denominator))]
            else:  # hours: measured on the cases resolved in the period
                cell["count"] = int(r["resolved"])
                cell["link"] = drill("resolved")
            cells.append(cell)
        rows.append({"code": code, "name": r["name"] or str(code), "cells": cells,
                     "by_key": {c["key"]: c for c in cells}})
    return rows


def _charts(f: dict, frame: pd.DataFrame, locale: str, link_args: dict) -> dict:
    from gis import charts

    period: Period = f["period"]
    weeks = charts.weekly_counts(frame, period.start, period.end)

    def week_link(kind: str, week) -> str:
        return url_for("planner.drill", what=kind, week=f"{week:%Y-%m-%d}", **link_args)

    trend = charts.weekly_trend(
        weeks, title=_("Cases per week"), reported_label=_("New reports"),
        closed_label=_("Closures"), period_label=_("Chosen period"),
        empty_label=_("No cases"), links=week_link,
        link_label=lambda what, week, n: _("%(what)s, week of %(date)s: %(num)d", what=what,
                                           date=f"{week:%Y-%m-%d}", num=n))

    in_period = frame[_in(frame["created_at"], period.start, period.end)]
    counts = in_period["category"].value_counts()
    cats = load_catalogue()
    names = {c.code: c.label(locale) for c in cats.values()}
    codes = [c for c in cats if counts.get(c, 0)] + [c for c in counts.index if c not in cats]
    no_cat = {k: v for k, v in link_args.items() if k != "category"}
    bars = [(names.get(c, c), int(counts.get(c, 0)),
             url_for("planner.drill", what="reported", category=c, **no_cat))
            for c in codes]
    highlight = codes.index(f["category"]) if f["category"] in codes else None
    by_category = charts.category_breakdown(
        bars, title=_("Cases by category"), empty_label=_("No cases"), highlight=highlight,
        link_label=lambda name, n: _("%(category)s, cases reported: %(num)d", category=name,
                                     num=n))

    days = charts.close_days(frame, period.start, period.end)

    def days_link(lo: float, hi: float) -> str:
        return url_for("planner.drill", what="closed", days=f"{lo:g}-{hi:g}", **link_args)

    close = charts.time_to_close(
        days, title=_("Time to close"), xlabel=_("Days from report to closure"),
        ylabel=_("Cases closed"), median_label=_("median %(days)s days", days="{days}"),
        empty_label=_("No case was closed in this period"), links=days_link,
        link_label=lambda lo, hi, n: _("Closed in %(lo)s to %(hi)s days: %(num)d cases",
                                       lo=f"{lo:g}", hi=f"{hi:g}", num=n))
    return {"trend": trend, "categories": by_category, "close": close,
            "weeks": weeks, "n_closed": len(days),
            "median_days": float(np.median(days)) if len(days) else None,
            "n_reported": int(len(in_period))}


def _map(f: dict, metric, conf: float, frame: pd.DataFrame, radius: float, k: int,
         locale: str, link_args: dict):
    from gis import maps

    h = hemei()
    grids = grid_values(f["period"], f["category"])
    spots = analysis.hotspots(grids, metric.key, confidence=conf)
    found = analysis.clusters(frame, radius_m=radius, min_cases=k)
    ch = maps.Choropleth(column=metric.key, title=metric.label(locale), better=metric.better,
                         fmt="{:.0%}" if metric.kind == "rate" else "{:.3g}",
                         note=metric.formula(locale), integer=metric.kind == "count")
    layers = h.layers
    focus = None
    if f["grid"]:
        focus = layers["grid"].set_index("code").geometry[f["grid"]]
    elif f["community"]:
        focus = layers["community"].set_index("code").geometry[f["community"]]
    cluster_url = url_for("planner.drill", what="cluster", cluster="0", radius_m=f"{radius:g}",
                          min_cases=k, **link_args).replace("cluster=0", "cluster={cluster_id}")
    m = maps.planner_map(
        grids, spots, found, layers, tiles=_tiles(), locale=locale, choropleth=ch,
        grid_url=url_for("pages.grid", code="CODE").replace("CODE", "{code}"),
        cluster_url=cluster_url, category_names=_category_names(locale),
        compound_names=_names("compound"), focus=focus)
    return m, spots, found


@bp.get("/planner")
def planner():
    """The planner's page (see the module docstring); cached per filters, language, tile
    source and data version."""
    user = web_user(*READERS)
    f = _filters(user)
    metric = get_metric(_raw("metric") or "new")
    conf = _confidence_arg()
    radius = _range("radius_m", _float_arg("radius_m", 50.0), 1, 5000)
    k = _range("min_cases", _int_arg("min_cases", 5), 2, 1000)
    level = _level_arg("community")
    window = _range("window_days", _int_arg("window_days", 90), 1, 3660)
    repeats = _range("min_repeats", _int_arg("min_repeats", 3), 2, 1000)
    locale = _locale()
    h = hemei()
    now = utcnow()
    key = ("planner", f["period"].key, f["period"].end.strftime("%Y%m%d%H"), f["category"],
           f["community"], f["grid"], metric.key, conf, radius, k, level, window, repeats,
           locale, _tiles().kind, h.store.data_version())

    def render() -> str:
        from webapp.pages import _render

        period: Period = f["period"]
        link_args = _link_args(f)
        all_cases = cases_frame(None, f["category"], f["community"], f["grid"])
        in_period = all_cases[_in(all_cases["created_at"], period.start, period.end)]
        m, spots, found = _map(f, metric, conf, in_period, radius, k, locale, link_args)
        chart = _charts(f, all_cases, locale, link_args)

        area_level, area_code = _area_level(f)
        # Every indicator on the page counts the cases the filters choose: the category,
        # and only those inside the chosen area (a compound that straddles the chosen
        # grid counts its cases in that grid, not all of them). The drill-down links
        # carry the same filters.
        narrow = _indicator_filters(f)
        headline = indicators(h.store, area_level, period, codes=[area_code], **narrow)
        pin = {k: v for k, v in link_args.items() if k != "period"}
        head = _indicator_cells(headline, area_level, period, locale, pin)[0]
        table = indicators(h.store, level, period, codes=_level_codes(level, f), **narrow)
        ranked = indicators(h.store, "grid", period, codes=_level_codes("grid", f), **narrow)
        ranked = ranked.sort_values(["rank_closure_rate", "code"], na_position="last")
        ranked_rows = _indicator_cells(ranked, "grid", period, locale, pin)

        oldest, n_open = case_rows(oldest_open={"category": f["category"],
                                                "community": f["community"],
                                                "grid": f["grid"]}, limit=TOP_OPEN)
        rec = analysis.recurring(in_period, window_days=window, min_repeats=repeats)
        comps, cats = _names("compound"), _category_names(locale)
        recurring_rows = [{
            "compound": comps.get(r.compound_code, r.compound_code),
            "compound_code": r.compound_code, "category": cats.get(r.category, r.category),
            "count": int(r.count), "max_in_window": int(r.max_in_window),
            "first": r.first, "last": r.last,
            "link": url_for("planner.drill", what="recurring", compound=r.compound_code,
                            window_days=window, min_repeats=repeats,
                            **{**link_args, "category": r.category}),
        } for r in rec.itertuples(index=False)]

        layers = h.layers
        communities = layers["community"][["code", "name"]].to_dict("records")
        grids = layers["grid"][["code", "name", "parent_code"]].sort_values("code")
        return render_template(
            "planner/index.html", map=_render(m), f=f, period=period,
            periods=PERIODS, months=_month_keys(now), categories=load_catalogue(),
            communities=communities, grids=grids.to_dict("records"),
            metrics=METRICS, metric=metric, confidence=conf, confidences=CONFIDENCES,
            radius_m=radius, min_cases=k, level=level, levels=LEVELS,
            window_days=window, min_repeats=repeats,
            area_level=area_level, area_name=head["name"], head=head,
            headline_keys=("reported", "closed", "closure_rate", "on_time_closure_rate",
                           "overdue", "avg_handling_hours"),
            table=_indicator_cells(table, level, period, locale, pin),
            ranked=ranked_rows, indicators=INDICATORS,
            change_note=CHANGE_NOTE["en" if locale == "en" else "zh"],
            spans={k: _span(p) for k, p in (("period", period), ("previous",
                                                                   period.previous()),
                                             ("year_before", year_before(period)))},
            charts=chart,
            spots=spots, clusters=found, n_in_period=len(in_period),
            oldest=oldest, n_open=n_open, recurring=recurring_rows,
            head_cells=head["by_key"],
            open_link=url_for("planner.drill", what="open", **link_args),
            reported_link=url_for("planner.drill", what="reported", **link_args),
            generated=now)

    cache = current_app.extensions["hemei_planner"]
    return respond(cache.get_or_render(key, render))


@bp.get("/planner/cases")
def drill():
    """The cases behind a number on the planner's page (see the module docstring)."""
    user = web_user(*READERS)
    f = _filters(user, default_area=False)
    what = _raw("what") or "reported"
    if what not in WHATS:
        raise InvalidInput(f"unknown what {what!r}; expected one of: {', '.join(WHATS)}",
                           field="what")
    ids, info = drill_ids(what, f)
    rows, total = case_rows(ids, limit=MAX_LISTED)
    if what == "open":
        rows.sort(key=lambda r: (r["created_at"], r["id"]))
    locale = _locale()
    chosen = (_names("grid").get(f["grid"]) if f["grid"] else
              _names("community").get(f["community"]) if f["community"] else None)
    area, within = chosen, None
    if what == "indicator":
        lvl = info["level"]
        area = info["name"]  # an organisation's name too, not its id
        # Counted only inside the chosen area (see drill_ids): say so unless the row is
        # that area itself.
        own = ("grid", f["grid"]) if f["grid"] else ("community", f["community"])
        if chosen and (lvl, info["code"]) != own:
            within = chosen
        info["definition"] = INDICATORS.get(info["indicator"])
        info["label"] = (info["definition"].label(locale) if info["definition"]
                         else helper_labels().get(info["indicator"], info["indicator"]))
    return render_template(
        "planner/cases.html", what=what, info=info, f=f, period=f["period"], rows=rows,
        total=total, shown=len(rows), area=area, within=within,
        period_last=f["period"].end - timedelta(microseconds=1),
        category=get_category(f["category"]).label(locale) if f["category"] else None,
        back=url_for("planner.planner", **_link_args(f, at=False)))


def helper_labels() -> dict[str, str]:
    """Names of the numerators and denominators (:data:`gis.indicators.HELPERS`) that a
    rate's "x / y" links to."""
    return {
        "closed_with_due": _("Closed in the period, with a time limit"),
        "closed_on_time": _("Closed on time"),
        "resolved_with_due": _("Resolved in the period, with a time limit"),
        "resolved_on_time": _("Resolved on time"),
        "checked": _("Checked"),
        "reworked": _("Sent back for rework"),
        "open_during": _("Open at some time in the period"),
        "extended": _("Given an extension"),
        "evaluations": _("Evaluations"),
        "satisfied": _("Satisfied evaluations"),
    }
