"""The JSON API under /api/v1/."""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify, request, url_for

from gis.cases import STATUSES, Case, status_label
from gis.catalogue import get_category
from gis.errors import InvalidInput, NotFound
from gis.geojson import feature_collection
from gis.locate import check_lon_lat
from gis.storage import LEVELS

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def hemei():
    return current_app.extensions["hemei"]


def _int_arg(name: str, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
    if raw in (None, ""):
        return default
    try:
        v = int(raw)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer, got {raw!r}", field=name) from None
    if not lo <= v <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}, got {v}", field=name)
    return v


def case_feature(case: Case, *, history: bool = False) -> dict:
    """A case as a GeoJSON Feature with its public fields (no reporter details)."""
    d = case.to_dict()
    props = {k: d[k] for k in (
        "id", "category", "title", "description", "status", "source", "street_code",
        "community_code", "compound_code", "grid_code", "created_at", "updated_at", "due_at",
        "resolved_at", "closed_at", "overdue")}
    cat = get_category(case.category)
    props["category_name"] = {"zh": cat.zh, "en": cat.en}
    props["status_name"] = {"zh": status_label(case.status, "zh"),
                            "en": status_label(case.status, "en")}
    if history:
        props["history"] = d["history"]
    return {"type": "Feature", "id": case.id,
            "geometry": {"type": "Point", "coordinates": [case.lon, case.lat]},
            "properties": props}


@bp.get("/locate")
def locate():
    """Locate a point: the chain street → community → compound → grid."""
    lon, lat = check_lon_lat(request.args.get("lon"), request.args.get("lat"))
    chain = hemei().locator.locate(lon, lat)
    return jsonify({"lon": lon, "lat": lat, "inside": chain is not None, "chain": chain})


@bp.get("/layers")
def list_layers():
    """The boundary levels and their active versions."""
    versions = [
        {k: (v.isoformat() + "Z" if k == "created_at" else v) for k, v in row.items()}
        for row in hemei().store.layer_versions() if row["active"]
    ]
    return jsonify({"layers": versions})


@bp.get("/layers/<layer>")
def get_layer(layer: str):
    """One boundary layer as GeoJSON."""
    if layer not in LEVELS:
        raise NotFound(f"unknown layer {layer!r}; expected one of: {', '.join(LEVELS)}",
                       field="layer")
    gdf = hemei().layers.get(layer)
    if gdf is None:
        raise NotFound(f"layer {layer!r} has not been imported", field="layer")
    body = feature_collection(gdf, ["code", "name", "parent_code", "households"])
    return current_app.response_class(json.dumps(body, ensure_ascii=False),
                                      mimetype="application/geo+json")


@bp.get("/issues")
def list_issues():
    """Cases as GeoJSON, filtered by bbox, grid, status and category, paged."""
    h = hemei()
    status = request.args.get("status") or None
    if status and status != "open" and status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r}; expected open or one of: "
                           f"{', '.join(STATUSES)}", field="status")
    category = request.args.get("category") or None
    if category:
        get_category(category)
    limit = _int_arg("limit", 100, 1, 10_000)
    offset = _int_arg("offset", 0, 0, 10**9)
    rows, total = h.store.list_cases(
        bbox=h.parse_bbox(request.args.get("bbox")), grid=request.args.get("grid") or None,
        status=status, category=category, compound=request.args.get("compound") or None,
        limit=limit, offset=offset)
    return jsonify({"type": "FeatureCollection",
                    "features": [case_feature(c) for c in rows],
                    "numberMatched": total, "numberReturned": len(rows),
                    "limit": limit, "offset": offset})


@bp.get("/issues/points")
def issue_points():
    """Compact rows for drawing many cases: ``[id, lon, lat, status, category, created
    (epoch seconds), title]``, newest first, for a bounding box (the map's viewport)."""
    h = hemei()
    status = request.args.get("status") or None
    if status and status != "open" and status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r}", field="status")
    category = request.args.get("category") or None
    if category:
        get_category(category)
    limit = _int_arg("limit", 5000, 1, 20_000)
    rows, total = h.store.case_points(bbox=h.parse_bbox(request.args.get("bbox")),
                                      status=status, category=category, limit=limit)
    return jsonify({"fields": ["id", "lon", "lat", "status", "category", "created", "title"],
                    "rows": rows, "numberMatched": total, "truncated": total > len(rows)})


@bp.get("/coverage")
def coverage():
    """Per-grid coverage metrics for a period as GeoJSON, with the metric definitions."""
    from gis.coverage import METRICS, parse_period

    h = hemei()
    period = parse_period(request.args.get("period"))
    grids = h.coverage(period)
    keys = list(METRICS)
    out = grids[["code", "name", "parent_code", "households", "geometry"] + keys].copy()
    for k in keys:
        out[k] = out[k].astype(object).where(out[k].notna(), None)
    body = feature_collection(out, ["code", "name", "parent_code", "households"] + keys,
                              precision=6)
    body["period"] = {"key": period.key, "start": period.start.isoformat() + "Z",
                      "end": period.end.isoformat() + "Z"}
    body["metrics"] = [m.to_dict() for m in METRICS.values()]
    return current_app.response_class(json.dumps(body, ensure_ascii=False, allow_nan=False),
                                      mimetype="application/geo+json")


@bp.get("/issues/<int:case_id>")
def get_issue(case_id: int):
    """One case with its history."""
    return jsonify(case_feature(hemei().store.get_case(case_id), history=True))


@bp.post("/issues")
def create_issue():
    """Report a case: JSON body with category, lon, lat, description, optional title."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise InvalidInput("the request body is empty; send a JSON object", field="body")
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the request body is not valid JSON", field="body") from None
    case = hemei().report(payload, actor="api")
    resp = jsonify(case_feature(case, history=True))
    resp.status_code = 201
    resp.headers["Location"] = url_for("api.get_issue", case_id=case.id)
    return resp
