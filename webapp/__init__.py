"""Hemei Grid web app: the Flask factory.

Thin by design: views parse the request, call :class:`gis.service.Hemei`, render.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

from flask import Flask

from gis.photos import MAX_PHOTOS
from gis.service import Hemei
from gis.settings import SettingsError, read_settings

#: Sent with every response. Pages must not be framed by another site (clickjacking an
#: admin form), so both the old header and CSP's frame-ancestors say so; the CSP names
#: nothing else on purpose: the Folium map pages run inline scripts, which a script-src
#: policy would block.
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _secret_key(instance: Path) -> str:
    # A random key kept in the instance folder, so sessions survive restarts without a
    # hard-coded default secret.
    path = instance / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32), encoding="utf-8")
        path.chmod(0o600)
    return path.read_text(encoding="utf-8").strip()


_SECURITY_LOWER = tuple((name.lower(), name, value) for name, value in SECURITY_HEADERS.items())


def _security_headers(response):
    """Add :data:`SECURITY_HEADERS` to a response (a view that sets its own keeps it)."""
    # One pass over the names the response has, not Headers.setdefault: each miss of its
    # look-up raises and catches an HTTP exception (17 against 3 µs a response).
    headers = response.headers
    have = {name.lower() for name, _ in headers.items()}
    for lower, name, value in _SECURITY_LOWER:
        if lower not in have:
            headers.add(name, value)
    return response


def create_app(test_config: dict | None = None) -> Flask:
    """Create the app. ``test_config`` overrides settings by name (``INSTANCE``,
    ``DATABASE_URL``, ``TILES`` …) and Flask config keys (``TESTING``)."""
    overrides = {k: v for k, v in (test_config or {}).items() if k.isupper()}
    settings = read_settings(**overrides)  # checks every value (SettingsError)
    instance = Path(str(settings["INSTANCE"]))
    try:
        instance.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        # A folder that cannot be made (HEMEI_INSTANCE=/proc/x, a read-only parent) is a
        # settings problem: say which setting, not a traceback.
        raise SettingsError(f"HEMEI_INSTANCE: cannot create the instance folder {instance}"
                            f": {err.strerror or err}", field="INSTANCE") from None
    app = Flask(__name__, instance_path=str(instance), instance_relative_config=True)
    app.config.update(
        SECRET_KEY=settings["SECRET_KEY"] or _secret_key(instance),
        JSON_AS_ASCII=False,
        # Up to three photos at the photo limit plus the form; each photo is then checked
        # against the limit itself, with a message that names it.
        MAX_CONTENT_LENGTH=int((MAX_PHOTOS * float(settings["MAX_PHOTO_MB"]) + 1)
                               * 1024 * 1024),
        HEMEI=settings,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # Checked and made "1"/"0" by read_settings.
        SESSION_COOKIE_SECURE=settings["SECURE_COOKIES"] == "1",
    )
    from webapp.jsonio import OrjsonProvider

    app.json = OrjsonProvider(app)  # UTF-8, key order kept (see webapp/jsonio.py)
    if test_config:
        app.config.update({k: v for k, v in test_config.items() if k not in settings})

    hemei = Hemei(settings)
    hemei.ensure_initialised()
    app.extensions["hemei"] = hemei
    from webapp import health

    # First, so its access log (when on) runs after every other after_request hook.
    health.init_app(app)  # /healthz, /readyz (outside /api/v1)

    from webapp import admin, api, auth, errors, field, i18n, open311, pages, resident

    i18n.init_app(app)
    errors.init_app(app)
    auth.init_app(app)
    pages.init_app(app)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    auth.csrf.exempt(api.bp)  # the API takes tokens, never the session cookie, for writes
    app.register_blueprint(field.bp)
    from webapp.cache import compress_json

    app.after_request(compress_json)
    app.after_request(_security_headers)
    resident.init_app(app)
    app.register_blueprint(resident.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(open311.bp)
    auth.csrf.exempt(open311.bp)  # Open311 POSTs carry an api_key, not a session
    from webapp import ogc
    app.register_blueprint(ogc.bp)  # OGC API – Features at /ogc/
    from webapp import analytics
    app.register_blueprint(analytics.api)  # clusters, hotspots, indicators … under /api/v1
    app.register_blueprint(analytics.bp)  # the planner's page at /planner
    from webapp import exports

    app.register_blueprint(exports.bp)  # /api/v1/exports/…
    from webapp import apidoc
    app.register_blueprint(apidoc.bp)  # /api/v1/openapi.json and /api/v1/docs
    from webapp.intake import IntakeFastPath
    from webapp.proxy import ForwardedFor

    # Plain JSON reports are answered before Flask (webapp/intake.py); the client's
    # address and scheme come from a trusted reverse proxy (read_settings checked the
    # list) before anything reads them.
    app.wsgi_app = ForwardedFor(IntakeFastPath(app.wsgi_app, app),
                                str(settings["TRUSTED_PROXIES"]))
    return app
