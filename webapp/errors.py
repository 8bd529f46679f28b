"""One place that turns errors into responses: JSON under /api/, an HTML page elsewhere."""

from __future__ import annotations

from flask import jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from gis.errors import HemeiError


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def error_response(err: HemeiError):
    """The response for a domain error: its JSON body under /api/, a page elsewhere."""
    if _wants_json():
        return jsonify(err.to_dict()), err.status
    return render_template("error.html", status=err.status, message=err.message,
                           field=err.field), err.status


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
        return render_template("error.html", status=err.code, message=err.description), err.code

    @app.errorhandler(Exception)
    def handle_unexpected(err: Exception):
        # Never show a traceback; log it for the operator.
        app.logger.exception("unhandled error on %s", request.path)
        if _wants_json():
            return jsonify({"error": {"code": "internal_error",
                                      "message": "internal error; it has been logged"}}), 500
        return render_template("error.html", status=500, message="internal error"), 500
