"""The report endpoint's fast path (webapp/intake.py) answers exactly as the Flask view
does: every request here is sent twice, once with the fast path on and once with it off
(``INTAKE_FAST_PATH``), and the two answers must be the same status, the same headers in
the same order and the same JSON (ids and times aside); its counter says which path
answered. SQLite and PostGIS."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import sys

import pytest
import requests

from tests.conftest import INSIDE, OUTSIDE
from tests.served import production_server
from tests.webapp.test_idempotency import count_cases

pytestmark = pytest.mark.backends("sqlite", "postgis")

NEW = {"category": "street_light", "lon": INSIDE[0], "lat": INSIDE[1],
       "description": "路灯不亮 <b>x</b>", "title": "新兴南路路灯不亮"}
_KEYS = iter(range(10**6))


def fast_path(app):
    """The IntakeFastPath middleware inside the app's proxy middleware."""
    from webapp.intake import IntakeFastPath

    fp = app.wsgi_app.app
    assert isinstance(fp, IntakeFastPath)
    return fp


def send(app, fast: bool, *, body=None, data=None, headers=None, **kw):
    """POST /api/v1/issues with the fast path on or off: (response, answered by it)."""
    app.config["INTAKE_FAST_PATH"] = fast
    fp = fast_path(app)
    before = fp.answered
    client = app.test_client(use_cookies=False)
    if body is not None:
        data = json.dumps(body, ensure_ascii=False).encode()
    h = {"Content-Type": "application/json", **(headers or {})}
    resp = client.post(kw.pop("path", "/api/v1/issues"), data=data, headers=h, **kw)
    app.config["INTAKE_FAST_PATH"] = True
    return resp, fp.answered - before


_VOLATILE = re.compile(r"(^|_)at$|^ts$|^pid$|^duration_ms$")


def normalised(value):
    """The JSON with ids and times blanked: what two reports of the same body share."""
    if isinstance(value, dict):
        return {k: ("·" if k == "id" or _VOLATILE.search(k) else normalised(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    return value


def same_answer(a, b) -> None:
    """Two responses to the same request are the same but for ids and times."""
    assert a.status == b.status
    names = lambda r: [(k, v) for k, v in r.headers.items()  # noqa: E731
                       if k not in ("Content-Length", "Location")]
    assert names(a) == names(b)
    assert ("Location" in a.headers) == ("Location" in b.headers)
    assert normalised(a.get_json()) == normalised(b.get_json())


def both(app, **kw):
    """The fast path's answer and Flask's to the same request (one unused key each)."""
    headers = dict(kw.pop("headers", {}))
    fresh = headers.get("Idempotency-Key") == "fresh"
    out = []
    for fast in (True, False):
        if fresh:
            headers["Idempotency-Key"] = f"fp-{next(_KEYS)}"
        out.append(send(app, fast, headers=headers, **kw))
    (a, n_fast), (b, n_flask) = out
    assert n_flask == 0  # switched off, it answers nothing
    same_answer(a, b)
    return a, n_fast


def test_a_report_is_answered_by_the_fast_path_exactly_as_by_flask(app, auth, hemei):
    resp, answered = both(app, body=NEW, headers={**auth("gw"), "Idempotency-Key": "fresh"})
    assert answered == 1
    assert resp.status_code == 201
    assert re.fullmatch(r"/api/v1/issues/\d+", resp.headers["Location"])
    assert resp.headers["Vary"] == "Cookie"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert resp.headers["Content-Type"] == "application/json"
    assert int(resp.headers["Content-Length"]) == len(resp.data)
    assert resp.data.endswith(b"}\n")
    props = resp.get_json()["properties"]
    assert props["description"] == NEW["description"]  # stored as sent, JSON-escaped
    assert props["grid_code"] and props["source"] == "patrol"
    assert props["history"][0]["actor"] == "王网格"  # staff see who reported it
    stored = hemei.store.get_case(resp.get_json()["id"])
    assert stored.description == NEW["description"] and stored.grid_code == props["grid_code"]


def test_the_location_keeps_the_mount_point(app, auth):
    resp, answered = both(app, body=NEW, headers=auth("admin"),
                          environ_overrides={"SCRIPT_NAME": "/grid"})
    assert answered == 1
    assert re.fullmatch(r"/grid/api/v1/issues/\d+", resp.headers["Location"])


@pytest.mark.parametrize("change, status, field", [
    ({"category": "no_such"}, 400, "category"),
    ({"lon": OUTSIDE[0], "lat": OUTSIDE[1]}, 422, "lon"),
    ({"lat": 91}, 400, "lat"),
    ({"lon": None}, 400, "lon"),
    ({"description": ""}, 400, "description"),
    ({"datum": "bd09"}, 400, "datum"),
])
def test_a_refused_report_is_answered_here_as_flask_answers_it(app, auth, change, status,
                                                               field):
    count = lambda: count_cases(app.test_client())  # noqa: E731
    before = count()
    resp, answered = both(app, body={**NEW, **change}, headers=auth("crew"))
    assert answered == 1
    assert resp.status_code == status
    assert resp.get_json()["error"]["field"] == field
    assert count() == before  # nothing stored either way


@pytest.mark.parametrize("why, kw, status", [
    ("no token", {"body": NEW}, 401),
    ("unknown token", {"body": NEW, "headers": {"Authorization": "Bearer nope"}}, 401),
    ("a planner", {"body": NEW, "user": "planner"}, 403),
    ("a bad key", {"body": NEW, "user": "admin",
                   "headers": {"Idempotency-Key": "k" * 101}}, 400),
    ("not JSON", {"data": b"{nope", "user": "admin"}, 400),
    ("empty", {"data": b"", "user": "admin"}, 400),
    ("a lone surrogate", {"data": b'{"description": "\\ud800"}', "user": "admin"}, 400),
    ("form data", {"data": b"category=x", "user": "admin",
                   "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415),
    ("too large", {"data": b"{}", "user": "admin",
                   "environ_overrides": {"CONTENT_LENGTH": str(2**40)}}, 413),
    ("a length that is no number", {"data": b"{}", "user": "admin",
                                     "environ_overrides": {"CONTENT_LENGTH": "\xb2"}}, 400),
    ("a cookie", {"body": NEW, "user": "admin", "headers": {"Cookie": "lang=en"}}, 201),
    ("a query string", {"body": NEW, "user": "admin", "query_string": "lang=en"}, 201),
    ("a trailing slash", {"body": NEW, "user": "admin", "path": "/api/v1/issues/"}, 404),
])
def test_what_the_fast_path_leaves_to_flask_gets_flasks_answer(app, auth, why, kw, status):
    kw = dict(kw)
    user = kw.pop("user", None)
    kw["headers"] = {**(auth(user) if user else {}), **kw.get("headers", {})}
    resp, answered = both(app, **kw)
    assert answered == 0, why
    assert resp.status_code == status, (why, resp.get_json())


def test_a_body_that_is_no_object_is_refused_here_as_flask_refuses_it(app, auth):
    resp, answered = both(app, body=[NEW], headers=auth("admin"))
    assert answered == 1 and resp.status_code == 400
    assert resp.get_json()["error"]["field"] == "body"


def test_a_cookie_or_query_left_to_flask_still_reads_the_body(app, auth, hemei):
    resp, answered = send(app, True, body={**NEW, "description": "交给 Flask"},
                          headers={**auth("admin"), "Cookie": "lang=en"})
    assert answered == 0 and resp.status_code == 201
    assert hemei.store.get_case(resp.get_json()["id"]).description == "交给 Flask"


def test_a_retry_is_answered_by_flask_with_the_first_case(app, auth):
    h = {**auth("gw"), "Idempotency-Key": "fp-retry"}
    first, answered = send(app, True, body=NEW, headers=h)
    assert answered == 1 and first.status_code == 201
    again, answered = send(app, True, body=NEW, headers=h)
    assert answered == 0 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Location"] == first.headers["Location"]
    # The same key with another report: refused here, as Flask refuses it.
    other, answered = send(app, True, body={**NEW, "description": "另一件事"}, headers=h)
    assert answered == 1 and other.status_code == 422
    assert other.get_json()["error"]["code"] == "idempotency_key_reused"
    flask, _ = send(app, False, body={**NEW, "description": "另一件事"}, headers=h)
    same_answer(other, flask)


@pytest.mark.parametrize("error, status", [
    (RuntimeError("boom"), 500),
    (sqlite3.OperationalError("database is locked"), 503),
])
def test_an_unexpected_error_is_answered_as_flask_answers_it_and_logged(
        app, auth, hemei, monkeypatch, caplog, error, status):
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise error

    monkeypatch.setattr(hemei, "report", broken)
    resp, answered = both(app, body=NEW, headers=auth("admin"))
    assert answered == 1
    assert len(calls) == 2  # once each way: the fast path never sends a report on twice
    assert resp.status_code == status
    assert "boom" not in resp.get_data(as_text=True)  # no detail leaks
    if status == 503:
        assert resp.headers["Retry-After"] == "5"
    logged = [r for r in caplog.records if "unhandled error on /api/v1/issues" in r.message]
    assert len(logged) == 2 and all(r.exc_info for r in logged)


def test_the_access_log_line_is_the_same(instance_maker, instance, auth, capsys):
    app = instance_maker.app(instance, ACCESS_LOG=True)
    try:
        lines = []
        for fast in (True, False):
            capsys.readouterr()
            resp, answered = send(app, fast, body=NEW, headers=auth("admin"),
                                  environ_overrides={"REMOTE_ADDR": "10.1.2.3"})
            assert resp.status_code == 201 and answered == int(fast)
            out = [json.loads(line) for line in capsys.readouterr().out.splitlines()
                   if line.startswith("{")]
            assert len(out) == 1
            lines.append(out[0])
        fast_line, flask_line = lines
        assert fast_line.keys() == flask_line.keys()
        assert normalised(fast_line) == normalised(flask_line)
        assert fast_line["remote"] == "10.1.2.3" and fast_line["status"] == 201
        assert fast_line["duration_ms"] > 0
    finally:
        instance_maker.close(app)


def test_a_token_look_up_that_fails_is_left_to_flask(app, auth, hemei, monkeypatch):
    def down(token):
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(hemei.accounts, "user_for_token", down)
    resp, answered = both(app, body=NEW, headers=auth("admin"))
    assert answered == 0
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"


def test_a_body_shorter_than_its_content_length_is_not_reported(app, auth):
    count = lambda: count_cases(app.test_client())  # noqa: E731
    before = count()
    body = json.dumps(NEW).encode() + b"   "
    resp, answered = both(app, data=body, headers=auth("admin"),
                          environ_overrides={"CONTENT_LENGTH": str(len(body) + 10)})
    assert answered == 0 and resp.status_code == 400
    assert count() == before


@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn needs a Unix")
def test_served_by_gunicorn_the_fast_path_answers_as_flask_does(seeded_template, tmp_path):
    """Through ``hemei serve --production``: gunicorn's request body and start_response,
    behind the proxy middleware (the client's address from X-Forwarded-For)."""
    inst = shutil.copytree(seeded_template, tmp_path / "instance")
    token = json.loads((inst / "tokens.json").read_text(encoding="utf-8"))["tokens"]["gw"]
    env = {**os.environ, "HEMEI_INSTANCE": str(inst), "HEMEI_TILES": "none",
           "PYTHONUNBUFFERED": "1"}
    env.pop("HEMEI_DATABASE_URL", None)
    headers = {"Authorization": f"Bearer {token}", "X-Forwarded-For": "198.51.100.9"}
    with production_server(env, tmp_path / "server.log") as served:
        url = f"{served.base}/api/v1/issues"
        fast = requests.post(url, json=NEW, timeout=10,
                             headers={**headers, "Idempotency-Key": "served-1"})
        # A query string sends the same report through Flask.
        flask = requests.post(url, json=NEW, timeout=10, params={"lang": "zh"},
                              headers={**headers, "Idempotency-Key": "served-2"})
        again = requests.post(url, json=NEW, timeout=10,
                              headers={**headers, "Idempotency-Key": "served-1"})
    assert fast.status_code == flask.status_code == 201, (fast.text, flask.text)
    skip = {"Date", "Content-Length", "Location", "Set-Cookie"}
    assert [(k, v) for k, v in fast.headers.items() if k not in skip] == [
        (k, v) for k, v in flask.headers.items() if k not in skip]
    assert normalised(fast.json()) == normalised(flask.json())
    assert again.status_code == 200 and again.json()["id"] == fast.json()["id"]
    access = [json.loads(s) for s in served.output.splitlines() if s.startswith('{"ts"')]
    posts = [{k: x.get(k) for k in ("method", "path", "status", "remote", "proxy")}
             for x in access if x["path"] == "/api/v1/issues"]
    assert posts == [{"method": "POST", "path": "/api/v1/issues", "status": s,
                      "remote": "198.51.100.9", "proxy": "127.0.0.1"} for s in (201, 201, 200)]
