"""Managing accounts once they exist, and the login's defences, over HTTP and the CLI:

- failed logins limited per client address and per username (429 with Retry-After);
- logging out ends the session on the server (a copied cookie stops working);
- deactivating / reactivating an account, resetting a password, listing and revoking API
  tokens, on /admin/ and with `hemei user …` / `hemei token list`;
- the admin forms' rules (a planner's area, case-insensitive usernames, a grid worker's
  last grid, field staff's organisation) and their wording;
- security headers, the Secure cookie setting and the database file's mode.
"""

from __future__ import annotations

import re
import sqlite3
import stat

import pytest

from tests.conftest import PASSWORDS
from tests.webapp.test_accounts import XIALIANG_GRID, cli, csrf_token, logged_in, login

RIGHT = PASSWORDS["gw"]


def client_at(app, address: str):
    """A browser at client address ``address``."""
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = address
    return c


def fail(client, username: str = "gw", times: int = 1) -> list[int]:
    return [login(client, username, "wrong-password").status_code for _ in range(times)]


# ------------------------------------------------------------------- open redirect, raw


def test_the_testers_open_redirect_goes_to_the_default_page(public_client):
    token = csrf_token(public_client.get("/login"))
    r = public_client.post("/login?next=/%09/evil.example.com", data={
        "csrf_token": token, "username": "gw", "password": RIGHT})
    assert r.status_code == 302 and r.headers["Location"] == "/m/"


# ----------------------------------------------------------------- failed-login limit


def test_ten_failures_from_one_client_then_even_the_right_password_is_429(app):
    c = client_at(app, "10.1.1.1")
    assert fail(c, times=10) == [401] * 10
    r = login(c, "gw", RIGHT)
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 15 * 60
    html = r.get_data(as_text=True)
    assert 'id="login-throttled"' in html and 'role="alert"' in html
    assert "登录失败次数过多" in html and "15 分钟" in html  # Chinese by default
    assert c.get("/m/").status_code == 302  # not logged in
    en = c.post("/login?lang=en", data={"csrf_token": csrf_token(c.get("/login")),
                                        "username": "gw", "password": RIGHT})
    assert en.status_code == 429 and "Too many failed logins" in en.get_data(as_text=True)


def test_the_limit_per_address_covers_every_username(app):
    c = client_at(app, "10.1.1.2")
    for i in range(10):
        assert fail(c, f"nobody{i}") == [401]  # password spraying over usernames
    assert login(c, "gw2", PASSWORDS["gw2"]).status_code == 429
    # Another client is not affected by this one's failures.
    assert login(client_at(app, "10.1.1.3"), "gw2", PASSWORDS["gw2"]).status_code == 302


def test_the_limit_per_username_covers_every_address(app):
    for i in range(10):
        assert fail(client_at(app, f"10.2.0.{i}")) == [401]
    r = login(client_at(app, "10.2.0.99"), "GW", "another-guess")  # any case
    assert r.status_code == 429 and "Retry-After" in r.headers
    assert login(client_at(app, "10.2.0.98"), "gw", RIGHT).status_code == 429
    assert login(client_at(app, "10.2.0.97"), "gw2", PASSWORDS["gw2"]).status_code == 302


def test_a_success_resets_nothing_for_other_clients(app):
    attacker = client_at(app, "10.3.0.1")
    assert fail(attacker, times=9) == [401] * 9
    # The real user logs in from elsewhere meanwhile.
    assert login(client_at(app, "10.3.0.2"), "gw", RIGHT).status_code == 302
    assert fail(attacker) == [401]  # the tenth failure
    assert login(attacker, "gw", "guess-11").status_code == 429


def test_the_limit_lifts_after_15_minutes(app, monkeypatch):
    import webapp.auth

    clock = [1000.0]
    monkeypatch.setattr(webapp.auth, "_clock", lambda: clock[0])  # the shared count's clock
    c = client_at(app, "10.4.0.1")
    assert fail(c, times=10) == [401] * 10
    r = login(c, "gw", RIGHT)
    assert r.status_code == 429 and r.headers["Retry-After"] == "900"
    clock[0] += 600
    assert login(c, "gw", RIGHT).headers["Retry-After"] == "300"
    clock[0] += 301
    assert login(c, "gw", RIGHT).status_code == 302


def test_the_limit_is_a_setting(instance_maker, tmp_path):
    from gis.errors import HemeiError

    app = instance_maker.new_app(tmp_path / "limit3", LOGIN_LIMIT="3")
    try:
        c = client_at(app, "10.5.0.1")
        assert fail(c, times=3) == [401] * 3
        assert login(c, "gw", RIGHT).status_code == 429
    finally:
        instance_maker.close(app)
    with pytest.raises(HemeiError, match="LOGIN_LIMIT"):
        instance_maker.new_app(tmp_path / "bad", LOGIN_LIMIT="ten")


# -------------------------------------------------------------- logout ends the session


def test_a_cookie_copied_before_logout_no_longer_opens_admin(app):
    client, token = logged_in(app, "admin")
    copied = client.get_cookie("session").value
    assert client.get("/admin/").status_code == 200
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    thief = app.test_client()
    thief.set_cookie("session", copied)
    r = thief.get("/admin/")
    assert r.status_code == 302 and r.headers["Location"].startswith("/login")
    # Logging in again works, and that new session is valid.
    client, _ = logged_in(app, "admin")
    assert client.get("/admin/").status_code == 200


def test_logout_ends_the_users_other_sessions_too(app):
    phone, _ = logged_in(app, "gw")
    desk, token = logged_in(app, "gw")
    desk.post("/logout", data={"csrf_token": token})
    assert phone.get("/m/").status_code == 302
    other, _ = logged_in(app, "gw2")  # another user's session is untouched
    assert other.get("/m/").status_code == 200


# ------------------------------------------------------------ deactivate / reactivate


def test_admin_deactivates_and_reactivates_a_user(app, hemei, people, auth):
    gw = hemei.accounts.by_username("gw")
    session, _ = logged_in(app, "gw")
    api = app.test_client()
    assert api.get("/api/v1/me", headers=auth("gw")).status_code == 200  # cached now
    admin, token = logged_in(app, "admin")
    page = admin.get("/admin/").get_data(as_text=True)
    assert f'action="/admin/users/{gw.id}/active"' in page

    r = admin.post(f"/admin/users/{gw.id}/active", data={"csrf_token": token, "active": "0"})
    assert r.status_code == 302
    assert not hemei.accounts.get(gw.id).active
    page = admin.get("/admin/").get_data(as_text=True)
    assert "gw 已停用" in page  # the flashed message
    assert re.search(r'data-username="gw" data-active="0"', page)
    # At once: the open session, the (cached) token and a new login all stop working.
    assert session.get("/m/").status_code == 302
    r = api.get("/api/v1/me", headers=auth("gw"))
    assert r.status_code == 401
    assert login(app.test_client(), "gw").status_code == 401

    r = admin.post(f"/admin/users/{gw.id}/active", data={"csrf_token": token, "active": "1"})
    assert r.status_code == 302 and hemei.accounts.get(gw.id).active
    assert api.get("/api/v1/me", headers=auth("gw")).status_code == 200
    assert session.get("/m/").status_code == 302  # the old session stays ended
    assert login(app.test_client(), "gw").status_code == 302


def test_deactivation_reaches_a_token_cached_by_another_worker(app, instance_maker,
                                                              instance, auth):
    """Two apps over one database stand for two gunicorn workers: the accounts stamp
    tells the other one at once."""
    other = instance_maker.app(instance)
    try:
        api = other.test_client()
        assert api.get("/api/v1/me", headers=auth("gw2")).status_code == 200
        gw2 = app.extensions["hemei"].accounts.by_username("gw2")
        admin, token = logged_in(app, "admin")
        admin.post(f"/admin/users/{gw2.id}/active", data={"csrf_token": token, "active": "0"})
        assert api.get("/api/v1/me", headers=auth("gw2")).status_code == 401
    finally:
        other.extensions["hemei"].store.dispose()


def test_an_admin_cannot_deactivate_themselves(app, hemei):
    me = hemei.accounts.by_username("admin")
    admin, token = logged_in(app, "admin")
    r = admin.post(f"/admin/users/{me.id}/active", data={"csrf_token": token, "active": "0"})
    assert r.status_code == 400
    assert "不能停用您自己的账号" in r.get_data(as_text=True)
    assert hemei.accounts.get(me.id).active
    assert admin.get("/admin/").status_code == 200


@pytest.mark.parametrize("form, status", [
    ({"active": "maybe"}, 400), ({}, 400),
])
def test_deactivation_form_needs_a_clear_value(app, hemei, form, status):
    gw = hemei.accounts.by_username("gw")
    admin, token = logged_in(app, "admin")
    r = admin.post(f"/admin/users/{gw.id}/active", data={"csrf_token": token, **form})
    assert r.status_code == status and hemei.accounts.get(gw.id).active


def test_account_actions_need_an_admin_and_the_csrf_token(app, hemei, people):
    gw2 = hemei.accounts.by_username("gw2")
    [tid] = [t["id"] for t in hemei.accounts.tokens(gw2.id)]
    posts = [(f"/admin/users/{gw2.id}/active", {"active": "0"}),
             (f"/admin/users/{gw2.id}/password", {"password": "taken-over-1"}),
             (f"/admin/users/{gw2.id}/tokens/{tid}/revoke", {})]
    gw, token = logged_in(app, "gw")
    for url, form in posts:
        assert gw.post(url, data={"csrf_token": token, **form}).status_code == 403
    admin, _ = logged_in(app, "admin")
    for url, form in posts:
        assert admin.post(url, data=form).status_code == 400  # no CSRF token
    after = hemei.accounts.get(gw2.id)
    assert after.active and login(app.test_client(), "gw2").status_code == 302
    assert hemei.accounts.tokens(gw2.id)[0]["revoked_at"] is None


@pytest.mark.parametrize("url", ["/admin/users/99999/active", "/admin/users/99999/password"])
def test_account_actions_on_an_unknown_user_are_404(app, url):
    admin, token = logged_in(app, "admin")
    r = admin.post(url, data={"csrf_token": token, "active": "0",
                              "password": "whatever-123"})
    assert r.status_code == 404


# ------------------------------------------------------------------ password reset


def test_admin_resets_a_password_and_the_users_sessions_end(app, hemei):
    gw = hemei.accounts.by_username("gw")
    session, _ = logged_in(app, "gw")
    admin, token = logged_in(app, "admin")
    short = admin.post(f"/admin/users/{gw.id}/password",
                       data={"csrf_token": token, "password": "short"})
    assert short.status_code == 400
    assert "密码至少 8 个字符" in short.get_data(as_text=True)
    assert login(app.test_client(), "gw").status_code == 302  # unchanged
    r = admin.post(f"/admin/users/{gw.id}/password",
                   data={"csrf_token": token, "password": "new-gw-pass-1"})
    assert r.status_code == 302
    assert "gw 的密码已修改" in admin.get("/admin/").get_data(as_text=True)
    assert session.get("/m/").status_code == 302
    assert login(app.test_client(), "gw").status_code == 401
    assert login(app.test_client(), "gw", "new-gw-pass-1").status_code == 302


def test_an_admin_resetting_their_own_password_stays_logged_in(app, hemei):
    me = hemei.accounts.by_username("admin")
    other_tab, _ = logged_in(app, "admin")
    admin, token = logged_in(app, "admin")
    r = admin.post(f"/admin/users/{me.id}/password",
                   data={"csrf_token": token, "password": "new-admin-pass"})
    assert r.status_code == 302
    assert admin.get("/admin/").status_code == 200
    assert other_tab.get("/admin/").status_code == 302


# ------------------------------------------------------------------------- tokens


def test_admin_lists_and_revokes_a_users_tokens(app, hemei, people, auth):
    gw = hemei.accounts.by_username("gw")
    [tok] = hemei.accounts.tokens(gw.id)
    api = app.test_client()
    assert api.get("/api/v1/me", headers=auth("gw")).status_code == 200
    admin, token = logged_in(app, "admin")
    page = admin.get("/admin/").get_data(as_text=True)
    assert f'data-prefix="{tok["prefix"]}"' in page
    assert people["tokens"]["gw"] not in page  # never the token itself
    url = f"/admin/users/{gw.id}/tokens/{tok['id']}/revoke"
    assert f'action="{url}"' in page
    gw2 = hemei.accounts.by_username("gw2")
    wrong = admin.post(f"/admin/users/{gw2.id}/tokens/{tok['id']}/revoke",
                       data={"csrf_token": token})
    assert wrong.status_code == 404  # not gw2's token
    assert api.get("/api/v1/me", headers=auth("gw")).status_code == 200
    assert admin.post(url, data={"csrf_token": token}).status_code == 302
    assert api.get("/api/v1/me", headers=auth("gw")).status_code == 401
    page = admin.get("/admin/").get_data(as_text=True)
    assert f'action="{url}"' not in page  # no button for a revoked token


# ---------------------------------------------------------------------------- CLI


def test_cli_deactivate_activate_passwd_and_token_list(app, instance, people, auth):
    api = app.test_client()
    session, _ = logged_in(app, "gw")
    assert api.get("/api/v1/me", headers=auth("gw")).status_code == 200

    r = cli(["user", "deactivate", "gw"], instance)
    assert r.returncode == 0, r.stderr
    assert "deactivated gw" in r.stdout and "1 API token(s) no longer work" in r.stdout
    assert api.get("/api/v1/me", headers=auth("gw")).status_code == 401
    assert session.get("/m/").status_code == 302
    listed = cli(["user", "list"], instance)
    assert re.search(r"^gw\tgrid_worker\t.*\tdeactivated$", listed.stdout, re.M)
    tokens = cli(["token", "list", "gw"], instance)
    assert tokens.returncode == 0
    prefix = people["tokens"]["gw"][:10]
    assert re.fullmatch(rf"{prefix}\tgw\ttests\t\S+ \S+\tuser deactivated\n", tokens.stdout)

    r = cli(["user", "activate", "gw"], instance)
    assert r.returncode == 0 and "activated gw" in r.stdout
    assert api.get("/api/v1/me", headers=auth("gw")).status_code == 200

    r = cli(["user", "passwd", "gw", "--password", "cli-new-pass-1"], instance)
    assert r.returncode == 0, r.stderr
    assert login(app.test_client(), "gw").status_code == 401
    assert login(app.test_client(), "gw", "cli-new-pass-1").status_code == 302

    cli(["token", "revoke", prefix], instance)
    everyone = cli(["token", "list"], instance).stdout.splitlines()
    assert len(everyone) == len(people["tokens"])
    assert any(line.startswith(f"{prefix}\tgw\t") and "\trevoked " in line
               for line in everyone)
    assert all(people["tokens"]["gw"] not in line for line in everyone)


@pytest.mark.parametrize("args, message", [
    (["user", "deactivate", "nobody"], "no user 'nobody'"),
    (["user", "activate", "nobody"], "no user 'nobody'"),
    (["user", "passwd", "nobody", "--password", "long-enough-1"], "no user 'nobody'"),
    (["user", "passwd", "gw", "--password", "short"], "at least 8 characters"),
    (["token", "list", "nobody"], "no user 'nobody'"),
    (["user", "add", "Gw", "--role", "grid_worker", "--grid", XIALIANG_GRID,
      "--no-password"], "user 'gw' exists; usernames are compared without regard to case"),
    (["user", "add", "plan2", "--role", "planner", "--no-password"],
     "a planner needs an area"),
    (["user", "add", "plan2", "--role", "planner", "--area", "nonsense", "--no-password"],
     "area 'nonsense' is not a street or community code"),
])
def test_cli_account_errors_are_one_line_and_change_nothing(instance, args, message):
    def state():
        con = sqlite3.connect(instance / "hemei.sqlite3")
        try:
            return con.execute("SELECT username, password_hash, active FROM users "
                               "ORDER BY id").fetchall()
        finally:
            con.close()

    before = state()
    r = cli(args, instance)
    assert r.returncode != 0
    assert r.stderr.startswith("error:") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert state() == before


def test_cli_planner_with_a_community_area(instance):
    r = cli(["user", "add", "plan3", "--role", "planner", "--area", "451102003001",
             "--no-password"], instance)
    assert r.returncode == 0, r.stderr
    assert '"area_code": "451102003001"' in r.stdout


# ------------------------------------------------------------------ admin form rules


@pytest.mark.parametrize("area, status, words", [
    ("nonsense", 400, "nonsense is not the code of a street or community"),
    ("", 400, "A planner needs an area"),
    ("451102003999", 400, "451102003999 is not the code"),
    ("451102003", 302, None),
    ("451102003002", 302, None),
])
def test_a_planners_area_must_be_a_street_or_community(app, hemei, area, status, words):
    admin, token = logged_in(app, "admin")
    r = admin.post("/admin/users?lang=en", data={
        "csrf_token": token, "username": "plan9", "role": "planner",
        "password": "plan9-pass-1", "area_code": area})
    assert r.status_code == status
    names = [u.username for u in hemei.accounts.all()]
    if words:
        assert words in r.get_data(as_text=True) and "plan9" not in names
    else:
        assert hemei.accounts.by_username("plan9").area_code == area


@pytest.mark.parametrize("username", ["ADMIN", "Gw", "gW2", " crew "])
def test_usernames_are_unique_without_regard_to_case(app, hemei, username):
    admin, token = logged_in(app, "admin")
    before = len(hemei.accounts.all())
    r = admin.post("/admin/users?lang=en", data={
        "csrf_token": token, "username": username, "role": "admin",
        "password": "another-pass-1"})
    assert r.status_code == 409
    assert "is already taken" in r.get_data(as_text=True)
    assert len(hemei.accounts.all()) == before


def test_existing_username_clashes_are_reported(app, instance):
    # Made before the rule, straight in the database.
    con = sqlite3.connect(instance / "hemei.sqlite3")
    con.execute("INSERT INTO users (username, display_name, role, active, created_at) "
                "VALUES ('Admin', 'x', 'admin', 1, '2026-01-01 00:00:00')")
    con.commit()
    con.close()
    admin, _ = logged_in(app, "admin")
    html = admin.get("/admin/").get_data(as_text=True)
    assert 'id="username-clashes"' in html and "Admin / admin" in html
    listed = cli(["user", "list"], instance)
    assert "warning: usernames Admin, admin differ only in case" in listed.stderr


def test_assign_keeps_a_grid_workers_last_grid(app, hemei):
    gw = hemei.accounts.by_username("gw")
    admin, token = logged_in(app, "admin")
    r = admin.post(f"/admin/users/{gw.id}/assign?lang=en", data={"csrf_token": token})
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    assert "A grid worker needs at least one grid." in html and "--grid" not in html
    assert hemei.accounts.get(gw.id).grids == gw.grids


def test_assign_keeps_field_staffs_organisation(app, hemei):
    crew = hemei.accounts.by_username("crew")
    admin, token = logged_in(app, "admin")
    r = admin.post(f"/admin/users/{crew.id}/assign?lang=en",
                   data={"csrf_token": token, "org_id": ""})
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    assert "Field staff belong to an organisation" in html and "--org" not in html
    assert hemei.accounts.get(crew.id).org_id == crew.org_id


def test_a_refused_assignment_writes_nothing_at_all(app, hemei, people):
    crew = hemei.accounts.by_username("crew")
    admin, token = logged_in(app, "admin")
    r = admin.post(f"/admin/users/{crew.id}/assign", data={
        "csrf_token": token, "grids": [XIALIANG_GRID], "org_id": ""})
    assert r.status_code == 400
    after = hemei.accounts.get(crew.id)
    assert (after.grids, after.org_id) == (crew.grids, crew.org_id)


@pytest.mark.parametrize("form, english", [
    ({"username": "gw4", "role": "grid_worker", "password": "gw4-pass-12"},
     "A grid worker needs at least one grid."),
    ({"username": "crew4", "role": "field_staff", "password": "crew4-pass-1"},
     "Field staff belong to an organisation: choose one."),
    ({"username": "x", "role": "emperor"}, "Choose a role."),
    ({"username": "x", "role": "admin", "password": "short"},
     "The password must be at least 8 characters long."),
    ({"username": "", "role": "admin"}, "The username must be 1 to 64 characters long."),
])
def test_admin_messages_name_no_cli_option_and_are_translatable(app, form, english):
    admin, token = logged_in(app, "admin")
    r = admin.post("/admin/users?lang=en", data={"csrf_token": token, **form})
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    assert english in html
    assert "--" not in re.search(r'role="alert">([^<]*)<', html).group(1)
    assert "role must be one of" not in html


@pytest.mark.parametrize("form, chinese", [
    ({"username": "gw4", "role": "grid_worker", "password": "gw4-pass-12"},
     "网格员至少要负责一个网格。"),
    ({"username": "crew4", "role": "field_staff", "password": "crew4-pass-1"},
     "处置人员须属于一个单位，请选择单位。"),
    ({"username": "x", "role": "emperor"}, "请选择角色。"),
    ({"username": "Admin", "role": "admin", "password": "admin2-pass-1"},
     "用户名 admin 已被使用（用户名不区分大小写）。"),
])
def test_admin_messages_are_chinese_on_the_chinese_page(app, form, chinese):
    admin, token = logged_in(app, "admin")
    r = admin.post("/admin/users", data={"csrf_token": token, **form})
    assert 400 <= r.status_code < 500
    alert = re.search(r'role="alert">([^<]*)<', r.get_data(as_text=True)).group(1)
    assert alert == chinese


def test_role_and_organisation_type_menus_show_names_not_keys(app):
    admin, _ = logged_in(app, "admin")
    zh = admin.get("/admin/").get_data(as_text=True)
    assert '<option value="grid_worker">网格员</option>' in zh
    assert '<option value="property">物业公司</option>' in zh
    assert '<option value="admin">admin</option>' not in zh
    assert 'data-kind="crew">维修作业队</span>' in zh  # the organisations list too
    en = admin.get("/admin/?lang=en").get_data(as_text=True)
    assert '<option value="field_staff">Field staff</option>' in en
    assert '<option value="partner">Partner unit</option>' in en
    assert '<option value="451102003001">' in en  # the area menu lists communities


# ------------------------------------------------------- headers, cookies, file modes

SECURITY_HEADERS = {"X-Frame-Options": "DENY",
                    "Content-Security-Policy": "frame-ancestors 'none'",
                    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


@pytest.mark.parametrize("url", ["/", "/login", "/admin/", "/api/v1/layers",
                                 "/api/v1/coverage", "/nowhere"])
def test_every_response_carries_the_security_headers(public_client, url):
    r = public_client.get(url)
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, (url, name)


def test_a_view_that_sets_a_security_header_keeps_it_once(app):
    # Header names are case-insensitive: a view's own policy (here in lower case) is
    # neither replaced nor sent twice; the others are still added.
    app.add_url_rule("/own-csp", "own_csp", lambda: ("ok", 200, {
        "content-security-policy": "default-src 'none'"}))
    r = app.test_client().get("/own-csp")
    assert r.headers.getlist("Content-Security-Policy") == ["default-src 'none'"]
    assert r.headers.getlist("X-Frame-Options") == ["DENY"]
    assert r.headers["Referrer-Policy"] == "same-origin"


def test_the_map_page_keeps_its_inline_scripts(public_client):
    r = public_client.get("/")
    assert r.status_code == 200 and "<script>" in r.get_data(as_text=True)
    assert "script-src" not in r.headers["Content-Security-Policy"]


def test_admin_forms_cannot_be_framed(app):
    admin, _ = logged_in(app, "admin")
    r = admin.get("/admin/")
    assert r.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]


def _session_cookie(app) -> str:
    r = login(app.test_client(), "gw")
    return next(h for h in r.headers.getlist("Set-Cookie") if h.startswith("session="))


def test_the_session_cookie_is_secure_when_configured(app, instance_maker, tmp_path):
    assert "Secure" not in _session_cookie(app)
    secure = instance_maker.new_app(tmp_path / "https", SECURE_COOKIES="1")
    try:
        assert "; Secure" in _session_cookie(secure)
    finally:
        instance_maker.close(secure)


def test_a_bad_secure_cookies_value_is_refused(instance_maker, tmp_path):
    from gis.errors import HemeiError

    with pytest.raises(HemeiError, match="SECURE_COOKIES"):
        instance_maker.new_app(tmp_path / "typo", SECURE_COOKIES="yess")


def test_the_secure_cookie_setting_in_the_config_file(seeded_template, tmp_path):
    import shutil

    from webapp import create_app

    inst = tmp_path / "toml"
    shutil.copytree(seeded_template, inst)
    (inst / "hemei.toml").write_text("secure_cookies = true\nlogin_limit = 5\n",
                                     encoding="utf-8")
    app = create_app({"TESTING": True, "INSTANCE": str(inst), "TILES": "none"})
    try:
        assert app.config["SESSION_COOKIE_SECURE"] is True
        assert app.extensions["hemei_login_throttle"].limit == 5
    finally:
        app.extensions["hemei"].store.dispose()


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_instances_database_is_private(tmp_path, monkeypatch):
    from webapp import create_app

    monkeypatch.setenv("HEMEI_DEMO_CASES", "")
    inst = tmp_path / "fresh"
    app = create_app({"TESTING": True, "INSTANCE": str(inst), "TILES": "none"})
    try:
        assert _mode(inst / "hemei.sqlite3") == 0o600
        assert _mode(inst / "secret_key") == 0o600
        for extra in ("hemei.sqlite3-wal", "hemei.sqlite3-shm"):
            if (inst / extra).exists():
                assert _mode(inst / extra) == 0o600, extra
    finally:
        app.extensions["hemei"].store.dispose()


def test_a_database_made_by_user_add_is_private(tmp_path):
    inst = tmp_path / "cli-first"
    r = cli(["user", "add", "first", "--role", "admin", "--password", "first-pass-1"], inst)
    assert r.returncode == 0, r.stderr
    assert _mode(inst / "hemei.sqlite3") == 0o600


def test_databases_made_by_init_backup_and_restore_are_private(tmp_path):
    """The store makes its SQLite file owner-only whoever opens it first (init, restore,
    migrate-store …), and a backup holds the same names and phones."""
    inst = tmp_path / "by-init"
    r = cli(["init"], inst)
    assert r.returncode == 0, r.stderr
    assert _mode(inst / "hemei.sqlite3") == 0o600
    out = tmp_path / "copy.db"
    r = cli(["backup", str(out)], inst)
    assert r.returncode == 0, r.stderr
    assert _mode(out) == 0o600
    (inst / "hemei.sqlite3").unlink()
    r = cli(["restore", str(out), "--force"], inst)
    assert r.returncode == 0, r.stderr
    assert _mode(inst / "hemei.sqlite3") == 0o600
