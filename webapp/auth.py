"""Who is asking: web sessions (Flask-Login, CSRF on every form) and API tokens (Bearer).

API writes take a token only, never the session cookie, so the JSON API needs no CSRF
token and a cookie can never be used to write through it from another site.

Sessions are signed cookies, so they cannot be deleted on the server; instead each one
carries its user's *session generation* (:meth:`gis.accounts.Accounts.session_user`),
which logging out, a password reset and a deactivation move on: a cookie copied before
any of those no longer opens a page. Failed logins are limited per client address and
per username (:class:`LoginThrottle`), counted in the instance's database so that every
worker shares one count (:mod:`gis.throttle`).
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
import unicodedata
from collections import deque
from datetime import timedelta
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect

from gis.errors import Forbidden, Unauthorized

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()

#: The session key holding the user's session generation at login.
SESSION_GENERATION = "hm_gen"
#: Failed logins are counted over this many seconds.
LOGIN_WINDOW_S = 15 * 60


def hemei():
    return current_app.extensions["hemei"]


@login_manager.user_loader
def _load_user(user_id: str):
    try:
        uid = int(user_id)
        # Sessions made before generations existed carry none: generation 0, which is
        # what a user who never logged out since still has.
        generation = int(session.get(SESSION_GENERATION, 0))
    except (TypeError, ValueError):
        return None
    return hemei().accounts.session_user(uid, generation)


def safe_next(value: str | None) -> str | None:
    """``value`` if it is a path on this site to go to after logging in, else None.

    Only a local absolute path passes: it starts with one ``/`` (``//host`` is another
    site), holds no backslash (browsers read ``/\\host`` as ``//host``), no whitespace or
    control character (browsers drop tabs and newlines, so ``/<TAB>/host`` becomes
    ``//host``), and has neither scheme nor host. The same holds after percent-decoding,
    repeatedly, in case something on the way decodes it again.
    """
    if not isinstance(value, str) or not value:
        return None
    candidate = value
    for _ in range(5):
        if not _local_path(candidate):
            return None
        decoded = unquote(candidate)
        if decoded == candidate:
            return value
        candidate = decoded
    return None  # still decoding after five rounds: not a path anyone typed


def _local_path(value: str) -> bool:
    """One round of :func:`safe_next`'s checks on ``value`` as it stands."""
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return False
    if any(ch.isspace() or unicodedata.category(ch).startswith("C") for ch in value):
        return False
    parts = urlsplit(value)
    return not parts.scheme and not parts.netloc


class LoginThrottle:
    """Failed logins per key (a client address, a username) in a sliding window.

    At ``limit`` failures within ``window`` seconds a key is refused until the oldest of
    the last ``limit`` leaves the window; a refused attempt checks no password and counts
    nothing, and a successful login clears nothing (a client cannot reset its own count by
    logging in to an account it owns). ``webapp.ratelimit`` does not fit: it counts every
    request, not failures, and keys every bucket by the client address (the per-username
    limit must hold across addresses).

    With a ``log`` (:class:`gis.throttle.SqlFailureLog`, on the instance's database: what
    :func:`init_app` gives an app whose store has one) the failures are counted there, so
    the limit holds across every worker of the instance, and across hosts on one PostGIS
    database, and survives a restart. The failures are also counted here, in the process
    (cheap): when the database cannot answer (an error while checking or counting), the
    error is logged and that request falls back to this process's count, as the limit
    was before it was shared — neither everyone locked out nor a 500. Without a ``log``
    (a store with no database) only the in-process count exists: behind several workers
    a client then gets ``limit`` failures per worker.
    """

    #: Keys kept at most in the process; past that, keys whose failures have all expired
    #: are dropped, then the least recently failed (one client inventing usernames must
    #: not grow it without bound).
    MAX_KEYS = 10_000

    def __init__(self, limit: int, window: float = LOGIN_WINDOW_S, log=None,
                 clock=time.monotonic):
        self.limit, self.window, self.log = limit, window, log
        self._clock = clock
        self._failures: dict[tuple[str, str], deque] = {}
        self._lock = threading.Lock()

    def wait(self, keys: list[tuple[str, str]]) -> int:
        """Whole seconds until none of ``keys`` is over the limit (0: go ahead)."""
        if self.limit <= 0:
            return 0
        if self.log is not None:
            try:
                return self.log.wait(keys)
            except sa.exc.SQLAlchemyError as err:
                _log_db_error("check", err)
        return self._local_wait(keys)

    def failed(self, keys: list[tuple[str, str]]) -> None:
        """Count one failed login for each of ``keys``."""
        if self.limit <= 0:
            return
        self._local_failed(keys)
        if self.log is not None:
            try:
                self.log.failed(keys)
            except sa.exc.SQLAlchemyError as err:
                _log_db_error("count", err)

    # -- the in-process count ---------------------------------------------------------
    def _local_wait(self, keys: list[tuple[str, str]]) -> int:
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                q = self._failures.get(key)
                if q is None:
                    continue
                while q and q[0] <= now - self.window:
                    q.popleft()
                if len(q) >= self.limit:
                    wait = max(wait, q[len(q) - self.limit] + self.window - now)
        return math.ceil(wait) if wait > 0 else 0

    def _local_failed(self, keys: list[tuple[str, str]]) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) >= self.MAX_KEYS:
                self._prune(now)
            for key in keys:
                q = self._failures.setdefault(key, deque(maxlen=self.limit))
                q.append(now)

    def _prune(self, now: float) -> None:
        for key in [k for k, q in self._failures.items()
                    if not q or q[-1] <= now - self.window]:
            del self._failures[key]
        if len(self._failures) >= self.MAX_KEYS:
            by_age = sorted(self._failures, key=lambda k: self._failures[k][-1])
            for key in by_age[: len(by_age) // 2]:
                del self._failures[key]


def _log_db_error(what: str, err: Exception) -> None:
    first = (str(getattr(err, "orig", None) or err).strip().splitlines() or [""])[0]
    current_app.logger.warning(
        "login limit: cannot %s the failed logins in the database (%s: %s); this "
        "request uses this worker's own count", what, type(err).__name__, first)


def _clock() -> float:
    """Seconds since the epoch: the clock of the failures counted in the database (read
    through this function, so tests can move it)."""
    return time.time()


def _failure_log(app, limit: int):
    """The shared failure log on the app's store's database, or None (no database)."""
    store = app.extensions["hemei"].store
    if getattr(store, "engine", None) is None:
        return None
    from gis.throttle import SqlFailureLog

    # The values are stored as HMACs under a key only this instance has (its secret key):
    # the table holds no username or address in clear, nor hashes one could reverse by
    # trying every IPv4 address.
    pepper = hashlib.sha256(b"hemei login failures\0"
                            + str(app.secret_key).encode("utf-8")).digest()
    return SqlFailureLog.for_store(store, limit, LOGIN_WINDOW_S, pepper=pepper,
                                   clock=lambda: _clock())


def _throttle_keys(username: str) -> list[tuple[str, str]]:
    """The keys a login attempt counts against: the client's address and the username."""
    # Usernames are unique without regard to case, so "ADMIN" counts against "admin";
    # the length cap keeps a megabyte of username from becoming a megabyte of key.
    return [("address", request.remote_addr or "?"),
            ("username", username.strip().casefold()[:100])]


@login_manager.unauthorized_handler
def _unauthorized():
    # A page asked for: go and log in. A form posted with no (or an expired) session:
    # a clear 401 instead of silently dropping what was typed.
    if request.method == "GET":
        return redirect(url_for("auth.login", next=request.full_path))
    raise Unauthorized("your session has expired or you are not logged in; log in again")


def token_user():
    """The user of the request's ``Authorization: Bearer`` token, or None."""
    header = request.headers.get("Authorization", "")
    if not header.lower().startswith("bearer "):
        return None
    user = hemei().accounts.user_for_token(header[7:].strip())
    if user is None:
        raise Unauthorized("the API token is unknown or revoked")
    return user


def api_user(*roles: str):
    """The token's user for an API write; 401 without a token, 403 for another role."""
    user = token_user()
    if user is None:
        raise Unauthorized("this API call needs a token: Authorization: Bearer <token> "
                           "(hemei token create NAME)")
    if roles and user.role not in roles:
        raise Forbidden(f"a {user.role} cannot do this; it needs one of: {', '.join(roles)}")
    return user


def reader():
    """Whoever is reading: a token's user, the session's user, or None (the public)."""
    user = token_user()
    if user is not None:
        return user
    return current_user if current_user.is_authenticated else None


def web_user(*roles: str):
    """The logged-in user of a page; 403 with the reason for another role."""
    if not current_user.is_authenticated:
        abort(login_manager.unauthorized())
    if roles and current_user.role not in roles:
        raise Forbidden(f"this page is for {', '.join(roles)}; you are {current_user.role}")
    return current_user._get_current_object()


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Log in with a username and password; 401 for a wrong one, 429 (with Retry-After)
    after too many failures from this client or for this username."""
    if request.method == "GET":
        return render_template("login.html", error=None)
    username = request.form.get("username", "")
    throttle: LoginThrottle = current_app.extensions["hemei_login_throttle"]
    keys = _throttle_keys(username)
    wait = throttle.wait(keys)
    if wait:
        return (render_template("login.html", error="throttled",
                                minutes=max(1, math.ceil(wait / 60))),
                429, {"Retry-After": str(wait)})
    accounts = hemei().accounts
    user = accounts.authenticate(username, request.form.get("password", ""))
    if user is None:
        throttle.failed(keys)
        return render_template("login.html", error="wrong"), 401
    login_user(user, remember=False)
    session[SESSION_GENERATION] = accounts.session_generation(user.id)
    # Only local paths: no open redirect.
    return redirect(safe_next(request.args.get("next")) or url_for("field.home"))


@bp.post("/logout")
def logout():
    """Log out (a POST with the CSRF token, so another site cannot log you out). Every
    session of the user ends, on every device: a copied cookie stops working too."""
    if current_user.is_authenticated:
        hemei().accounts.end_sessions(current_user.id)
    logout_user()
    session.pop(SESSION_GENERATION, None)
    flash("logged_out")
    return redirect(url_for("pages.overview"))


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signing serializer made once per set of
    keys instead of on every request (Flask builds a new one each time: a tenth of the
    framework's share of an API request, bench/intake.py). Rotating ``SECRET_KEY`` or
    its fallbacks makes a new one."""

    def get_signing_serializer(self, app):
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = getattr(self, "_serializer", None)
        if cached is None or cached[0] != keys:
            cached = self._serializer = (keys, super().get_signing_serializer(app))
        return cached[1]

    def save_session(self, app, session, response) -> None:
        # An empty session nobody changed (every API call with a token) has no cookie to
        # set or delete: Flask's own answer, without first working out the cookie's
        # seven attributes from the config on every request.
        if not session and not session.modified:
            if session.accessed:
                response.vary.add("Cookie")
            return
        super().save_session(app, session, response)


def init_app(app) -> None:
    """Sessions, login and CSRF for the app."""
    app.session_interface = SessionInterface()
    app.config.setdefault("PERMANENT_SESSION_LIFETIME", timedelta(hours=12))
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", 12 * 3600)
    login_manager.init_app(app)
    csrf.init_app(app)
    limit = int(app.config["HEMEI"]["LOGIN_LIMIT"])  # a whole number 0-10000 (read_settings)
    app.extensions["hemei_login_throttle"] = LoginThrottle(
        limit, LOGIN_WINDOW_S, log=_failure_log(app, limit))
    app.register_blueprint(bp)

    @app.errorhandler(CSRFError)
    def _csrf(err):
        from webapp.errors import error_response, form_expired

        if not current_user.is_authenticated and request.blueprint in ("admin", "field"):
            return error_response(Unauthorized(
                "your session has expired or you are not logged in; log in again"))
        return form_expired(err)
