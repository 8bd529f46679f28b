"""Field work from a phone (390 × 844, one thumb): my cases, report on the spot, act on a
case, patrol check-ins, the needs list.

Every page needs a login (``web_user``); every POST is a multipart form carrying the CSRF
token (``X-CSRFToken`` header for the two ``fetch`` helpers). Views stay thin: they parse
the form, call :class:`gis.service.Hemei`, and on a domain error re-render the same form
with the message, what was typed, and the error's 4xx status. Nothing is half-written:
photos are stored only together with the case or event that uses them.

Routes (all under ``/m``):

``GET /``                        the work list of the signed-in person
``GET|POST /report``             report a case (GPS marker, category, description, photos)
``POST /photo-location``         the EXIF GPS position of a photo (JSON)
``GET /nearby``                  open cases of a category within a radius (JSON)
``POST /cases/<id>/add``         add a note and photos to an existing case (a comment)
``GET /cases/<id>``              one case with a form per move the user may make now
``POST /cases/<id>/move``        make a move (``Hemei.move``)
``POST /cases/<id>/extend``      a new due date with a reason (``Hemei.extend``)
``POST /cases/<id>/needs``       put on / take off the needs list (``Hemei.set_needs``)
``GET /cases/<id>/<action>``     back to the case page (a reload after a form error)
``GET /photos/<key>``            a case photo (``?thumb=1``: its thumbnail)
``GET|POST /patrol``             a grid worker's check-in and "last patrolled" per grid
``GET /needs``                   the published needs list and what each unit holds
"""

from __future__ import annotations

import json
import math
import re
import secrets
from datetime import datetime

import sqlalchemy as sa
from flask import (
    Blueprint,
    Response,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import gettext, ngettext

from gis.cases import (
    NEEDS_KINDS,
    OPEN_STATUSES,
    Case,
    report_fingerprint,
    status_label,
    utcnow,
)
from gis.catalogue import get_category, load_catalogue
from gis.errors import (
    Conflict,
    Forbidden,
    HemeiError,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
)
from gis.localtime import from_beijing
from gis.locate import check_lon_lat
from gis.photos import MAX_PHOTOS, PhotoTooLarge
from gis.storage import IdempotentReplay
from gis.workflow import (
    FAR_M,
    MAX_DUE_AHEAD,
    QUANTITIES,
    allowed_for,
    authorize_move,
    can_read,
    geodesic_m,
)
from webapp.auth import web_user
from webapp.i18n import actor_label, get_locale, local_time

bp = Blueprint("field", __name__, url_prefix="/m")

#: Roles that report cases and add to them (planners read only).
REPORTERS = ("admin", "grid_worker", "field_staff")
NEARBY_M = 50.0  # default radius of the duplicate check
MAX_NEARBY_M = 1000.0
FIELD_STATUSES = ("dispatched", "claimed", "in_progress", "reopened")
ADMIN_LIST_LIMIT = 200
_KEY = re.compile(r"[0-9a-f]{64}\.(?:jpg|png)")
#: The one-time key a report form carries (see :func:`_form_key`).
_FORM_KEY = re.compile(r"m-[A-Za-z0-9_-]{16,64}")
#: Worse than this (metres), the report page asks for the marker to be dragged into place.
POOR_ACCURACY_M = 100.0
#: Worse than this, a check-in is refused (``Hemei.check_in``); the page says so first.
CHECK_IN_ACCURACY_M = 200.0


def N_(message: str) -> str:
    """Mark ``message`` for ``pybabel extract`` without translating it: the labels below
    are module constants in English, translated by :func:`tr` where they are shown."""
    return message


def tr(message: str) -> str:
    """``message`` (marked with :func:`N_`) in the reader's language."""
    return gettext(message)


def translated(labels: dict[str, str]) -> dict[str, str]:
    """A table of :func:`N_` labels in the reader's language."""
    return {k: tr(v) for k, v in labels.items()}


#: The button of each move, in the words people use on site.
MOVE_LABELS = {
    "verified": N_("Confirm it is true"), "filed": N_("File the case"),
    "rejected": N_("Do not file"), "dispatched": N_("Dispatch"),
    "claimed": N_("Claim"), "in_progress": N_("Start the work"),
    "resolved": N_("Work done"),
    "closed": N_("Check passed, close the case"),
    "reopened": N_("Send back for rework"),
    "closed_not_fixed": N_("Close (not fixed)"),
}
#: Moves whose form needs more than one tap (they open a small form first).
DETAILED_MOVES = {"rejected", "dispatched", "resolved", "reopened", "closed_not_fixed"}
QUANTITY_LABELS = {"road_m": N_("Road surface repaired (m)"),
                   "area_m2": N_("Area patched (m²)"),
                   "lamps": N_("Street lights repaired"),
                   "parking_spaces": N_("Parking spaces marked"),
                   "patches": N_("Potholes patched")}
EVENT_KINDS = {"comment": N_("More information added"),
               "extension": N_("Extension"), "needs": N_("Needs list"),
               "evaluation": N_("Residents' evaluation"),
               "feedback": N_("Feedback"),
               "relocation": N_("Moved to another grid (boundaries redrawn)")}

#: A short lead in the reader's language for the (English) messages of gis errors, by
#: code, then by field.
ERROR_HINTS = {
    "outside_jurisdiction": N_("The location is outside this street"),
    "forbidden": N_("You are not allowed to do this"),
    "conflict": N_("The case has changed meanwhile; please reload and try again"),
    "photo_too_large": N_("The photo is too large"),
    "not_found": N_("Case not found")}
FIELD_HINTS = {
    "photo": N_("The photo cannot be used"),
    "photos": N_("The photo cannot be used"),
    "category": N_("Please choose the type of problem"),
    "description": N_("Please describe the problem"),
    "lon": N_("The location is not valid"),
    "lat": N_("The location is not valid"),
    "note": N_("Please add a note"),
    "line": N_("The repair line is not valid"),
    "quantities": N_("The quantities are not valid"),
    "assignee_org": N_("Please choose the organisation that handles it"),
    "accuracy": N_("The location accuracy is not valid"),
    "due_at": N_("The new due date is not valid"),
    "reason": N_("Please give a reason"),
    "kind": N_("Please choose the kind of need"),
    "to": N_("This action is not valid")}
#: Errors whose hint says all the reader needs: the (English) detail is left off a
#: Chinese page.
WHOLE_HINTS = {"conflict", "outside_jurisdiction", "not_found"}
#: Fields the forms offer as a list to choose from: a refused value gets the hint alone.
CHOICE_FIELDS = {"category", "kind", "assignee_org"}
_CJK = re.compile(r"[\u4e00-\u9fff]")


class Told(InvalidInput):
    """Bad input whose message is already written for the reader, in their language: a
    form shows it as it is, with no hint in front."""


assert set(QUANTITY_LABELS) == set(QUANTITIES)


def hemei():
    return current_app.extensions["hemei"]


# -- helpers ---------------------------------------------------------------------------

def when(dt: datetime | None, fmt: str = "%m-%d %H:%M") -> str:
    """A stored (naive UTC) time in Beijing time, short (phones are narrow)."""
    return local_time(dt, fmt)


def map_config(**extra) -> dict:
    """What field.js needs to draw a map: tiles (only a WGS-84 source: a GCJ-02 one would
    need every overlay shifted, so it falls back to the plain background), the grid
    outlines' URL, and the street's bounds."""
    tiles = current_app.extensions.get("hemei_tiles")
    layers = []
    if tiles is not None and tiles.kind != "none" and tiles.datum == "wgs84":
        layers = [{"url": t.url, "attr": t.attr, "subdomains": t.subdomains or "abc",
                   "maxZoom": t.max_zoom} for t in tiles.layers]
    street = hemei().layers.get("street")
    minx, miny, maxx, maxy = (street if street is not None else hemei().layers["grid"]
                              ).total_bounds
    return {"tiles": layers, "gridUrl": url_for("api.get_layer", layer="grid"),
            "bounds": [[float(miny), float(minx)], [float(maxy), float(maxx)]], **extra}


def message(err: HemeiError) -> dict[str, str]:
    """``{field: text}`` for a form: the message in the reader's language when it is
    known (:func:`_worded`), else led by a hint in their language unless it was written
    for the reader (:class:`Told`) or is Chinese already."""
    text = None if isinstance(err, Told) else _worded(err)
    if text is None:
        hint = ERROR_HINTS.get(err.code) or FIELD_HINTS.get(err.field or "")
        if hint is None or isinstance(err, Told) or _CJK.search(err.message):
            text = err.message
        elif (err.field in CHOICE_FIELDS and hint is FIELD_HINTS.get(err.field)) or (
                err.message.endswith(" is required")):
            # A missing value, or a choice from a list: the hint says it all (the gis
            # message would list internal codes, in English).
            text = tr(hint)
        elif err.code in WHOLE_HINTS and get_locale() == "zh":
            text = tr(hint)
        else:
            text = tr(hint) + _aside(err.message)
    return {err.field or "form": text}


def _details(err: HemeiError) -> dict:
    return err.details if isinstance(err.details, dict) else {}


def _worded(err: HemeiError) -> str | None:
    """The whole message of a known refusal in the reader's language, or None.

    By ``details["reason"]`` where gis gives one (patrol check-ins); for photos, which
    :mod:`gis.photos` refuses without a reason, by class and details (too many bytes or
    pixels) and, for HEIC and a cut-off upload, by the words its English message uses."""
    d = _details(err)
    reason = d.get("reason")
    if reason == "too_inaccurate":
        return gettext("Your position is only accurate to about %(num)s m; a check-in needs "
                       "%(limit)s m or better. Move into the open and locate again.",
                       num=f"{float(d.get('accuracy') or 0):.0f}",
                       limit=f"{float(d.get('limit') or CHECK_IN_ACCURACY_M):.0f}")
    if reason == "outside_street":
        return gettext("Your position is outside the street: no check-in here.")
    if reason == "not_your_grid":
        code = str(d.get("grid") or "")
        return gettext("You are in %(grid)s, which is not one of your grids: check in "
                       "from one of your own grids.",
                       grid=hemei().locator.name("grid", code) or code)
    if reason == "accuracy":
        return tr(FIELD_HINTS["accuracy"])
    if err.field not in ("photo", "photos"):
        return None
    if isinstance(err, PhotoTooLarge) and "bytes" in d and "max_bytes" in d:
        mb = 1024 * 1024
        return gettext("The photo is %(size)s MB, over the limit of %(limit)s MB. Please "
                       "send a smaller one (most phones can share a reduced size).",
                       size=f"{math.ceil(d['bytes'] / mb * 10) / 10:g}",
                       limit=f"{math.floor(d['max_bytes'] / mb * 100) / 100:g}")
    if "max_pixels" in d:
        return gettext("The photo has too many pixels. Please send a smaller one.")
    text = err.message
    if "HEIC" in text:
        return gettext("HEIC photos (the iPhone default) are not accepted: please send a "
                       "JPEG, PNG or WebP photo (on an iPhone: Settings > Camera > Formats "
                       "> Most Compatible).")
    if "damaged" in text or "incomplete" in text:
        return gettext("The photo file is damaged or incomplete (was the upload cut off?). "
                       "Please send it again.")
    if err.code == "invalid_input" and err.field == "photo":
        return gettext("This file is not a photo that can be used: please send a JPEG, PNG "
                       "or WebP photo.")
    return None


def _aside(text: str) -> str:
    """``text`` in brackets after what it explains: `` (text)``, in Chinese ``（text）``."""
    return f"（{text}）" if get_locale() == "zh" else f" ({text})"


def _photos_from_request(name: str = "photos") -> list[bytes]:
    blobs = [f.read() for f in request.files.getlist(name) if f.filename]
    if len(blobs) > MAX_PHOTOS:
        raise Told(ngettext("At most %(num)d photo", "At most %(num)d photos", MAX_PHOTOS),
                   field="photos")
    return blobs


def _row(c: Case, now: datetime) -> dict:
    """A case as a line of a work list."""
    h = hemei()
    overdue = c.is_overdue(now)
    locale = get_locale()
    return {"id": c.id, "title": c.title, "status": c.status,
            "status_label": status_label(c.status, locale),
            "category": get_category(c.category).label(locale),
            "due_at": c.due_at, "overdue": overdue,
            "overdue_days": math.ceil((now - c.due_at).total_seconds() / 86400)
            if overdue else 0,
            "grid": h.locator.name("grid", c.grid_code) or c.grid_code or "",
            "compound": h.locator.name("compound", c.compound_code) or "",
            "needs_kind": c.needs_kind}


def _by_urgency(cases: list[Case]) -> list[Case]:
    """Most overdue first (earliest due), then those due soonest; no due date last."""
    return sorted(cases, key=lambda c: (c.due_at is None, c.due_at or datetime.max, c.id))


# -- home ------------------------------------------------------------------------------

@bp.get("/")
def home():
    """The signed-in person's work list, most urgent first."""
    user = web_user()
    h = hemei()
    now = utcnow()
    sections: list[dict] = []
    store = h.store
    if user.role == "grid_worker":
        opened, _ = store.list_cases(grids=user.grids, status="open", limit=None)
        resolved, _ = store.list_cases(grids=user.grids, status="resolved", limit=None)
        sections.append({"id": "open-cases", "title": gettext("My grids · open cases"),
                         "rows": [_row(c, now) for c in _by_urgency(opened)],
                         "empty": gettext("No open cases")})
        sections.append({"id": "to-check", "title": gettext("Resolved · waiting for my check"),
                         "rows": [_row(c, now) for c in _by_urgency(resolved)],
                         "empty": gettext("No cases to check")})
    elif user.role == "field_staff":
        mine = []
        if user.org_id is not None:
            mine, _ = store.list_cases(org=user.org_id, status=list(FIELD_STATUSES), limit=None)
        claimable, _ = store.list_cases(needs="any", published=True, status="filed",
                                        limit=None)
        org = user.org_name or gettext("My organisation")
        sections.append({"id": "org-cases", "title": gettext("%(org)s · to handle", org=org),
                         "rows": [_row(c, now) for c in _by_urgency(mine)],
                         "empty": gettext("No cases dispatched to your organisation")})
        sections.append({"id": "claimable", "title": gettext("Needs list · open to claim"),
                         "rows": [_row(c, now) for c in _by_urgency(claimable)],
                         "empty": gettext("Nothing to claim at the moment")})
    else:
        opened, _ = store.list_cases(status="open", limit=None)
        if user.role == "planner":
            opened = [c for c in opened
                      if user.area_code in (c.street_code, c.community_code)]
        opened = _by_urgency(opened)
        sections.append({"id": "open-cases",
                         "title": gettext("All open cases (%(num)d)", num=len(opened)),
                         "rows": [_row(c, now) for c in opened[:ADMIN_LIST_LIMIT]],
                         "more": max(len(opened) - ADMIN_LIST_LIMIT, 0),
                         "empty": gettext("No open cases")})
    return render_template("field/home.html", user=user, sections=sections, when=when,
                           can_report=user.role in REPORTERS)


# -- report ----------------------------------------------------------------------------

def _nearby(lon: float, lat: float, category: str, radius: float) -> list[tuple[Case, float]]:
    """Open cases of ``category`` within ``radius`` metres of the point, nearest first."""
    dlat = radius / 111_000 * 1.5 + 1e-6
    dlon = radius / (111_000 * max(math.cos(math.radians(lat)), 0.01)) * 1.5 + 1e-6
    bbox = (max(lon - dlon, -180), max(lat - dlat, -90), min(lon + dlon, 180),
            min(lat + dlat, 90))
    candidates, _ = hemei().store.list_cases(bbox=bbox, status="open", category=category,
                                             limit=None)
    out = [(c, geodesic_m(lon, lat, c.lon, c.lat)) for c in candidates]
    return sorted([(c, d) for c, d in out if d <= radius], key=lambda p: p[1])


def _form_key(renew: bool = False) -> str:
    """The one-time key of a report form: the one it was sent with (nothing was stored,
    so the same report sent again may use it), or a new one for a new form."""
    sent = request.form.get("form_key") or ""
    return sent if sent and not renew and _FORM_KEY.fullmatch(sent) else (
        "m-" + secrets.token_urlsafe(18))


def _render_report(errors: dict | None = None, status: int = 200, duplicates=None,
                   new_key: bool = False):
    return render_template(
        "field/report.html", categories=load_catalogue().values(), errors=errors or {},
        form=request.form, duplicates=duplicates or [], radius=NEARBY_M,
        max_photos=MAX_PHOTOS, form_key=_form_key(renew=new_key),
        map_cfg=map_config(nearbyUrl=url_for("field.nearby"),
                           photoUrl=url_for("field.photo_location"),
                           addUrl=url_for("field.add_to_case", case_id=0)
                           .replace("/0/", "/{id}/"),
                           caseUrl=url_for("field.case", case_id=0).replace("/0", "/{id}"),
                           radius=NEARBY_M, poorM=POOR_ACCURACY_M,
                           maxPhotos=MAX_PHOTOS)), status


def _missing_report_fields(form) -> dict[str, str]:
    """Every required field of the report form left empty (or a category not in the
    list), each with its message, so the reporter sees them all at once."""
    missing = {}
    if not form.get("lon") and not form.get("lat"):
        missing["lon"] = gettext("No location yet: locate the phone or tap the map")
    if (form.get("category") or "") not in load_catalogue():
        missing["category"] = tr(FIELD_HINTS["category"])
    if not (form.get("description") or "").strip():
        missing["description"] = tr(FIELD_HINTS["description"])
    return missing


@bp.route("/report", methods=["GET", "POST"])
def report():
    """Report a case on the spot. Before saving, open cases of the same category within
    50 m are offered to add to instead (field.js asks /m/nearby first; without script the
    server shows them and asks again).

    The form carries a one-time key (``form_key``, rendered with the page) used as the
    API's Idempotency-Key: the same form sent twice (a double tap, a retry over a slow
    connection) makes one case, and the second answer shows it."""
    user = web_user(*REPORTERS)
    if request.method == "GET":
        return _render_report()
    form = request.form
    h = hemei()
    missing = _missing_report_fields(form)
    if missing:
        return _render_report(missing, 400)
    try:
        photos = _photos_from_request()
        payload = {"category": form.get("category"), "description": form.get("description"),
                   "lon": form.get("lon"), "lat": form.get("lat"), "source": "patrol"}
        if form.get("confirm_new") != "1":
            lon, lat = check_lon_lat(payload["lon"], payload["lat"])
            get_category(payload["category"])
            dups = _nearby(lon, lat, str(payload["category"]), NEARBY_M)
            if dups:
                return _render_report(duplicates=[_dup(c, d) for c, d in dups])
        key = request.form.get("form_key") or ""
        idempotency = ((user.id, key, report_fingerprint(payload, photos))
                       if _FORM_KEY.fullmatch(key) else None)
        case = h.report(payload, actor=user.display_name, photos=photos,
                        idempotency=idempotency)
    except IdempotentReplay as replay:
        # The same form again: the first tap made the case; show it as if just made.
        case = h.store.get_case(replay.case_id)
    except IdempotencyKeyReused as err:
        # This form already made a case and now carries another report (the page came
        # back from history and was changed): say so, with a fresh key to send it anew.
        return _render_report({"form": gettext(
            "This form was already sent and made case #%(id)d. Check the report and "
            "submit again to report another case.",
            id=int(_details(err).get("case_id") or 0))}, err.status, new_key=True)
    except HemeiError as err:
        return _render_report(message(err), err.status)
    return _after_report(user, case)


def _after_report(user, case: Case):
    """Where a reporter lands: the case page when they may follow the case there; else
    (another grid worker's grid, field staff) their work list, told plainly who takes
    it over, with a link to the public case page, rather than a page that hides the
    photos and names they just sent."""
    if can_read(user, case):
        flash(gettext("Reported as case #%(id)d", id=case.id), "field-ok")
        return redirect(url_for("field.case", case_id=case.id))
    grid = hemei().locator.name("grid", case.grid_code) or case.grid_code or ""
    flash(gettext("Reported as case #%(id)d in %(grid)s; its grid worker will handle it.",
                  id=case.id, grid=grid), "field-ok")
    flash(url_for("pages.case", case_id=case.id), "field-link")
    return redirect(url_for("field.home"))


def _dup(c: Case, dist: float) -> dict:
    return {"id": c.id, "title": c.title, "status": c.status,
            "status_label": status_label(c.status, get_locale()),
            "distance_m": round(dist, 1),
            "created_at": c.created_at.isoformat(timespec="seconds") + "Z",
            "created": when(c.created_at), "url": url_for("field.case", case_id=c.id),
            "add_url": url_for("field.add_to_case", case_id=c.id)}


def _json_error(err: HemeiError):
    return jsonify(err.to_dict()), err.status


@bp.get("/nearby")
def nearby():
    """Open cases of ``category`` within ``radius`` metres (default 50) of lon/lat, nearest
    first, as JSON: the duplicate check before a report is saved."""
    web_user(*REPORTERS)
    try:
        lon, lat = check_lon_lat(request.args.get("lon"), request.args.get("lat"))
        category = get_category(request.args.get("category")).code
        raw = request.args.get("radius") or NEARBY_M
        try:
            radius = float(raw)
        except (TypeError, ValueError):
            radius = float("nan")
        if not 0 < radius <= MAX_NEARBY_M:
            raise InvalidInput(f"radius must be a number of metres from 1 to "
                               f"{MAX_NEARBY_M:.0f}", field="radius")
    except HemeiError as err:
        return _json_error(err)
    rows = [_dup(c, d) for c, d in _nearby(lon, lat, category, radius)]
    return jsonify({"radius": radius, "category": category, "cases": rows})


@bp.post("/photo-location")
def photo_location():
    """Where a photo was taken, from its EXIF GPS (JSON): ``{"lon", "lat", "inside"}``,
    ``{"lon": null, …}`` when it carries none, or an error body (400/413) for a file
    that is not a photo we accept. Nothing is stored."""
    web_user()
    from gis.photos import validate_photo

    f = request.files.get("photo")
    try:
        if f is None or not f.filename:
            raise InvalidInput("send one photo in the field 'photo'", field="photo")
        limit = int(float(hemei().settings.get("MAX_PHOTO_MB") or 10) * 1024 * 1024)
        info = validate_photo(f.read(), max_bytes=limit)
    except HemeiError as err:
        return _json_error(err)
    if info.gps is None:
        return jsonify({"lon": None, "lat": None, "inside": False,
                        "message": gettext("This photo carries no location")})
    lon, lat = round(info.gps[0], 7), round(info.gps[1], 7)
    chain = hemei().locator.locate(lon, lat)
    return jsonify({"lon": lon, "lat": lat, "inside": chain is not None,
                    "taken_at": info.taken_at.isoformat() if info.taken_at else None,
                    "grid": (chain or {}).get("grid")})


@bp.post("/cases/<int:case_id>/add")
def add_to_case(case_id: int):
    """Add what was about to be reported (the description as a note, and the photos) to
    an open case instead of making a duplicate: a history event of kind "comment"."""
    user = web_user(*REPORTERS)
    form = request.form
    try:
        photos = _photos_from_request()
        note = (form.get("description") or form.get("note") or "").strip()
        if len(note) > 4000:
            raise Told(gettext("The note may have at most %(num)d characters", num=4000),
                       field="description")
        if not note and not photos:
            raise Told(gettext("Please write a note or attach a photo"),
                       field="description")
        data: dict = {}
        if form.get("lon") or form.get("lat"):
            lon, lat = check_lon_lat(form.get("lon"), form.get("lat"))
            case = hemei().store.get_case(case_id)
            data.update(lon=lon, lat=lat,
                        distance_m=round(geodesic_m(case.lon, case.lat, lon, lat), 1))
        case = hemei().add_comment(user, case_id, note, photos, data)
    except NotFound:
        raise
    except HemeiError as err:
        return _render_report(message(err), err.status)
    flash(gettext("Added to case #%(id)d; no new case was made", id=case.id), "field-ok")
    return redirect(url_for("field.case", case_id=case.id))


# -- a case ----------------------------------------------------------------------------

def _case_photos(case: Case) -> list[dict]:
    """The case's photos: those stored with the report and the moves, then those added in
    comments (keys in the event data)."""
    out, seen = [], set()
    for p in hemei().store.case_photos(case.id):
        if p["key"] not in seen:
            seen.add(p["key"])
            out.append({"key": p["key"], "role": p["role"]})
    for ev in case.history:
        for key in (ev.get("data") or {}).get("photos") or []:
            if isinstance(key, str) and key not in seen:
                seen.add(key)
                out.append({"key": key, "role": "comment" if ev["kind"] == "comment"
                            else "after"})
    return out


def _needs_label(kind: str | None) -> str:
    """A needs-list kind (``fix_now`` …) in the reader's language."""
    names = NEEDS_KINDS.get(kind or "")
    return (names[0] if get_locale() == "zh" else names[1]) if names else (kind or "")


def _history(case: Case, staff: bool) -> list[dict]:
    """The case's events as lines of the history: what happened, to which organisation
    (dispatches and claims name it, a re-dispatch would otherwise read as nothing), what
    a needs-list change set, and the evidence."""
    out = []
    locale = get_locale()
    orgs = {o["id"]: o["name"] for o in hemei().accounts.orgs()}
    for ev in case.history:
        data = ev.get("data") or {}
        if ev["kind"] == "transition":
            what = (f"{status_label(ev['from'], locale)} → {status_label(ev['to'], locale)}"
                    if ev["from"] and ev["from"] != ev["to"] else status_label(ev["to"], locale))
        elif ev["kind"] == "evaluation":
            what = gettext("Residents' evaluation: %(verdict)s",
                           verdict=gettext("Satisfied") if data.get("verdict") == "satisfied"
                           else gettext("Not satisfied"))
        else:
            what = tr(EVENT_KINDS[ev["kind"]]) if ev["kind"] in EVENT_KINDS else ev["kind"]
        extra = []
        if data.get("assignee_org") is not None and (
                ev["kind"] == "transition" and ev["to"] in ("dispatched", "claimed")):
            extra.append(gettext("To %(org)s", org=orgs.get(data["assignee_org"])
                                 or f"#{data['assignee_org']}"))
        if ev["kind"] == "needs":
            if data.get("kind"):
                extra.append(_needs_label(data["kind"]))
                extra.append(gettext("Published for claiming") if data.get("published")
                             else gettext("Not published"))
            else:
                extra.append(gettext("Taken off the needs list"))
        if ev["kind"] == "extension" and data.get("to"):
            try:
                extra.append(gettext("New due date %(date)s", date=when(
                    datetime.fromisoformat(data["to"]), "%Y-%m-%d %H:%M")))
            except (TypeError, ValueError):
                pass
        if data.get("distance_m") is not None:
            metres = f"{data['distance_m']:.0f}"
            extra.append(gettext("%(num)s m from the case (far)", num=metres)
                         if data.get("far") else
                         gettext("%(num)s m from the case", num=metres))
        if data.get("line_length_m") is not None:
            extra.append(gettext("Repair line %(num)s m", num=f"{data['line_length_m']:.1f}"))
        for k, v in (data.get("quantities") or {}).items():
            extra.append(f"{tr(QUANTITY_LABELS[k]) if k in QUANTITY_LABELS else k} {v:g}")
        if data.get("photos"):
            extra.append(ngettext("%(num)d photo", "%(num)d photos", len(data["photos"])))
        out.append({"at": ev["at"], "what": what, "note": ev["note"], "extra": extra,
                    "actor": actor_label(ev["actor"]) if staff else None, "kind": ev["kind"],
                    "far": bool(data.get("far"))})
    return out


def _may(user, case: Case, to: str) -> bool:
    """Whether ``user`` passes the workflow's check for a move to ``to`` on ``case``: the
    service checks extensions as "reopened" (those who check the work) and the needs
    list as "dispatched" (those who dispatch)."""
    row = {k: getattr(case, k) for k in ("id", "grid_code", "assignee_org", "assignee_user",
                                         "published", "status", "street_code",
                                         "community_code")}
    try:
        authorize_move(user, row, to)
    except Forbidden:
        return False
    return True


def _render_case(case: Case, user, *, error: dict | None = None, status: int = 200,
                 active: str | None = None):
    h = hemei()
    staff = can_read(user, case)
    moves = allowed_for(user, case)
    is_open = case.status in OPEN_STATUSES
    lines = [ev["data"]["line"] for ev in case.history
             if (ev.get("data") or {}).get("line")]
    org = None
    if case.assignee_org is not None:
        try:
            org = h.accounts.org(case.assignee_org)["name"]
        except NotFound:
            org = None
    return render_template(
        "field/case.html", case=case, user=user, staff=staff, moves=moves,
        # The resident was promised: name and phone only for the responsible grid worker.
        show_reporter=user.role == "admin" or (user.role == "grid_worker"
                                               and case.grid_code in user.grids),
        move_labels=translated(MOVE_LABELS), detailed=DETAILED_MOVES,
        quantities=translated(QUANTITY_LABELS),
        orgs=h.accounts.orgs() if "dispatched" in moves else [],
        photos=_case_photos(case) if staff else [], history=_history(case, staff),
        category=get_category(case.category),
        status=status_label(case.status, get_locale()),
        grid_name=h.locator.name("grid", case.grid_code) or case.grid_code,
        compound_name=h.locator.name("compound", case.compound_code), org=org,
        overdue=case.is_overdue(), when=when, far_m=FAR_M, error=error or {},
        max_photos=MAX_PHOTOS, can_extend=is_open and _may(user, case, "reopened"),
        can_needs=is_open and _may(user, case, "dispatched"),
        needs_kinds=[(k, _needs_label(k)) for k in NEEDS_KINDS],
        needs_label=_needs_label(case.needs_kind) if case.needs_kind else None,
        due_local=local_time(case.due_at, "%Y-%m-%dT%H:%M") if case.due_at else "",
        active=active, form=request.form if active else {},
        map_cfg=map_config(case=[case.lat, case.lon], lines=lines, farM=FAR_M),
    ), status


@bp.get("/cases/<int:case_id>")
def case(case_id: int):
    """One case: what, where, photos, history, and a form per move the user may make."""
    user = web_user()
    return _render_case(hemei().store.get_case(case_id), user)


def _number(raw: str, name: str) -> float | int:
    try:
        v = float(raw)
    except ValueError:
        raise Told(gettext("%(label)s must be a number", label=tr(QUANTITY_LABELS[name])),
                   field="quantities") from None
    if not (math.isfinite(v) and 0 <= v <= 1_000_000):
        raise Told(gettext("%(label)s must be a number from 0 to 1,000,000",
                           label=tr(QUANTITY_LABELS[name])), field="quantities")
    return int(v) if v.is_integer() else v


def _move_payload(form) -> dict:
    """The form of a move as the body ``Hemei.move`` takes."""
    payload: dict = {"to": form.get("to") or "", "note": form.get("note") or "",
                     "version": form.get("version") or None}
    if form.get("lon") or form.get("lat"):
        payload["lon"], payload["lat"] = form.get("lon"), form.get("lat")
    if form.get("assignee_org"):
        payload["assignee_org"] = form.get("assignee_org")
    if form.get("line"):
        try:
            payload["line"] = json.loads(form["line"])
        except (ValueError, RecursionError):
            raise Told(gettext("The repair line data are not valid"),
                       field="line") from None
    q = {k: _number(form[f"q_{k}"].strip(), k) for k in QUANTITIES
         if (form.get(f"q_{k}") or "").strip()}
    if q:
        payload["quantities"] = q
    return payload


def _done_already(case: Case, user, kind: str, to: str | None = None) -> bool:
    """Whether the case's last event is ``user``'s own ``kind`` step (a transition to
    ``to``): a second tap of a form whose first tap went through."""
    if not case.history:
        return False
    last = case.history[-1]
    return (last["kind"] == kind and last["actor"] == user.display_name
            and (to is None or (last["to"] == to and case.status == to)))


@bp.post("/cases/<int:case_id>/move")
def move(case_id: int):
    """Make a move on the case; warnings (far from the case …) come back as a flash. A
    conflict because the case already is where the user asked, by their own last step
    (a double tap), is no error: the case page says it is done."""
    user = web_user()
    h = hemei()
    current = h.store.get_case(case_id)
    to = request.form.get("to") or ""
    try:
        payload = _move_payload(request.form)
        photos = _photos_from_request()
        if to == "resolved" and not (payload["note"].strip() or photos):
            # Said before the service refuses it in terms of photos only.
            raise Told(gettext("Add an “after” photo or a note saying what was done"),
                       field="note")
        case, warnings = h.move(user, case_id, payload, photos)
    except HemeiError as err:
        if isinstance(err, Conflict):
            current = h.store.get_case(case_id)
            if _done_already(current, user, "transition", to):
                flash(gettext("Done: the case is “%(status)s”.",
                              status=status_label(current.status, get_locale())),
                      "field-ok")
                return redirect(url_for("field.case", case_id=case_id))
        return _render_case(current, user, error=message(err),
                            status=err.status, active=to)
    flash(gettext("%(action)s: the case is now “%(status)s”",
                  action=tr(MOVE_LABELS[to]) if to in MOVE_LABELS else to,
                  status=status_label(case.status, get_locale())), "field-ok")
    for w in warnings:
        flash(_warning(w), "field-warn")
    return redirect(url_for("field.case", case_id=case.id))


@bp.post("/cases/<int:case_id>/extend")
def extend(case_id: int):
    """Extend the case (延期): a new due date, in Beijing time, and the reason. The date
    is checked here first so that a mistake is said in the reader's words."""
    user = web_user()
    h = hemei()
    current = h.store.get_case(case_id)
    form = request.form
    try:
        raw = (form.get("due_at") or "").strip()
        reason = (form.get("reason") or "").strip()
        if not raw:
            raise Told(gettext("Please choose the new due date"), field="due_at")
        try:
            local = datetime.fromisoformat(raw)
        except ValueError:
            raise Told(gettext("The new due date is not a date"), field="due_at") from None
        if local.tzinfo is not None:
            raise Told(gettext("The new due date is not a date"), field="due_at")
        due = from_beijing(local)  # the form's time is Beijing time; stored as UTC
        last = (current.history[-1].get("data") or {}) if current.history else {}
        if (_done_already(current, user, "extension")
                and last.get("to") == due.isoformat()):
            flash(gettext("Done: the case is now due %(date)s.",
                          date=when(current.due_at, "%Y-%m-%d %H:%M")), "field-ok")
            return redirect(url_for("field.case", case_id=case_id))
        if not reason:
            raise Told(gettext("Please give the reason for the extension"), field="reason")
        if len(reason) > 4000:
            raise Told(gettext("The note may have at most %(num)d characters", num=4000),
                       field="reason")
        now = utcnow()
        if due <= now:
            raise Told(gettext("The new due date must be in the future"), field="due_at")
        if due > now + MAX_DUE_AHEAD:
            raise Told(gettext("The new due date may be at most two years ahead"),
                       field="due_at")
        if current.due_at is not None and due <= current.due_at:
            raise Told(gettext("The new due date must be later than the current one "
                               "(%(date)s)", date=when(current.due_at, "%Y-%m-%d %H:%M")),
                       field="due_at")
        case = h.extend(user, case_id, {"due_at": due.isoformat(), "reason": reason})
    except HemeiError as err:
        if isinstance(err, Conflict):
            current = h.store.get_case(case_id)
        return _render_case(current, user, error=message(err), status=err.status,
                            active="extend")
    flash(gettext("Extended: the case is now due %(date)s.",
                  date=when(case.due_at, "%Y-%m-%d %H:%M")), "field-ok")
    return redirect(url_for("field.case", case_id=case.id))


@bp.post("/cases/<int:case_id>/needs")
def needs_list(case_id: int):
    """Put the case on the needs list (fix now / long term), publish it for partner
    units to claim, or take it off (an empty kind)."""
    user = web_user()
    h = hemei()
    current = h.store.get_case(case_id)
    form = request.form
    try:
        kind = form.get("kind") or None
        if kind is not None and kind not in NEEDS_KINDS:
            raise Told(gettext("Please choose the kind of need"), field="kind")
        publish = form.get("publish") == "1"
        if publish and kind is None:
            raise Told(gettext("Choose fix now or long term to publish it"), field="kind")
        if publish and current.status != "filed":
            raise Told(gettext("Only a filed case can be published for claiming; file it "
                               "first"), field="publish")
        note = (form.get("note") or "").strip()
        if len(note) > 4000:
            raise Told(gettext("The note may have at most %(num)d characters", num=4000),
                       field="note")
        case = h.set_needs(user, case_id, {"kind": kind, "publish": publish, "note": note})
    except HemeiError as err:
        if isinstance(err, Conflict):
            current = h.store.get_case(case_id)
        return _render_case(current, user, error=message(err), status=err.status,
                            active="needs")
    if case.needs_kind:
        flash(gettext("On the needs list: %(kind)s, %(published)s.",
                      kind=_needs_label(case.needs_kind),
                      published=gettext("published for claiming") if case.published
                      else gettext("not published")), "field-ok")
    else:
        flash(gettext("Taken off the needs list."), "field-ok")
    return redirect(url_for("field.case", case_id=case.id))


@bp.get("/cases/<int:case_id>/<any(move, add, extend, needs):action>")
def back_to_case(case_id: int, action: str):
    """A form that failed leaves the browser on its POST address; a reload or the
    language switch there asks for it with GET: show the case (keeping ``?lang``)."""
    web_user()
    lang = request.args.get("lang")
    return redirect(url_for("field.case", case_id=case_id, **({"lang": lang} if lang
                                                               else {})))


def _warning(text: str) -> str:
    """A warning of ``Hemei.move`` (English) in the reader's language, when it is known."""
    m = re.match(r"you are (\d+) m from the case", text)
    if m:
        return gettext("You are about %(num)s m from the case (more than %(far)s m); the "
                       "distance has been recorded.", num=m.group(1), far=f"{FAR_M:.0f}")
    return text


# -- photos ----------------------------------------------------------------------------

def _cases_with_photo(key: str) -> list[int]:
    """Ids of the cases that hold photo ``key`` (stored rows or comment events)."""
    from gis.storage import photos as photos_table

    h = hemei()
    with h.store._read() as conn:
        ids = set(conn.execute(sa.select(photos_table.c.case_id)
                               .where(photos_table.c.key == key)).scalars())
    return sorted(ids)


@bp.get("/photos/<key>")
def photo(key: str):
    """A case photo (``?thumb=1``: its 320 px thumbnail) for staff who may read one of
    the cases holding it; 404 otherwise (an unknown key and a forbidden one look alike)."""
    user = web_user()
    if not _KEY.fullmatch(key):
        raise NotFound("no such photo", field="photo")
    h = hemei()
    if not any(can_read(user, h.store.get_case(cid)) for cid in _cases_with_photo(key)):
        raise NotFound("no such photo", field="photo")
    thumb = request.args.get("thumb") == "1"
    mime = "image/jpeg" if thumb or key.endswith(".jpg") else "image/png"
    path = h.photos.path(key, thumb=thumb)
    resp = (send_file(path, mimetype=mime) if path is not None
            else Response(h.photos.open(key, thumb=thumb), mimetype=mime))
    resp.cache_control.private = True
    resp.cache_control.max_age = 86400  # content-addressed: a key never changes
    return resp


# -- patrol ----------------------------------------------------------------------------

def _grid_rows(user) -> list[dict]:
    h = hemei()
    grids = h.layers["grid"]
    codes = user.grids if user.role == "grid_worker" else list(grids["code"])
    last = h.accounts.last_patrolled()
    names = dict(zip(grids["code"], grids["name"], strict=True))
    return [{"code": c, "name": names.get(c, c), "last": last.get(c)} for c in codes]


@bp.route("/patrol", methods=["GET", "POST"])
def patrol():
    """A grid worker checks in where they are; their grids with the last patrol time."""
    user = web_user("grid_worker", "admin")
    error: dict = {}
    status = 200
    if request.method == "POST":
        try:
            # The service refuses a position outside the worker's grids (403), outside
            # the street (422) or vaguer than 200 m (422); the page says why first.
            out = hemei().check_in(user, request.form.get("lon"), request.form.get("lat"),
                                   request.form.get("accuracy"))
        except HemeiError as err:
            error = message(err)
            status = err.status
        else:
            name = hemei().locator.name("grid", out["grid_code"]) or out["grid_code"]
            flash(gettext("Checked in: %(grid)s, %(time)s", grid=name,
                          time=when(out["at"], "%H:%M")), "field-ok")
            return redirect(url_for("field.patrol"))
    return render_template("field/patrol.html", user=user, grids=_grid_rows(user),
                           error=error, when=when, form=request.form,
                           map_cfg=map_config(
                               myGrids=user.grids, locateUrl=url_for("api.locate"),
                               onlyMine=user.role == "grid_worker",
                               maxAccuracy=CHECK_IN_ACCURACY_M)), status


# -- needs list ------------------------------------------------------------------------

@bp.get("/needs")
def needs():
    """The published needs list (what partner units may claim) and, per unit, what it
    holds and has finished."""
    user = web_user()
    h = hemei()
    now = utcnow()
    claimable, _ = h.store.list_cases(needs="any", published=True, status="filed",
                                      limit=None)
    return render_template("field/needs.html", user=user, when=when,
                           rows=[_row(c, now) for c in _by_urgency(claimable)],
                           units=h.needs_summary())
