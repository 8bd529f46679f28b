"""Behind a reverse proxy: the client's address and scheme from X-Forwarded-For/-Proto,
believed only from the addresses in TRUSTED_PROXIES (webapp/proxy.py).

Before, every request behind nginx had the proxy's address, so a few failed logins by
anyone locked every member of staff out for 15 minutes, and residents shared one form
limit. The served check (gunicorn, the access log) is in test_health.py.
"""

from __future__ import annotations

import pytest

from gis.settings import SettingsError
from tests.conftest import PASSWORDS
from tests.webapp.test_accounts import csrf_token
from webapp.proxy import ForwardedFor, parse_trusted


def _client(app, peer: str, forwarded: str | None = None, proto: str | None = None):
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = peer
    if forwarded is not None:
        c.environ_base["HTTP_X_FORWARDED_FOR"] = forwarded
    if proto is not None:
        c.environ_base["HTTP_X_FORWARDED_PROTO"] = proto
    return c


def _fail_login(client, username: str = "gw") -> int:
    token = csrf_token(client.get("/login"))
    return client.post("/login", data={"csrf_token": token, "username": username,
                                       "password": "wrong-password"}).status_code


# -- who the client is ----------------------------------------------------------------
@pytest.mark.parametrize("trusted, chain, client", [
    ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
    # What the client wrote itself (left of the address our proxy appended) is not believed.
    ("127.0.0.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"),
    # Two proxies of ours: the first address that is not one of them.
    ("127.0.0.1,10.0.0.0/8", "198.51.100.7, 10.1.2.3", "198.51.100.7"),
    ("127.0.0.1,10.0.0.0/8", "6.6.6.6,198.51.100.7,10.1.2.3", "198.51.100.7"),
    # Every hop trusted: the first one.
    ("*", "10.9.9.9, 10.1.2.3", "10.9.9.9"),
    # A hop that is not an address ends the walk at the last readable one.
    ("127.0.0.1,10.0.0.0/8", "198.51.100.7, unknown, 10.1.2.3", "10.1.2.3"),
    ("127.0.0.1", "garbage", "127.0.0.1"),
    ("127.0.0.1", "2001:db8::1", "2001:db8::1"),
])
def test_the_client_is_the_last_address_that_is_not_a_trusted_proxy(trusted, chain, client):
    assert ForwardedFor(None, trusted).client("127.0.0.1", [chain]) == client


@pytest.mark.parametrize("text", ["10.0.0.300", "localhost", "10.0.0.0/99", "1.2.3.4 5"])
def test_a_trusted_entry_that_is_no_address_is_refused(text):
    with pytest.raises(ValueError, match="is not an IP address or network"):
        parse_trusted(text)


@pytest.mark.parametrize("value", ["localhost", "10.0.0.0/8, nginx"])
def test_the_setting_refuses_what_is_no_address_naming_it(instance_maker, tmp_path, value):
    with pytest.raises(SettingsError, match="HEMEI_TRUSTED_PROXIES must be IP addresses"):
        instance_maker.new_app(tmp_path / "bad", TRUSTED_PROXIES=value)


# -- the login limit counts clients, not the proxy ------------------------------------
def test_behind_the_proxy_each_client_has_its_own_login_limit(instance_maker, tmp_path):
    app = instance_maker.new_app(tmp_path / "inst", LOGIN_LIMIT="2")
    try:
        # Four people behind the same local nginx, each mistyping their own password: none
        # is refused for the others' mistakes (before: 401 401 429 429).
        assert [_fail_login(_client(app, "127.0.0.1", f"198.51.100.{i}"), f"user{i}")
                for i in range(4)] == [401] * 4
        # One of them reaches their own limit (two), and only theirs …
        first = _client(app, "127.0.0.1", "198.51.100.0")
        assert [_fail_login(first, "user0"), _fail_login(first, "someone")] == [401, 429]
        ok = _client(app, "127.0.0.1", "198.51.100.1")
        token = csrf_token(ok.get("/login"))
        r = ok.post("/login", data={"csrf_token": token, "username": "admin",
                                    "password": PASSWORDS["admin"]})
        assert r.status_code == 302
    finally:
        instance_maker.close(app)


def test_a_client_cannot_forge_its_address(instance_maker, tmp_path):
    app = instance_maker.new_app(tmp_path / "inst", LOGIN_LIMIT="2")
    try:
        # Straight to the service from 203.0.113.9, a new X-Forwarded-For each time: the
        # header is not believed, so the limit still counts 203.0.113.9.
        codes = [_fail_login(_client(app, "203.0.113.9", f"198.51.100.{i}"), f"user{i}")
                 for i in range(3)]
        assert codes == [401, 401, 429]
    finally:
        instance_maker.close(app)


def test_with_no_trusted_proxy_the_headers_are_ignored(instance_maker, tmp_path):
    app = instance_maker.new_app(tmp_path / "inst", LOGIN_LIMIT="2", TRUSTED_PROXIES="none")
    try:
        codes = [_fail_login(_client(app, "127.0.0.1", f"198.51.100.{i}"), f"user{i}")
                 for i in range(3)]
        assert codes == [401, 401, 429]
        r = _client(app, "127.0.0.1", proto="https").get("/ogc/")
        assert r.get_json()["links"][0]["href"].startswith("http://")
    finally:
        instance_maker.close(app)


# -- the scheme ------------------------------------------------------------------------
def test_links_say_https_behind_a_trusted_https_proxy(app):
    r = _client(app, "127.0.0.1", "198.51.100.7", proto="https").get("/ogc/")
    hrefs = [link["href"] for link in r.get_json()["links"]]
    assert hrefs and all(h.startswith("https://") for h in hrefs)
    # The same header from anyone else changes nothing.
    r = _client(app, "203.0.113.9", proto="https").get("/ogc/")
    assert all(link["href"].startswith("http://") for link in r.get_json()["links"])
