"""Shared fixtures: a real database per test (or per module), the demo street loaded.

Storage backends
----------------
Every test that uses ``instance``/``app``/``client``/``hemei``/``database_url`` runs on
SQLite. A module marked ``pytestmark = pytest.mark.backends("sqlite", "postgis")`` runs
each such test on every backend named (ids ``[sqlite]``/``[postgis]``): the same test,
parametrised, not copied. Only the storage, API and workflow modules opt in, to keep CI
time in budget; ``pytest --every-backend`` runs every module that uses these fixtures on
both (slower; for checking that nothing is SQLite-specific).

PostGIS needs ``HEMEI_TEST_PG_URL`` (``postgresql+psycopg://user:pw@host/db``, a role
that may create databases; ``.ci/run`` sets it up). Unset, the PostGIS tests are
skipped, or fail when ``HEMEI_REQUIRE_SYSTEM_DEPS`` is set (CI). On PostGIS the demo
street is seeded into one database per session; a test borrows a copy of it (made with
``CREATE DATABASE … TEMPLATE``) whose rows are reset after the test (PgDatabases).
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from gis import pg
from gis.settings import read_settings

REPO = Path(__file__).resolve().parent.parent
DEMO_GPKG = REPO / "data" / "shapes" / "jiangnan.gpkg"
DEMO_CASES = REPO / "data" / "shapes" / "demo_cases.csv"

# A point inside the demo street (in 江南社区) and one far outside it.
INSIDE = (111.57, 24.40)
OUTSIDE = (111.30, 24.10)


# The people of the test street: username → (role, password, what they hold).
PASSWORDS = {"admin": "admin-pass-1", "gw": "gw-pass-123", "gw2": "gw2-pass-12",
             "crew": "crew-pass-1", "crew2": "crew2-pass-1", "planner": "plan-pass-1"}


BACKENDS = ("sqlite", "postgis")
PG_URL_ENV = "HEMEI_TEST_PG_URL"


def pytest_addoption(parser):
    parser.addoption("--every-backend", action="store_true",
                     help="run every test that uses the instance/app fixtures on every "
                          "storage backend, not only the modules marked backends(...)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "backends(*names): run the tests on each storage backend named "
                   "(sqlite, postgis) through the backend/instance/app fixtures")


def pytest_generate_tests(metafunc):
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = marker.args if marker else None
    if metafunc.config.getoption("every_backend") and (names is None or len(names) > 1):
        names = BACKENDS
    if names:
        unknown = set(names) - set(BACKENDS)
        assert not unknown, f"unknown backend(s) {unknown}; known: {BACKENDS}"
        metafunc.parametrize("backend", names, indirect=True, scope="module")


@pytest.fixture(scope="module")
def backend(request) -> str:
    """The storage backend of this test: "sqlite" unless the module asks for more."""
    name = getattr(request, "param", "sqlite")
    if name == "postgis" and not os.environ.get(PG_URL_ENV):
        why = (f"{PG_URL_ENV} is not set: the PostGIS tests need a PostgreSQL + PostGIS "
               f"database (.ci/run sets one up; see scripts/system-deps.sh)")
        if os.environ.get("HEMEI_REQUIRE_SYSTEM_DEPS"):
            pytest.fail(why)
        pytest.skip(why)
    return name


class PgDatabases:
    """The databases of this test session on the server ``HEMEI_TEST_PG_URL`` names.

    A test borrows a database in a known state (:meth:`checkout` of a template: the
    empty schema, or the seeded demo street) and gives it back (:meth:`release`), which
    puts the template's rows back (DELETE + binary COPY, a few tens of ms) so the
    next test can borrow it. That is much cheaper than a ``CREATE DATABASE … TEMPLATE``
    and ``DROP DATABASE`` per test, as each drop waits for a checkpoint. Every
    database made here is dropped at the end of the session.
    """

    def __init__(self, url: str):
        self.url = sa.make_url(url)
        self.prefix = f"hemei_t{os.getpid()}_{secrets.token_hex(3)}"
        self.made: list[str] = []
        self._base: str | None = None
        self._free: dict[str, list[str]] = {}  # template → databases in its state
        self._lent: dict[str, str] = {}  # database → its template
        self._snapshots: dict[str, dict] = {}

    def url_of(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    @staticmethod
    def name_of(url: str) -> str:
        return sa.make_url(url).database

    def new(self, template: str | None = None) -> str:
        """A new database (a copy of ``template`` if given); returns its URL. It is
        dropped at the end of the session."""
        name = f"{self.prefix}_{len(self.made)}"
        self.made.append(name)
        return pg.create_database(self.url_of(name), template=template)

    def base(self) -> str:
        """The name of an empty database with PostGIS and the schema (made once)."""
        if self._base is None:
            from gis.storage import open_store

            url = self.new()
            open_store(url).dispose()
            self._base = self.name_of(url)
        return self._base

    def checkout(self, template: str) -> str:
        """The URL of a database in the state of ``template`` for one borrower (the
        template itself must have no open connections)."""
        if template not in self._snapshots:
            self._snapshots[template] = _pg_snapshot(self._connect(template))
        free = self._free.setdefault(template, [])
        name = free.pop() if free else self.name_of(self.new(template=template))
        self._lent[name] = template
        return self.url_of(name)

    def release(self, url: str) -> None:
        """Give back a database from :meth:`checkout`: its rows are reset to the
        template's (its connections are closed first)."""
        name = self.name_of(url)
        template = self._lent.pop(name)
        _pg_restore(self._connect(name), self._snapshots[template])
        self._free[template].append(name)

    def _connect(self, name: str):
        import psycopg

        args = self.url.set(database=name).translate_connect_args(
            username="user", database="dbname")
        return psycopg.connect(**args, **dict(self.url.query))

    def close(self):
        # In parallel: each DROP DATABASE waits for a checkpoint, and drops that wait
        # together share one.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(pg.drop_database, map(self.url_of, self.made)))


def _pg_tables(conn) -> list[str]:
    """The application's tables in the public schema, parents before children."""
    import gis.accounts  # noqa: F401  (its tables join the shared metadata)
    from gis.storage import metadata

    have = {r[0] for r in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename <> 'spatial_ref_sys'")}
    known = [t.name for t in metadata.sorted_tables if t.name in have]
    return known + sorted(have - set(known))


def _pg_snapshot(conn) -> dict:
    """Every row of every application table (binary COPY) and every sequence."""
    with conn:
        tables = _pg_tables(conn)
        rows = {}
        for t in tables:
            with conn.cursor().copy(f'COPY "{t}" TO STDOUT (FORMAT binary)') as cp:
                rows[t] = b"".join(bytes(chunk) for chunk in cp)
        seqs = {}
        for (seq,) in conn.execute("SELECT sequencename FROM pg_sequences "
                                   "WHERE schemaname = 'public'").fetchall():
            seqs[seq] = conn.execute(f'SELECT last_value, is_called FROM "{seq}"').fetchone()
    return {"tables": tables, "rows": rows, "sequences": seqs}


def _pg_restore(conn, snap: dict) -> None:
    """Put the rows and sequences of ``snap`` back, in one transaction."""
    with conn:
        conn.autocommit = True  # end whatever a test left open on this database
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        conn.autocommit = False
        tables = _pg_tables(conn)
        assert tables == snap["tables"], f"a test changed the tables: {tables}"
        # DELETE, not TRUNCATE: on tables this small it is several times faster
        # (TRUNCATE makes new files for every table and index).
        for t in reversed(tables):
            conn.execute(f'DELETE FROM "{t}"')
        for t in tables:
            if snap["rows"][t]:
                with conn.cursor().copy(f'COPY "{t}" FROM STDIN (FORMAT binary)') as cp:
                    cp.write(snap["rows"][t])
        for seq, (value, called) in snap["sequences"].items():
            conn.execute("SELECT setval(%s, %s, %s)", (f'"{seq}"', value, called))


@pytest.fixture(scope="session")
def pg_databases():
    """The session's PostGIS databases (see :class:`PgDatabases`)."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"{PG_URL_ENV} is not set")
    dbs = PgDatabases(url)
    yield dbs
    dbs.close()


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory) -> Path:
    """An instance folder initialised once (layers, demo cases, accounts and tokens);
    tests copy it, which is much faster than loading the demo street every time.

    ``gw`` looks after the grids of 厦良社区, ``gw2`` those of 点灯社区; ``crew`` works
    for 城管维修队, ``crew2`` for 香槟城物业; ``planner`` reads the whole street."""
    return _seed(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def pg_seeded_template(tmp_path_factory, pg_databases) -> tuple[Path, str]:
    """The same seeded instance on PostGIS: its folder (tokens, secret key) and the name
    of the seeded database that tests copy."""
    url = pg_databases.new(template=pg_databases.base())
    inst = _seed(tmp_path_factory.mktemp("template_pg"), url)
    return inst, pg_databases.name_of(url)


def _seed(inst: Path, database_url: str | None = None) -> Path:
    import json

    from gis.service import Hemei

    h = Hemei(read_settings(env={}, INSTANCE=str(inst), DATABASE_URL=database_url))
    h.ensure_initialised()
    grids = h.layers["grid"]
    xialiang = grids[grids["parent_code"] == "451102003001"]["code"].tolist()
    diandeng = grids[grids["parent_code"] == "451102003002"]["code"].tolist()
    crew_org = h.accounts.add_org("城管维修队", "crew")
    prop_org = h.accounts.add_org("香槟城物业", "property")
    a = h.accounts
    users = [
        a.add_user("admin", "admin", password=PASSWORDS["admin"], display_name="管理员"),
        a.add_user("gw", "grid_worker", password=PASSWORDS["gw"], grids=xialiang,
                   display_name="王网格"),
        a.add_user("gw2", "grid_worker", password=PASSWORDS["gw2"], grids=diandeng,
                   display_name="李网格"),
        a.add_user("crew", "field_staff", password=PASSWORDS["crew"], org_id=crew_org,
                   display_name="张师傅"),
        a.add_user("crew2", "field_staff", password=PASSWORDS["crew2"], org_id=prop_org,
                   display_name="赵物业"),
        a.add_user("planner", "planner", password=PASSWORDS["planner"], area_code="451102003",
                   display_name="陈规划"),
    ]
    tokens = {u.username: a.create_token(u.id, "tests") for u in users}
    (inst / "tokens.json").write_text(json.dumps({
        "tokens": tokens, "orgs": {"crew": crew_org, "property": prop_org},
        "grids": {"gw": xialiang, "gw2": diandeng}}), encoding="utf-8")
    h.store.dispose()
    return inst


@pytest.fixture
def people(instance) -> dict:
    """Tokens, organisation ids and grid assignments of the test accounts."""
    import json

    return json.loads((instance / "tokens.json").read_text(encoding="utf-8"))


@pytest.fixture
def auth(people):
    """``auth("gw")`` → the Authorization header of that user's API token."""
    return lambda username: {"Authorization": f"Bearer {people['tokens'][username]}"}


def _copy_instance(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest, dirs_exist_ok=True)
    return dest


class InstanceMaker:
    """Fresh copies of the seeded instance on one backend: the folder, and on PostGIS
    a database copied from the seeded one (named in the app's ``DATABASE_URL``)."""

    def __init__(self, backend: str, template: Path, dbs: PgDatabases | None = None,
                 pg_seed: str | None = None):
        self.backend, self.template, self.dbs, self.pg_seed = backend, template, dbs, pg_seed
        self._urls: dict[int, str] = {}

    def folder(self, dest: Path) -> Path:
        """A copy of the seeded instance folder at ``dest``."""
        return _copy_instance(self.template, dest)

    def database_url(self) -> str | None:
        """A database in the seeded state (None on SQLite: it is in the folder)."""
        return self.dbs.checkout(self.pg_seed) if self.dbs else None

    def app(self, instance: Path, **config):
        """An app over the instance folder ``instance`` (and a fresh database)."""
        from webapp import create_app

        url = self.database_url()
        if url:
            config = {"DATABASE_URL": url, **config}
        app = create_app({"TESTING": True, "INSTANCE": str(instance), "TILES": "none",
                          **config})
        if url:
            self._urls[id(app)] = url
        return app

    def new_app(self, dest: Path, **config):
        """:meth:`folder` then :meth:`app`."""
        return self.app(self.folder(dest), **config)

    def close(self, app) -> None:
        """Close the app's connections and give its database back (PostGIS)."""
        app.extensions["hemei"].store.dispose()
        url = self._urls.pop(id(app), None)
        if url:
            self.dbs.release(url)


@pytest.fixture(scope="module")
def instance_maker(backend, request) -> InstanceMaker:
    """Makes fresh instances (and apps over them) on this module's backend."""
    if backend == "postgis":
        template, seed = request.getfixturevalue("pg_seeded_template")
        return InstanceMaker(backend, template, request.getfixturevalue("pg_databases"), seed)
    return InstanceMaker(backend, request.getfixturevalue("seeded_template"))


@pytest.fixture
def database_url(backend, tmp_path, request):
    """The URL of an empty database of this test's backend (no layers, no cases): a
    SQLite file, or a PostGIS database with the schema (reset after the test)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'hemei.sqlite3'}"
        return
    dbs = request.getfixturevalue("pg_databases")
    url = dbs.checkout(dbs.base())
    yield url
    dbs.release(url)


@pytest.fixture
def instance(instance_maker, tmp_path) -> Path:
    """A fresh copy of the seeded instance folder (tokens, secret key; on SQLite the
    database too, on PostGIS ``app`` borrows a seeded database)."""
    return instance_maker.folder(tmp_path / "instance")


@pytest.fixture
def app(instance_maker, instance):
    """The app over a fresh copy of the seeded instance."""
    app = instance_maker.app(instance)
    yield app
    instance_maker.close(app)


@pytest.fixture
def client(app, people):
    """A client that sends the administrator's API token (writes need one)."""
    c = app.test_client()
    c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {people['tokens']['admin']}"
    return c


@pytest.fixture
def public_client(app):
    """A client with no credentials: what the public sees."""
    return app.test_client()


@pytest.fixture
def hemei(app):
    return app.extensions["hemei"]
