"""Who is asking: web sessions (Flask-Login, CSRF on every form) and API tokens (Bearer).

API writes take a token only, never the session cookie, so the JSON API needs no CSRF
token and a cookie can never be used to write through it from another site.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect

from gis.errors import Forbidden, NotFound, Unauthorized

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()


def hemei():
    return current_app.extensions["hemei"]


@login_manager.user_loader
def _load_user(user_id: str):
    try:
        user = hemei().accounts.get(int(user_id))
    except (NotFound, ValueError):
        return None
    return user if user.active else None


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
    """Log in with a username and password."""
    error = None
    if request.method == "POST":
        user = hemei().accounts.authenticate(request.form.get("username", ""),
                                             request.form.get("password", ""))
        if user is None:
            error = "wrong"
        else:
            login_user(user, remember=False)
            nxt = request.args.get("next") or ""
            # Only local paths: no open redirect.
            if not nxt.startswith("/") or nxt.startswith("//"):
                nxt = url_for("field.home")
            return redirect(nxt)
    return render_template("login.html", error=error), (401 if error else 200)


@bp.post("/logout")
def logout():
    """Log out (a POST with the CSRF token, so another site cannot log you out)."""
    logout_user()
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
    app.register_blueprint(bp)

    @app.errorhandler(CSRFError)
    def _csrf(err):
        from gis.errors import InvalidInput
        from webapp.errors import error_response

        if not current_user.is_authenticated and request.blueprint in ("admin", "field"):
            return error_response(Unauthorized(
                "your session has expired or you are not logged in; log in again"))

        return error_response(InvalidInput(
            f"the form's security token is missing or expired ({err.description}); "
            "reload the page and try again", field="csrf_token"))
