"""Residents' channel: a QR code per compound, a report page with no account, a tracking
page, and the four-step evaluation (evaluate → rectify → feedback → summarise)."""

from __future__ import annotations

import io
import math
import re
import unicodedata

import segno
from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for
from flask_babel import gettext, ngettext

from gis.cases import MAX_DESCRIPTION, new_tracking_code, status_label
from gis.catalogue import load_catalogue
from gis.errors import (
    Conflict,
    HemeiError,
    InvalidInput,
    NotFound,
    OutsideJurisdiction,
    TooManyRequests,
)
from gis.photos import MAX_PHOTOS
from webapp.i18n import get_locale
from webapp.ratelimit import RateLimiter

bp = Blueprint("resident", __name__)
# What may be a tracking code, before the database is asked: the old mixed-case codes (16
# characters of base64url) and the new ones (gis.cases.new_tracking_code) however typed.
TRACKING = re.compile(r"^[A-Za-z0-9_ -]{16,40}$")
MAX_PHONE_CHARS = 30

_PHONE_CHARS = re.compile(r"[0-9 ()\-]+")
_MOBILE = re.compile(r"1[3-9]\d{9}")
# Area code + local number: 010 and 02x take 8 digits, the 4-digit codes (0774 for
# Hezhou) 7 or 8; a local number never starts with 0 or 1.
_LANDLINE = re.compile(r"(0(?:10|2\d))([2-9]\d{7})|(0[3-9]\d{2})([2-9]\d{6,7})")


def check_phone(raw: str | None) -> str | None:
    """A resident's phone number, checked and tidied: ``None`` for none, the 11 digits of
    a mobile number (``13800138000``), or a landline as area code-number
    (``0774-5123456``). Accepts spaces, hyphens, brackets round the area code, a
    ``+86`` / ``0086`` prefix and full-width digits; anything else is ``InvalidInput``
    (``details["reason"] == "phone"``)."""
    text = unicodedata.normalize("NFKC", raw or "").strip()
    if not text:
        return None
    bad = InvalidInput("the phone number is neither a mobile number nor a landline with its "
                       "area code", field="phone", details={"reason": "phone"})
    if len(text) > MAX_PHONE_CHARS:
        raise bad
    prefix = re.match(r"(?:\+|00)86", text)
    rest, intl = (text[prefix.end():], True) if prefix else (text, False)
    if not _PHONE_CHARS.fullmatch(rest):
        raise bad
    digits = re.sub(r"\D", "", rest)
    if not intl and len(digits) == 13 and digits.startswith("86"):
        digits, intl = digits[2:], True  # 86 13800138000, without the plus
    if _MOBILE.fullmatch(digits):
        return digits
    if intl and not digits.startswith("0"):
        digits = "0" + digits  # +86 774 5123456: the trunk 0 is dropped from abroad
    m = _LANDLINE.fullmatch(digits)
    if m is None:
        raise bad
    area, local = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return f"{area}-{local}"


def _form_text(value: str | None) -> str:
    """A textarea's text with the browser's CRLF line breaks as single characters (the
    browser counts a line break as one character against ``maxlength``), stripped."""
    return (value or "").replace("\r\n", "\n").replace("\r", "\n").strip()


def _says(err: HemeiError) -> str:
    """What a resident is told about a refused form, wholly in the page's language."""
    details = err.details if isinstance(err.details, dict) else {}
    reason = details.get("reason")
    if reason == "verdict":
        return gettext("Please choose Satisfied or Not satisfied")
    if reason == "comment_required":
        return gettext("Please say what is still wrong")
    if reason == "comment_too_long":
        return gettext("The comment is too long: at most %(max)d characters, please "
                       "shorten it", max=details["limit"])
    if reason == "not_resolved":
        return gettext("The result can be evaluated once the case has been resolved")
    if reason == "already_evaluated":
        verdict = (gettext("Satisfied") if details.get("verdict") == "satisfied"
                   else gettext("Not satisfied"))
        return gettext("You have already evaluated this result (%(verdict)s). Each result "
                       "is evaluated once; if the case is reworked, you can evaluate the "
                       "new result.", verdict=verdict)
    if reason == "phone":
        return gettext("Please give a mobile number (11 digits, starting with 1) or a "
                       "landline number with its area code, such as 0774-5123456, or "
                       "leave it empty")
    if isinstance(err, TooManyRequests):
        minutes = max(1, math.ceil(_retry_after(err) / 60))
        return ngettext("You have sent this form too often. Please try again later, in "
                        "%(num)d minute.",
                        "You have sent this form too often. Please try again later, in "
                        "%(num)d minutes.", minutes)
    from webapp.field import ERROR_HINTS, FIELD_HINTS, message, tr

    if get_locale() == "en":
        return next(iter(message(err).values()))
    # Chinese page: the lead alone; the gis message after it would be English.
    hint = ERROR_HINTS.get(err.code) or FIELD_HINTS.get(err.field or "")
    if hint is not None:
        return tr(hint)
    if isinstance(err, Conflict):
        return gettext("The case has changed meanwhile; please reload and try again")
    return gettext("The form could not be sent; please check it and try again")


def _retry_after(err: TooManyRequests) -> int:
    details = err.details if isinstance(err.details, dict) else {}
    return max(1, int(details.get("retry_after") or 60))


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
    status = 200
    if request.method == "POST":
        try:
            current_app.extensions["hemei_limiter"].hit("report")
        except TooManyRequests as err:
            # The form again, with what was typed: nothing is lost but the wait.
            errors["form"] = _says(err)
            return (render_template("resident/report.html", compound=row,
                                    categories=cats.values(), errors=errors, form=form,
                                    max_photos=MAX_PHOTOS), err.status,
                    {"Retry-After": str(_retry_after(err))})
        photos = [f.read() for f in request.files.getlist("photos") if f.filename]
        description = _form_text(form.get("description"))
        if (form.get("category") or "") not in cats:
            errors["category"] = gettext("Please choose the type of problem")
        if not description:
            errors["description"] = gettext("Please describe the problem")
        elif len(description) > MAX_DESCRIPTION:
            errors["description"] = gettext(
                "The description is too long: %(num)d characters, at most %(max)d. Please "
                "shorten it.", num=len(description), max=MAX_DESCRIPTION)
        try:
            phone = check_phone(form.get("phone"))
        except InvalidInput as err:
            errors["phone"] = _says(err)
        if len(photos) > MAX_PHOTOS:
            errors["photos"] = ngettext("At most %(num)d photo", "At most %(num)d photos",
                                        MAX_PHOTOS)
        try:
            if errors:
                raise InvalidInput("the form has errors")  # shown field by field above
            payload = {"category": form.get("category"), "description": description,
                       "source": "resident"}
            if form.get("lon") or form.get("lat"):
                payload["lon"], payload["lat"] = form.get("lon"), form.get("lat")
            else:
                # No position shared: the compound itself is the place.
                p = row.geometry.representative_point()
                payload["lon"], payload["lat"] = round(p.x, 7), round(p.y, 7)
            name = (form.get("name") or "").strip()[:100] or None
            code = new_tracking_code()  # 100 random bits, easy to read back
            hemei().report(payload, actor="居民", photos=photos, compound=compound,
                           extra={"tracking_code": code, "reporter_name": name,
                                  "reporter_phone": phone})
            return redirect(url_for("resident.track", code=code, new=1))
        except OutsideJurisdiction:
            # The phone's position is elsewhere (GPS drift, or reported from home): drop
            # it, so sending the form again files the report at the compound itself.
            form.pop("lon", None)
            form.pop("lat", None)
            errors["lon"] = gettext(
                "Your location is not inside %(compound)s. It has been removed: submit "
                "again to report at the compound's own location.", compound=row["name"])
        except HemeiError as err:
            if not errors:
                errors[err.field or "form"] = _says(err)
            status = err.status
    if errors and status == 200:
        status = 400
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


@bp.get("/t")
def find_by_code():
    """The tracking-code box on the report page: to the case's page, the code as typed
    (any case, spaces or dashes; the look-up forgives them)."""
    code = (request.args.get("code") or "").strip()
    if not TRACKING.match(code):
        raise NotFound("no case with that tracking code", field="code")
    return redirect(url_for("resident.track", code=code))


@bp.route("/t/<code>", methods=["GET", "POST"])
def track(code: str):
    """A case's public status and history by tracking code (no names, no phones), and the
    resident's evaluation once it is resolved."""
    if not TRACKING.match(code):
        raise NotFound("no case with that tracking code")
    h = hemei()
    error, status, headers = None, 200, {}
    form = {"verdict": request.form.get("verdict", ""),
            "comment": _form_text(request.form.get("comment"))}
    if request.method == "POST":
        try:
            current_app.extensions["hemei_limiter"].hit("evaluate")
            h.evaluate(code, form["verdict"], form["comment"])
            return redirect(url_for("resident.track", code=code))
        except NotFound:
            raise
        except HemeiError as err:
            # The page again, in its language, with what was typed and the error's status
            # (400 bad input, 409 not resolved or already evaluated, 429 too often).
            error, status = _says(err), err.status
            if isinstance(err, TooManyRequests):
                headers["Retry-After"] = str(_retry_after(err))
    case = h.store.find_by_tracking_code(code)
    return render_template("resident/track.html", case=case, code=code,
                           new=request.args.get("new"), steps=_steps(case),
                           status_label=status_label, error=error, form=form,
                           given=case.evaluation_given(),
                           compound_name=h.locator.name("compound", case.compound_code),
                           category=load_catalogue()[case.category]), status, headers


def init_app(app) -> None:
    app.extensions["hemei_limiter"] = RateLimiter(
        limit=int(app.config["HEMEI"].get("PUBLIC_FORM_LIMIT") or 10), window=600)
