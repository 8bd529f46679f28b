"""One place that turns errors into responses: JSON under /api/, an HTML page elsewhere."""

from __future__ import annotations

import re

from flask import jsonify, render_template, request
from flask_babel import gettext, ngettext
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from gis.errors import HemeiError
from webapp.i18n import get_locale

#: Chinese characters: a message that has them is written for the reader already.
_CJK = re.compile(r"[\u4e00-\u9fff]")


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _headline(status: int) -> str:
    """What an error page says first, in the page's language (the domain's own message,
    in English, follows as the detail: see ``error.html``)."""
    if status == 413:
        # The limits themselves, in the page's language: the English detail is folded
        # away on a Chinese page, and the reader has to know what to send instead.
        from flask import current_app

        from gis.photos import MAX_PHOTOS

        mb = current_app.config["HEMEI"].get("MAX_PHOTO_MB")
        return ngettext("The upload is too large: at most %(num)d photo of at most "
                        "%(mb)s MB.",
                        "The upload is too large: at most %(num)d photos, each at most "
                        "%(mb)s MB.", MAX_PHOTOS, mb=f"{float(mb):g}")
    return {
        400: gettext("Something in the request is not right."),
        401: gettext("Please log in first."),
        403: gettext("You may not do this."),
        404: gettext("This page or item does not exist."),
        405: gettext("This page cannot be used this way."),
        409: gettext("This cannot be done in the item's current state; reload it and "
                     "look again."),
        503: gettext("The service is unavailable for a moment; nothing was stored. Please "
                     "try again shortly."),
        413: gettext("The upload is too large."),
        415: gettext("This kind of content cannot be read here."),
        422: gettext("The request cannot be carried out as it stands."),
        429: gettext("Too many attempts; please wait and try again."),
    }.get(status, gettext("Something went wrong on our side; it has been logged."))


def _page(status: int, message: str, field: str | None = None):
    """The error page: the headline in the page's language, then the message. A message
    with no Chinese in it on a Chinese page is the domain's English detail: the page folds
    it away under "technical information" (support staff can still open it)."""
    return render_template("error.html", status=status, headline=_headline(status),
                           message=message, field=field,
                           technical=bool(message) and get_locale() != "en"
                           and not _CJK.search(message)), status


def error_response(err: HemeiError):
    """The response for a domain error: its JSON body under /api/, a page elsewhere."""
    if _wants_json():
        return jsonify(err.to_dict()), err.status
    return _page(err.status, err.message, err.field)


class RequestTooLarge(HemeiError):
    status = 413
    code = "request_entity_too_large"


def _too_large(app) -> HemeiError:
    """Werkzeug's 413 (the body is over MAX_CONTENT_LENGTH) in words a client can act on."""
    from gis.photos import MAX_PHOTOS

    limit = (app.config.get("MAX_CONTENT_LENGTH") or 0) / 1024 / 1024
    per_photo = app.config["HEMEI"].get("MAX_PHOTO_MB")
    return RequestTooLarge(f"the request is over {limit:.0f} MB; send at most {MAX_PHOTOS} "
                           f"photos of at most {per_photo} MB each", field="body")


def form_expired(err: CSRFError):
    """A form whose CSRF token is missing or stale: what to do, in the page's language
    (Flask-WTF's own words, "The CSRF token is missing.", follow as the detail)."""
    if _wants_json():
        from gis.errors import InvalidInput

        return error_response(InvalidInput(
            f"the form's security token is missing or expired ({err.description}); "
            "reload the page and try again", field="csrf_token"))
    return _page(400, gettext("This form has expired or did not come from this site. Go "
                              "back, reload the page and send it again."))


#: SQLite's words for a database it cannot use just now (its other OperationalErrors, such
#: as "no such table", are bugs: a 500, not "try again").
_SQLITE_UNAVAILABLE = ("database is locked", "disk is full", "disk i/o error",
                       "unable to open database file", "readonly database")


def _unavailable(err: Exception) -> bool:
    import sqlite3
    import sys

    import sqlalchemy as sa

    if isinstance(err, sa.exc.DBAPIError) and err.connection_invalidated:
        return True
    inner = err.orig if isinstance(err, sa.exc.DBAPIError) else err
    if isinstance(inner, sqlite3.OperationalError):
        return any(words in str(inner).lower() for words in _SQLITE_UNAVAILABLE)
    # PostgreSQL's OperationalError is the connection's (refused, lost, shut down). The
    # store wraps driver errors (gis.storage._raw_connection); psycopg's own, should one
    # slip past unwrapped, means the same. (Not imported: if it is not loaded, this error
    # cannot be one of its.)
    psycopg = sys.modules.get("psycopg")
    return isinstance(err, sa.exc.OperationalError) or (
        psycopg is not None and isinstance(inner, psycopg.OperationalError))


class ServiceUnavailable(HemeiError):
    status = 503
    code = "service_unavailable"


_UNAVAILABLE = ServiceUnavailable("the database is unavailable or out of space; nothing "
                                  "was stored; try again in a moment")
_INTERNAL = {"error": {"code": "internal_error", "message": "internal error; it has been logged"}}


def unexpected_json(err: Exception) -> tuple[int, dict, dict]:
    """An unexpected error's JSON answer under /api/: status, body and extra headers. The
    database down, locked past its timeout or out of space: nothing was stored, and the
    same request may well work in a moment (503 with Retry-After, not 500)."""
    if _unavailable(err):
        return 503, _UNAVAILABLE.to_dict(), {"Retry-After": "5"}
    return 500, _INTERNAL, {}


def init_app(app) -> None:
    """Register the handlers on ``app``."""

    @app.errorhandler(HemeiError)
    def handle_hemei(err: HemeiError):
        return error_response(err)

    @app.errorhandler(HTTPException)
    def handle_http(err: HTTPException):
        code = (err.name or "error").lower().replace(" ", "_")
        if err.code == 413:
            return error_response(_too_large(app))
        if _wants_json():
            resp = jsonify({"error": {"code": code, "message": err.description}})
            # Keep the headers HTTP requires (Allow on a 405, WWW-Authenticate …).
            for k, v in err.get_headers():
                if k.lower() != "content-type":
                    resp.headers[k] = v
            return resp, err.code
        return _page(err.code, err.description)

    @app.errorhandler(Exception)
    def handle_unexpected(err: Exception):
        # Never show a traceback; log it for the operator.
        app.logger.exception("unhandled error on %s", request.path)
        if _wants_json():
            status, body, headers = unexpected_json(err)
            return jsonify(body), status, headers
        if _unavailable(err):
            return _page(503, _UNAVAILABLE.message)[0], 503, {"Retry-After": "5"}
        return _page(500, "")
