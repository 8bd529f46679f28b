"""Case intake under load, and a crash in the middle of it, through the real served app.

Every test here starts ``hemei serve --production --workers 4`` (gunicorn: a master and
four forked workers, four threads each) as a subprocess on a free port, over a fresh copy
of the seeded test instance (the demo street, the test accounts and their API tokens), on
SQLite and on PostGIS (``HEMEI_TEST_PG_URL``; skipped without it unless
``HEMEI_REQUIRE_SYSTEM_DEPS`` is set, as everywhere else). Eight client threads, each with
its own ``requests.Session`` and the administrator's bearer token, post reports to
``POST /api/v1/issues`` at points spread over the demo street's grids, each report with its
own ``Idempotency-Key`` and a unique marker in its description. The database is then read
directly (SQLAlchemy), not through the app.

What is proven:

- **Intake** (10,000 reports): every request is answered 201 (no 5xx from lock waits, no
  429: the per-client rate limit guards only the residents' public forms, not the token
  API); every 201 is in the database exactly once — the number of rows with the run's
  marker equals the number of 201s, no marker appears twice, the ids of the 201 bodies are
  exactly the ids stored, each under the description it was sent with — with its first
  history event and its idempotency key (and nothing else); each case is located in the
  grid the locator gives for its point.
- **Crash**: while eight clients post, the whole gunicorn process group (master and
  workers) is killed with SIGKILL after about 1,500 acknowledged reports; the server is
  restarted on the same database. Then the database is sound (SQLite: ``PRAGMA
  integrity_check`` is ``ok`` and ``PRAGMA foreign_key_check`` finds nothing, right after
  the kill and at the end; PostGIS: the tables are readable, counts agree, and amcheck
  finds the B-tree indexes of the case tables intact when the extension is available);
  every report acknowledged with a 201 before the kill is stored exactly once under the id
  it was given; no half-written case exists (each has its history event and key); the
  requests whose answer was lost in the kill, sent again after the restart with the same
  Idempotency-Key, answer 201 (never stored) or 200 with the id already stored (stored,
  answer lost) and never make a second case; and the restarted server serves
  ``GET /readyz`` 200 and accepts new reports.

There are no timing assertions: how fast the server answers is measured by
``bench/intake.py``, not here.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests
import sqlalchemy as sa

from tests.conftest import DEMO_GPKG, REPO

pytestmark = [
    pytest.mark.backends("sqlite", "postgis"),
    pytest.mark.skipif(sys.platform == "win32", reason="gunicorn needs a Unix"),
]

WORKERS = 4
CLIENTS = 8
INTAKE_REPORTS = 10_000
CRASH_REPORTS = 4_000  # planned; the kill comes after about KILL_AFTER of them
KILL_AFTER = 1_500


# -- the served app ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``hemei serve --production`` over an instance folder (and a database URL), in its
    own process group so that the master and its workers can be killed together."""

    def __init__(self, instance: Path, database_url: str | None, log: Path):
        self.instance, self.database_url, self.log_path = instance, database_url, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> str:
        port = _free_port()
        self.base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "HEMEI_INSTANCE": str(self.instance), "HEMEI_TILES": "none",
               "PYTHONUNBUFFERED": "1"}
        env.pop("HEMEI_DATABASE_URL", None)
        if self.database_url:
            env["HEMEI_DATABASE_URL"] = self.database_url
        log = self.log_path.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webapp.cli", "serve", "--production",
             "--workers", str(WORKERS), "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n"
                                     f"{self.log_tail()}")
            try:
                if requests.get(f"{self.base}/readyz", timeout=5).status_code == 200:
                    return self.base
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"/readyz did not answer 200 within {timeout:.0f} s:\n"
                             f"{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the whole process group: the master and every worker at once."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _group_alive(self.proc.pid):
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # gunicorn: graceful shutdown
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def worker_deaths(self) -> list[str]:
        """gunicorn's lines about workers that died: killed by a signal (a crash in C
        code is SIGSEGV) or exited with an error. The load's retries would hide them."""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return [x for x in lines if re.search(r"Worker \(pid:\d+\) (was sent|exited)", x)]

    def log_tail(self, n: int = 40) -> str:
        """The server's last ``n`` log lines that are not access-log lines."""
        lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join([x for x in lines if not x.startswith('{"ts"')][-n:])


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies, which hold no files, don't)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


# -- the clients ---------------------------------------------------------------------------
@dataclass
class Outcome:
    """What the clients saw, by report number."""

    created: dict[int, int] = field(default_factory=dict)  # 201: report → case id
    other: dict[int, tuple[int, str]] = field(default_factory=dict)  # → (status, body)
    lost: dict[int, str] = field(default_factory=dict)  # sent, no answer → the error
    lock: threading.Lock = field(default_factory=threading.Lock)

    def statuses(self) -> Counter:
        return Counter({201: len(self.created), "lost": len(self.lost)}) + Counter(
            s for s, _ in self.other.values())


class Load:
    """Reports ``0 … n-1`` of one run: report ``i`` is at point ``i``, has the
    Idempotency-Key ``<run>-<i>`` and the description ``<marker><i>``."""

    def __init__(self, points: np.ndarray, token: str):
        self.points, self.token = points, token
        self.run = secrets.token_hex(5)
        self.marker = f"load {self.run} #"

    def key(self, i: int) -> str:
        return f"{self.run}-{i}"

    def body(self, i: int) -> dict:
        x, y = self.points[i]
        return {"category": "street_light", "lon": float(x), "lat": float(y),
                "title": "路灯不亮", "description": f"{self.marker}{i:05d}"}

    def session(self) -> requests.Session:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {self.token}"
        return s

    def post(self, s: requests.Session, base: str, i: int) -> requests.Response:
        return s.post(f"{base}/api/v1/issues", json=self.body(i),
                      headers={"Idempotency-Key": self.key(i)}, timeout=120)

    def drive(self, base: str, reports: range, *, on_created=None,
              stop: threading.Event | None = None) -> Outcome:
        """``CLIENTS`` threads post ``reports`` (client ``c`` every ``CLIENTS``-th one).
        A client stops at its first request that gets no answer (the server is gone)."""
        out = Outcome()

        def client(c: int) -> None:
            s = self.session()
            for i in reports[c::CLIENTS]:
                if stop is not None and stop.is_set():
                    return
                try:
                    r = self.post(s, base, i)
                except requests.RequestException as err:
                    with out.lock:
                        out.lost[i] = f"{type(err).__name__}: {err}"
                    return
                with out.lock:
                    if r.status_code == 201:
                        out.created[i] = r.json()["id"]
                        n = len(out.created)
                    else:
                        out.other[i] = (r.status_code, r.text[:300])
                        n = None
                if n is not None and on_created is not None:
                    on_created(n)

        threads = [threading.Thread(target=client, args=(c,), daemon=True)
                   for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out


# -- the database, read directly ------------------------------------------------------------
class Db:
    """The instance's database, read with SQLAlchemy (not through the app)."""

    def __init__(self, url: str):
        self.url = url
        # No pool: between queries the test holds no connection the server could see.
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def wait_for_sessions_to_end(self, timeout: float = 60) -> None:
        """PostgreSQL: wait until the killed server's sessions are gone, so that a
        transaction whose COMMIT was on its way when the clients died has ended (committed
        or rolled back) before the database is read."""
        if self.engine.dialect.name != "postgresql":
            return
        deadline = time.monotonic() + timeout
        while True:
            with self.engine.connect() as conn:
                n = conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND backend_type = 'client backend'").scalar()
            if n == 0:
                return
            assert time.monotonic() < deadline, f"{n} sessions outlived the server"
            time.sleep(0.1)

    def stored(self, load: Load) -> list[dict]:
        """Every case carrying the run's marker, with its events and idempotency keys."""
        from gis.storage import case_events, cases, idempotency_keys

        ev = (sa.select(sa.func.count()).select_from(case_events)
              .where(case_events.c.case_id == cases.c.id).scalar_subquery())
        keys = (sa.select(sa.func.count()).select_from(idempotency_keys)
                .where(idempotency_keys.c.case_id == cases.c.id).scalar_subquery())
        key = (sa.select(sa.func.min(idempotency_keys.c.key))
               .where(idempotency_keys.c.case_id == cases.c.id).scalar_subquery())
        q = (sa.select(cases.c.id, cases.c.description, cases.c.grid_code, cases.c.status,
                       ev.label("events"), keys.label("keys"), key.label("key"))
             .where(cases.c.description.like(f"{load.marker}%")))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q).mappings()]

    def dispose(self) -> None:
        self.engine.dispose()


def _check_stored(load: Load, rows: list[dict], acknowledged: dict[int, int]) -> dict[int, int]:
    """Assert the stored cases of ``load`` are whole (one event, its own key) and that
    every acknowledged report is among them exactly once, under its id. Returns report
    number → stored case id."""
    by_report: dict[int, list[int]] = {}
    for r in rows:
        i = int(r["description"][len(load.marker):])
        by_report.setdefault(i, []).append(r["id"])
    dup = {i: ids for i, ids in by_report.items() if len(ids) > 1}
    assert not dup, f"{len(dup)} reports stored more than once, e.g. {list(dup.items())[:5]}"
    half = [r for r in rows if (r["events"], r["keys"], r["status"]) != (1, 1, "reported")]
    assert not half, f"{len(half)} cases without exactly one event and one key: {half[:5]}"
    wrong_key = [r for r in rows
                 if r["key"] != load.key(int(r["description"][len(load.marker):]))]
    assert not wrong_key, f"cases under another report's key: {wrong_key[:5]}"
    stored = {i: ids[0] for i, ids in by_report.items()}
    missing = sorted(set(acknowledged) - set(stored))
    assert not missing, (f"{len(missing)} reports answered 201 are not in the database, "
                         f"e.g. {missing[:10]}")
    other_id = {i: (cid, stored[i]) for i, cid in acknowledged.items() if stored[i] != cid}
    assert not other_id, f"stored under another id than the 201 said: {list(other_id)[:5]}"
    return stored


def _amcheck(conn) -> int:
    """Check the B-tree indexes of the case tables with amcheck; how many were checked
    (0 when the extension is not available)."""
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS amcheck")
    except sa.exc.DBAPIError:
        return 0
    idx = conn.exec_driver_sql(
        "SELECT c.oid, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_am am ON am.oid = c.relam JOIN pg_class t ON t.oid = i.indrelid "
        "WHERE am.amname = 'btree' AND t.relname IN "
        "('cases', 'case_events', 'idempotency_keys', 'meta')").fetchall()
    for oid, _name in idx:
        conn.exec_driver_sql(f"SELECT bt_index_check({int(oid)}, true)")
    return len(idx)


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def points() -> tuple[np.ndarray, np.ndarray]:
    """Points spread uniformly over the bounding box of the demo street's grids, kept
    where the locator finds a grid, with that grid: (lon, lat) rows and grid codes."""
    from gis.layers import read_layer_set
    from gis.locate import Locator

    layers = read_layer_set(DEMO_GPKG)
    loc = Locator(layers)
    x0, y0, x1, y1 = layers["grid"].total_bounds
    rng = np.random.default_rng(20261126)
    n = INTAKE_REPORTS + CRASH_REPORTS + 100
    x, y = rng.uniform(x0, x1, 3 * n).round(7), rng.uniform(y0, y1, 3 * n).round(7)
    grid = loc.locate_many(x, y)["grid_code"].to_numpy()
    inside = np.flatnonzero(grid != None)[:n]  # noqa: E711  (elementwise on objects)
    assert len(inside) == n, "the street covers too little of its bounding box"
    return np.column_stack([x[inside], y[inside]]), grid[inside]


@pytest.fixture
def served(instance_maker, tmp_path, people):
    """A fresh copy of the seeded instance (and database) and a Server over it (not yet
    started); the server is stopped and the database given back afterwards."""
    inst = instance_maker.folder(tmp_path / "instance")
    url = instance_maker.database_url()
    server = Server(inst, url, tmp_path / "server.log")
    db_url = url or f"sqlite:///{inst / 'hemei.sqlite3'}"
    db = Db(db_url)
    try:
        yield server, db, people["tokens"]["admin"]
    finally:
        server.stop()
        db.dispose()
        if url:
            instance_maker.dbs.release(url)


# -- the tests -----------------------------------------------------------------------------
def test_intake_under_load_stores_every_acknowledged_report_once(served, points):
    server, db, token = served
    pts, grids = points
    load = Load(pts, token)
    base = server.start()

    out = load.drive(base, range(INTAKE_REPORTS))

    assert not out.lost, (f"{len(out.lost)} requests got no answer: "
                          f"{list(out.lost.values())[:3]}\n{server.log_tail()}")
    assert not out.other, (f"non-201 answers under load {out.statuses()}: "
                           f"{list(out.other.items())[:5]}\n{server.log_tail()}")
    assert len(out.created) == INTAKE_REPORTS
    assert not server.worker_deaths(), server.worker_deaths()
    rows = db.stored(load)
    assert len(rows) == len(out.created)
    stored = _check_stored(load, rows, out.created)
    assert set(stored.values()) == set(out.created.values())
    assert len(set(out.created.values())) == INTAKE_REPORTS  # no id handed out twice
    grid_of = {r["id"]: r["grid_code"] for r in rows}
    misplaced = [i for i, cid in out.created.items() if grid_of[cid] != grids[i]]
    assert not misplaced, f"located in another grid: {misplaced[:10]}"
    # A retry of an acknowledged report (same key) answers with its case, makes none.
    s = load.session()
    for i in (0, INTAKE_REPORTS // 2, INTAKE_REPORTS - 1):
        again = load.post(s, base, i)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == out.created[i]
    assert len(db.stored(load)) == INTAKE_REPORTS


def _sqlite_checks(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


def _postgis_checks(db: Db) -> None:
    from gis.storage import case_events, cases, idempotency_keys

    with db.engine.connect() as conn:
        n_cases = conn.execute(sa.select(sa.func.count()).select_from(cases)).scalar()
        n_events = conn.execute(sa.select(sa.func.count()).select_from(case_events)).scalar()
        assert n_cases > 0 and n_events >= n_cases
        # Every event and every key belongs to a case that exists.
        for t in (case_events, idempotency_keys):
            orphans = conn.execute(
                sa.select(sa.func.count()).select_from(t)
                .where(~sa.exists().where(cases.c.id == t.c.case_id))).scalar()
            assert orphans == 0, f"{orphans} rows of {t.name} name no case"
        # Every case has its first event (the intake writes both in one transaction).
        bare = conn.execute(sa.select(sa.func.count()).select_from(cases).where(
            ~sa.exists().where(case_events.c.case_id == cases.c.id))).scalar()
        assert bare == 0, f"{bare} cases without a history event"
        # The cases read through the primary key's index are those a table scan reads.
        count = sa.select(sa.func.count(cases.c.id)).where(cases.c.id > 0)
        conn.exec_driver_sql("SET LOCAL enable_indexscan = off; "
                             "SET LOCAL enable_indexonlyscan = off; "
                             "SET LOCAL enable_bitmapscan = off")
        by_scan = conn.execute(count).scalar()
        conn.exec_driver_sql("SET LOCAL enable_indexscan = on; "
                             "SET LOCAL enable_indexonlyscan = on; "
                             "SET LOCAL enable_seqscan = off")
        by_index = conn.execute(count).scalar()
        assert by_scan == by_index == n_cases
        checked = _amcheck(conn)
        print(f"[postgis] amcheck: {checked} B-tree indexes intact")
        conn.rollback()


def test_crash_mid_run_loses_no_acknowledged_report(served, points, backend):
    server, db, token = served
    pts, _grids = points
    pts = pts[INTAKE_REPORTS:]  # other points than the intake test's
    load = Load(pts, token)
    base = server.start()
    killed = threading.Event()
    reached = threading.Event()

    def on_created(n: int) -> None:
        if n >= KILL_AFTER:
            reached.set()

    def killer() -> None:
        reached.wait()
        server.kill()
        killed.set()

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    out = load.drive(base, range(CRASH_REPORTS), on_created=on_created)
    if not reached.is_set():  # the run ended first: it must have been all 201s
        reached.set()
    t.join(timeout=60)
    assert killed.is_set(), "the server was not killed"
    assert not out.other, (f"non-201 answers before the kill: {list(out.other.items())[:5]}"
                           f"\n{server.log_tail()}")
    assert KILL_AFTER <= len(out.created) < CRASH_REPORTS, out.statuses()
    assert out.lost, "no request was in flight when the server was killed"

    # The database as the kill left it.
    db.wait_for_sessions_to_end()
    if backend == "sqlite":
        _sqlite_checks(server.instance / "hemei.sqlite3")
    acknowledged = dict(out.created)
    stored = _check_stored(load, db.stored(load), acknowledged)
    unexplained = set(stored) - set(acknowledged) - set(out.lost)
    assert not unexplained, f"stored, but never sent or answered: {sorted(unexplained)[:10]}"

    # Restart on the same database.
    base = server.start()
    assert requests.get(f"{base}/readyz", timeout=30).status_code == 200
    # Retry what got no answer, with the same Idempotency-Key.
    s = load.session()
    replayed, created_now = {}, {}
    for i in sorted(out.lost):
        r = load.post(s, base, i)
        assert r.status_code in (200, 201), (i, r.status_code, r.text[:300])
        if r.status_code == 200:
            assert i in stored, f"report {i} replayed but it was never stored"
            assert r.json()["id"] == stored[i]
            replayed[i] = r.json()["id"]
        else:
            assert i not in stored, f"report {i} stored before the kill, made again"
            created_now[i] = r.json()["id"]
    print(f"[{backend}] killed after {len(acknowledged)} acknowledged reports; "
          f"{len(out.lost)} got no answer: {len(replayed)} had been stored (retry: 200), "
          f"{len(created_now)} had not (retry: 201)")
    # A second retry of each is a replay of the same case.
    for i in list(out.lost)[:3]:
        r = load.post(s, base, i)
        assert r.status_code == 200 and r.json()["id"] in {**replayed, **created_now}.values()
    # New reports are accepted.
    new = load.drive(base, range(CRASH_REPORTS, CRASH_REPORTS + 2 * CLIENTS))
    assert len(new.created) == 2 * CLIENTS, new.statuses()

    rows = db.stored(load)
    final = _check_stored(load, rows, {**acknowledged, **replayed, **created_now,
                                       **new.created})
    # Exactly what was stored before the kill, plus the retries made now, plus the new.
    assert len(rows) == len(stored) + len(created_now) + len(new.created)
    assert set(final) == set(stored) | set(created_now) | set(new.created)
    assert requests.get(f"{base}/readyz", timeout=30).status_code == 200
    server.stop()
    if backend == "sqlite":
        _sqlite_checks(server.instance / "hemei.sqlite3")
    else:
        _postgis_checks(db)
