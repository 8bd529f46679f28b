"""The report endpoint's fast path: ``POST /api/v1/issues`` answered in front of Flask.

Reports are the busiest write a street office's server takes (every grid worker's and
field worker's phone, every system that forwards cases through the API), and on that one
endpoint Flask's own machinery — the
request and app contexts, the session, URL matching, the hooks, the Response object — was
about a third of a report's CPU (bench/intake.py). This WSGI layer answers the common
case itself: a JSON body with an API token, no cookie, no query string. It does what the
Flask view does through the same functions (:func:`webapp.api.submit_report`,
:func:`webapp.api.case_feature`, :func:`webapp.api.parse_json`, the token cache of
:mod:`gis.accounts`), and writes the same response: the same status, headers (the
security headers, ``Vary: Cookie``, ``Location``), JSON bytes and access-log line
(tests/webapp/test_intake_fast_path.py holds the two paths equal).

Everything else goes to Flask, which stays the reference: no token or one of another role,
a bad Idempotency-Key, a body that is not JSON, multipart photos, a cookie (a session may
need refreshing), a query string (``?lang=`` sets a cookie), an oversized or chunked body,
and an Idempotency-Key replay (a replay changes nothing, so answering it twice is safe).
The body is read once and handed on in memory. An error raised while reporting is
answered here as Flask's handlers answer it (the domain's 4xx, 503 for a database that is
unavailable, 500 otherwise): the report may not be sent through a second time, since what
failed may have been written.

Set ``INTAKE_FAST_PATH = False`` in the app's config to send every report through Flask.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable

from werkzeug.http import HTTP_STATUS_CODES

from gis.errors import HemeiError, InvalidInput
from gis.storage import IdempotentReplay
from webapp import api, errors, health

#: The endpoint's path under the app (``url_prefix`` of the API blueprint).
PATH = f"{api.bp.url_prefix}/issues"
_STATUS = {code: f"{code} {HTTP_STATUS_CODES[code].upper()}"
           for code in (201, 400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503)}


class IntakeFastPath:
    """WSGI middleware: answers plain JSON reports with a token, hands on everything
    else to ``app`` (Flask's ``wsgi_app``)."""

    def __init__(self, app: Callable, flask_app) -> None:
        self.app = app
        self.flask_app = flask_app
        self.hemei = flask_app.extensions["hemei"]
        self.max_length = flask_app.config.get("MAX_CONTENT_LENGTH")
        self.access_log = health.access_log_enabled(flask_app)
        # A security header a view sets itself wins in Flask; this view sets none.
        from webapp import SECURITY_HEADERS

        self.extra_headers = [*SECURITY_HEADERS.items(), ("Vary", "Cookie")]
        #: Requests answered here (the tests read it to know the path was taken; threads
        #: may lose a count, which nothing else reads).
        self.answered = 0

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        t0 = time.perf_counter()
        answer = self._answer(environ)
        if answer is None:
            return self.app(environ, start_response)
        status, headers, body = answer
        self.answered += 1
        if self.access_log:
            health.log_access(environ, PATH, status, t0)
        start_response(_STATUS.get(status) or f"{status} {HTTP_STATUS_CODES[status].upper()}",
                       headers)
        return [body]

    def _answer(self, environ: dict) -> tuple[int, list, bytes] | None:
        """The response's (status, headers, body), or None for Flask to answer."""
        root = environ.get("SCRIPT_NAME", "").rstrip("/")
        if (environ.get("QUERY_STRING") or environ.get("HTTP_COOKIE") or not root.isascii()
                or not self.flask_app.config.get("INTAKE_FAST_PATH", True)):
            return None
        ctype = environ.get("CONTENT_TYPE") or ""
        if ctype.partition(";")[0].strip().lower() != "application/json":
            return None
        auth = environ.get("HTTP_AUTHORIZATION") or ""
        length = environ.get("CONTENT_LENGTH") or ""
        # isascii: "²" is a digit to str.isdigit, and not to int().
        if (auth[:7].lower() != "bearer " or not (length.isascii() and length.isdigit())
                or environ.get("HTTP_TRANSFER_ENCODING")):
            return None
        n = int(length)
        if self.max_length is not None and n > self.max_length:
            return None  # Flask's 413, which says what the limits are
        try:
            raw = environ["wsgi.input"].read(n) if n else b""
            environ["wsgi.input"] = io.BytesIO(raw)  # for Flask, if it answers after all
            # The token's look-up failing (the database down) is Flask's to answer too:
            # nothing has been written yet.
            user = self.hemei.accounts.user_for_token(auth[7:].strip())
        except Exception:
            return None
        if len(raw) != n:
            return None  # the client went away mid-body: Flask's 400
        if user is None or user.role not in api.REPORTER_ROLES:
            return None  # 401 / 403
        key = environ.get("HTTP_IDEMPOTENCY_KEY")
        if key is not None and not api.IDEMPOTENCY_KEY.fullmatch(key):
            return None
        try:
            payload = api.parse_json(raw)
        except InvalidInput:
            return None
        try:
            case = api.submit_report(self.hemei, user, key, payload, [])
            return self._json(201, api.case_feature(case, history=True, staff=True),
                              [("Location", f"{root}{PATH}/{case.id}")])
        except IdempotentReplay:
            return None  # Flask answers the replay (200, the case the key made)
        except HemeiError as err:
            return self._json(err.status, err.to_dict())
        except Exception as err:
            self.flask_app.logger.exception("unhandled error on %s", PATH)
            status, body, extra = errors.unexpected_json(err)
            return self._json(status, body, list(extra.items()))

    def _json(self, status: int, obj, extra: list | None = None) -> tuple[int, list, bytes]:
        body = self.flask_app.json.body(obj)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   *(extra or ()), *self.extra_headers]
        return status, headers, body
