"""Residents' channel: a QR code per compound, a report page with no account, a tracking
page, and the four-step evaluation (evaluate → rectify → feedback → summarise)."""

from __future__ import annotations

import io
import re
import secrets

import segno
from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from flask_babel import gettext, ngettext

from gis.cases import status_label
from gis.catalogue import load_catalogue
from gis.errors import InvalidInput, NotFound, OutsideJurisdiction
from webapp.ratelimit import RateLimiter

bp = Blueprint("resident", __name__)
TRACKING = re.compile(r"^[A-Za-z0-9_-]{16}$")
MAX_PHOTOS = 3


def hemei():
    return current_app.extensions["hemei"]


def _compound(code: str):
    comps = hemei().layers.get("compound")
    match = comps[comps["code"] == code] if comps is not None else []
    if len(match) == 0:
        raise NotFound(f"no compound with code {code}")
    return match.iloc[0]


def _report_url(code: str) -> str:
    base = str(current_app.config["HEMEI"].get("PUBLIC_URL") or "").rstrip("/")
    path = url_for("resident.report", compound=code)
    return base + path if base else url_for("resident.report", compound=code, _external=True)


@bp.get("/compounds/<code>/qr.<fmt>")
def qr(code: str, fmt: str):
    """A printable QR code opening the compound's report page (PNG or SVG)."""
    _compound(code)
    if fmt not in ("png", "svg"):
        raise NotFound("QR codes come as .png or .svg")
    qr_code = segno.make(_report_url(code), error="m")
    buf = io.BytesIO()
    if fmt == "png":
        qr_code.save(buf, kind="png", scale=10, border=4)
        mime = "image/png"
    else:
        qr_code.save(buf, kind="svg", scale=10, border=4, xmldecl=True)
        mime = "image/svg+xml"
    resp = Response(buf.getvalue(), mimetype=mime)
    resp.headers["Content-Disposition"] = f'inline; filename="hemei-{code}.{fmt}"'
    return resp


@bp.route("/r/<compound>", methods=["GET", "POST"])
def report(compound: str):
    """The residents' report page for one compound (no account)."""
    row = _compound(compound)
    cats = load_catalogue()
    errors: dict[str, str] = {}
    form = request.form.to_dict()
    if request.method == "POST":
        current_app.extensions["hemei_limiter"].hit("report")
        photos = [f.read() for f in request.files.getlist("photos") if f.filename]
        try:
            if len(photos) > MAX_PHOTOS:
                raise InvalidInput(ngettext("At most %(num)d photo", "At most %(num)d photos",
                                            MAX_PHOTOS), field="photos")
            payload = {"category": form.get("category"), "description": form.get("description"),
                       "source": "resident"}
            if form.get("lon") or form.get("lat"):
                payload["lon"], payload["lat"] = form.get("lon"), form.get("lat")
            else:
                # No position shared: the compound itself is the place.
                p = row.geometry.representative_point()
                payload["lon"], payload["lat"] = round(p.x, 7), round(p.y, 7)
            name = (form.get("name") or "").strip()[:100] or None
            phone = (form.get("phone") or "").strip()
            if phone and not re.fullmatch(r"[0-9+\- ]{5,20}", phone):
                raise InvalidInput(gettext("The phone number does not look right"),
                                   field="phone")
            code = secrets.token_urlsafe(12)  # 96 random bits: cannot be guessed
            hemei().report(payload, actor="居民", photos=photos, compound=compound,
                           extra={"tracking_code": code, "reporter_name": name,
                                  "reporter_phone": phone or None})
            return redirect(url_for("resident.track", code=code, new=1))
        except OutsideJurisdiction:
            # The phone's position is elsewhere (GPS drift, or reported from home): drop
            # it, so sending the form again files the report at the compound itself.
            form.pop("lon", None)
            form.pop("lat", None)
            errors["lon"] = gettext(
                "Your location is not inside %(compound)s. It has been removed: submit "
                "again to report at the compound's own location.", compound=row["name"])
        except InvalidInput as err:
            from webapp.field import message

            errors.update(message(err))
    status = 400 if errors else 200
    return render_template("resident/report.html", compound=row, categories=cats.values(),
                           errors=errors, form=form, max_photos=MAX_PHOTOS), status


def _steps(case) -> dict:
    """The four steps of the residents' evaluation, as they stand on this case."""
    evals = [e for e in case.history if e["kind"] == "evaluation"]
    rectified = [e for e in case.history if e["to"] == "reopened"
                 and (e.get("data") or {}).get("rectify")]
    feedback = [e for e in case.history if (e.get("data") or {}).get("feedback")]
    summary = [e for e in case.history if e["to"] == "closed" and evals]
    return {"evaluate": evals, "rectify": rectified, "feedback": feedback,
            "summarise": summary}


@bp.route("/t/<code>", methods=["GET", "POST"])
def track(code: str):
    """A case's public status and history by tracking code (no names, no phones), and the
    resident's evaluation once it is resolved."""
    if not TRACKING.match(code):
        raise NotFound("no case with that tracking code")
    h = hemei()
    error = None
    if request.method == "POST":
        current_app.extensions["hemei_limiter"].hit("evaluate")
        try:
            h.evaluate(code, request.form.get("verdict", ""), request.form.get("comment", ""))
            return redirect(url_for("resident.track", code=code))
        except InvalidInput as err:
            error = err.message
    case = h.store.find_by_tracking_code(code)
    return render_template("resident/track.html", case=case, code=code,
                           new=request.args.get("new"), steps=_steps(case),
                           status_label=status_label, error=error,
                           compound_name=h.locator.name("compound", case.compound_code),
                           category=load_catalogue()[case.category]), (400 if error else 200)


def init_app(app) -> None:
    app.extensions["hemei_limiter"] = RateLimiter(
        limit=int(app.config["HEMEI"].get("PUBLIC_FORM_LIMIT") or 10), window=600)
