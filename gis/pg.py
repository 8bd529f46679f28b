"""PostgreSQL + PostGIS specifics: the spatial schema added to the shared tables, the
point-in-boundary query, and database administration helpers (create a database from a
template, drop one) for setup scripts and tests.

The shared tables (:mod:`gis.storage`, :mod:`gis.accounts`) keep plain ``lon``/``lat``
columns and WKB boundaries, which every backend reads. On PostGIS, DDL in the first
migration (``gis/migrations/versions/0001_…``) adds real geometry columns in EPSG:4326
with GiST indexes, filled by ``BEFORE INSERT OR UPDATE`` triggers, so no Python code
writes them and a row inserted by any client (``psql``, ``ogr2ogr``, a bulk import)
gets its geometry too:

- ``cases.geom geometry(Point, 4326)`` from ``lon``/``lat``;
- ``boundaries.shape geometry(Geometry, 4326)`` from the WKB in ``boundaries.geom``
  (a generic type: a repaired polygon may come back as a collection).

The geometry columns are not on the SQLAlchemy tables on purpose: ``select(cases)`` stays
the same column list on every backend.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import sqlalchemy as sa

# Serialises schema set-up when several workers start at once (any constant works;
# advisory locks are per database).
SCHEMA_LOCK_KEY = 0x4E6D6569  # "Hmei"
# Serialises the first run's loading of the boundary layers and demo cases (a key of its
# own: a process holding it may open another store, whose schema check takes the other).
FIRST_RUN_LOCK_KEY = SCHEMA_LOCK_KEY + 1

SPATIAL_DDL = (
    # cases.geom: the point, kept in step with lon/lat.
    "ALTER TABLE cases ADD COLUMN IF NOT EXISTS geom geometry(Point, 4326)",
    """CREATE OR REPLACE FUNCTION hemei_cases_geom() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         NEW.geom := ST_SetSRID(ST_MakePoint(NEW.lon, NEW.lat), 4326);
         RETURN NEW;
       END $$""",
    "DROP TRIGGER IF EXISTS cases_geom ON cases",
    """CREATE TRIGGER cases_geom BEFORE INSERT OR UPDATE OF lon, lat ON cases
       FOR EACH ROW EXECUTE FUNCTION hemei_cases_geom()""",
    "UPDATE cases SET geom = ST_SetSRID(ST_MakePoint(lon, lat), 4326) WHERE geom IS NULL",
    "ALTER TABLE cases ALTER COLUMN geom SET NOT NULL",
    "CREATE INDEX IF NOT EXISTS ix_cases_geom ON cases USING gist (geom)",
    # boundaries.shape: the polygon, from the WKB every backend stores.
    "ALTER TABLE boundaries ADD COLUMN IF NOT EXISTS shape geometry(Geometry, 4326)",
    """CREATE OR REPLACE FUNCTION hemei_boundaries_shape() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         NEW.shape := ST_SetSRID(ST_Force2D(ST_GeomFromWKB(NEW.geom)), 4326);
         RETURN NEW;
       END $$""",
    "DROP TRIGGER IF EXISTS boundaries_shape ON boundaries",
    """CREATE TRIGGER boundaries_shape BEFORE INSERT OR UPDATE OF geom ON boundaries
       FOR EACH ROW EXECUTE FUNCTION hemei_boundaries_shape()""",
    """UPDATE boundaries SET shape = ST_SetSRID(ST_Force2D(ST_GeomFromWKB(geom)), 4326)
       WHERE shape IS NULL""",
    "ALTER TABLE boundaries ALTER COLUMN shape SET NOT NULL",
    "CREATE INDEX IF NOT EXISTS ix_boundaries_shape ON boundaries USING gist (shape)",
)


def ensure_postgis(conn) -> None:
    """Make sure the PostGIS extension exists in the connected database.

    Creating it needs a superuser (PostGIS is not a trusted extension); when the
    application's role cannot, the error says what the administrator has to run.
    """
    have = conn.execute(sa.text("SELECT 1 FROM pg_extension WHERE extname = 'postgis'"))
    if have.scalar():
        return
    try:
        with conn.begin_nested():
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
    except sa.exc.DBAPIError as exc:
        db = conn.engine.url.database
        raise RuntimeError(
            f"the database {db!r} has no PostGIS and this role may not create it; as a "
            f"superuser run: psql -d {db} -c 'CREATE EXTENSION postgis'") from exc


# One query for the grid and the compound holding a point (the edge rule: the smallest
# code among those whose closed polygon contains it, as gis.locate does), with the
# grid's community and that community's street from the same active layers.
LOCATE_SQL = sa.text("""
WITH p AS (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4326) AS pt),
active AS (
  SELECT b.level, b.code, b.name, b.parent_code, b.shape
  FROM boundaries b JOIN layer_versions v ON v.id = b.version_id
  WHERE v.active
),
hit AS (
  SELECT DISTINCT ON (a.level) a.level, a.code, a.name, a.parent_code
  FROM active a, p
  WHERE a.level IN ('grid', 'compound') AND ST_Intersects(a.shape, p.pt)
  ORDER BY a.level, a.code COLLATE "C"
)
SELECT g.code AS grid_code, g.name AS grid_name,
       c.code AS compound_code, c.name AS compound_name,
       g.parent_code AS community_code, cm.name AS community_name,
       cm.parent_code AS street_code, st.name AS street_name
FROM (SELECT * FROM hit WHERE level = 'grid') g
LEFT JOIN (SELECT * FROM hit WHERE level = 'compound') c ON true
LEFT JOIN active cm ON cm.level = 'community' AND cm.code = g.parent_code
LEFT JOIN active st ON st.level = 'street' AND st.code = cm.parent_code
""")


def located_chain(row) -> dict | None:
    """A row of :data:`LOCATE_SQL` as the chain :meth:`gis.locate.Locator.locate` gives."""
    if row is None:
        return None

    def place(level):
        code = row[f"{level}_code"]
        return {"code": code, "name": row[f"{level}_name"]} if code else None

    return {"street": place("street"), "community": place("community"),
            "compound": place("compound"), "grid": place("grid")}


@contextmanager
def advisory_lock(engine: sa.Engine, key: int):
    """Hold PostgreSQL's session-level advisory lock ``key`` while inside (waiting for
    it first), for work that runs in transactions of its own on other connections.

    The lock is held by a connection of its own in autocommit, not by an open
    transaction: one left idle in transaction while the work runs would hold back
    vacuum and could be ended by ``idle_in_transaction_session_timeout``. It is released
    on the way out; if that fails, the connection is closed, which ends the session and
    its locks with it, so the pool never gets back a connection still holding one."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.select(sa.func.pg_advisory_lock(key)))
        try:
            yield
        finally:
            try:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(key)))
            except sa.exc.DBAPIError:
                conn.invalidate()


# -- administration -------------------------------------------------------------------
def _admin_engine(url: str | sa.URL) -> sa.Engine:
    # CREATE/DROP DATABASE cannot run in a transaction, nor while connected to the
    # database concerned: use the maintenance database, autocommit, no pool.
    u = sa.make_url(url).set(database="postgres")
    return sa.create_engine(u, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def _quote(conn, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


def create_database(url: str | sa.URL, template: str | None = None) -> str:
    """Create the database ``url`` names (a copy of ``template`` if given; the template
    must have no open connections). Returns the URL as a string, password included."""
    u = sa.make_url(url)
    engine = _admin_engine(u)
    try:
        with engine.connect() as conn:
            sql = f"CREATE DATABASE {_quote(conn, u.database)}"
            if template:
                sql += f" TEMPLATE {_quote(conn, template)}"
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()
    return u.render_as_string(hide_password=False)


def drop_database(url: str | sa.URL) -> None:
    """Drop the database ``url`` names if it exists, ending any sessions still on it."""
    u = sa.make_url(url)
    engine = _admin_engine(u)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(
                f"DROP DATABASE IF EXISTS {_quote(conn, u.database)} WITH (FORCE)")
    finally:
        engine.dispose()


def psycopg_url(url: str | sa.URL) -> sa.URL:
    """``url`` with psycopg 3 as the driver when it names none (``postgresql://…``): the
    driver Hemei depends on, where SQLAlchemy would pick psycopg2."""
    u = sa.make_url(url)
    return u.set(drivername="postgresql+psycopg") if u.drivername == "postgresql" else u


# -- accounts changes, announced to every worker ---------------------------------------
ACCOUNTS_CHANNEL = "hemei_accounts"


def notify_accounts_changed(conn) -> None:
    """Tell every listening worker that users, grids, organisations or tokens changed
    (``conn``: a SQLAlchemy connection; delivered when its transaction commits)."""
    conn.execute(sa.select(sa.func.pg_notify(ACCOUNTS_CHANNEL, "")))


class AccountsListener:
    """``LISTEN hemei_accounts`` on a connection of its own, in a daemon thread: the
    accounts stamp of a PostGIS store (:meth:`gis.storage.CaseStore.accounts_stamp`).
    Workers on several machines share no file, but they share the database, and every
    change made through :class:`gis.accounts.Accounts` sends a notification after it
    commits; each one received moves the stamp. It reaches the other workers within
    milliseconds of the commit.

    While the connection is down (not yet made, lost, being remade) the stamp is None and
    nothing may be cached; every reconnection moves it too, since notifications sent
    meanwhile are lost."""

    POLL_S = 0.25  # how often the thread looks at the stop flag
    RETRY_S = 2.0  # wait between connection attempts

    def __init__(self, url: str | sa.URL):
        self._conninfo = sa.make_url(url).set(drivername="postgresql") \
            .render_as_string(hide_password=False)
        self._count = 0
        self._live = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hemei-accounts-listener",
                                        daemon=True)
        self._thread.start()

    def stamp(self) -> int | None:
        return self._count if self._live else None

    def wait_live(self, timeout: float) -> bool:
        """Wait until the listener is connected (tests; a worker never waits)."""
        deadline = time.monotonic() + timeout
        while not self._live and time.monotonic() < deadline:
            time.sleep(0.01)
        return self._live

    def close(self) -> None:
        """Stop listening and close the connection (waits for the thread, briefly)."""
        self._stop.set()
        self._thread.join(self.POLL_S * 4 + 1)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True,
                                     application_name="hemei accounts listener") as conn:
                    conn.execute(f"LISTEN {ACCOUNTS_CHANNEL}")
                    self._count += 1  # what was cached before may have missed a change
                    self._live = True
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=self.POLL_S):
                            self._count += 1
            except psycopg.Error:
                pass  # retried below; caching is off meanwhile
            finally:
                self._live = False
                self._count += 1
            self._stop.wait(self.RETRY_S)
