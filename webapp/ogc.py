"""OGC API – Features (Part 1: Core, GeoJSON, OpenAPI 3.0) under ``/ogc/``.

The boundary layers (street, community, compound, grid) and the cases (public fields
only) as feature collections, so GIS clients (QGIS, GDAL's ``OAPIF`` driver, OpenLayers
…) can read them directly::

    /ogc/                                         landing page (self, service-desc,
                                                  conformance, data links)
    /ogc/conformance                              core, geojson, oas30
    /ogc/api                                      the OpenAPI 3.0 definition
    /ogc/collections                              every collection with its extent
    /ogc/collections/{id}                         one collection
    /ogc/collections/{id}/items                   GeoJSON; bbox, limit, offset, datetime
    /ogc/collections/{id}/items/{featureId}       one feature (boundaries by code,
                                                  cases by id)

Decisions, each from the standard (OGC 17-069r4) or GDAL's driver:

- ``limit``: default 100, maximum 10,000 (the standard's own fragment); a larger value is
  not an error but is lowered to the maximum (§7.15.4); below 1 or not an integer is 400.
  Paging continues through ``next`` links (``offset`` is this server's paging parameter,
  documented in the API definition, 0 to 1,000,000,000 as in ``/api/v1``); ``prev`` is
  given after the first page. Integers are ASCII digits (``limit=٣`` is 400).
- ``bbox``: four numbers (or six, the heights ignored) in CRS84; a west edge east of the
  east edge crosses the antimeridian; latitudes and longitudes outside their range or a
  south edge north of the north edge are 400. Boundaries are filtered with the layer's
  spatial index (``intersects``), cases in SQL on their point.
- ``datetime``: an instant, ``start/end``, ``../end`` or ``start/..`` (an empty string is
  open too), RFC 3339; applied to a case's ``created_at``. A value covers its own
  precision: ``2025-03-01`` is that whole UTC day, ``…T10:00:00Z`` that second (the
  precision cases are published in). A missing offset means UTC, and the date-only
  ``2025-03-01T`` that GDAL sends for a ``-where`` on a date is accepted. The year must be
  1900–2999 (so no offset or precision arithmetic can overflow). Boundaries have
  no temporal geometry, so a valid ``datetime`` matches all of them (/req/core/
  fc-time-response C); a malformed one is 400 everywhere.
- Unknown query parameters are 400 (/req/core/query-param-unknown); ``f=json`` is
  accepted, other formats are 400. Only JSON is served: a browser asking for HTML gets
  JSON too.
- Errors are ``{"code", "description"}`` (the standard's exception schema) with 400/404.
- Cases carry exactly the public fields of :func:`webapp.api.case_feature` (never the
  reporter's name or phone, the tracking code or staff names), flattened to scalars
  (``category_name_zh``…) with the same keys on every feature: GDAL builds the layer's
  schema from the first page.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timedelta

import numpy as np
import sqlalchemy as sa
from flask import Blueprint, current_app, request, url_for
from shapely.geometry import box
from werkzeug.exceptions import HTTPException

from gis.cases import Case, utcnow
from gis.errors import HemeiError
from gis.geojson import feature_collection
from gis.storage import LEVELS, cases
from webapp.api import MAX_ID

bp = Blueprint("ogc", __name__, url_prefix="/ogc")

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
GREGORIAN = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"
CONFORMANCE = (
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
)
JSON = "application/json"
GEOJSON = "application/geo+json"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_OFFSET = 10**9  # as /api/v1; SQLite's OFFSET takes no more than 64 bits
#: The years a datetime may have: far enough inside datetime's own range (1–9999) that the
#: shift to UTC and a day's precision can never overflow it, and wider than any case's.
YEARS = (1900, 2999)
CASES = "cases"
BOUNDARY_PROPS = ["code", "name", "parent_code", "households"]
TITLES = {
    "street": ("街道", "Streets", "The street office's area."),
    "community": ("社区", "Communities", "Residents' communities of the street."),
    "compound": ("小区", "Residential compounds", "Residential compounds (小区)."),
    "grid": ("网格", "Grids", "Management grids, the unit every case is located in."),
    CASES: ("案件", "Cases", "Reported problems, public fields only, newest first; "
            "datetime filters on created_at."),
}
FORMATS = ("json",)
COMMON_PARAMS = frozenset({"f"})
ITEMS_PARAMS = frozenset({"f", "bbox", "limit", "offset", "datetime"})


class OgcError(Exception):
    """An error answered as the standard's exception document ``{code, description}``."""

    def __init__(self, status: int, code: str, description: str):
        super().__init__(description)
        self.status, self.code, self.description = status, code, description


def _bad(description: str) -> OgcError:
    return OgcError(400, "InvalidParameterValue", description)


def _not_found(description: str) -> OgcError:
    return OgcError(404, "NotFound", description)


def hemei():
    return current_app.extensions["hemei"]


# -- responses --------------------------------------------------------------------------
def _respond(body: dict, mimetype: str = JSON, status: int = 200, *, crs: bool = False):
    resp = current_app.response_class(
        json.dumps(body, ensure_ascii=False, allow_nan=False), status=status,
        mimetype=mimetype)
    # Public, read-only data: readable from other origins (/rec/core/cross-origin).
    resp.headers["Access-Control-Allow-Origin"] = "*"
    if crs:
        resp.headers["Content-Crs"] = f"<{CRS84}>"
    if status == 200:
        resp.add_etag()
        return resp.make_conditional(request)
    return resp


def _error(status: int, code: str, description: str):
    return _respond({"code": code, "description": description}, JSON, status)


@bp.errorhandler(OgcError)
def _on_ogc_error(err: OgcError):
    return _error(err.status, err.code, err.description)


@bp.errorhandler(HemeiError)
def _on_hemei_error(err: HemeiError):
    if err.status == 404:
        return _error(404, "NotFound", err.message)
    return _error(err.status, "InvalidParameterValue", err.message)


@bp.errorhandler(HTTPException)
def _on_http_error(err: HTTPException):
    return _error(err.code or 500, (err.name or "error").replace(" ", ""),
                  err.description or "")


@bp.errorhandler(Exception)
def _on_unexpected(err: Exception):
    current_app.logger.exception("unhandled error on %s", request.path)
    return _error(500, "NoApplicableCode", "internal error; it has been logged")


def _link(href: str, rel: str, mimetype: str, title: str) -> dict:
    return {"href": href, "rel": rel, "type": mimetype, "title": title}


def _url(endpoint: str, **kw) -> str:
    return url_for(f"ogc.{endpoint}", _external=True, **kw)


# -- query parameters -----------------------------------------------------------------
def _check_params(allowed: frozenset) -> dict[str, str]:
    """The query parameters, refusing unknown or repeated ones and formats we lack."""
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise _bad(f"unknown query parameter(s): {', '.join(unknown)}; this resource "
                   f"takes: {', '.join(sorted(allowed))}")
    args = {}
    for name in request.args:
        values = request.args.getlist(name)
        if len(values) > 1:
            raise _bad(f"{name} is given {len(values)} times; give it once")
        args[name] = values[0]
    f = args.get("f")
    if f not in (None, "") and f not in FORMATS:
        raise _bad(f"f={f!r} is not offered; this server serves JSON only (f=json)")
    return args


#: An integer in ASCII digits (int() also reads other scripts' digits: "٣" is 3).
_INTEGER = re.compile(r"([+-]?)0*([0-9]+)")


def _integer(name: str, text: str) -> int:
    """An integer parameter. Over 18 significant digits it reads as ±10**18, past every
    bound here, so the range check refuses it (int() refuses over 4,300 digits)."""
    m = _INTEGER.fullmatch(text)
    if m is None:
        raise _bad(f"{name} must be an integer, got {text!r}")
    sign, digits = m.groups()
    value = int(digits) if len(digits) <= 18 else 10**18
    return -value if sign == "-" else value


def parse_limit(text: str | None) -> int:
    """``limit``: 1 … 10,000, default 100; a larger value is lowered to the maximum."""
    if text in (None, ""):
        return DEFAULT_LIMIT
    value = _integer("limit", text)
    if value < 1:
        raise _bad(f"limit must be at least 1, got {text}")
    return min(value, MAX_LIMIT)


def parse_offset(text: str | None) -> int:
    """``offset``: 0 … 1,000,000,000, default 0."""
    if text in (None, ""):
        return 0
    value = _integer("offset", text)
    if not 0 <= value <= MAX_OFFSET:
        raise _bad(f"offset must be between 0 and {MAX_OFFSET:,}, got {text}")
    return value


def parse_bbox(text: str | None) -> list[tuple[float, float, float, float]] | None:
    """``bbox`` as one box, or two when it crosses the antimeridian; None if absent."""
    if text in (None, ""):
        return None
    try:
        vals = [float(p) for p in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) not in (4, 6) or not all(math.isfinite(v) for v in vals):
        raise _bad("bbox must be four numbers minLon,minLat,maxLon,maxLat (or six with "
                   f"heights), got {text!r}")
    if len(vals) == 6:
        minx, miny, _, maxx, maxy, _ = vals
    else:
        minx, miny, maxx, maxy = vals
    if not all(-180 <= x <= 180 for x in (minx, maxx)) or \
            not all(-90 <= y <= 90 for y in (miny, maxy)):
        raise _bad("bbox coordinates must be CRS84 longitudes within ±180 and latitudes "
                   "within ±90")
    if miny > maxy:
        raise _bad("bbox: the southern edge is north of the northern edge")
    if minx <= maxx:
        return [(minx, miny, maxx, maxy)]
    return [(minx, miny, 180.0, maxy), (-180.0, miny, maxx, maxy)]  # across 180°


_DATETIME = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[Tt ](?:(?P<h>[0-9]{2})(?::(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2})"
    r"(?P<frac>\.[0-9]+)?)?)?)?)?"
    r"(?P<tz>[Zz]|[+-][0-9]{2}:[0-9]{2})?")


def _instant(text: str) -> tuple[datetime, datetime]:
    """An RFC 3339 date-time (or date) as the naive-UTC span it covers: [start, end)."""
    m = _DATETIME.fullmatch(text.strip())
    if not m:
        raise _bad(f"datetime: {text!r} is not an RFC 3339 date-time "
                   "(e.g. 2025-03-01T08:00:00Z)")
    try:
        day = datetime.strptime(m["date"], "%Y-%m-%d")
        micro = int((m["frac"] or ".0")[1:7].ljust(6, "0"))
        start = day.replace(hour=int(m["h"] or 0), minute=int(m["m"] or 0),
                            second=int(m["s"] or 0), microsecond=micro)
    except ValueError as err:
        raise _bad(f"datetime: {text!r} is not a valid date-time ({err})") from None
    # Checked before any arithmetic: near year 1 or 9999 the offset or the unit would
    # overflow datetime.
    if not YEARS[0] <= start.year <= YEARS[1]:
        raise _bad(f"datetime: {text!r} is out of range: the year must be between "
                   f"{YEARS[0]} and {YEARS[1]}")
    tz = m["tz"]
    if tz and tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        hours, minutes = int(tz[1:3]), int(tz[4:6])
        if hours > 23 or minutes > 59:
            raise _bad(f"datetime: bad offset in {text!r}")
        start -= sign * timedelta(hours=hours, minutes=minutes)
    if m["frac"]:
        unit = timedelta(microseconds=1)
    elif m["s"]:
        unit = timedelta(seconds=1)
    elif m["m"]:
        unit = timedelta(minutes=1)
    elif m["h"]:
        unit = timedelta(hours=1)
    else:
        unit = timedelta(days=1)
    return start, start + unit


def parse_datetime(text: str | None) -> tuple[datetime | None, datetime | None] | None:
    """``datetime`` as a naive-UTC ``[start, end)`` (either side None when open);
    None when absent."""
    if text in (None, ""):
        return None
    if "/" not in text:
        return _instant(text)
    parts = text.split("/")
    if len(parts) != 2:
        raise _bad(f"datetime: {text!r} has more than one '/'")
    a, b = (p.strip() for p in parts)
    if a in ("", "..") and b in ("", ".."):
        raise _bad("datetime: an interval needs a start or an end")
    lo = None if a in ("", "..") else _instant(a)[0]
    hi = None if b in ("", "..") else _instant(b)[1]
    if lo is not None and hi is not None and lo >= hi:
        raise _bad(f"datetime: the interval {text!r} starts after it ends")
    return lo, hi


def created_between(start: datetime | None, end: datetime | None) -> list:
    """SQL conditions: a case created in ``[start, end)`` (naive UTC; None = open)."""
    conds = []
    if start is not None:
        conds.append(cases.c.created_at >= start)
    if end is not None:
        conds.append(cases.c.created_at < end)
    return conds


def _in_boxes(boxes) -> list:
    """SQL condition: the case's point in one of ``boxes`` (edges included), the store's
    own bbox filter (through the GiST index on PostGIS)."""
    if not boxes:
        return []
    parts = [hemei().store.bbox_condition(*box) for box in boxes]
    return [parts[0] if len(parts) == 1 else sa.or_(*parts)]


# -- collections ------------------------------------------------------------------------
def _collection_ids() -> list[str]:
    layers = hemei().layers
    return [lvl for lvl in LEVELS if lvl in layers] + [CASES]


def _require_collection(collection_id: str) -> str:
    if collection_id not in _collection_ids():
        raise _not_found(f"no collection {collection_id!r}; there are: "
                         f"{', '.join(_collection_ids())}")
    return collection_id


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.replace(microsecond=0).isoformat() + "Z"


def _outer_bbox(minx, miny, maxx, maxy) -> list[float]:
    # Rounded outwards, so the published extent still contains every geometry.
    return [math.floor(minx * 1e7) / 1e7, math.floor(miny * 1e7) / 1e7,
            math.ceil(maxx * 1e7) / 1e7, math.ceil(maxy * 1e7) / 1e7]


def _collection(collection_id: str) -> dict:
    zh, en, desc = TITLES[collection_id]
    h = hemei()
    if collection_id == CASES:
        with h.store._read() as conn:
            row = conn.execute(sa.select(
                sa.func.min(cases.c.lon), sa.func.min(cases.c.lat), sa.func.max(cases.c.lon),
                sa.func.max(cases.c.lat), sa.func.min(cases.c.created_at),
                sa.func.max(cases.c.created_at))).first()
        bounds = row[:4] if row[0] is not None else h.layers["grid"].total_bounds
        extent = {"spatial": {"bbox": [_outer_bbox(*bounds)], "crs": CRS84},
                  "temporal": {"interval": [[_iso(row[4]), _iso(row[5])]], "trs": GREGORIAN}}
    else:
        extent = {"spatial": {"bbox": [_outer_bbox(*h.layers[collection_id].total_bounds)],
                              "crs": CRS84}}
    return {
        "id": collection_id,
        "title": f"{zh} {en}",
        "description": desc,
        "itemType": "feature",
        "crs": [CRS84],
        "extent": extent,
        "links": [
            _link(_url("collection", collection_id=collection_id), "self", JSON,
                  f"{en}: this collection"),
            _link(_url("items", collection_id=collection_id), "items", GEOJSON,
                  f"{en}: the features"),
        ],
    }


# -- features ---------------------------------------------------------------------------
def _flat(props: dict) -> dict:
    """Nested objects (``{"zh", "en"}`` names) as ``name_zh``/``name_en`` scalars."""
    out = {}
    for k, v in props.items():
        if isinstance(v, dict):
            for sub, sv in v.items():
                out[f"{k}_{sub}"] = sv
        else:
            out[k] = v
    return out


def case_to_feature(case: Case) -> dict:
    """A case as a GeoJSON Feature with the public fields only (flat properties)."""
    from webapp.api import case_feature

    feat = case_feature(case)  # the public view: no reporter, no tracking code
    return {"type": "Feature", "id": feat["id"], "geometry": feat["geometry"],
            "properties": _flat(feat["properties"])}


def _row_to_case(row) -> Case:
    return Case(**{c.name: row[c.name] for c in cases.columns})


def _case_page(boxes, span, limit: int, offset: int) -> tuple[list[dict], int]:
    conds = _in_boxes(boxes) + (created_between(*span) if span else [])
    q = (sa.select(cases).where(*conds)
         .order_by(cases.c.created_at.desc(), cases.c.id.desc()).limit(limit).offset(offset))
    with hemei().store._read() as conn:
        rows = conn.execute(q).mappings().all()
        total = conn.execute(sa.select(sa.func.count()).select_from(cases)
                             .where(*conds)).scalar()
    return [case_to_feature(_row_to_case(r)) for r in rows], int(total)


def _boundary_page(level: str, boxes, limit: int, offset: int) -> tuple[list[dict], int]:
    gdf = hemei().layers[level]
    if boxes:
        hits = [gdf.sindex.query(box(*b), predicate="intersects") for b in boxes]
        idx = np.unique(np.concatenate(hits))  # sorted positions = code order
    else:
        idx = np.arange(len(gdf))
    page = idx[offset:offset + limit]
    if len(page) == 0:
        return [], len(idx)
    fc = feature_collection(gdf.iloc[page], BOUNDARY_PROPS, id_col="code")
    return fc["features"], len(idx)


# -- endpoints ----------------------------------------------------------------------------
@bp.get("/", strict_slashes=False)
def landing():
    """The landing page: links to the API definition, conformance and collections."""
    _check_params(COMMON_PARAMS)
    return _respond({
        "title": "和美网格 Hemei Grid – OGC API – Features",
        "description": "Boundary layers (street, community, compound, grid) and cases "
                       "(public fields) of the street as OGC API – Features (Part 1: "
                       "Core, GeoJSON).",
        "links": [
            _link(_url("landing"), "self", JSON, "this document"),
            _link(_url("api"), "service-desc", OPENAPI, "the API definition (OpenAPI 3.0)"),
            _link(_url("conformance"), "conformance", JSON,
                  "the conformance classes this server implements"),
            _link(_url("collections"), "data", JSON, "the feature collections"),
        ],
    })


@bp.get("/conformance")
def conformance():
    _check_params(COMMON_PARAMS)
    return _respond({"conformsTo": list(CONFORMANCE),
                     "links": [_link(_url("conformance"), "self", JSON, "this document")]})


@bp.get("/collections")
def collections():
    _check_params(COMMON_PARAMS)
    return _respond({
        "links": [_link(_url("collections"), "self", JSON, "this document")],
        "collections": [_collection(cid) for cid in _collection_ids()],
    })


@bp.get("/collections/<collection_id>")
def collection(collection_id: str):
    _check_params(COMMON_PARAMS)
    return _respond(_collection(_require_collection(collection_id)))


@bp.get("/collections/<collection_id>/items")
def items(collection_id: str):
    """Features of a collection: bbox, datetime (cases), limit/offset with next links."""
    _require_collection(collection_id)
    args = _check_params(ITEMS_PARAMS)
    boxes = parse_bbox(args.get("bbox"))
    span = parse_datetime(args.get("datetime"))
    limit = parse_limit(args.get("limit"))
    offset = parse_offset(args.get("offset"))
    if collection_id == CASES:
        features, matched = _case_page(boxes, span, limit, offset)
    else:
        # Boundaries have no temporal geometry: a valid datetime matches them all.
        features, matched = _boundary_page(collection_id, boxes, limit, offset)

    keep = {k: args[k] for k in ("bbox", "datetime", "f") if args.get(k)}

    def page_url(off: int) -> str:
        return _url("items", collection_id=collection_id, **keep, limit=limit, offset=off)

    links = [_link(page_url(offset), "self", GEOJSON, "this page"),
             _link(_url("collection", collection_id=collection_id), "collection", JSON,
                   "the collection")]
    if offset + len(features) < matched:
        links.append(_link(page_url(offset + limit), "next", GEOJSON, "the next page"))
    if offset > 0:
        links.append(_link(page_url(max(0, offset - limit)), "prev", GEOJSON,
                           "the previous page"))
    return _respond({
        "type": "FeatureCollection",
        "timeStamp": _iso(utcnow()),
        "numberMatched": matched,
        "numberReturned": len(features),
        "links": links,
        "features": features,
    }, GEOJSON, crs=True)


@bp.get("/collections/<collection_id>/items/<feature_id>")
def item(collection_id: str, feature_id: str):
    """One feature: a boundary by its code, a case by its id."""
    _require_collection(collection_id)
    _check_params(COMMON_PARAMS)
    if collection_id == CASES:
        # Only the canonical form ("7", not "007"): one URL per feature. A number past the
        # store's 32-bit ids names no case.
        if not re.fullmatch(r"[1-9][0-9]{0,9}", feature_id) or int(feature_id) > MAX_ID:
            raise _not_found(f"no case with id {feature_id!r}")
        with hemei().store._read() as conn:
            row = conn.execute(sa.select(cases).where(cases.c.id == int(feature_id))
                               ).mappings().first()
        if row is None:
            raise _not_found(f"no case with id {feature_id}")
        feat = case_to_feature(_row_to_case(row))
    else:
        gdf = hemei().layers[collection_id]
        pos = np.flatnonzero(gdf["code"].astype(str).to_numpy() == feature_id)
        if len(pos) == 0:
            raise _not_found(f"no feature {feature_id!r} in {collection_id}")
        feat = feature_collection(gdf.iloc[pos[:1]], BOUNDARY_PROPS,
                                  id_col="code")["features"][0]
    feat["links"] = [
        _link(_url("item", collection_id=collection_id, feature_id=feature_id), "self",
              GEOJSON, "this feature"),
        _link(_url("collection", collection_id=collection_id), "collection", JSON,
              "the collection"),
    ]
    return _respond(feat, GEOJSON, crs=True)


@bp.get("/api")
def api():
    """The API definition: a small OpenAPI 3.0 document of the paths above."""
    _check_params(COMMON_PARAMS)
    return _respond(openapi_document(), OPENAPI)


@bp.route("/<path:rest>")
def not_found(rest: str):
    raise _not_found(f"no resource /ogc/{rest}; start at the landing page /ogc/")


# -- the API definition -------------------------------------------------------------------
def _param(name: str, where: str, schema: dict, description: str, **extra) -> dict:
    return {"name": name, "in": where, "required": where == "path", "schema": schema,
            "description": description, **extra}


def _ok(mimetype: str, description: str) -> dict:
    return {"description": description,
            "content": {mimetype: {"schema": {"type": "object"}}}}


def openapi_document() -> dict:
    ids = _collection_ids()
    errors = {"400": {"$ref": "#/components/responses/BadRequest"},
              "500": {"$ref": "#/components/responses/ServerError"}}
    with_404 = {**errors, "404": {"$ref": "#/components/responses/NotFound"}}
    f = {"$ref": "#/components/parameters/f"}
    cid = {"$ref": "#/components/parameters/collectionId"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "和美网格 Hemei Grid – OGC API – Features", "version": "1.0.0",
                 "description": "Boundary layers and cases (public fields) of the street. "
                                "Conforms to OGC API – Features – Part 1: Core (core, "
                                "geojson, oas30).",
                 "license": {"name": "Apache-2.0",
                             "url": "https://www.apache.org/licenses/LICENSE-2.0"}},
        "servers": [{"url": _url("landing").rstrip("/")}],
        "paths": {
            "/": {"get": {"summary": "landing page", "operationId": "getLandingPage",
                          "parameters": [f],
                          "responses": {"200": _ok(JSON, "the landing page"), **errors}}},
            "/conformance": {"get": {
                "summary": "the conformance classes", "operationId": "getConformance",
                "parameters": [f],
                "responses": {"200": _ok(JSON, "the conformance declaration"), **errors}}},
            "/collections": {"get": {
                "summary": "the feature collections", "operationId": "getCollections",
                "parameters": [f],
                "responses": {"200": _ok(JSON, "the collections"), **errors}}},
            "/collections/{collectionId}": {"get": {
                "summary": "one feature collection", "operationId": "describeCollection",
                "parameters": [cid, f],
                "responses": {"200": _ok(JSON, "the collection"), **with_404}}},
            "/collections/{collectionId}/items": {"get": {
                "summary": "the features of a collection", "operationId": "getFeatures",
                "parameters": [cid, f, {"$ref": "#/components/parameters/bbox"},
                               {"$ref": "#/components/parameters/datetime"},
                               {"$ref": "#/components/parameters/limit"},
                               {"$ref": "#/components/parameters/offset"}],
                "responses": {"200": _ok(GEOJSON, "a page of features"), **with_404}}},
            "/collections/{collectionId}/items/{featureId}": {"get": {
                "summary": "one feature", "operationId": "getFeature",
                "parameters": [cid, _param("featureId", "path", {"type": "string"},
                                           "a boundary's code or a case's id"), f],
                "responses": {"200": _ok(GEOJSON, "the feature"), **with_404}}},
        },
        "components": {
            "parameters": {
                "f": _param("f", "query", {"type": "string", "enum": list(FORMATS)},
                            "the format: JSON only", style="form", explode=False),
                "collectionId": _param("collectionId", "path",
                                       {"type": "string", "enum": ids},
                                       "the collection's id"),
                "bbox": _param("bbox", "query",
                               {"type": "array", "items": {"type": "number"},
                                "oneOf": [{"minItems": 4, "maxItems": 4},
                                          {"minItems": 6, "maxItems": 6}]},
                               "minLon,minLat,maxLon,maxLat in CRS84",
                               style="form", explode=False),
                "datetime": _param("datetime", "query", {"type": "string"},
                                   "an RFC 3339 instant or interval (start/end, ../end, "
                                   "start/..); cases by created_at",
                                   style="form", explode=False),
                "limit": _param("limit", "query",
                                {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                                 "default": DEFAULT_LIMIT},
                                "features per page (a larger value is lowered to the "
                                "maximum)", style="form", explode=False),
                "offset": _param("offset", "query",
                                 {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET,
                                  "default": 0},
                                 "features to skip (the next links set it)",
                                 style="form", explode=False),
            },
            "schemas": {"exception": {
                "type": "object", "required": ["code"],
                "properties": {"code": {"type": "string"},
                               "description": {"type": "string"}}}},
            "responses": {
                name: {"description": text,
                       "content": {JSON: {"schema": {"$ref": "#/components/schemas/exception"}}}}
                for name, text in (("BadRequest", "a query parameter is unknown or invalid"),
                                   ("NotFound", "no such collection or feature"),
                                   ("ServerError", "a server error"))
            },
        },
    }
