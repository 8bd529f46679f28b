"""Liveness and readiness probes, and the one-JSON-line-per-request access log.

``GET /healthz``: the process is up (no database access). ``GET /readyz``: the database
answers a trivial query, the boundary layers are loaded and the photos folder is
writable: 200 with each check, or 503 naming the checks that failed. Both sit outside
/api/v1 (load balancers and orchestrators call them, not API clients).

The access log is on with ``hemei serve --production``, or when ``ACCESS_LOG`` is set in
the app's config or ``HEMEI_ACCESS_LOG`` in the environment. It goes to standard output,
one JSON object per line; gunicorn's messages and tracebacks go to standard error, so a log
shipper takes the two apart without parsing (they used to share standard error, multi-line
tracebacks between the JSON lines).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson
import sqlalchemy as sa
from flask import Blueprint, Flask, current_app, g, jsonify, request

from gis.process import pid

bp = Blueprint("health", __name__)

_TRUE = ("1", "true", "yes", "on")


def _no_store(resp):
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/healthz")
def healthz():
    """The process is up and serving (touches nothing else)."""
    return _no_store(jsonify(status="ok", pid=os.getpid()))


def _check_database(h) -> dict:
    with h.store._read() as conn:
        conn.execute(sa.text("SELECT 1")).scalar()
    return {}


def _check_layers(h) -> dict:
    layers = h.layers  # loads (or reuses) the active layers; raises LayerError if none
    grids = len(layers.get("grid", ()))
    if not grids:
        raise RuntimeError("no grid features are active")
    return {"grids": grids}


def _check_photos(h) -> dict:
    folder = Path(str(h.settings["INSTANCE"])) / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".readyz-", delete=True) as fh:
        fh.write(b"ok")
        fh.flush()
    return {}


_CHECKS = (("database", _check_database), ("layers", _check_layers),
           ("photos", _check_photos))
_FAILED = {"database": "the database does not answer (see the server log)",
           "layers": "the boundary layers cannot be loaded (see the server log)",
           "photos": "the photos folder is not writable (see the server log)"}


@bp.get("/readyz")
def readyz():
    """Ready for traffic: every check passes (200), or 503 naming those that failed."""
    h = current_app.extensions["hemei"]
    checks: dict[str, dict] = {}
    for name, check in _CHECKS:
        try:
            checks[name] = {"ok": True, **check(h)}
        except Exception as err:  # a probe reports a failure, it never raises
            # The details (a database's host and port, a folder's path) go to the log,
            # not to whoever may call this public probe.
            current_app.logger.warning("readyz: %s check failed: %s", name, err)
            checks[name] = {"ok": False, "error": _FAILED[name]}
    failed = [name for name, c in checks.items() if not c["ok"]]
    body = {"status": "unavailable" if failed else "ok", "checks": checks}
    if failed:
        body["failed"] = failed
    resp = jsonify(body)
    resp.status_code = 503 if failed else 200
    return _no_store(resp)


# -- structured access log ------------------------------------------------------------
def _start_timer() -> None:
    g._hemei_t0 = time.perf_counter()


def _log_request(resp):
    t0 = g.pop("_hemei_t0", None)
    log_access(request.environ, request.path, resp.status_code, t0)
    return resp


def log_access(environ: dict, path: str, status: int, t0: float | None) -> None:
    """Write the access log's line for a request (``t0``: its ``perf_counter`` start)."""
    ms = round((time.perf_counter() - t0) * 1000, 2) if t0 is not None else None
    # The client's address: X-Forwarded-For's, behind a proxy in TRUSTED_PROXIES only
    # (webapp/proxy.py), so a client cannot forge it; the proxy's address beside it.
    record = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": pid(),
              "remote": environ.get("REMOTE_ADDR"),
              "method": (environ.get("REQUEST_METHOD") or "GET").upper(),
              "path": path, "status": status, "duration_ms": ms}
    proxy = environ.get("hemei.proxy_addr")
    if proxy is not None:
        record["proxy"] = proxy
    try:
        line = orjson.dumps(record).decode()
    except TypeError:  # a path orjson refuses (a lone surrogate): the standard encoder
        line = json.dumps(record, ensure_ascii=False)
    try:
        sys.stdout.write(line + "\n")  # one write per line: lines of workers don't mix
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


def access_log_enabled(app: Flask) -> bool:
    if "ACCESS_LOG" in app.config:
        return bool(app.config["ACCESS_LOG"])
    return os.environ.get("HEMEI_ACCESS_LOG", "").strip().lower() in _TRUE


def init_app(app: Flask) -> None:
    """Register the probes, and the access log when it is enabled."""
    app.register_blueprint(bp)
    if access_log_enabled(app):
        app.before_request(_start_timer)
        app.after_request(_log_request)
