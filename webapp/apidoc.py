"""The API's description, built from the code: an OpenAPI 3.1 document at
``/api/v1/openapi.json`` and a browsable page at ``/api/v1/docs`` (Swagger UI, vendored,
so it works offline).

Every route under ``/api/v1/`` — whichever blueprint it is in — appears in the document:
:func:`build_openapi` walks ``app.url_map``, turns Flask converters into path parameters
and merges what the view declared with :func:`document`. A route nobody documented still
appears, with a generic summary and ``x-undocumented: true``, and
``tests/webapp/test_openapi.py`` fails on it. To document a route in any blueprint::

    from webapp.apidoc import document, paging_params, query, ref, schema

    schema("Thing", {"type": "object", "properties": {...}})   # a shared shape, once

    @bp.get("/things")
    @document(summary="Things, paged", params=[query("kind", {"type": "string"}),
                                               *paging_params(100, 10_000)],
              responses={200: ref("Thing")}, errors=(400,))
    def list_things(): ...

    @bp.post("/things")
    @document(summary="Make a thing", body=ref("NewThing"), security=True,
              responses={201: ref("Thing")}, errors=(400, 409))
    def make_thing(): ...

``@document`` returns the view unchanged, so its place among the decorators does not
matter; on a ``MethodView`` decorate ``get``/``post``… instead. ``security=True`` (a
token is required) adds ``bearerAuth`` and the 401/403 errors, ``"optional"`` says a token
changes what is shown. A GET gets the ``If-None-Match`` parameter, an ``ETag`` header on
200 and a 304 response. ``errors`` names statuses answered with the one error body
(``#/components/schemas/Error``).

The API's shared conventions live here too, so every blueprint under ``/api/v1/`` follows
them without code of its own: a successful GET gets an ``ETag`` (a hash of the body unless
the view set one) and is answered 304 when ``If-None-Match`` matches; list endpoints page
with ``limit``/``offset`` (:func:`paging_params`) and answer ``numberMatched``,
``numberReturned``, ``limit``, ``offset`` (:data:`PAGING_FIELDS`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from flask import Blueprint, current_app, render_template, request

from gis.cases import MAX_DESCRIPTION, MAX_TITLE, SOURCES, STATUSES
from gis.catalogue import load_catalogue
from gis.coverage import METRICS
from gis.storage import LEVELS

PREFIX = "/api/v1/"
OPENAPI_VERSION = "3.1.0"
SWAGGER_UI = "swagger-ui-dist@5.35.0"  # webapp/static/vendor/<this>/, scripts/vendor_assets.py
GENERIC_SUMMARY = "Undocumented route"
API_TITLE = "和美网格 Hemei Grid API"

bp = Blueprint("apidoc", __name__, url_prefix="/api/v1")


# --------------------------------------------------------------------------- registry
#: Named JSON Schemas, published under ``#/components/schemas``.
SCHEMAS: dict[str, dict] = {}
#: Tag name → description (the groups of the browsable page).
TAGS: dict[str, str] = {}


def schema(name: str, definition: dict) -> dict:
    """Register a shared schema under ``name`` and return a ``$ref`` to it. Registering
    the same name twice with a different definition is an error (two blueprints must not
    silently redefine one shape)."""
    if name in SCHEMAS and SCHEMAS[name] != definition:
        raise ValueError(f"schema {name!r} is already registered with another definition")
    SCHEMAS[name] = definition
    return ref(name)


def ref(name: str) -> dict:
    """A ``$ref`` to the registered schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def tag(name: str, description: str) -> str:
    """Register a tag (a group of operations on the page) and return its name."""
    TAGS[name] = description
    return name


def nullable(s: dict) -> dict:
    """``s`` or ``null``."""
    return {"anyOf": [s, {"type": "null"}]}


def query(name: str, schema_: dict | None = None, description: str = "", *,
          required: bool = False, example: Any = None, **extra: Any) -> dict:
    """A query parameter."""
    return _param("query", name, schema_, description, required, example, extra)


def path(name: str, schema_: dict | None = None, description: str = "", *,
         example: Any = None) -> dict:
    """Describe a path parameter (its type comes from the rule's converter; this adds a
    description, an example or a narrower schema)."""
    return _param("path", name, schema_, description, True, example, {})


def header(name: str, schema_: dict | None = None, description: str = "", *,
           required: bool = False) -> dict:
    """A request header parameter."""
    return _param("header", name, schema_, description, required, None, {})


def _param(where, name, schema_, description, required, example, extra) -> dict:
    p: dict = {"name": name, "in": where, "required": required,
               "schema": schema_ if schema_ is not None else {"type": "string"}}
    if description:
        p["description"] = description
    if example is not None:
        p["example"] = example
    p.update(extra)
    return p


def paging_params(default: int, maximum: int) -> list[dict]:
    """The paging parameters every list endpoint shares: ``limit`` and ``offset``."""
    return [
        query("limit", {"type": "integer", "minimum": 1, "maximum": maximum,
                        "default": default},
              f"at most this many items (1–{maximum:,}, default {default:,})"),
        query("offset", {"type": "integer", "minimum": 0, "maximum": 10**9, "default": 0},
              "skip this many items (newest first)"),
    ]


#: The paging fields of every list response (merge into its ``properties``).
PAGING_FIELDS: dict[str, dict] = {
    "numberMatched": {"type": "integer", "minimum": 0,
                      "description": "how many items match the filters in all"},
    "numberReturned": {"type": "integer", "minimum": 0,
                       "description": "how many items this response holds"},
    "limit": {"type": "integer", "minimum": 1, "description": "the limit applied"},
    "offset": {"type": "integer", "minimum": 0, "description": "the offset applied"},
}


@dataclass(frozen=True)
class Content:
    """A response (or body) other than plain JSON: another media type, headers, a
    description of its own."""

    schema: dict | None
    media_type: str = "application/json"
    description: str = ""
    headers: dict[str, dict] = field(default_factory=dict)


def geojson(s: dict, description: str = "") -> Content:
    """A GeoJSON (``application/geo+json``) response."""
    return Content(s, "application/geo+json", description)


@dataclass
class Operation:
    """What :func:`document` records for one view (and method)."""

    summary: str
    description: str | None = None
    params: list[dict] = field(default_factory=list)
    body: dict | None = None
    multipart: dict | None = None
    body_example: Any = None
    responses: dict[int | str, Any] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    security: bool | str = False
    tags: list[str] | None = None
    operation_id: str | None = None
    deprecated: bool = False


_ATTR = "_hemei_apidoc"


def document(summary: str, *, description: str | None = None, params=(), body=None,
             multipart=None, body_example=None, responses=None, errors=(), security=False,
             tags=None, operation_id=None, deprecated=False, method: str | None = None):
    """Record what a view takes and returns, for the OpenAPI document.

    ``summary``: one line. ``description``: longer text (default: the view's docstring).
    ``params``: :func:`query`/:func:`path`/:func:`header` parameters. ``body``: the JSON
    request body's schema; ``multipart``: the same body as a multipart form (with files);
    ``body_example``: an example body. ``responses``: status → schema (JSON),
    :class:`Content`, or ``None`` (no body). ``errors``: statuses answered with the error
    body. ``security``: ``True`` (token required), ``"optional"`` or ``False``.
    ``method``: for a view serving several methods, which one this describes.
    """
    if security not in (True, False, "optional"):
        raise ValueError("security must be True, False or 'optional'")
    op = Operation(summary=summary, description=description, params=list(params), body=body,
                   multipart=multipart, body_example=body_example,
                   responses=dict(responses or {}), errors=tuple(errors), security=security,
                   tags=list(tags) if tags else None, operation_id=operation_id,
                   deprecated=deprecated)

    def mark(view):
        ops = view.__dict__.setdefault(_ATTR, {})
        ops[(method or "*").upper()] = op
        return view

    return mark


def _operation_for(view, method: str) -> Operation | None:
    """The documented operation of ``view`` for ``method`` (MethodView classes too)."""
    cls = getattr(view, "view_class", None)
    candidates = [view]
    if cls is not None:
        candidates.insert(0, getattr(cls, method.lower(), None))
    for c in candidates:
        ops = getattr(c, _ATTR, None) if c is not None else None
        if ops:
            return ops.get(method) or ops.get("*")
    return None


# --------------------------------------------------------------------------- shapes
#: An integer the store can hold (ids, versions: 32-bit on PostgreSQL); others are a 400.
INT32 = {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}


def _shared_schemas() -> None:
    """The shapes the API returns and takes (registered at import)."""
    cats = list(load_catalogue())
    status = {"type": "string", "enum": list(STATUSES)}
    when = {"type": "string", "format": "date-time"}
    lon = {"type": "number", "minimum": -180, "maximum": 180}
    lat = {"type": "number", "minimum": -90, "maximum": 90}
    zh_en = {"type": "object", "required": ["zh", "en"], "additionalProperties": False,
             "properties": {"zh": {"type": "string"}, "en": {"type": "string"}}}
    code_name = {"type": "object", "required": ["code", "name"],
                 "properties": {"code": {"type": "string"}, "name": {"type": "string"}}}

    schema("Error", {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "description": "Every error of the API: 4xx (or 500) with this body. ``field`` names "
                       "the parameter or body field at fault; ``details`` carries more "
                       "(e.g. the allowed moves of a 409).",
        "properties": {"error": {
            "type": "object", "required": ["code", "message"], "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "examples": ["invalid_input", "not_found"]},
                "message": {"type": "string"},
                "field": {"type": "string"},
                "details": {},
            }}},
    })
    schema("Point", {
        "type": "object", "required": ["type", "coordinates"],
        "properties": {"type": {"const": "Point"},
                       "coordinates": {"type": "array", "items": {"type": "number"},
                                       "minItems": 2, "maxItems": 2,
                                       "description": "[lon, lat], WGS-84"}},
    })
    schema("Geometry", {
        "type": "object", "required": ["type", "coordinates"],
        "description": "A GeoJSON geometry in WGS-84 (lon, lat).",
        "properties": {"type": {"enum": ["Point", "MultiPoint", "LineString",
                                         "MultiLineString", "Polygon", "MultiPolygon"]},
                       "coordinates": {"type": "array"}},
    })
    schema("Chain", {
        "type": "object", "required": ["street", "community", "compound", "grid"],
        "description": "The boundaries a point lies in; ``compound`` is null outside every "
                       "residential compound.",
        "properties": {"street": code_name, "community": code_name,
                       "compound": nullable(code_name), "grid": code_name},
    })
    schema("Located", {
        "type": "object", "required": ["lon", "lat", "inside", "chain"],
        "additionalProperties": False,
        "properties": {"lon": lon, "lat": lat, "inside": {"type": "boolean"},
                       "chain": nullable(ref("Chain"))},
    })
    schema("HistoryEvent", {
        "type": "object", "required": ["at", "from", "to", "note", "kind"],
        "description": "One step of a case's history. ``actor`` and ``id`` only for staff.",
        "properties": {
            "id": {"type": "integer"}, "at": when, "actor": {"type": ["string", "null"]},
            "from": nullable(status), "to": nullable(status),
            "note": {"type": ["string", "null"]}, "kind": {"type": "string"},
            "lon": {"type": ["number", "null"]}, "lat": {"type": ["number", "null"]},
            "data": {},
        },
    })
    str_or_null = {"type": ["string", "null"]}
    int_or_null = {"type": ["integer", "null"]}
    schema("CaseProperties", {
        "type": "object", "additionalProperties": False,
        "required": ["id", "category", "title", "description", "status", "source",
                     "street_code", "community_code", "compound_code", "grid_code",
                     "created_at", "updated_at", "due_at", "resolved_at", "closed_at",
                     "overdue", "assignee_org", "needs_kind", "published", "rework_count",
                     "extension_count", "satisfaction", "row_version", "category_name",
                     "status_name"],
        "description": "A case as the reader may see it: the public never sees the "
                       "reporter's name or phone, nor staff names in the history.",
        "properties": {
            "id": {"type": "integer"}, "category": {"type": "string"},
            "title": {"type": "string"}, "description": {"type": "string"},
            "status": status, "source": {"type": "string"},
            "street_code": str_or_null, "community_code": str_or_null,
            "compound_code": str_or_null, "grid_code": str_or_null,
            "created_at": when, "updated_at": when, "due_at": nullable(when),
            "resolved_at": nullable(when), "closed_at": nullable(when),
            "overdue": {"type": "boolean"}, "assignee_org": int_or_null,
            "needs_kind": str_or_null, "published": {"type": "boolean"},
            "rework_count": {"type": "integer"}, "extension_count": {"type": "integer"},
            "satisfaction": str_or_null,
            "row_version": {"type": "integer",
                            "description": "send it back as ``version`` to refuse lost "
                                           "updates"},
            "category_name": zh_en, "status_name": zh_en,
            "assignee_user": int_or_null, "reporter_name": str_or_null,
            "reporter_phone": str_or_null,
            "history": {"type": "array", "items": ref("HistoryEvent")},
        },
    })
    schema("CaseFeature", {
        "type": "object", "required": ["type", "id", "geometry", "properties"],
        "additionalProperties": False,
        "properties": {
            "type": {"const": "Feature"}, "id": {"type": "integer"},
            "geometry": ref("Point"), "properties": ref("CaseProperties"),
            "allowed": {"type": "array", "items": status,
                        "description": "the moves the token's user may make now"},
            "warnings": {"type": "array", "items": {"type": "string"}},
        },
    })
    schema("CaseCollection", {
        "type": "object", "required": ["type", "features", *PAGING_FIELDS],
        "additionalProperties": False,
        "properties": {"type": {"const": "FeatureCollection"},
                       "features": {"type": "array", "items": ref("CaseFeature")},
                       **PAGING_FIELDS},
    })
    schema("CasePoints", {
        "type": "object", "additionalProperties": False,
        "required": ["fields", "rows", "truncated", *PAGING_FIELDS],
        "properties": {
            "fields": {"type": "array", "items": {"type": "string"}},
            "rows": {"type": "array", "items": {
                "type": "array", "minItems": 7, "maxItems": 7,
                "items": {"type": ["integer", "number", "string"]},
                "description": "[id, lon, lat, status, category, created (epoch seconds), "
                               "title], as ``fields`` names them"}},
            "truncated": {"type": "boolean",
                          "description": "more cases match than were returned"},
            **PAGING_FIELDS,
        },
    })
    schema("LayerVersions", {
        "type": "object", "required": ["layers"], "additionalProperties": False,
        "properties": {"layers": {"type": "array", "items": {
            "type": "object", "required": ["id", "level", "created_at", "features", "active"],
            "properties": {"id": {"type": "integer"},
                           "level": {"type": "string", "enum": list(LEVELS)},
                           "created_at": when, "source": str_or_null,
                           "features": {"type": "integer"}, "active": {"type": "boolean"}}}}},
    })
    area_props = {"code": {"type": "string"}, "name": {"type": "string"},
                  "parent_code": str_or_null, "households": int_or_null}
    counts = {"numberMatched": PAGING_FIELDS["numberMatched"],
              "numberReturned": PAGING_FIELDS["numberReturned"]}
    schema("LayerCollection", {
        "type": "object", "required": ["type", "features", *counts],
        "properties": {
            "type": {"const": "FeatureCollection"},
            "features": {"type": "array", "items": {
                "type": "object", "required": ["type", "geometry", "properties"],
                "properties": {"type": {"const": "Feature"}, "geometry": ref("Geometry"),
                               "properties": {"type": "object",
                                              "required": list(area_props),
                                              "properties": area_props}}}},
            **counts,
        },
    })
    schema("Metric", {
        "type": "object", "required": ["key", "zh", "en", "better", "kind"],
        "properties": {"key": {"type": "string", "enum": list(METRICS)},
                       "zh": {"type": "string"}, "en": {"type": "string"},
                       "formula_zh": {"type": "string"}, "formula_en": {"type": "string"},
                       "unit": {"type": "string"}, "unit_zh": {"type": "string"},
                       "unit_en": {"type": "string"},
                       "better": {"type": "string", "enum": ["lower", "higher"]},
                       "kind": {"type": "string"}},
    })
    schema("Period", {
        "type": "object", "required": ["key", "start", "end"],
        "properties": {"key": {"type": "string"}, "start": when,
                       "end": {**when, "description": "excluded"}},
    })
    metric_props = {k: {"type": ["number", "null"],
                        "description": f"{m.en} ({m.unit}); null = no data"}
                    for k, m in METRICS.items()}
    schema("Coverage", {
        "type": "object", "required": ["type", "features", "period", "metrics", *counts],
        "properties": {
            "type": {"const": "FeatureCollection"},
            "features": {"type": "array", "items": {
                "type": "object", "required": ["type", "geometry", "properties"],
                "properties": {"type": {"const": "Feature"}, "geometry": ref("Geometry"),
                               "properties": {
                                   "type": "object",
                                   "required": [*area_props, *metric_props],
                                   "properties": {**area_props, **metric_props}}}}},
            "period": ref("Period"),
            "metrics": {"type": "array", "items": ref("Metric")},
            **counts,
        },
    })
    schema("Needs", {
        "type": "object", "required": ["claimable", "units", *PAGING_FIELDS],
        "additionalProperties": False,
        "properties": {
            "claimable": {"type": "array", "items": ref("CaseFeature"),
                          "description": "published, filed cases a partner unit may claim"},
            "units": {"type": "array", "items": {
                "type": "object", "required": ["org_id", "org", "claimed", "finished"],
                "properties": {"org_id": {"type": "integer"}, "org": {"type": "string"},
                               "claimed": {"type": "integer"},
                               "finished": {"type": "integer"}}}},
            **PAGING_FIELDS,
        },
    })
    schema("Me", {
        "type": "object", "additionalProperties": False,
        "required": ["id", "username", "display_name", "role", "org_id", "org_name",
                     "area_code", "grids"],
        "properties": {"id": {"type": "integer"}, "username": {"type": "string"},
                       "display_name": {"type": ["string", "null"]},
                       "role": {"type": "string",
                                "enum": ["admin", "planner", "grid_worker", "field_staff"]},
                       "org_id": int_or_null, "org_name": str_or_null,
                       "area_code": str_or_null,
                       "grids": {"type": "array", "items": {"type": "string"}}},
    })
    schema("CheckIn", {
        "type": "object", "required": ["id", "grid_code", "at"],
        "properties": {"id": {"type": "integer"}, "grid_code": str_or_null, "at": when},
    })
    schema("OpenAPI", {"type": "object", "required": ["openapi", "info", "paths"]})

    # -- request bodies
    schema("NewCase", {
        "type": "object", "required": ["category", "lon", "lat", "description"],
        "properties": {
            "category": {"type": "string", "enum": cats},
            "lon": lon, "lat": lat,
            "description": {"type": "string", "minLength": 1, "maxLength": MAX_DESCRIPTION},
            "title": {"type": "string", "maxLength": MAX_TITLE,
                      "description": "default: the description's first line"},
            "source": {"type": "string", "enum": list(SOURCES), "default": "patrol"},
            "datum": {"type": "string", "enum": ["wgs84", "gcj02"], "default": "wgs84",
                      "description": "gcj02: a point picked on a GCJ-02 (AMap) base map; "
                                     "stored converted to WGS-84"},
        },
    })
    schema("Transition", {
        "type": "object", "required": ["to"],
        "properties": {
            "to": status,
            "note": {"type": "string", "maxLength": 4000,
                     "description": "required for rejected, reopened, closed_not_fixed"},
            "lon": lon, "lat": lat,
            "assignee_org": {**INT32, "description": "dispatch to this unit"},
            "assignee_user": {**INT32, "description": "dispatch to this person"},
            "due_at": when,
            "line": {"description": "a repair line: 2–500 [lon, lat] points, or a GeoJSON "
                                    "LineString",
                     "anyOf": [
                         {"type": "array", "minItems": 2, "maxItems": 500,
                          "items": {"type": "array", "items": {"type": "number"},
                                    "minItems": 2, "maxItems": 2}},
                         {"type": "object", "required": ["type", "coordinates"],
                          "properties": {"type": {"const": "LineString"},
                                         "coordinates": {"type": "array"}}}]},
            "quantities": {"type": "object", "additionalProperties": False,
                           "properties": {k: {"type": "number", "minimum": 0}
                                          for k in ("road_m", "area_m2", "lamps",
                                                    "parking_spaces", "patches")}},
            "version": {**INT32,
                        "description": "the case's row_version you read: 409 if it changed"},
        },
    })
    schema("Extension", {
        "type": "object", "required": ["due_at", "reason"],
        "properties": {"due_at": when, "reason": {"type": "string", "minLength": 1}},
    })
    schema("NeedsChange", {
        "type": "object",
        "properties": {"kind": {"enum": ["fix_now", "long_term", None],
                                "description": "null takes the case off the list"},
                       "publish": {"type": "boolean"}, "note": {"type": "string"}},
    })
    schema("CheckInBody", {
        "type": "object", "required": ["lon", "lat"],
        "properties": {"lon": lon, "lat": lat,
                       "accuracy": {"type": ["number", "null"], "minimum": 0,
                                    "description": "metres"}},
    })


_shared_schemas()


# --------------------------------------------------------------------------- building
_CONVERTER = re.compile(r"<(?:[^<>:]+:)?([A-Za-z_][A-Za-z0-9_]*)>")


def _converter_schema(conv) -> dict:
    """The JSON Schema of what a Werkzeug converter accepts."""
    from werkzeug.routing import converters as c

    if isinstance(conv, c.IntegerConverter):
        s: dict = {"type": "integer"}
        lo = conv.min if conv.min is not None else (None if conv.signed else 0)
        if lo is not None:
            s["minimum"] = lo
        if conv.max is not None:
            s["maximum"] = conv.max
        return s
    if isinstance(conv, c.FloatConverter):
        return {"type": "number"}
    if isinstance(conv, c.UUIDConverter):
        return {"type": "string", "format": "uuid"}
    if isinstance(conv, c.AnyConverter):
        return {"type": "string", "enum": sorted(conv.items)}
    if isinstance(conv, c.PathConverter):
        return {"type": "string"}
    return {"type": "string", "pattern": "^[^/]+$", "minLength": 1}


def _content(s: dict | None, media_type: str = "application/json") -> dict:
    return {media_type: {"schema": s if s is not None else {}}}


def _response(status: int | str, spec: Any, *, get: bool) -> dict:
    reason = HTTPStatus(int(status)).phrase if str(status).isdigit() else "Response"
    if isinstance(spec, Content):
        out: dict = {"description": spec.description or reason}
        if spec.schema is not None or spec.media_type != "application/json":
            out["content"] = _content(spec.schema, spec.media_type)
        headers = dict(spec.headers)
    else:
        out = {"description": reason}
        if spec is not None:
            out["content"] = _content(spec)
        headers = {}
    if get and str(status) == "200":
        headers.setdefault("ETag", {"description": "send it back in If-None-Match",
                                    "schema": {"type": "string"}})
    if headers:
        out["headers"] = headers
    return out


_ERROR_TEXT = {
    400: "a parameter or body field is missing, malformed or out of range (``field`` "
         "names it)",
    401: "no token, or an unknown or revoked one",
    403: "the token's user may not do this (the message says why)",
    404: "no such thing",
    409: "not allowed in the current state, or changed by someone else (``details`` "
         "lists what is allowed)",
    413: "the request is too large",
    422: "well-formed, but outside the jurisdiction",
}


def _error_response(status: int) -> dict:
    return {"description": _ERROR_TEXT.get(status, HTTPStatus(status).phrase),
            "content": _content(ref("Error"))}


def _operation(rule, method: str, view, op: Operation | None, many_methods: bool) -> dict:
    get = method == "GET"
    params: dict[tuple[str, str], dict] = {}
    for name in rule.arguments:
        conv = rule._converters.get(name)
        params[("path", name)] = {"name": name, "in": "path", "required": True,
                                  "schema": _converter_schema(conv) if conv else {
                                      "type": "string"}}
    blueprint = rule.endpoint.rpartition(".")[0] or "app"
    out: dict = {}
    if op is None:
        out["summary"] = GENERIC_SUMMARY
        out["description"] = (f"{rule.endpoint} has no @document metadata yet "
                              "(webapp/apidoc.py says how to add it).")
        out["x-undocumented"] = True
        out["tags"] = [blueprint]
        responses: dict = {"default": {"description": "undocumented"}}
    else:
        out["summary"] = op.summary
        doc = op.description if op.description is not None else (view.__doc__ or "")
        doc = _dedent(doc)
        if doc:
            out["description"] = doc
        out["tags"] = op.tags or [blueprint]
        for p in op.params:
            key = (p["in"], p["name"])
            if key in params:  # a path parameter: keep the converter's type unless given
                params[key] = {**params[key], **{k: v for k, v in p.items()
                                                 if k != "schema" or v != {"type": "string"}}}
            else:
                params[key] = copy.deepcopy(p)
        if op.body is not None or op.multipart is not None:
            content: dict = {}
            if op.body is not None:
                content["application/json"] = {"schema": op.body}
                if op.body_example is not None:
                    content["application/json"]["example"] = op.body_example
            if op.multipart is not None:
                content["multipart/form-data"] = {"schema": op.multipart}
            out["requestBody"] = {"required": True, "content": content}
        responses = {str(k): _response(k, v, get=get) for k, v in op.responses.items()}
        errors = set(op.errors)
        if op.security is True:
            out["security"] = [{"bearerAuth": []}]
            errors |= {401, 403}
        elif op.security == "optional":
            out["security"] = [{}, {"bearerAuth": []}]
            errors |= {401}
        if op.body is not None or any(p["in"] == "query" for p in params.values()):
            errors.add(400)
        for status in sorted(errors):
            responses.setdefault(str(status), _error_response(status))
        if op.deprecated:
            out["deprecated"] = True
    if get:
        params.setdefault(("header", "If-None-Match"), header(
            "If-None-Match", {"type": "string"},
            "an ETag from an earlier response: 304 if nothing changed"))
        responses.setdefault("304", {"description": "Not Modified: the ETag still matches"})
    if any(k[0] == "path" for k in params):
        responses.setdefault("404", _error_response(404))
    if params:
        out["parameters"] = list(params.values())
    out["responses"] = dict(sorted(responses.items()))
    op_id = (op.operation_id if op and op.operation_id else rule.endpoint)
    out["operationId"] = f"{op_id}.{method.lower()}" if many_methods else op_id
    return out


def _dedent(text: str) -> str:
    import inspect

    return inspect.cleandoc(text or "").strip()


def build_openapi(app) -> dict:
    """The OpenAPI 3.1 document of every route of ``app`` under ``/api/v1/``."""
    paths: dict[str, dict] = {}
    used_tags: set[str] = set()
    rules = sorted((r for r in app.url_map.iter_rules() if r.rule.startswith(PREFIX)),
                   key=lambda r: r.rule)
    for rule in rules:
        view = app.view_functions.get(rule.endpoint)
        methods = sorted(m for m in (rule.methods or ()) if m not in ("HEAD", "OPTIONS"))
        oa_path = _CONVERTER.sub(r"{\1}", rule.rule)
        item = paths.setdefault(oa_path, {})
        for method in methods:
            op = _operation_for(view, method) if view is not None else None
            item[method.lower()] = _operation(rule, method, view, op, len(methods) > 1)
            used_tags.update(item[method.lower()]["tags"])
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": API_TITLE,
            "version": "1",
            "description": (
                "The JSON API of Hemei Grid (community grid management): cases, boundary "
                "layers, locating, coverage metrics and the workflow.\n\n"
                "* **Errors** are always `{\"error\": {\"code\", \"message\", \"field\"?, "
                "\"details\"?}}` with a 4xx status; nothing is written on error.\n"
                "* **Paging**: list endpoints take `limit` and `offset` and answer "
                "`numberMatched`, `numberReturned`, `limit`, `offset`.\n"
                "* **ETags**: every successful GET carries an `ETag`; send it back in "
                "`If-None-Match` for a 304.\n"
                "* **Tokens**: writes need `Authorization: Bearer <token>` "
                "(`hemei token create NAME`); reads are public and never show a "
                "resident's name or phone."),
        },
        "tags": [{"name": t, **({"description": TAGS[t]} if t in TAGS else {})}
                 for t in [*(t for t in TAGS if t in used_tags),
                           *sorted(used_tags - set(TAGS))]],
        "paths": paths,
        "components": {
            "schemas": copy.deepcopy(SCHEMAS),
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "An API token: `hemei token create NAME` prints one."}},
        },
    }


def undocumented(spec: dict) -> list[str]:
    """``METHOD path`` of every operation of ``spec`` without documentation."""
    return [f"{m.upper()} {p}" for p, item in spec["paths"].items()
            for m, op in item.items() if op.get("x-undocumented")]


def _cached(app) -> tuple[bytes, str]:
    cache = app.extensions.setdefault("hemei_openapi", {})
    root = request.script_root or ""
    if root not in cache:
        spec = build_openapi(app)
        spec["servers"] = [{"url": root + "/"}]
        body = json.dumps(spec, ensure_ascii=False, indent=1).encode("utf-8")
        cache[root] = (body, hashlib.sha256(body).hexdigest()[:32])
    return cache[root]


# --------------------------------------------------------------------------- views
@bp.get("/openapi.json")
@document("This API's OpenAPI 3.1 description", tags=["meta"],
          responses={200: ref("OpenAPI")})
def openapi():
    """Built from the code: every route under /api/v1/ with its parameters, bodies,
    responses and errors."""
    body, etag = _cached(current_app)
    resp = current_app.response_class(body, mimetype="application/json")
    resp.set_etag(etag)
    return resp.make_conditional(request)


@bp.get("/docs")
@document("The browsable API documentation (works offline)", tags=["meta"],
          responses={200: Content({"type": "string"}, "text/html")})
def docs():
    """Swagger UI, served from this app (no CDN): try the calls with a token."""
    return render_template("apidoc.html", swagger_ui=SWAGGER_UI, title=API_TITLE)


tag("cases", "Cases (事件): list, read, report")
tag("workflow", "Moving cases through the workflow; extensions; the needs list")
tag("layers", "Boundary layers and locating a point")
tag("coverage", "Coverage metrics per grid")
tag("accounts", "Tokens and patrol check-ins")
tag("meta", "This description")


# --------------------------------------------------------------------------- conventions
@bp.after_app_request
def _conditional_reads(resp):
    """Every successful GET under /api/v1/ (any blueprint) carries an ETag and is
    answered 304 when the client's If-None-Match matches."""
    if (request.method in ("GET", "HEAD") and resp.status_code == 200
            and request.path.startswith(PREFIX) and not resp.is_streamed
            and not resp.direct_passthrough):
        if "ETag" not in resp.headers:
            resp.add_etag()
        resp = resp.make_conditional(request)
    return resp
