"""Error classes with an HTTP meaning.

``gis`` raises these; ``webapp`` maps them to a JSON body or an HTML page in one
handler, and the CLI prints the message and exits non-zero. A user never sees a
traceback for bad input.
"""

from __future__ import annotations


class HemeiError(Exception):
    """Base class: carries an HTTP status, a short machine code and a user message."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, details: object = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict:
        """The JSON error body: ``{"error": {"code", "message", "field"?, "details"?}}``."""
        body: dict = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class InvalidInput(HemeiError):
    """A value the caller sent is missing, malformed or out of range (400)."""

    status = 400
    code = "invalid_input"


class UnsupportedMediaType(InvalidInput):
    """The body is declared as a format this endpoint does not read (415)."""

    status = 415
    code = "unsupported_media_type"


class OutsideJurisdiction(InvalidInput):
    """A point lies outside every active boundary (422: well-formed but not ours)."""

    status = 422
    code = "outside_jurisdiction"


class IdempotencyKeyReused(InvalidInput):
    """An Idempotency-Key sent again with a different request (422, as the IETF
    Idempotency-Key draft says): answering with the first result would lose this one."""

    status = 422
    code = "idempotency_key_reused"


class NotFound(HemeiError):
    """The thing asked for does not exist (404)."""

    status = 404
    code = "not_found"


class Conflict(HemeiError):
    """The request is valid but not allowed in the current state (409)."""

    status = 409
    code = "conflict"


class LayerError(HemeiError):
    """A boundary file cannot be read or does not hold what a layer needs (400)."""

    status = 400
    code = "layer_error"


class Unauthorized(HemeiError):
    """No valid credentials: log in, or send ``Authorization: Bearer <token>`` (401)."""

    status = 401
    code = "unauthorized"


class Forbidden(HemeiError):
    """Known user, but this action is outside their role or scope (403, with the reason)."""

    status = 403
    code = "forbidden"


class TooManyRequests(HemeiError):
    """A public form was used too often from one client (429)."""

    status = 429
    code = "rate_limited"
