"""The intake hot path on both backends: a report without photos is written by statements
compiled once and run on the driver's cursor (SQLite: one BEGIN IMMEDIATE transaction;
PostgreSQL: one data-modifying WITH statement), a token's user is read in one statement.
Whatever the path, the database must hold exactly what the SQLAlchemy Core path writes,
and the connection handling around it must survive what the Core path survives."""

from __future__ import annotations

import re
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


@pytest.mark.backends("sqlite")
def test_the_fast_datetime_format_is_sqlalchemys_exactly():
    """rawsql formats SQLite datetimes itself (isoformat): the text must be what
    SQLAlchemy's own processor writes, or text comparisons in SQL would misorder rows."""
    from datetime import UTC, date, datetime, timedelta, timezone

    from sqlalchemy.dialects import sqlite

    from gis.rawsql import _bind_processor

    dialect = sqlite.dialect()
    impl = sa.DateTime().dialect_impl(dialect)
    fast, general = _bind_processor(impl, dialect), impl.bind_processor(dialect)
    assert fast is not general
    for v in (datetime(2026, 11, 26, 9, 30), datetime(2026, 1, 5, 9, 0, 0, 7),
              datetime(5, 1, 2, 3, 4, 5, 999999), datetime(9999, 12, 31, 23, 59, 59),
              datetime(2026, 3, 1, tzinfo=UTC),
              datetime(2026, 3, 1, 8, tzinfo=timezone(timedelta(hours=8))),
              date(2026, 3, 1), None):
        assert fast(v) == general(v), v


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
def test_the_wal_stays_small_under_steady_writes_from_several_processes(hemei):
    """Three stores on one file (as three worker processes: each its own connections and
    lock-file descriptor) write reports flat out while a fourth reads: the WAL must be
    checkpointed and started over, not grow with every report. With checkpoints run
    after the writer's turn it passed 250 MB in bench/intake.py."""
    import os
    import threading

    from gis.cases import NewCase

    path = sa.make_url(hemei.store.url).database
    locator, version = hemei._located()
    p = hemei.layers["grid"].geometry.iloc[3].representative_point()
    chain = locator.locate(p.x, p.y)
    stores = [open_store(hemei.store.url) for _ in range(3)]
    done = threading.Event()
    biggest = [0]

    def write(store, n):
        for i in range(n):
            store.create_case(NewCase(category="street_light", title=f"稳{i}",
                                      description="稳定写入", lon=p.x, lat=p.y),
                              chain, None, grid_version=version)

    def read():
        while not done.is_set():
            hemei.store.data_version()
            try:
                biggest[0] = max(biggest[0], os.path.getsize(path + "-wal"))
            except OSError:
                pass

    before = hemei.store.list_cases()[1]
    reader = threading.Thread(target=read)
    writers = [threading.Thread(target=write, args=(st, 500)) for st in stores]
    reader.start()
    try:
        for t in writers:
            t.start()
        for t in writers:
            t.join()
    finally:
        done.set()
        reader.join()
        for st in stores:
            st.dispose()
    assert hemei.store.list_cases()[1] == before + 1500
    # 1,500 reports write ~60 MB of WAL frames; SQLite's threshold is 1,000 pages (4 MB).
    assert 0 < biggest[0] < 12 * 1024 * 1024, biggest[0]


def _held_writer_lock(store):
    """Hold the store's lock file as another process's writer would (a new open file
    description: flock excludes it from this process's own descriptor too)."""
    import fcntl
    import os

    fd = os.open(sa.make_url(store.url).database + ".writelock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _queue_reports(hemei, calls: list, *, stale_at: int | None = None):
    """Start ``calls`` (title, key) reports in threads while the lock file is held (as
    another process's writer would), wait until the first is waiting for the lock (its
    report still queued: the thread that leads a group takes the queue once it has the
    lock) and the others are queued behind it, in order; then release the lock. Returns
    each call's case or exception, in order."""
    import fcntl
    import os
    import time
    from concurrent.futures import ThreadPoolExecutor

    from gis.cases import NewCase

    store = hemei.store
    locator, version = hemei._located()
    p = hemei.layers["grid"].geometry.iloc[3].representative_point()
    chain = locator.locate(p.x, p.y)

    def one(i, title, key):
        new = NewCase(category="street_light", title=title, description=title,
                      lon=p.x, lat=p.y)
        try:
            return store.create_case(new, chain, None, actor="巡查员",
                                     idempotency=(1, key) if key else None,
                                     grid_version=version + (99 if i == stale_at else 0))
        except Exception as err:  # noqa: BLE001 - the test looks at what each one got
            return err

    fd = _held_writer_lock(store)
    try:
        with ThreadPoolExecutor(len(calls)) as pool:
            first = pool.submit(one, 0, *calls[0])
            deadline = time.monotonic() + 10
            while not (store._committing and store._queue) and time.monotonic() < deadline:
                time.sleep(0.005)
            rest = []
            for i, c in enumerate(calls[1:], start=1):
                rest.append(pool.submit(one, i, *c))
                # One at a time, so the queue holds them in the order of ``calls``.
                while len(store._queue) < i + 1 and time.monotonic() < deadline:
                    time.sleep(0.002)
            assert len(store._queue) == len(calls), "the reports did not queue"
            fcntl.flock(fd, fcntl.LOCK_UN)
            return [first.result(timeout=30)] + [f.result(timeout=30) for f in rest]
    finally:
        os.close(fd)


@pytest.mark.backends("sqlite")
def test_reports_queued_behind_the_writer_commit_together(hemei):
    """Group commit: reports that queue while another process's writer holds the lock
    are written in one transaction, the first one's included (the thread that leads the
    group takes the queue once it has the lock). One report's own refusal (a used
    Idempotency-Key, a grid layer that is no longer active) costs only that report;
    every other one is stored and acknowledged with its own ids."""
    from gis.storage import IdempotentReplay, StaleLayers

    used = _report(hemei, "早先的", key="used-key")
    before_version, before_n = hemei.store.data_version(), hemei.store.list_cases()[1]
    got = _queue_reports(hemei, [("领头", None), ("甲", "k-a"), ("重放", "used-key"),
                                 ("乙", "k-b"), ("旧图层", "k-stale"), ("丙", None)],
                         stale_at=4)
    lead, a, replay, b, stale, c = got
    assert isinstance(replay, IdempotentReplay) and replay.case_id == used.id
    assert isinstance(stale, StaleLayers)
    stored = [lead, a, b, c]
    assert all(hasattr(x, "id") for x in stored), got
    # One transaction for all six.
    assert hemei.store.data_version() == before_version + 1
    assert hemei.store.list_cases()[1] == before_n + 4
    ids = [lead.id, a.id, b.id, c.id]
    assert ids == list(range(lead.id, lead.id + 4))  # one group, in queue order
    for x in stored:
        got_back = hemei.store.get_case(x.id)
        assert got_back.title == x.title and got_back.history[0]["id"] == x.history[0]["id"]
    assert hemei.store.idempotent_case_id(1, "k-a") == a.id
    assert hemei.store.idempotent_case_id(1, "k-stale") is None  # rolled back with it


@pytest.mark.backends("sqlite")
def test_a_group_that_fails_to_commit_acknowledges_none_of_its_reports(hemei, monkeypatch):
    """Any other error rolls the whole group back, and every report in it gets the error:
    none is acknowledged, none is stored."""
    store = hemei.store
    _report(hemei, "编译语句")  # the statements are compiled

    class Broken:
        sql = "UPDATE no_such_table SET value = 1"

        def parameters(self, values):
            return ()

    before_version, before_n = store.data_version(), store.list_cases()[1]
    real = store._prepared

    def broken_bump(key, build):
        return Broken() if key == "bump" else real(key, build)

    monkeypatch.setattr(store, "_prepared", broken_bump)
    got = _queue_reports(hemei, [("一", "f-1"), ("二", "f-2"), ("三", None)])
    monkeypatch.undo()
    assert all(isinstance(x, sa.exc.OperationalError) for x in got), got
    assert store.list_cases()[1] == before_n and store.data_version() == before_version
    assert store.idempotent_case_id(1, "f-2") is None
    assert _report(hemei, "之后").id  # the store still works


@pytest.mark.backends("sqlite")
def test_a_long_queue_commits_in_several_transactions_and_each_report_gets_its_own(
        hemei, monkeypatch):
    """More queued reports than GROUP_MAX are written in several transactions: when a
    later one fails, the reports an earlier one committed are acknowledged (whichever
    thread led the group), and only the failed transaction's reports get the error."""
    store = hemei.store
    _report(hemei, "编译语句")
    real = store._prepared
    bump = real("bump", None)
    calls = []

    class FailsThirdTime:
        def parameters(self, values):
            return bump.parameters(values)

        @property
        def sql(self):
            calls.append(1)
            return bump.sql if len(calls) != 3 else "UPDATE no_such_table SET value = 1"

    monkeypatch.setattr(store, "GROUP_MAX", 2)
    monkeypatch.setattr(store, "_prepared",
                        lambda key, build: FailsThirdTime() if key == "bump" else real(key, build))
    before = store.list_cases()[1]
    got = _queue_reports(hemei, [("领头", "g-0"), ("甲", "g-1"), ("乙", "g-2"), ("丙", "g-3"),
                                 ("丁", "g-4"), ("戊", "g-5")])
    monkeypatch.undo()
    # Transactions of two: the first two; the next two; the last two (fails).
    assert len(calls) == 3
    assert all(hasattr(x, "id") for x in got[:4]), got
    assert all(isinstance(x, sa.exc.OperationalError) for x in got[4:]), got
    assert store.list_cases()[1] == before + 4
    assert store.idempotent_case_id(1, "g-3") == got[3].id
    assert store.idempotent_case_id(1, "g-4") is None


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


@pytest.mark.backends("sqlite")
def test_a_broken_group_connection_fails_its_report_and_is_replaced(hemei):
    """Group commits run on one connection the store keeps: a driver error on it fails
    that group's reports with SQLAlchemy's wrapped error, and the next report gets a new
    connection."""
    store = hemei.store
    _report(hemei, "先来")
    kept = store._group_conn.peek()
    assert kept is not None
    assert _report(hemei, "再来") and store._group_conn.peek() is kept  # kept between groups
    kept.close()  # as a driver failure would leave it
    with pytest.raises(sa.exc.DBAPIError):
        _report(hemei, "坏连接")
    after = _report(hemei, "换新")
    assert store._group_conn.peek() is not kept
    assert store.get_case(after.id).title == "换新"


@pytest.mark.backends("sqlite")
def test_a_forked_worker_commits_on_a_connection_of_its_own(hemei):
    """gunicorn forks its workers: a child must not use the connection its parent kept
    (SQLite forbids carrying one across fork), and the parent's stays usable."""
    import multiprocessing as mp

    _report(hemei, "父进程")
    parent_conn = hemei.store._group_conn.peek()

    def child(q):
        try:
            case = _report(hemei, "子进程")
            q.put((case.id, hemei.store._group_conn.peek() is not parent_conn))
        except Exception as err:  # noqa: BLE001 - the parent reports it
            q.put(repr(err))

    q = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=child, args=(q,))
    p.start()
    got = q.get(timeout=60)
    p.join(60)
    assert isinstance(got, tuple), got
    child_id, own = got
    assert own and hemei.store.get_case(child_id).title == "子进程"
    assert _report(hemei, "父进程又来") and hemei.store._group_conn.peek() is parent_conn


@pytest.mark.backends("postgis")
def test_postgis_reports_do_not_queue_on_one_data_version_row(hemei):
    """A report moves one of DATA_VERSION_SLOTS rows, not the main one every write used
    to update: while another transaction holds the main row (as a report that has not
    committed yet did), a report still goes through; the version moves by one per
    report, however the slots fall."""
    import threading

    from gis.storage import DATA_VERSION_SLOTS

    store = hemei.store
    _report(hemei, "编译语句")
    before = store.data_version()
    done = []
    with store.engine.connect() as holder:
        holder.execute(sa.text("SELECT value FROM meta WHERE key = 'data_version' "
                               "FOR UPDATE"))
        t = threading.Thread(target=lambda: done.append(_report(hemei, "不等")))
        t.start()
        t.join(15)
        went_through = bool(done)
        holder.rollback()
    t.join(30)
    assert went_through, "the report waited for the transaction holding the main row"
    for i in range(3 * DATA_VERSION_SLOTS):
        _report(hemei, f"第{i}个")
    assert store.data_version() == before + 1 + 3 * DATA_VERSION_SLOTS
    with store.engine.connect() as conn:
        keys = conn.execute(sa.text("SELECT key FROM meta WHERE key LIKE 'data_version%'"))
        keys = set(keys.scalars())
    assert "data_version" in keys and len(keys) <= DATA_VERSION_SLOTS + 1
