"""The intake hot path on both backends: a report without photos is written by statements
compiled once and run on the driver's cursor (SQLite: one BEGIN IMMEDIATE transaction;
PostgreSQL: one data-modifying WITH statement), a token's user is read in one statement.
Whatever the path, the database must hold exactly what the SQLAlchemy Core path writes,
and the connection handling around it must survive what the Core path survives."""

from __future__ import annotations

import re
import shutil
import sqlite3
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from gis.storage import PostgisCaseStore, SqlCaseStore, case_events, cases, open_store

pytestmark = pytest.mark.backends("sqlite", "postgis")

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


def _report(hemei, title: str, key: str | None = None):
    p = hemei.layers["grid"].geometry.iloc[3].representative_point()
    return hemei.report({"category": "street_light", "title": title, "description": title,
                         "lon": round(p.x, 7), "lat": round(p.y, 7)}, actor="巡查员",
                        idempotency=(1, key) if key else None)


def _raw_rows(hemei, table: sa.Table, where: str) -> list[dict]:
    """Rows as the driver returns them (no SQLAlchemy type conversion), every column
    (on PostGIS the geometry the trigger derives too)."""
    with hemei.store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.exec_driver_sql(
            f"SELECT * FROM {table.name} WHERE {where} ORDER BY id")]


def test_the_fast_path_stores_what_the_core_path_stores(hemei, monkeypatch, backend):
    fast = _report(hemei, "快路径", key="fast-1")
    # The same report through SQLAlchemy Core (the path other backends and reports with
    # photos take).
    monkeypatch.setattr(type(hemei.store), "_prepared_ok", False)
    core = _report(hemei, "快路径", key="core-1")
    monkeypatch.undo()
    assert hemei.store._prepared_ok  # the first report did take the fast path

    a, b = _raw_rows(hemei, cases, f"id IN ({fast.id}, {core.id})")
    assert a.keys() == b.keys()
    differ = {"id", "created_at", "updated_at", "due_at"}
    for name in a:
        x, y = a[name], b[name]
        assert type(x) is type(y), name
        if name in differ:
            if name != "id" and backend == "sqlite" and x is not None:
                # SQLAlchemy's SQLite DateTime format exactly (sortable as text).
                assert TIMESTAMP.match(x) and TIMESTAMP.match(y), (name, x, y)
        else:
            assert x == y, name
    assert a["published"] in (0, False) and a["grid_version_id"] is not None

    ea, eb = _raw_rows(hemei, case_events, f"case_id IN ({fast.id}, {core.id})")
    assert ea.keys() == eb.keys()
    for name in ea:
        assert type(ea[name]) is type(eb[name]), name
        if name not in ("id", "case_id", "at"):
            assert ea[name] == eb[name], name
    assert ea["case_id"] == fast.id

    # What came back to the caller is what a read gives.
    got = hemei.store.get_case(fast.id)
    assert got.to_dict() == fast.to_dict()
    assert got.history[0]["id"] == fast.history[0]["id"]


def test_a_whole_second_is_stored_as_sqlalchemy_stores_it(hemei, backend):
    """SQLite keeps datetimes as text: the fast path must write SQLAlchemy's format
    (microseconds always present), or text comparisons in SQL would misorder rows."""
    from datetime import datetime

    from gis.cases import NewCase

    locator, version = hemei._located()
    p = hemei.layers["grid"].geometry.iloc[5].representative_point()
    at = datetime(2026, 1, 5, 9, 0, 0)
    new = NewCase(category="pothole", title="整秒", description="整秒", lon=p.x, lat=p.y,
                  created_at=at)
    case = hemei.store.create_case(new, locator.locate(p.x, p.y), datetime(2026, 1, 8, 9),
                                   grid_version=version)
    [row] = _raw_rows(hemei, cases, f"id = {case.id}")
    if backend == "sqlite":
        assert row["created_at"] == "2026-01-05 09:00:00.000000"
        assert row["due_at"] == "2026-01-08 09:00:00.000000"
    else:
        assert row["created_at"] == at
    assert hemei.store.get_case(case.id).created_at == at


def test_a_replayed_key_on_the_fast_path_names_the_first_case(hemei):
    from gis.storage import IdempotentReplay

    first = _report(hemei, "同一个键", key="same-key")
    n, version = hemei.store.list_cases()[1], hemei.store.data_version()
    with pytest.raises(IdempotentReplay) as err:
        _report(hemei, "同一个键", key="same-key")
    assert err.value.case_id == first.id
    assert hemei.store.list_cases()[1] == n  # nothing of the second report was kept
    assert hemei.store.data_version() == version


def test_every_report_moves_the_data_version(hemei):
    before = hemei.store.data_version()
    _report(hemei, "一")
    _report(hemei, "二")
    assert hemei.store.data_version() == before + 2


def test_a_tokens_user_comes_with_all_their_grids_in_one_statement(hemei):
    acc = hemei.accounts
    grids = sorted(hemei.layers["grid"]["code"])[:3]
    uid = acc.add_user("多网格员", "grid_worker", password="pw-123456789",
                       grids=[grids[2], grids[0], grids[1]]).id
    token = acc.create_token(uid, "phone")
    user = acc.user_for_token(token)
    assert user.id == uid and user.role == "grid_worker" and user.grids == grids
    nogrid = acc.add_user("无网格", "planner", password="pw-123456789").id
    assert acc.user_for_token(acc.create_token(nogrid)).grids == []
    assert acc.user_for_token("hm_not-a-token") is None
    acc.revoke_token(token)
    assert acc.user_for_token(token) is None


@pytest.mark.backends("sqlite")
def test_sqlite_checkpoints_after_the_writers_turn(hemei, monkeypatch, tmp_path):
    """Writers do not checkpoint inside their COMMIT (that held the lock file while every
    other writer waited); each process checkpoints after a number of its writes."""
    store = hemei.store
    with store._dbapi() as dbc:
        assert dbc.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    monkeypatch.setattr(store, "CHECKPOINT_EVERY", 5)
    store._writes = 0
    path = sa.make_url(store.url).database
    with store._dbapi() as dbc:  # start from a WAL with nothing left to copy
        dbc.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    ids = [_report(hemei, f"第{i}件").id for i in range(5)]
    # The database file alone (without its -wal) holds the five reports only if they
    # were checkpointed.
    alone = tmp_path / "alone.sqlite3"
    shutil.copyfile(path, alone)
    con = sqlite3.connect(alone)
    listed = ",".join(map(str, ids))
    got = {r[0] for r in con.execute(f"SELECT id FROM cases WHERE id IN ({listed})")}
    con.close()
    assert got == set(ids)


@contextmanager
def _store_with_a_dead_pooled_connection(database_url: str):
    """A PostGIS store whose one pooled connection the server has terminated (as a
    restart or failover would); yields (store, that connection's backend pid)."""
    store = open_store(database_url)
    try:
        with store._read() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with sa.create_engine(database_url, poolclass=sa.pool.NullPool).connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        yield store, pid
    finally:
        store.dispose()


@pytest.mark.backends("postgis")
def test_postgis_replaces_a_dead_pooled_connection_after_idling(database_url, monkeypatch):
    """Connections are pinged only after sitting idle (not on every checkout, as
    ``pool_pre_ping`` does); one the server closed meanwhile is replaced, not used."""
    monkeypatch.setattr(PostgisCaseStore, "PING_AFTER_IDLE_S", 0.0)
    with _store_with_a_dead_pooled_connection(database_url) as (store, pid):
        with store._read() as conn:  # the pooled connection is dead: pinged, replaced
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() != pid
        assert store.data_version() >= 1


@pytest.mark.backends("postgis")
def test_without_the_idle_ping_a_dead_connection_fails_the_request(database_url,
                                                                   monkeypatch):
    """The contrast that shows the ping above is what saved the request."""
    monkeypatch.setattr(PostgisCaseStore, "PING_AFTER_IDLE_S", 3600.0)
    with _store_with_a_dead_pooled_connection(database_url) as (store, _pid):
        with pytest.raises(sa.exc.OperationalError):
            with store._read() as conn:
                conn.execute(sa.text("SELECT 1")).scalar()


def test_other_sql_backends_keep_the_core_path():
    assert SqlCaseStore._prepared_ok is False
