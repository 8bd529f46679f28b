"""The JSON API under /api/v1/."""

from __future__ import annotations

import json
import re
from pathlib import PurePath

from flask import Blueprint, current_app, jsonify, request

from gis.cases import STATUSES, Case, allowed_transitions, report_fingerprint, status_label
from gis.catalogue import get_category
from gis.errors import Conflict, InvalidInput, NotFound, UnsupportedMediaType
from gis.geojson import feature_collection
from gis.locate import check_lon_lat
from gis.storage import LEVELS
from gis.workflow import allowed_for, can_read
from webapp.apidoc import (
    Content,
    document,
    geojson,
    header,
    paging_params,
    path,
    query,
    ref,
)
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


def _paging(default: int, maximum: int) -> tuple[int, int]:
    """``limit`` and ``offset``, the paging parameters every list endpoint shares
    (documented by :func:`webapp.apidoc.paging_params`)."""
    return _int_arg("limit", default, 1, maximum), _int_arg("offset", 0, 0, 10**9)


def _page(total: int, returned: int, limit: int, offset: int) -> dict:
    """The paging fields every list response shares."""
    return {"numberMatched": total, "numberReturned": returned, "limit": limit,
            "offset": offset}


#: Ids are 32-bit integers in the store (``sa.Integer``: INTEGER on PostgreSQL): a larger
#: number in the URL is simply not found (404), and in a body a 400, never an overflow.
MAX_ID = 2**31 - 1
CASE_ID = path("case_id", description="the case's id", example=1)
STATUS_FILTER = {"type": "string", "enum": ["open", *STATUSES]}
BBOX = query("bbox", {"type": "array", "minItems": 4, "maxItems": 4,
                      "items": {"type": "number"}},
             "minLon,minLat,maxLon,maxLat (WGS-84)", style="form", explode=False,
             example=[111.5, 24.3, 111.7, 24.5])


def _category_filter() -> dict:
    from gis.catalogue import load_catalogue

    return query("category", {"type": "string", "enum": list(load_catalogue())},
                 "a category code of the catalogue")


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
        props["history"] = [ev if staff else _public_event(ev) for ev in d["history"]]
    return {"type": "Feature", "id": case.id,
            "geometry": {"type": "Point", "coordinates": [case.lon, case.lat]},
            "properties": props}


def _public_event(ev: dict) -> dict:
    """A history event as the public sees it: no actor, no event id, and no staff
    fields in its data (a dispatch names the field worker's account)."""
    out = {k: v for k, v in ev.items() if k not in ("actor", "id")}
    data = out.get("data")
    if isinstance(data, dict) and any(k in data for k in STAFF_FIELDS):
        out["data"] = {k: v for k, v in data.items() if k not in STAFF_FIELDS}
    return out


@bp.get("/locate")
@document("Locate a point", tags=["layers"], params=[
    query("lon", {"type": "number", "minimum": -180, "maximum": 180}, "longitude (WGS-84)",
          required=True, example=111.57),
    query("lat", {"type": "number", "minimum": -90, "maximum": 90}, "latitude (WGS-84)",
          required=True, example=24.40)],
    responses={200: ref("Located")})
def locate():
    """Locate a point: the chain street → community → compound → grid."""
    lon, lat = check_lon_lat(request.args.get("lon"), request.args.get("lat"))
    chain = hemei().locator.locate(lon, lat)
    return jsonify({"lon": lon, "lat": lat, "inside": chain is not None, "chain": chain})


@bp.get("/layers")
@document("The active boundary layer versions", tags=["layers"],
          responses={200: ref("LayerVersions")})
def list_layers():
    """The boundary levels and their active versions."""
    versions = [
        {k: _layer_field(k, v) for k, v in row.items()}
        for row in hemei().store.layer_versions() if row["active"]
    ]
    return jsonify({"layers": versions})


def _layer_field(key: str, value):
    if key == "created_at":
        return value.isoformat() + "Z"
    if key == "source" and value:
        # Where the file was on the server is nobody's business: its name says enough.
        return PurePath(str(value)).name
    return value


@bp.get("/layers/<layer>")
@document("One boundary layer as GeoJSON", tags=["layers"],
          params=[path("layer", {"type": "string", "enum": list(LEVELS)}, example="grid")],
          responses={200: geojson(ref("LayerCollection"))})
def get_layer(layer: str):
    """One boundary layer as GeoJSON."""
    if layer not in LEVELS:
        raise NotFound(f"unknown layer {layer!r}; expected one of: {', '.join(LEVELS)}",
                       field="layer")
    gdf = hemei().layers.get(layer)
    if gdf is None:
        raise NotFound(f"layer {layer!r} has not been imported", field="layer")
    body = feature_collection(gdf, ["code", "name", "parent_code", "households"])
    body["numberMatched"] = body["numberReturned"] = len(body["features"])
    return current_app.response_class(json.dumps(body, ensure_ascii=False),
                                      mimetype="application/geo+json")


@bp.get("/issues")
@document("Cases as GeoJSON, filtered and paged", tags=["cases"], params=[
    BBOX, query("grid", description="a grid code"),
    query("compound", description="a residential compound code"),
    query("status", STATUS_FILTER, "a status, or open (every open status)"),
    _category_filter(), *paging_params(100, 10_000)],
    responses={200: ref("CaseCollection")})
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
    limit, offset = _paging(100, 10_000)
    rows, total = h.store.list_cases(
        bbox=h.parse_bbox(request.args.get("bbox")), grid=request.args.get("grid") or None,
        status=status, category=category, compound=request.args.get("compound") or None,
        limit=limit, offset=offset)
    return jsonify({"type": "FeatureCollection",
                    "features": [case_feature(c) for c in rows],
                    **_page(total, len(rows), limit, offset)})


@bp.get("/issues/points")
@document("Compact rows of cases for drawing a map", tags=["cases"], params=[
    BBOX, query("status", STATUS_FILTER, "a status, or open"), _category_filter(),
    *paging_params(5000, 20_000)],
    responses={200: ref("CasePoints")})
def issue_points():
    """Compact rows for drawing many cases: ``[id, lon, lat, status, category, created
    (epoch seconds), title]``, newest first, for a bounding box (the map's viewport).
    ``truncated`` says more cases match than were returned."""
    h = hemei()
    status = request.args.get("status") or None
    if status and status != "open" and status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r}", field="status")
    category = request.args.get("category") or None
    if category:
        get_category(category)
    limit, offset = _paging(5000, 20_000)
    # The store pages by limit only: ask for the rows up to offset + limit, keep the last.
    rows, total = h.store.case_points(bbox=h.parse_bbox(request.args.get("bbox")),
                                      status=status, category=category,
                                      limit=limit + offset)
    rows = rows[offset:]
    return jsonify({"fields": ["id", "lon", "lat", "status", "category", "created", "title"],
                    "rows": rows, "truncated": total > offset + len(rows),
                    **_page(total, len(rows), limit, offset)})


@bp.get("/coverage")
@document("Coverage metrics of every grid for a period", tags=["coverage"], params=[
    query("period", {"type": "string", "maxLength": 40},
          "7d, 30d (default), 90d, 365d or any Nd (N ≤ 3660); a month 2026-10; or days "
          "2026-10-01..2026-10-31 (months and days are Beijing time, UTC+8)",
          example="90d")],
    responses={200: geojson(ref("Coverage"))})
def coverage():
    """Per-grid coverage metrics for a period as GeoJSON, with the metric definitions."""
    from gis.coverage import METRICS, parse_period, up_to_now

    h = hemei()
    period = up_to_now(parse_period(request.args.get("period")))
    # A relative period ends "now": like the overview map's cache, the metrics count as
    # unchanged within the hour while the data version stays, so the ETag (weak) is
    # known before anything is computed and a revalidation costs no computing.
    etag = (f"coverage-{period.key}-{period.start:%Y%m%d%H}-{period.end:%Y%m%d%H}-"
            f"{h.store.data_version()}")
    if request.if_none_match.contains_weak(etag):
        resp = current_app.response_class(status=304)
        resp.set_etag(etag, weak=True)
        return resp
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
    body["numberMatched"] = body["numberReturned"] = len(body["features"])
    resp = current_app.response_class(json.dumps(body, ensure_ascii=False, allow_nan=False),
                                      mimetype="application/geo+json")
    resp.set_etag(etag, weak=True)
    return resp


@bp.get(f"/issues/<int(max={MAX_ID}):case_id>")
@document("One case with its history", tags=["cases"], params=[CASE_ID],
          security="optional", responses={200: ref("CaseFeature")})
def get_issue(case_id: int):
    """One case with its history (staff fields for a reader whose role needs them)."""
    case = hemei().store.get_case(case_id)
    user = reader()
    staff = user is not None and can_read(user, case)
    from gis.workflow import can_see_reporter

    rep = user is not None and can_see_reporter(user, case)
    resp = jsonify(case_feature(case, history=True, staff=staff, reporter=rep)
                   | ({"allowed": allowed_for(user, case)} if user else {}))
    # The body depends on the reader (staff fields, the moves they may make) and on the
    # clock (overdue): the ETag is the body's own hash (webapp.apidoc), not the row
    # version, and caches keep readers apart.
    resp.vary.update(("Authorization", "Cookie"))
    return resp


INT64 = (-(2**63), 2**63 - 1)


def _json_int(text: str) -> int | float:
    # An integer beyond 64 bits is no id, version or count the store could hold, and
    # turning it into a float later raises OverflowError (a 500) wherever a number is
    # expected: read it as the float it stands for (inf when huge), which the field's own
    # check refuses as out of range, naming the field.
    v = int(text)
    return v if INT64[0] <= v <= INT64[1] else float(text)


def json_body() -> object:
    """The request's JSON body; ``InvalidInput`` (field ``body``) if empty or not JSON,
    ``UnsupportedMediaType`` if it is declared as something else."""
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType(f"send the body as JSON (Content-Type: application/json), "
                                   f"not {mimetype}", field="Content-Type")
    return parse_json(request.get_data(cache=True))


def parse_json(raw: bytes) -> object:
    """A JSON body's bytes as Python; ``InvalidInput`` (field ``body``) if empty, not JSON,
    nested too deeply, or holding half a surrogate pair."""
    if not raw.strip():
        raise InvalidInput("the request body is empty; send a JSON object", field="body")
    try:
        body = json.loads(raw, parse_int=_json_int)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the request body is not valid JSON", field="body") from None
    except RecursionError:
        raise InvalidInput("the request body is nested too deeply", field="body") from None
    if _SURROGATE_ESCAPE.search(raw):
        _refuse_lone_surrogates(body)
    return body


# A "\ud800"-style escape: JSON may encode half a UTF-16 pair, which no database can store.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(value: object, field: str = "body") -> None:
    """Refuse text holding half a surrogate pair (a pair decodes to one character and
    passes), naming the field: the store would fail on it later, with a 500."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(f"{field} holds an unpaired surrogate (\\ud800–\\udfff), "
                               "which is not text", field=field) from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _refuse_lone_surrogates(k, field)
            _refuse_lone_surrogates(v, k if field == "body" else field)
    elif isinstance(value, list):
        for v in value:
            _refuse_lone_surrogates(v, field)


def body_and_photos() -> tuple[object, list[bytes]]:
    """JSON, or a multipart form whose fields are the body and whose ``photos`` are
    files (a phone app sending its pictures with the step)."""
    if request.mimetype == "multipart/form-data":
        form = {k: v for k, v in request.form.items()}
        if None in form:
            # A part whose Content-Disposition has no name (RFC 7578 requires one): it
            # reached the report's fingerprint as a None key, a 500 (found by
            # tests/webapp/test_openapi.py's fuzzing).
            raise InvalidInput("every part of a multipart body needs a name "
                               "(Content-Disposition: form-data; name=\"…\")", field="body")
        for k in ("line", "quantities"):
            if form.get(k):
                try:
                    form[k] = json.loads(form[k], parse_int=_json_int)
                except (ValueError, RecursionError):
                    raise InvalidInput(f"{k} must be JSON", field=k) from None
        return form, [f.read() for f in request.files.getlist("photos") if f.filename]
    return json_body(), []


#: Who may report through the API (a resident reports on the compound's QR page).
REPORTER_ROLES = ("admin", "grid_worker", "field_staff")
#: An Idempotency-Key: 1–100 printable ASCII characters, no space at either end.
IDEMPOTENCY_KEY = re.compile(r"[!-~](?:[ -~]{0,98}[!-~])?")


NEW_CASE_EXAMPLE = {"category": "street_light", "lon": 111.57, "lat": 24.40,
                    "description": "路灯不亮", "title": "新兴南路路灯不亮"}


@bp.post("/issues")
@document("Report a case", tags=["cases"], security=True, body=ref("NewCase"),
          multipart={"allOf": [ref("NewCase")], "properties": {"photos": {
              "type": "array", "items": {"type": "string", "contentMediaType":
                                         "application/octet-stream"},
              "description": "JPEG, PNG or WebP photos"}}},
          body_example=NEW_CASE_EXAMPLE,
          params=[header("Idempotency-Key", {
              "type": "string", "minLength": 1, "maxLength": 100,
              "pattern": "^[!-~]([ -~]*[!-~])?$"},
              "Makes retries safe: 1–100 printable ASCII characters, unique per report. A "
              "retry with a key you already used answers 200 with the case the first "
              "request made (same id and Location) instead of reporting it again; the "
              "same key with a different report (other fields or photos) is 422 "
              "idempotency_key_reused, naming the first case.")],
          responses={201: Content(ref("CaseFeature"), description="reported and located",
                                  headers={"Location": {"schema": {"type": "string"},
                                                        "description": "the case's URL"}}),
                     200: Content(ref("CaseFeature"),
                                  description="a retry: the case this Idempotency-Key made",
                                  headers={"Location": {"schema": {"type": "string"},
                                                        "description": "the case's URL"}})},
          errors=(400, 413, 422))
def create_issue():
    """Report a case (token): JSON with category, lon, lat, description, optional title
    and source; or a multipart form with photos. An ``Idempotency-Key`` header makes
    retries safe: the same key from the same user answers with the case it made."""
    from gis.storage import IdempotentReplay

    user = api_user(*REPORTER_ROLES)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise InvalidInput("the Idempotency-Key header must be 1 to 100 printable ASCII "
                           "characters (no leading or trailing spaces)",
                           field="Idempotency-Key")
    payload, photos = body_and_photos()
    status = 201
    try:
        case = submit_report(hemei(), user, key, payload, photos)
    except IdempotentReplay as replay:
        case, status = hemei().store.get_case(replay.case_id), 200
    resp = jsonify(case_feature(case, history=True, staff=True))
    resp.status_code = status
    resp.headers["Location"] = _issue_url(case.id)
    return resp


def submit_report(h, user, key: str | None, payload: object, photos: list[bytes]) -> Case:
    """Report ``payload`` as ``user`` (the source defaults to a patrol) with the
    request's Idempotency-Key; raises as :meth:`gis.service.Hemei.report` does. The one
    way a report reaches the store from the API, the Flask view's and the fast path's
    (webapp/intake.py)."""
    # What the key came with, so that the same key with another report is refused.
    idempotency = (None if key is None
                   else (user.id, key, report_fingerprint(payload, photos)))
    if isinstance(payload, dict) and not payload.get("source"):
        payload = {**payload, "source": "patrol"}
    return h.report(payload, actor=user.display_name, photos=photos,
                    idempotency=idempotency)


def _issue_url(case_id: int) -> str:
    """``url_for("api.get_issue", case_id=…)`` (a test holds them equal), without a trip
    through the URL map on every report: that was a twentieth of a report's time in the
    app (bench/intake.py)."""
    return f"{request.script_root}{bp.url_prefix}/issues/{case_id}"


@bp.post(f"/issues/<int(max={MAX_ID}):case_id>/transitions")
@document("Move a case to another status", tags=["workflow"], security=True,
          params=[CASE_ID], body=ref("Transition"),
          multipart={"allOf": [ref("Transition")], "properties": {"photos": {
              "type": "array", "items": {"type": "string", "contentMediaType":
                                         "application/octet-stream"}}}},
          body_example={"to": "verified", "note": "现场核实属实"},
          responses={200: ref("CaseFeature")}, errors=(400, 404, 409, 413, 422))
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


@bp.post(f"/issues/<int(max={MAX_ID}):case_id>/extension")
@document("Extend a case's due date", tags=["workflow"], security=True, params=[CASE_ID],
          body=ref("Extension"),
          body_example={"due_at": "2030-01-31T09:00:00Z", "reason": "等待配件"},
          responses={200: ref("CaseFeature")}, errors=(400, 404, 409))
def extend(case_id: int):
    """Extend a case's due date with a reason (延期)."""
    user = api_user("admin", "grid_worker")
    return jsonify(case_feature(hemei().extend(user, case_id, json_body()), history=True,
                                staff=True))


@bp.post(f"/issues/<int(max={MAX_ID}):case_id>/needs")
@document("Put a case on the needs list, publish it, or take it off", tags=["workflow"],
          security=True, params=[CASE_ID], body=ref("NeedsChange"),
          body_example={"kind": "fix_now", "publish": False},
          responses={200: ref("CaseFeature")}, errors=(400, 404, 409))
def needs(case_id: int):
    """Put a case on the needs list (``kind`` fix_now/long_term) and ``publish`` it for
    partner units to claim; ``kind: null`` takes it off."""
    user = api_user("admin", "grid_worker")
    body = json_body()
    if isinstance(body, dict) and not isinstance(body.get("kind"), str | None):
        # gis.workflow.needs_kind looks a non-text kind up in a dict (a TypeError, 500).
        raise InvalidInput("kind must be fix_now, long_term or null", field="kind")
    return jsonify(case_feature(hemei().set_needs(user, case_id, body), history=True,
                                staff=True))


@bp.get("/needs")
@document("The needs list and what each unit has claimed and finished", tags=["workflow"],
          params=[query("kind", {"type": "string", "enum": ["any", "fix_now", "long_term"]},
                        "only this kind (default any)"), *paging_params(1000, 10_000)],
          responses={200: ref("Needs")})
def needs_list():
    """The needs list: published (claimable) items, and per unit what it has claimed and
    finished."""
    h = hemei()
    kind = request.args.get("kind") or "any"
    if kind not in ("any", "fix_now", "long_term"):
        raise InvalidInput("kind must be fix_now or long_term", field="kind")
    limit, offset = _paging(1000, 10_000)
    claimable, total = h.store.list_cases(needs=kind, published=True, status="filed",
                                          limit=limit, offset=offset)
    return jsonify({"claimable": [case_feature(c) for c in claimable],
                    "units": h.needs_summary(),
                    **_page(total, len(claimable), limit, offset)})


@bp.post("/checkins")
@document("A patrol check-in", tags=["accounts"], security=True, body=ref("CheckInBody"),
          body_example={"lon": 111.57, "lat": 24.40, "accuracy": 12},
          responses={201: ref("CheckIn")}, errors=(400, 422))
def checkin():
    """A grid worker's patrol check-in: ``{"lon", "lat", "accuracy"}``."""
    user = api_user("grid_worker", "admin")
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    out = hemei().check_in(user, body.get("lon"), body.get("lat"), body.get("accuracy"))
    return jsonify({**out, "at": out["at"].isoformat() + "Z"}), 201


@bp.get("/me")
@document("Who the token belongs to", tags=["accounts"], security=True,
          responses={200: ref("Me")})
def me():
    """The token's user."""
    return jsonify(api_user().to_dict())
