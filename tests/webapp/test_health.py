"""Liveness and readiness probes, the JSON access log, and ``hemei serve --production``
(gunicorn, several workers) end to end."""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.conftest import _copy_instance
from tests.served import production_server


def test_healthz_is_ok_without_the_database(app, public_client, monkeypatch):
    def no_db(*a, **kw):
        raise AssertionError("/healthz must not touch the database")

    monkeypatch.setattr(app.extensions["hemei"].store, "_read", no_db)
    r = public_client.get("/healthz")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ok", "pid": os.getpid()}
    assert r.headers["Cache-Control"] == "no-store"


def test_readyz_reports_every_check(public_client):
    r = public_client.get("/readyz")
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "layers", "photos"}
    assert all(c["ok"] for c in body["checks"].values())
    assert body["checks"]["layers"]["grids"] > 0


def test_readyz_is_503_naming_an_unwritable_photos_folder(public_client, instance):
    photos = instance / "photos"
    if photos.exists():
        import shutil

        shutil.rmtree(photos)
    photos.write_text("not a folder", encoding="utf-8")
    r = public_client.get("/readyz")
    assert r.status_code == 503
    body = r.get_json()
    assert body["status"] == "unavailable"
    assert body["failed"] == ["photos"]
    assert body["checks"]["database"]["ok"] is True


def test_readyz_is_503_naming_an_unreachable_database(app, public_client, monkeypatch):
    h = app.extensions["hemei"]

    def broken(*a, **kw):
        raise OSError("connection refused")

    def broken_at(*a, **kw):
        raise OSError("connection to db.internal:5432 refused")

    monkeypatch.setattr(h.store, "_read", broken_at)
    monkeypatch.setattr(h.store, "layer_versions", broken)
    r = public_client.get("/readyz")
    assert r.status_code == 503
    body = r.get_json()
    assert "database" in body["failed"]
    # Said plainly; where the database lives is for the log, not for a public probe.
    assert body["checks"]["database"]["error"].startswith("the database does not answer")
    assert "db.internal" not in r.get_data(as_text=True)


def test_readyz_is_503_without_boundary_layers(app, public_client, monkeypatch):
    from gis.errors import LayerError

    def none(*a, **kw):
        raise LayerError("no grid layer is active")

    monkeypatch.setattr(type(app.extensions["hemei"]), "layers", property(none))
    r = public_client.get("/readyz")
    assert r.status_code == 503
    assert r.get_json()["failed"] == ["layers"]


def test_the_probes_are_not_in_the_api_description(public_client):
    paths = public_client.get("/api/v1/openapi.json").get_json()["paths"]
    assert not any(p.endswith(("healthz", "readyz")) for p in paths)


def test_access_log_is_one_json_line_per_request(instance_maker, tmp_path, capsys):
    app = instance_maker.new_app(tmp_path / "inst", ACCESS_LOG=True)
    try:
        capsys.readouterr()
        c = app.test_client()
        assert c.get("/healthz").status_code == 200
        assert c.get("/api/v1/issues/999999", environ_base={
            "REMOTE_ADDR": "192.0.2.7"}).status_code == 404
        captured = capsys.readouterr()
        lines = [json.loads(s) for s in captured.out.splitlines() if s.strip()]
    finally:
        instance_maker.close(app)
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("GET", "/healthz", 200), ("GET", "/api/v1/issues/999999", 404)]
    assert all(isinstance(x["duration_ms"], float) and x["duration_ms"] >= 0 for x in lines)
    assert [x["remote"] for x in lines] == ["127.0.0.1", "192.0.2.7"]  # who asked
    assert '"path"' not in captured.err  # errors and tracebacks only there


def test_access_log_is_off_by_default(app, public_client, capsys):
    capsys.readouterr()
    public_client.get("/healthz")
    out = capsys.readouterr()
    assert '"path"' not in out.out + out.err


# -- hemei serve --production ----------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn needs a Unix")
def test_serve_production_runs_gunicorn_workers(seeded_template, tmp_path):
    inst = _copy_instance(seeded_template, tmp_path / "instance")
    env = {**os.environ, "HEMEI_INSTANCE": str(inst), "HEMEI_TILES": "none",
           "PYTHONUNBUFFERED": "1"}
    env.pop("HEMEI_DATABASE_URL", None)
    with production_server(env, tmp_path / "server.log", workers=2) as served:
        base = served.base
        assert requests.get(f"{base}/", timeout=10).status_code == 200
        # As a local nginx forwards a client (127.0.0.1 is a trusted proxy by default).
        assert requests.get(f"{base}/healthz", timeout=10, headers={
            "X-Forwarded-For": "198.51.100.7"}).status_code == 200
        ready = requests.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        # Fresh connections, several at a time, until both workers have answered.
        pids: set[int] = set()
        deadline = time.monotonic() + 30
        with ThreadPoolExecutor(max_workers=8) as pool:
            while len(pids) < 2 and time.monotonic() < deadline:
                batch = pool.map(lambda _: requests.get(f"{base}/healthz", timeout=5,
                                                        headers={"Connection": "close"}),
                                 range(16))
                pids |= {r.json()["pid"] for r in batch}
        assert len(pids) == 2, pids
        assert served.proc.pid not in pids  # the master only forks; workers answer
    output = served.output
    assert served.rc == 0, output
    access = [json.loads(s) for s in output.splitlines() if s.startswith('{"ts"')]
    assert {"method": "GET", "path": "/readyz", "status": 200} in [
        {k: x[k] for k in ("method", "path", "status")} for x in access]
    assert all("duration_ms" in x for x in access)
    # The client's address, not the proxy's; the proxy beside it.
    assert {"remote": "198.51.100.7", "proxy": "127.0.0.1", "path": "/healthz"} in [
        {k: x.get(k) for k in ("remote", "proxy", "path")} for x in access]
    assert "Booting worker" in output
    assert not Path(inst / "photos").is_file()
