"""The failed-login limit is one count for every worker of an instance (gis/throttle.py):
two apps made on the same instance folder (and database) are two gunicorn workers.

- failures on one worker count on the other, and the limit holds at exactly ``limit``
  across both, per client address and per username, with the wait in ``Retry-After``;
- a new app (a restart) still refuses, and after the window lets the user in;
- the table holds no username or client address in clear;
- a database error while checking or counting falls back to the worker's own count
  (neither a 500 nor everyone locked out);
- pruning is bounded; the login path is one SELECT and one INSERT;
- migration 0004 creates the table on a database at the previous head (0003).

On SQLite and, with ``HEMEI_TEST_PG_URL``, on PostGIS.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from gis.throttle import SqlFailureLog, login_failures
from tests.conftest import PASSWORDS
from tests.webapp.test_accounts import login

pytestmark = pytest.mark.backends("sqlite", "postgis")

LIMIT = 4
WINDOW = 15 * 60
RIGHT = PASSWORDS["gw"]


class Workers:
    """Apps over one instance folder and one database, made one after another: the
    workers of one instance (and, made after the others are gone, a restart)."""

    def __init__(self, instance_maker, folder):
        self.maker, self.folder = instance_maker, folder
        self.url = instance_maker.database_url()  # PostGIS: one database for them all
        self.apps: list = []

    def new(self, **config):
        from webapp import create_app

        cfg = {"TESTING": True, "INSTANCE": str(self.folder), "TILES": "none",
               "LOGIN_LIMIT": str(LIMIT), **config}
        if self.url:
            cfg["DATABASE_URL"] = self.url
        app = create_app(cfg)
        self.apps.append(app)
        return app

    def stop(self, app) -> None:
        app.extensions["hemei"].store.dispose()
        self.apps.remove(app)

    def close(self) -> None:
        for app in list(self.apps):
            self.stop(app)
        if self.url:
            self.maker.dbs.release(self.url)


@pytest.fixture
def workers(instance_maker, tmp_path):
    w = Workers(instance_maker, instance_maker.folder(tmp_path / "inst"))
    yield w
    w.close()


@pytest.fixture
def clock(monkeypatch):
    """The shared count's clock (seconds since the epoch), moved by the test."""
    import webapp.auth

    now = [datetime(2026, 11, 27, 8, 0).timestamp()]
    monkeypatch.setattr(webapp.auth, "_clock", lambda: now[0])
    return now


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def client_at(app, address: str):
    c = app.test_client()
    c.environ_base["REMOTE_ADDR"] = address
    return c


def attempt(app, address: str, username: str = "gw", password: str = "wrong-password"):
    return login(client_at(app, address), username, password)


def rows(app) -> list[dict]:
    engine = app.extensions["hemei"].store.engine
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(login_failures)).mappings()]


# ---------------------------------------------------------------- one count, all workers


def test_failures_on_one_worker_count_on_the_other(workers, clock):
    a, b = workers.new(), workers.new()
    # LIMIT failures from one address, alternating workers: none is refused early …
    codes = [attempt(w, "10.9.0.1", f"nobody{i}").status_code
             for i, w in enumerate([a, b] * (LIMIT // 2))]
    assert codes == [401] * LIMIT
    # … and the next attempt is refused on both, even with the right password (before:
    # each worker had counted only half, and let it through).
    for w in (a, b):
        r = attempt(w, "10.9.0.1", "gw", RIGHT)
        assert r.status_code == 429
        assert r.headers["Retry-After"] == str(WINDOW)
    # Refused attempts count nothing.
    assert len(rows(a)) == 2 * LIMIT


def test_the_limit_is_exactly_limit_across_workers(workers, clock):
    a, b = workers.new(), workers.new()
    for i in range(LIMIT - 1):
        assert attempt((a, b)[i % 2], "10.9.1.1").status_code == 401
    # limit − 1 failures: the right password still gets in (a success clears nothing).
    assert attempt(b, "10.9.1.1", "gw", RIGHT).status_code == 302
    assert attempt(a, "10.9.1.1").status_code == 401  # the limit-th failure
    clock[0] += 60
    r = attempt(b, "10.9.1.1", "gw", RIGHT)
    assert r.status_code == 429 and r.headers["Retry-After"] == str(WINDOW - 60)


def test_the_username_limit_holds_across_addresses_and_workers(workers, clock):
    a, b = workers.new(), workers.new()
    for i in range(LIMIT):
        assert attempt((a, b)[i % 2], f"10.9.2.{i}", "GW").status_code == 401  # any case
    r = attempt(a, "10.9.2.99", "gw", RIGHT)
    assert r.status_code == 429 and r.headers["Retry-After"] == str(WINDOW)
    # Another user, from another address, is not affected.
    assert attempt(b, "10.9.2.98", "gw2", PASSWORDS["gw2"]).status_code == 302


def test_a_restart_still_refuses_then_the_window_lets_the_user_in(workers, clock):
    a, b = workers.new(), workers.new()
    for i in range(LIMIT):
        assert attempt((a, b)[i % 2], "10.9.3.1").status_code == 401
    workers.stop(a)
    workers.stop(b)
    clock[0] += 100
    c = workers.new()  # every worker restarted: nothing in memory
    r = attempt(c, "10.9.3.1", "gw", RIGHT)
    assert r.status_code == 429 and r.headers["Retry-After"] == str(WINDOW - 100)
    html = r.get_data(as_text=True)
    assert 'id="login-throttled"' in html
    clock[0] += WINDOW - 100 - 1
    assert attempt(c, "10.9.3.1", "gw", RIGHT).headers["Retry-After"] == "1"
    clock[0] += 1
    assert attempt(c, "10.9.3.1", "gw", RIGHT).status_code == 302


def test_the_table_holds_no_username_or_address_in_clear(workers, clock):
    a = workers.new()
    assert attempt(a, "198.51.100.77", "wang.secret.name").status_code == 401
    got = rows(a)
    assert sorted(r["key_kind"] for r in got) == ["address", "username"]
    for r in got:
        assert re.fullmatch(r"[0-9a-f]{64}", r["key"])
        assert "198.51.100.77" not in str(r) and "wang" not in str(r)
        assert isinstance(r["at"], datetime) and r["at"].tzinfo is None  # naive UTC
        assert r["at"] == utc(clock[0])
    # Keyed with the instance's secret: not the plain SHA-256 anyone could recompute.
    import hashlib

    plain = {hashlib.sha256(v.encode()).hexdigest() for v in ("198.51.100.77",
                                                              "wang.secret.name")}
    assert not plain & {r["key"] for r in got}


def test_the_login_path_is_one_select_and_one_insert(workers, clock):
    a = workers.new()
    attempt(a, "10.9.4.1")  # warm up (first connection, compiled statements)
    seen: list[str] = []
    engine = a.extensions["hemei"].store.engine

    def note(conn, cursor, statement, parameters, context, executemany):
        if "login_failures" in statement:
            seen.append(statement.split()[0].upper())

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        assert attempt(a, "10.9.4.1").status_code == 401
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)
    assert seen == ["SELECT", "INSERT"]


# ------------------------------------------------------------------ when the database fails


def test_a_database_error_falls_back_to_the_workers_own_count(workers, clock, caplog):
    a, b = workers.new(), workers.new()
    assert attempt(b, "10.9.5.1").status_code == 401  # counted in the database
    throttle = a.extensions["hemei_login_throttle"]
    log = throttle.log
    broken = sa.create_engine("sqlite:////nonexistent-folder/for/hemei/x.sqlite3")
    good = log.engine, log._write
    log.engine, log._write = broken, broken.begin
    try:
        # Neither a 500 nor everyone locked out: this worker's own count decides …
        assert attempt(a, "10.9.5.2", "gw", RIGHT).status_code == 302
        assert [attempt(a, "10.9.5.1").status_code for _ in range(LIMIT)] == [401] * LIMIT
        # … and still limits (the failure b counted is not in a's own count).
        assert attempt(a, "10.9.5.1", "gw", RIGHT).status_code == 429
    finally:
        log.engine, log._write = good
        broken.dispose()
    assert "login limit: cannot check" in caplog.text
    assert "login limit: cannot count" in caplog.text
    # The database back: its count again (one failure, on b).
    assert attempt(a, "10.9.5.3", "gw2", PASSWORDS["gw2"]).status_code == 302
    assert len([r for r in rows(a) if r["key_kind"] == "address"]) == 1


# ----------------------------------------------------------------------------- pruning


def test_pruning_removes_only_expired_rows_a_bounded_batch_at_a_time(workers, clock):
    a = workers.new()
    store = a.extensions["hemei"].store
    log = SqlFailureLog.for_store(store, LIMIT, WINDOW, clock=lambda: clock[0])
    log.PRUNE_BATCH = 50
    now = utc(clock[0])
    old = [{"key_kind": "address", "key": f"{i:064x}", "at": now - timedelta(hours=2)}
           for i in range(120)]
    fresh = [{"key_kind": "address", "key": "f" * 64, "at": now - timedelta(minutes=1)}]
    with store.engine.begin() as conn:
        conn.execute(sa.insert(login_failures), old + fresh)
    assert [log.prune(), log.prune(), log.prune(), log.prune()] == [50, 50, 20, 0]
    assert [r["key"] for r in rows(a)] == ["f" * 64]
    # Failures prune as they come in, every PRUNE_EVERY-th one: the oldest batch (the
    # fresh row, not expired, and 49 old ones) is looked at, the old ones go.
    with store.engine.begin() as conn:
        conn.execute(sa.insert(login_failures), old)
    for _ in range(log.PRUNE_EVERY - 1):
        log.failed([("username", "x")])
    assert len(rows(a)) == 1 + 120 + log.PRUNE_EVERY - 1
    log.failed([("username", "x")])
    assert len(rows(a)) == 1 + (120 - 49) + log.PRUNE_EVERY


# --------------------------------------------------------------------------- migration


@pytest.fixture
def url_at_0003(backend, tmp_path, request) -> str:
    """A database at the previous head (0003): the schema before this table."""
    from alembic import command

    from gis import schema
    from gis.backup import _engine

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    else:
        url = request.getfixturevalue("pg_databases").new()
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
            command.upgrade(schema.alembic_config(conn), "0003")
    finally:
        engine.dispose()
    return url


def test_upgrading_from_0003_creates_the_table_as_declared(url_at_0003):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from gis import schema, throttle
    from gis.backup import _engine
    from gis.storage import open_store

    engine = _engine(url_at_0003)
    try:
        with engine.connect() as conn:
            assert schema.current(conn) == "0003"
            assert not sa.inspect(conn).has_table("login_failures")
        open_store(url_at_0003).dispose()  # what a starting worker (or `hemei db upgrade`) does
        with engine.connect() as conn:
            assert schema.current(conn) == schema.head() == "0004"
            insp = sa.inspect(conn)
            assert insp.has_table("login_failures")
            index = {i["name"]: i["column_names"] for i in insp.get_indexes("login_failures")}
            assert index["ix_login_failures_key"] == ["key_kind", "key", "at"]

            def only_ours(obj, name, type_, reflected, compare_to):
                return type_ != "table" or name == "login_failures"

            ctx = MigrationContext.configure(conn, opts={"include_object": only_ours,
                                                         "compare_type": True})
            assert compare_metadata(ctx, throttle.metadata) == []
    finally:
        engine.dispose()


def test_failed_logins_alone_do_not_make_a_database_hold_data(url_at_0003):
    """``hemei migrate-store`` refuses a target that holds data unless --force: a fresh
    schema whose only rows are failed logins (someone tried the new server's login page)
    is still empty."""
    from gis.backup import _engine, _has_data
    from gis.storage import open_store

    store = open_store(url_at_0003)
    try:
        SqlFailureLog.for_store(store, LIMIT, WINDOW).failed([("username", "x")])
    finally:
        store.dispose()
    engine = _engine(url_at_0003)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(login_failures)) \
                .scalar_one() == 1
    finally:
        engine.dispose()
    assert not _has_data(url_at_0003)
