"""A database that cannot be reached answers every request that needs it with 503 and
Retry-After (webapp/errors.py), whatever path the request takes to the database: the
pooled SQLAlchemy connection of pages and reads, the raw DBAPI connection of the token
look-up and of the report fast path (PostGIS), the group-commit connection (SQLite).
Clients retry a 503 and not a 500, so a 500 here is a lost report. And once the database
is back, the service serves again by itself.

The outages are real, not mocks: on PostGIS the server refuses connections to the test's
database (``ALLOW_CONNECTIONS false``) and ends those it had; on SQLite the database's
folder is made unusable.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.conftest import INSIDE

pytestmark = pytest.mark.backends("sqlite", "postgis")

REPORT = {"category": "street_light", "lon": INSIDE[0], "lat": INSIDE[1],
          "description": "路灯不亮"}


def _admin_engine(database_url: str) -> sa.Engine:
    """A superuser's connection to the maintenance database (not the one taken down)."""
    return sa.create_engine(sa.make_url(database_url).set(database="postgres"),
                            isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@contextmanager
def _pg_refusing(database_url: str):
    """While inside, the server refuses new connections to the database and has ended
    the ones it had (as a restart or a failover leaves a worker's pool)."""
    name = sa.make_url(database_url).database
    engine = _admin_engine(database_url)
    try:
        with engine.connect() as conn:
            quoted = conn.dialect.identifier_preparer.quote(name)
            conn.exec_driver_sql(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS false")
            try:
                conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"), {"db": name})
                yield
            finally:
                conn.exec_driver_sql(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS true")
    finally:
        engine.dispose()


@contextmanager
def _sqlite_unreachable(database_url: str, store):
    """While inside, the database file cannot be opened (its folder is gone, as when the
    volume holding it is unmounted) and the store holds no open connection (as a worker
    started meanwhile, or one whose connections were lost)."""
    folder = Path(sa.make_url(database_url).database).parent
    away = folder.with_name(folder.name + ".away")
    folder.rename(away)
    try:
        store.dispose()
        yield
    finally:
        away.rename(folder)


def _unreachable(backend: str, hemei):
    url = hemei.settings["DATABASE_URL"]
    return _pg_refusing(url) if backend == "postgis" else _sqlite_unreachable(url, hemei.store)


def _report(hemei, title: str):
    return hemei.report({**REPORT, "title": title}, actor="巡查员")


def _assert_unavailable(call) -> None:
    """``call()`` fails with SQLAlchemy's error, the one the web app answers with 503."""
    from webapp.errors import _unavailable

    with pytest.raises(sa.exc.OperationalError) as got:
        call()
    assert _unavailable(got.value), got.value


def test_every_store_path_raises_sqlalchemys_error_while_the_database_is_unreachable(
        hemei, people, backend):
    """The store's interface promises SQLAlchemy's exceptions, whichever connection a
    method uses: the Core paths (pooled ``Connection``), the token look-up and the report
    fast path (a raw DBAPI connection from the pool; PostGIS), the group commit (SQLite's
    kept connection, made on first use). Each one's connect is refused here."""
    _report(hemei, "停电前")  # the locator is cached: the report goes straight to the store
    with _unreachable(backend, hemei):
        _assert_unavailable(hemei.store.data_version)
        _assert_unavailable(lambda: hemei.accounts.user_for_token("hm_not-cached"))
        _assert_unavailable(lambda: _report(hemei, "停电中"))
    assert _report(hemei, "恢复后").id
    assert hemei.accounts.user_for_token(people["tokens"]["gw"]).username == "gw"


def _assert_503(r) -> None:
    assert r.status_code == 503, (r.status_code, r.get_data(as_text=True)[:300])
    assert r.headers["Retry-After"] == "5"
    assert r.get_json()["error"]["code"] == "service_unavailable"


@pytest.mark.backends("postgis")
def test_token_requests_are_503_while_postgres_refuses_connections(app, auth):
    """The token's user is looked up and the report written on raw DBAPI connections
    (gis.storage: query_rows, _insert_report); a refused connect there is the same 503
    as anywhere else, and the first request after the outage goes through."""
    hemei = app.extensions["hemei"]
    client = app.test_client()
    headers = auth("gw")
    assert client.post("/api/v1/issues", json=REPORT, headers=headers).status_code == 201
    url = hemei.settings["DATABASE_URL"]
    with _pg_refusing(url):
        # The LISTEN connection was ended too: from now on no token's user comes from the
        # cache (the server is asked, and cannot answer).
        deadline = time.monotonic() + 10
        while hemei.store.accounts_stamp() is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert hemei.store.accounts_stamp() is None
        _assert_503(client.post("/api/v1/issues", json=REPORT, headers=headers))
        _assert_503(client.post("/api/v1/issues", json=REPORT,
                                headers={**headers, "Idempotency-Key": "outage-1"}))
        _assert_503(client.get("/api/v1/me", headers=headers))
        _assert_503(client.get("/api/v1/issues", headers=headers))
        assert client.get("/healthz").status_code == 200  # the process is alive
    # Back: the pool's dead connections are replaced, no restart needed.
    r = client.post("/api/v1/issues", json=REPORT,
                    headers={**headers, "Idempotency-Key": "outage-1"})
    assert r.status_code == 201, r.get_json()
    assert client.get("/api/v1/me", headers=headers).get_json()["username"] == "gw"
    # The LISTEN connection (the token cache's stamp) is made again too.
    assert hemei.store._listener.get().wait_live(10)
