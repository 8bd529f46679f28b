"""The JSON API under /api/v1/."""

from __future__ import annotations

import json

from flask import Blueprint, current_app, jsonify, request, url_for

from gis.cases import STATUSES, Case, allowed_transitions, status_label
from gis.catalogue import get_category
from gis.errors import Conflict, InvalidInput, NotFound
from gis.geojson import feature_collection
from gis.locate import check_lon_lat
from gis.storage import LEVELS
from gis.workflow import allowed_for, can_read
from webapp.auth import api_user, reader

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


PUBLIC_FIELDS = (
    "id", "category", "title", "description", "status", "source", "street_code",
    "community_code", "compound_code", "grid_code", "created_at", "updated_at", "due_at",
    "resolved_at", "closed_at", "overdue", "assignee_org", "needs_kind", "published",
    "rework_count", "extension_count", "satisfaction", "row_version")
STAFF_FIELDS = ("assignee_user",)
REPORTER_FIELDS = ("reporter_name", "reporter_phone")


def case_feature(case: Case, *, history: bool = False, staff: bool = False,
                 reporter: bool | None = None) -> dict:
    """A case as a GeoJSON Feature. The public sees no reporter details and no staff
    names in the history; ``staff`` adds them for people whose role needs them."""
    d = case.to_dict()
    reporter = staff if reporter is None else reporter
    props = {k: d[k] for k in PUBLIC_FIELDS + (STAFF_FIELDS if staff else ())
             + (REPORTER_FIELDS if reporter else ())}
    cat = get_category(case.category)
    props["category_name"] = {"zh": cat.zh, "en": cat.en}
    props["status_name"] = {"zh": status_label(case.status, "zh"),
                            "en": status_label(case.status, "en")}
    if history:
        props["history"] = [
            {k: v for k, v in ev.items() if staff or k not in ("actor", "id")}
            for ev in d["history"]]
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
    """One case with its history (staff fields for a reader whose role needs them)."""
    case = hemei().store.get_case(case_id)
    user = reader()
    staff = user is not None and can_read(user, case)
    from gis.workflow import can_see_reporter

    rep = user is not None and can_see_reporter(user, case)
    resp = jsonify(case_feature(case, history=True, staff=staff, reporter=rep)
                   | ({"allowed": allowed_for(user, case)} if user else {}))
    resp.set_etag(f"{case.id}-{case.row_version}-{int(staff)}{int(rep)}")
    return resp.make_conditional(request)


def json_body() -> object:
    """The request's JSON body; ``InvalidInput`` (field ``body``) if empty or not JSON."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise InvalidInput("the request body is empty; send a JSON object", field="body")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the request body is not valid JSON", field="body") from None


def body_and_photos() -> tuple[object, list[bytes]]:
    """JSON, or a multipart form whose fields are the body and whose ``photos`` are
    files (a phone app sending its pictures with the step)."""
    if request.mimetype == "multipart/form-data":
        form = {k: v for k, v in request.form.items()}
        for k in ("line", "quantities"):
            if form.get(k):
                try:
                    form[k] = json.loads(form[k])
                except ValueError:
                    raise InvalidInput(f"{k} must be JSON", field=k) from None
        return form, [f.read() for f in request.files.getlist("photos") if f.filename]
    return json_body(), []


@bp.post("/issues")
def create_issue():
    """Report a case (token): JSON with category, lon, lat, description, optional title
    and source; or a multipart form with photos."""
    user = api_user("admin", "grid_worker", "field_staff")
    payload, photos = body_and_photos()
    if isinstance(payload, dict) and not payload.get("source"):
        payload = {**payload, "source": "patrol"}
    case = hemei().report(payload, actor=user.display_name, photos=photos)
    resp = jsonify(case_feature(case, history=True, staff=True))
    resp.status_code = 201
    resp.headers["Location"] = url_for("api.get_issue", case_id=case.id)
    return resp


@bp.post("/issues/<int:case_id>/transitions")
def transition(case_id: int):
    """Move a case: ``{"to": STATUS, "note": …}`` plus what the step needs (assignee,
    due date, location, repair line, quantities, photos as multipart). 409 lists the
    allowed moves; 403 says why the caller may not."""
    user = api_user()
    payload, photos = body_and_photos()
    h = hemei()
    try:
        case, warnings = h.move(user, case_id, payload, photos)
    except Conflict as err:
        current = h.store.get_case(case_id)
        err.details = {**(err.details or {}), "current": current.status,
                       "allowed": allowed_transitions(current.status),
                       "allowed_for_you": allowed_for(user, current)}
        raise
    body = case_feature(case, history=True, staff=True)
    body["warnings"] = warnings
    return jsonify(body)


@bp.post("/issues/<int:case_id>/extension")
def extend(case_id: int):
    """Extend a case's due date with a reason (延期)."""
    user = api_user("admin", "grid_worker")
    return jsonify(case_feature(hemei().extend(user, case_id, json_body()), history=True,
                                staff=True))


@bp.post("/issues/<int:case_id>/needs")
def needs(case_id: int):
    """Put a case on the needs list (``kind`` fix_now/long_term) and ``publish`` it for
    partner units to claim; ``kind: null`` takes it off."""
    user = api_user("admin", "grid_worker")
    return jsonify(case_feature(hemei().set_needs(user, case_id, json_body()), history=True,
                                staff=True))


@bp.get("/needs")
def needs_list():
    """The needs list: published (claimable) items, and per unit what it has claimed and
    finished."""
    h = hemei()
    kind = request.args.get("kind") or "any"
    if kind not in ("any", "fix_now", "long_term"):
        raise InvalidInput("kind must be fix_now or long_term", field="kind")
    claimable, _ = h.store.list_cases(needs=kind, published=True, status="filed", limit=None)
    return jsonify({"claimable": [case_feature(c) for c in claimable],
                    "units": h.needs_summary()})


@bp.post("/checkins")
def checkin():
    """A grid worker's patrol check-in: ``{"lon", "lat", "accuracy"}``."""
    user = api_user("grid_worker", "admin")
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    out = hemei().check_in(user, body.get("lon"), body.get("lat"), body.get("accuracy"))
    return jsonify({**out, "at": out["at"].isoformat() + "Z"}), 201


@bp.get("/me")
def me():
    """The token's user."""
    return jsonify(api_user().to_dict())
