"""Accounts through HTTP and the CLI: hashed passwords, login and logout, expired sessions,
API tokens (created, revoked), `hemei user add` / `hemei token …`, and the admin pages."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import PASSWORDS

HEMEI = [sys.executable, "-m", "webapp.cli"]
XIALIANG_GRID = "451102003001001"


def cli(args, instance: Path):
    env = {**os.environ, "HEMEI_INSTANCE": str(instance), "PYTHONIOENCODING": "utf-8"}
    env.pop("HEMEI_DATABASE_URL", None)
    return subprocess.run(HEMEI + list(args), env=env, capture_output=True, text=True,
                          timeout=120)


def csrf_token(resp) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', resp.get_data(as_text=True))
    assert m, "the page has no CSRF token"
    return m.group(1)


def login(client, username: str, password: str | None = None):
    token = csrf_token(client.get("/login"))
    if password is None:
        password = PASSWORDS[username]
    return client.post("/login", data={"csrf_token": token, "username": username,
                                       "password": password})


def logged_in(app, username: str):
    """A browser session of ``username`` and a CSRF token valid for it."""
    client = app.test_client()
    r = login(client, username)
    assert r.status_code == 302, r.get_data(as_text=True)[:300]
    return client, csrf_token(client.get("/login"))


def db_rows(instance: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(instance / "hemei.sqlite3")
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def db_bytes(instance: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(instance.glob("hemei.sqlite3*")))


# -------------------------------------------------------------------------- passwords


def test_passwords_and_tokens_are_stored_only_as_hashes(app, instance, people):
    rows = dict(db_rows(instance, "SELECT username, password_hash FROM users"))
    assert set(PASSWORDS) <= set(rows)
    for username, password in PASSWORDS.items():
        stored = rows[username]
        assert stored.startswith("scrypt$") and password not in stored
        assert len(stored.split("$")) == 6
    raw = db_bytes(instance)
    for password in PASSWORDS.values():
        assert password.encode() not in raw
    digests = {r[0] for r in db_rows(instance, "SELECT digest FROM api_tokens")}
    for token in people["tokens"].values():
        assert token.encode() not in raw
        assert hashlib.sha256(token.encode()).hexdigest() in digests


# ------------------------------------------------------------------------------ login


def test_login_page(public_client):
    r = public_client.get("/login")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert 'name="username"' in html and 'type="password"' in html


@pytest.mark.parametrize("username, password", [
    ("gw", "wrong-password"), ("gw", ""), ("nobody", "gw-pass-123"), ("", ""),
    ("gw", PASSWORDS["gw2"]),
])
def test_wrong_credentials_are_401(public_client, username, password):
    r = login(public_client, username, password)
    assert r.status_code == 401
    assert 'role="alert"' in r.get_data(as_text=True)  # the page says what went wrong
    assert public_client.get("/m/").status_code == 302  # still not logged in


def test_right_password_redirects_and_logs_in(public_client):
    r = login(public_client, "gw")
    assert r.status_code == 302 and r.headers["Location"] == "/m/"
    page = public_client.get("/m/")
    assert page.status_code == 200 and "王网格" in page.get_data(as_text=True)


@pytest.mark.parametrize("nxt, where", [
    ("/admin/", "/admin/"), ("//evil.example/x", "/m/"), ("https://evil.example/", "/m/"),
    ("javascript:alert(1)", "/m/"),
    # Local paths that stay local.
    ("/grids/451102003001001?lang=en", "/grids/451102003001001?lang=en"),
    ("/planner?q=%E6%B1%9F%E5%8D%97", "/planner?q=%E6%B1%9F%E5%8D%97"),
    # Browsers drop tabs and newlines and read a backslash as a slash: all become //host.
    ("/\tevil.example.com", "/m/"), ("/\t/evil.example.com", "/m/"),
    ("\t//evil.example.com", "/m/"), ("/\\evil.example.com", "/m/"),
    ("/\n/evil.example.com", "/m/"), ("/\r/evil.example.com", "/m/"),
    ("\\\\evil.example.com", "/m/"), ("\\/evil.example.com", "/m/"),
    (" //evil.example.com", "/m/"), ("/ /evil.example.com", "/m/"),
    ("/\u3000/evil.example.com", "/m/"), ("/\u202e/evil.example.com", "/m/"),
    ("/\x00/evil.example.com", "/m/"),
    # Encoded once more than the query string decodes: refused in case something does.
    ("/%2F%2Fevil.example.com", "/m/"), ("/%2f/evil.example.com", "/m/"),
    ("/%09/evil.example.com", "/m/"), ("/%5Cevil.example.com", "/m/"),
    ("/%252F%252Fevil.example.com", "/m/"),
    # Schemes and hosts in every spelling.
    ("HTTPS://evil.example/", "/m/"), ("http:evil.example", "/m/"),
    ("JavaScript:alert(1)", "/m/"), ("data:text/html,x", "/m/"), ("evil.example", "/m/"),
    ("///evil.example.com", "/m/"), ("", "/m/"),
])
def test_login_goes_only_to_local_next_pages(public_client, nxt, where):
    token = csrf_token(public_client.get("/login"))
    r = public_client.post("/login", query_string={"next": nxt}, data={
        "csrf_token": token, "username": "admin", "password": PASSWORDS["admin"]})
    assert r.status_code == 302 and r.headers["Location"] == where


def test_login_without_csrf_token_is_400(public_client):
    r = public_client.post("/login", data={"username": "gw", "password": PASSWORDS["gw"]})
    assert r.status_code == 400
    assert public_client.get("/m/").status_code == 302


def test_a_no_password_account_cannot_log_in(app, hemei):
    hemei.accounts.add_user("tokenonly", "grid_worker", grids=[XIALIANG_GRID])
    client = app.test_client()
    assert login(client, "gw").status_code == 302  # the form works for others
    client = app.test_client()
    assert login(client, "tokenonly", "").status_code == 401
    assert login(client, "tokenonly", "anything-at-all").status_code == 401


# ----------------------------------------------------------------------------- logout


def test_logout_needs_a_post_with_the_csrf_token(app):
    client, token = logged_in(app, "gw")
    assert client.get("/logout").status_code == 405
    r = client.post("/logout")
    assert r.status_code == 400  # no token: another site cannot log you out
    assert client.get("/m/").status_code == 200
    r = client.post("/logout", data={"csrf_token": token})
    assert r.status_code == 302
    after = client.get("/m/")
    assert after.status_code == 302 and after.headers["Location"].startswith("/login")


# -------------------------------------------------------------------- expired sessions


@pytest.fixture
def later(monkeypatch):
    """``later(hours)`` moves the signing clock on, so every session cookie and CSRF
    token issued so far is that much older (a forged old session)."""
    import itsdangerous.timed

    real = time.time

    def jump(hours: float):
        monkeypatch.setattr(itsdangerous.timed, "time",
                            SimpleNamespace(time=lambda: real() + hours * 3600))
    return jump


MONTH = 32 * 24  # hours: past any session lifetime the app could have


def test_an_expired_session_redirects_pages_to_login(app, later):
    client, _ = logged_in(app, "admin")
    assert client.get("/admin/").status_code == 200
    later(MONTH)
    r = client.get("/admin/")
    assert r.status_code == 302
    assert r.headers["Location"].startswith("/login?next=/admin/")


def test_a_session_expires_after_12_hours(app, later):
    client, _ = logged_in(app, "admin")
    later(13)
    assert client.get("/admin/").status_code == 302


def test_the_session_cookie_is_samesite_lax_and_httponly(app):
    client = app.test_client()
    r = login(client, "gw")
    cookie = next(h for h in r.headers.getlist("Set-Cookie") if h.startswith("session="))
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_an_expired_session_posting_a_form_is_refused_and_writes_nothing(app, hemei, later):
    client, token = logged_in(app, "admin")
    later(MONTH)
    r = client.post("/admin/orgs", data={"csrf_token": token, "name": "过期单位",
                                         "kind": "crew"})
    assert 400 <= r.status_code < 500
    assert "过期单位" not in [o["name"] for o in hemei.accounts.orgs()]
    html = r.get_data(as_text=True)
    assert "expired" in html  # says what happened rather than dropping it silently


def test_an_expired_session_posting_a_form_is_401(app, later):
    client, token = logged_in(app, "admin")
    later(MONTH)
    r = client.post("/admin/orgs", data={"csrf_token": token, "name": "过期单位",
                                         "kind": "crew"})
    assert r.status_code == 401
    assert "log in again" in r.get_data(as_text=True)


def test_a_lost_session_cookie_posting_a_form_is_refused(app, hemei):
    client, token = logged_in(app, "admin")
    client.delete_cookie("session")
    r = client.post("/admin/orgs", data={"csrf_token": token, "name": "无会话单位",
                                         "kind": "crew"})
    assert 400 <= r.status_code < 500
    assert "无会话单位" not in [o["name"] for o in hemei.accounts.orgs()]


@pytest.fixture
def no_csrf_app(seeded_template, tmp_path):
    """The app with CSRF checks off, to reach the views' own checks directly."""
    from webapp import create_app

    inst = tmp_path / "nocsrf"
    shutil.copytree(seeded_template, inst)
    app = create_app({"TESTING": True, "INSTANCE": str(inst), "TILES": "none",
                      "WTF_CSRF_ENABLED": False})
    yield app
    app.extensions["hemei"].store.dispose()


def test_a_form_post_without_a_session_is_401_with_a_message(no_csrf_app):
    client = no_csrf_app.test_client()
    r = client.post("/admin/orgs", data={"name": "匿名单位", "kind": "crew"})
    assert r.status_code == 401
    assert "log in again" in r.get_data(as_text=True)
    orgs = [o["name"] for o in no_csrf_app.extensions["hemei"].accounts.orgs()]
    assert "匿名单位" not in orgs


# ----------------------------------------------------------------------------- tokens


@pytest.mark.parametrize("header", [
    "Bearer hm_not-a-real-token", "Bearer ", "bearer hm_" + "x" * 43,
])
def test_unknown_tokens_are_401(public_client, header):
    r = public_client.get("/api/v1/me", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.get_json()["error"]["code"] == "unauthorized"


def test_api_writes_need_a_token_not_a_session(app, hemei):
    client, _ = logged_in(app, "admin")
    n = hemei.store.list_cases(limit=1)[1]
    r = client.post("/api/v1/issues", json={"category": "parking", "lon": 111.57,
                                            "lat": 24.40, "description": "x"})
    assert r.status_code == 401 and "token" in r.get_json()["error"]["message"]
    r = client.post("/api/v1/issues", headers={"Authorization": "Basic YWRtaW46eA=="},
                    json={"category": "parking", "lon": 111.57, "lat": 24.40,
                          "description": "x"})
    assert r.status_code == 401
    assert hemei.store.list_cases(limit=1)[1] == n


def test_cli_user_and_token_lifecycle(app, instance):
    api = app.test_client()
    r = cli(["user", "add", "gw9", "--role", "grid_worker", "--grid", XIALIANG_GRID,
             "--display-name", "周网格", "--no-password"], instance)
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    assert created["role"] == "grid_worker" and created["grids"] == [XIALIANG_GRID]

    r = cli(["token", "create", "gw9", "--label", "phone"], instance)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("hm_") and len(token) > 40
    me = api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.get_json()["username"] == "gw9" and me.get_json()["grids"] == [XIALIANG_GRID]
    # The token is a working grid worker's token: a check-in in the grid is accepted.
    hemei = app.extensions["hemei"]
    p = hemei.layers["grid"].set_index("code").loc[XIALIANG_GRID].geometry \
        .representative_point()
    r = api.post("/api/v1/checkins", headers={"Authorization": f"Bearer {token}"},
                 json={"lon": p.x, "lat": p.y})
    assert r.status_code == 201 and r.get_json()["grid_code"] == XIALIANG_GRID

    r = cli(["token", "revoke", token[:10]], instance)
    assert r.returncode == 0 and "revoked 1 token(s)" in r.stdout
    r = api.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert "revoked" in r.get_json()["error"]["message"]
    again = cli(["token", "revoke", token[:10]], instance)
    assert again.returncode == 1 and "revoked 0 token(s)" in again.stdout


@pytest.mark.parametrize("args, message", [
    (["user", "add", "gwx", "--role", "grid_worker", "--grid", "451102003001999",
      "--no-password"], "unknown grid code(s): 451102003001999"),
    (["token", "create", "nobody"], "no user 'nobody'"),
])
def test_cli_errors_are_clear_and_change_nothing(instance, args, message):
    before = db_rows(instance, "SELECT username FROM users ORDER BY id")
    r = cli(args, instance)
    assert r.returncode != 0
    assert r.stderr.startswith("error:") and message in r.stderr
    assert "Traceback" not in r.stderr
    assert db_rows(instance, "SELECT username FROM users ORDER BY id") == before


# ------------------------------------------------------------------------ admin pages


def test_admin_pages_need_a_login(public_client):
    r = public_client.get("/admin/")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")


@pytest.mark.parametrize("username", ["gw", "crew", "planner"])
def test_non_admins_get_403_on_admin_pages(app, hemei, username):
    client, token = logged_in(app, username)
    r = client.get("/admin/")
    assert r.status_code == 403
    assert "admin" in r.get_data(as_text=True)
    r = client.post("/admin/orgs", data={"csrf_token": token, "name": "越权单位",
                                         "kind": "crew"})
    assert r.status_code == 403
    r = client.post("/admin/users", data={"csrf_token": token, "username": "sneaky",
                                          "role": "admin", "password": "sneaky-pass-1"})
    assert r.status_code == 403
    gw2 = hemei.accounts.by_username("gw2")
    r = client.post(f"/admin/users/{gw2.id}/assign",
                    data={"csrf_token": token, "grids": [XIALIANG_GRID]})
    assert r.status_code == 403
    assert "越权单位" not in [o["name"] for o in hemei.accounts.orgs()]
    assert "sneaky" not in [u.username for u in hemei.accounts.all()]
    assert hemei.accounts.get(gw2.id).grids == gw2.grids


def test_admin_adds_an_org_and_a_user_and_assigns_grids(app, hemei, instance):
    client, token = logged_in(app, "admin")
    page = client.get("/admin/")
    assert page.status_code == 200 and "王网格" in page.get_data(as_text=True)
    grids = sorted(hemei.layers["grid"]["code"])

    r = client.post("/admin/orgs", data={"csrf_token": token, "name": "新城物业",
                                         "kind": "property"})
    assert r.status_code == 302
    org = hemei.accounts.org_by_name("新城物业")
    assert org["kind"] == "property"
    assert "新城物业" in client.get("/admin/").get_data(as_text=True)
    dup = client.post("/admin/orgs", data={"csrf_token": token, "name": "新城物业",
                                           "kind": "property"})
    assert dup.status_code == 409

    r = client.post("/admin/users", data={
        "csrf_token": token, "username": "gw3", "display_name": "孙网格",
        "password": "gw3-pass-123", "role": "grid_worker", "grids": grids[:2]})
    assert r.status_code == 302
    user = hemei.accounts.by_username("gw3")
    assert user.role == "grid_worker" and user.grids == grids[:2]
    stored = db_rows(instance, "SELECT password_hash FROM users WHERE username = 'gw3'")[0][0]
    assert stored.startswith("scrypt$") and "gw3-pass-123" not in stored
    assert login(app.test_client(), "gw3", "gw3-pass-123").status_code == 302

    r = client.post(f"/admin/users/{user.id}/assign", data={
        "csrf_token": token, "grids": [grids[5]], "org_id": str(org["id"])})
    assert r.status_code == 302
    user = hemei.accounts.get(user.id)
    assert user.grids == [grids[5]] and user.org_id == org["id"]

    bad = client.post(f"/admin/users/{user.id}/assign", data={
        "csrf_token": token, "grids": ["451102003001999"]})
    assert bad.status_code == 400
    assert "451102003001999" in bad.get_data(as_text=True)
    assert hemei.accounts.get(user.id).grids == [grids[5]]


@pytest.mark.parametrize("form, status", [
    ({"username": "gw4", "role": "grid_worker", "password": "short"}, 400),
    ({"username": "gw4", "role": "grid_worker"}, 400),  # a grid worker needs grids
    ({"username": "gw4", "role": "grid_worker", "grids": ["451102003001999"]}, 400),
    ({"username": "gw4", "role": "emperor"}, 400),
    ({"username": "gw", "role": "planner", "area_code": "451102003"}, 409),
    ({"username": "crew4", "role": "field_staff"}, 400),  # field staff need an org
])
def test_admin_bad_user_forms_are_4xx_and_write_nothing(app, hemei, form, status):
    client, token = logged_in(app, "admin")
    before = [(u.username, u.role) for u in hemei.accounts.all()]
    r = client.post("/admin/users", data={"csrf_token": token, **form})
    assert r.status_code == status
    assert 'role="alert"' in r.get_data(as_text=True)
    assert [(u.username, u.role) for u in hemei.accounts.all()] == before


@pytest.mark.parametrize("org_id", ["abc", "9999"])
def test_admin_add_user_with_a_bad_org_is_4xx(app, hemei, org_id):
    client, token = logged_in(app, "admin")
    r = client.post("/admin/users", data={"csrf_token": token, "username": "crew5",
                                          "role": "field_staff", "org_id": org_id})
    assert 400 <= r.status_code < 500
    assert "crew5" not in [u.username for u in hemei.accounts.all()]


@pytest.mark.parametrize("org_id", ["abc", "9999"])
def test_admin_assign_with_a_bad_org_is_4xx_and_changes_nothing(app, hemei, org_id):
    client, token = logged_in(app, "admin")
    gw2 = hemei.accounts.by_username("gw2")
    r = client.post(f"/admin/users/{gw2.id}/assign", data={
        "csrf_token": token, "grids": [XIALIANG_GRID], "org_id": org_id})
    assert 400 <= r.status_code < 500
    after = hemei.accounts.get(gw2.id)
    assert (after.grids, after.org_id) == (gw2.grids, gw2.org_id)


def test_admin_assign_for_an_unknown_user_is_404(app):
    client, token = logged_in(app, "admin")
    r = client.post("/admin/users/99999/assign", data={"csrf_token": token,
                                                       "grids": [XIALIANG_GRID]})
    assert r.status_code == 404
