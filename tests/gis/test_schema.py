"""Schema migrations (Alembic) on both backends: from an empty database, from a database
release 0.1 made (a real file that release wrote, and the same state built on PostGIS),
``hemei db upgrade/current/history``, a failed upgrade that changes nothing, and an
outdated schema refused when automatic upgrades are off."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gis import schema
from gis.backup import _engine, table_checksums
from gis.storage import metadata, open_store
from tests.conftest import REPO

pytestmark = pytest.mark.backends("sqlite", "postgis")

RELEASE_01 = REPO / "tests" / "data" / "release-0.1.sqlite3"
RELEASE_01_TOKEN = "hm_4pcW7j5IjduF-46AALqE34QAe9AgLkodU79u3lG3j2M"
HEMEI = [sys.executable, "-m", "webapp.cli"]
# PostGIS's own columns, indexes and tables: not on the SQLAlchemy metadata on purpose.
SPATIAL = {"geom", "shape", "ix_cases_geom", "ix_boundaries_shape", "spatial_ref_sys"}


@pytest.fixture
def empty_url(backend, tmp_path, request) -> str:
    """A database with nothing in it (on PostGIS: not even the extension)."""
    if backend == "sqlite":
        (tmp_path / "db").mkdir()
        return f"sqlite:///{tmp_path / 'db' / 'hemei.sqlite3'}"
    return request.getfixturevalue("pg_databases").new()


def hemei_cli(args, url: str, tmp_path: Path, **env):
    e = {**os.environ, "HEMEI_INSTANCE": str(tmp_path / "inst"), "HEMEI_DATABASE_URL": url,
         "PYTHONIOENCODING": "utf-8", **env}
    return subprocess.run(HEMEI + list(args), env=e, capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def _diff(url: str) -> list:
    """What differs between the database's schema and the code's declared one."""
    def include(obj, name, type_, reflected, compare_to):
        if name in SPATIAL or (type_ == "table" and name not in metadata.tables
                               and reflected):
            return False
        return True

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"include_object": include,
                                                         "compare_type": True})
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def _revision(url: str) -> str | None:
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return schema.current(conn)
    finally:
        engine.dispose()


def _make_release_01(url: str) -> None:
    """A database in the state release 0.1 left it: the 0001 schema, no version table,
    one located case and its history."""
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
            command.upgrade(schema.alembic_config(conn), "0001")
            conn.exec_driver_sql("DROP TABLE alembic_version")
            conn.exec_driver_sql(
                "INSERT INTO meta (key, value) VALUES ('data_version', '7')")
            conn.exec_driver_sql(
                "INSERT INTO layer_versions (id, level, created_at, source, features, active)"
                " VALUES (1, 'grid', '2026-11-01 00:00:00', 'old', 0, false),"
                " (2, 'grid', '2026-11-02 00:00:00', 'new', 0, true)")
            conn.exec_driver_sql(
                "INSERT INTO cases (id, category, title, description, lon, lat, grid_code, "
                "status, source, created_at, updated_at, row_version, published, "
                "rework_count, extension_count) VALUES (1, 'roof_leak', '漏水', '三楼漏水', "
                "111.57, 24.4, '451102003001001', 'reported', 'web', '2026-11-20 08:00:00',"
                " '2026-11-20 08:00:00', 1, false, 0, 0)")
            conn.exec_driver_sql(
                "INSERT INTO case_events (case_id, at, actor, to_status, note, kind) VALUES "
                "(1, '2026-11-20 08:00:00', 'resident', 'reported', '', 'transition')")
    finally:
        engine.dispose()


def test_an_empty_database_gets_exactly_the_declared_schema(empty_url):
    store = open_store(empty_url)
    store.dispose()
    assert _revision(empty_url) == schema.head()
    assert _diff(empty_url) == []


def test_migrating_twice_is_harmless(empty_url):
    open_store(empty_url).dispose()
    before = table_checksums(empty_url)
    open_store(empty_url).dispose()
    assert table_checksums(empty_url) == before


def test_a_database_release_01_left_is_upgraded_with_its_rows(empty_url, tmp_path):
    _make_release_01(empty_url)
    assert _revision(empty_url) == "0001"
    r = hemei_cli(["db", "current"], empty_url, tmp_path)
    assert r.returncode == 0 and "database: 0001" in r.stdout and "needs" in r.stdout
    r = hemei_cli(["db", "upgrade"], empty_url, tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"upgraded 0001 → {schema.head()}" in r.stdout
    assert _revision(empty_url) == schema.head()
    assert _diff(empty_url) == []
    engine = _engine(empty_url)
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT title, description, grid_code, grid_version_id "
                                   "FROM cases WHERE id = 1")).one()
        events = conn.execute(sa.text("SELECT count(*) FROM case_events")).scalar()
        version = conn.execute(sa.text("SELECT value FROM meta WHERE key = 'data_version'"))
        version = version.scalar()
    engine.dispose()
    # Rows kept, and the new column filled with the active grid layer's version.
    assert tuple(row) == ("漏水", "三楼漏水", "451102003001001", 2)
    assert events == 1 and version == "7"
    again = hemei_cli(["db", "upgrade"], empty_url, tmp_path)
    assert again.returncode == 0 and "already up to date" in again.stdout


def _release_01_with_a_colliding_index(url: str) -> None:
    """A release-0.1 database plus something a DBA made by hand that 0002 collides with,
    after its first steps (an upgrade must fail half-way and leave nothing)."""
    _make_release_01(url)
    engine = _engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX ix_cases_street_status ON cases (title)")
    engine.dispose()


def test_a_failed_upgrade_leaves_the_database_as_it_was(empty_url, tmp_path):
    _release_01_with_a_colliding_index(empty_url)
    before = table_checksums(empty_url)
    r = hemei_cli(["db", "upgrade"], empty_url, tmp_path)
    assert r.returncode == 2
    assert "rolled back" in r.stderr and "Traceback" not in r.stderr
    assert _revision(empty_url) == "0001"
    engine = _engine(empty_url)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("cases")}
        assert not sa.inspect(conn).has_table("alembic_version")
    engine.dispose()
    assert "grid_version_id" not in columns  # the column 0002 added first is gone again
    assert table_checksums(empty_url) == before


def test_an_outdated_schema_is_refused_when_upgrades_are_off(empty_url, tmp_path):
    _make_release_01(empty_url)
    r = hemei_cli(["locate", "111.57", "24.40"], empty_url, tmp_path, HEMEI_AUTO_MIGRATE="0")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "hemei db upgrade" in r.stderr and "0001" in r.stderr
    assert _revision(empty_url) == "0001"  # nothing was changed


def test_upgrade_sql_prints_the_ddl_and_runs_nothing(empty_url, tmp_path):
    r = hemei_cli(["db", "upgrade", "--sql"], empty_url, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "CREATE TABLE cases" in r.stdout and "grid_version_id" in r.stdout
    assert _revision(empty_url) is None


def _apply_script(url: str, script: str) -> str | None:
    """Run an upgrade script as a DBA would (Python's sqlite3; ``psql -v ON_ERROR_STOP=1``,
    which stops at the first error); returns the error, None when it ran through."""
    import sqlite3

    u = sa.make_url(url)
    if u.get_backend_name() == "sqlite":
        con = sqlite3.connect(u.database)
        try:
            con.executescript(script)
        except sqlite3.Error as err:
            return str(err)
        finally:
            con.close()  # an open transaction (the script stopped inside it) rolls back
        return None
    from gis.backup import _libpq

    psql = shutil.which("psql")
    if not psql:
        pytest.skip("psql is not on PATH")
    libpq, env = _libpq(url)
    r = subprocess.run([psql, "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1",
                        "--dbname", libpq, "--file", "-"], input=script, env=env,
                       capture_output=True, text=True, timeout=120)
    return None if r.returncode == 0 else r.stderr


def _transaction_lines(script: str) -> tuple[list[str], list[str]]:
    """The script's statements that open or end a transaction (a line of their own;
    PL/pgSQL function bodies' BEGIN … END carry no semicolon after BEGIN)."""
    lines = [line.strip().upper() for line in script.splitlines()]
    opens = [line for line in lines if line in ("BEGIN;", "BEGIN TRANSACTION;",
                                                "START TRANSACTION;")]
    ends = [line for line in lines if line in ("COMMIT;", "END;", "ROLLBACK;")]
    return opens, ends


@pytest.mark.parametrize("start", ["empty", "release-0.1"])
def test_upgrade_sql_is_one_transaction_that_a_dba_can_run(empty_url, tmp_path, start):
    """What `hemei db upgrade --sql` prints is one transaction (the README says so): one
    BEGIN first, one COMMIT last, the release-0.1 stamp inside it; run by hand it leaves
    the database where `hemei db upgrade` would."""
    if start == "release-0.1":
        _make_release_01(empty_url)
    r = hemei_cli(["db", "upgrade", "--sql"], empty_url, tmp_path)
    assert r.returncode == 0, r.stderr
    opens, ends = _transaction_lines(r.stdout)
    assert opens == ["BEGIN;"] and ends == ["COMMIT;"], (opens, ends)
    statements = [line for line in r.stdout.splitlines()
                  if line.strip() and not line.startswith("--")]
    assert statements[0] == "BEGIN;" and statements[-1] == "COMMIT;"
    if start == "release-0.1":
        assert r.stdout.index("CREATE TABLE alembic_version") > r.stdout.index("BEGIN;")
    assert _apply_script(empty_url, r.stdout) is None
    assert _revision(empty_url) == schema.head()
    assert _diff(empty_url) == []


def test_upgrade_sql_that_fails_leaves_the_database_as_it_was(empty_url, tmp_path):
    """The script stops at a collision half-way (an index a DBA made by hand): nothing
    of it stays, the version stamp included (on PostGIS it was committed on its own
    before the upgrade; on SQLite every statement before the error stayed)."""
    _release_01_with_a_colliding_index(empty_url)
    before = table_checksums(empty_url)
    r = hemei_cli(["db", "upgrade", "--sql"], empty_url, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "ix_cases_street_status" in (_apply_script(empty_url, r.stdout) or "")
    engine = _engine(empty_url)
    with engine.connect() as conn:
        assert not sa.inspect(conn).has_table("alembic_version")
        columns = {c["name"] for c in sa.inspect(conn).get_columns("cases")}
    engine.dispose()
    assert "grid_version_id" not in columns
    assert table_checksums(empty_url) == before


@pytest.mark.backends("sqlite")
def test_upgrade_sql_for_a_release_01_file_stamps_it_first(backend, tmp_path):
    """The SQL handed to a DBA for a release-0.1 database creates the version table at
    0001 before upgrading: run by hand, it leaves the database exactly where `hemei db
    upgrade` would."""
    import sqlite3

    db = tmp_path / "by-hand.sqlite3"
    shutil.copy(RELEASE_01, db)
    url = f"sqlite:///{db}"
    r = hemei_cli(["db", "upgrade", "--sql"], url, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "CREATE TABLE alembic_version" in r.stdout
    assert _revision(url) == "0001"  # printing changed nothing
    con = sqlite3.connect(db)
    con.executescript(r.stdout)
    con.close()
    assert _revision(url) == schema.head() == "0004"
    r = hemei_cli(["db", "current"], url, tmp_path)
    assert r.returncode == 0 and "0004" in r.stdout, r.stdout + r.stderr


@pytest.mark.backends("sqlite")
def test_the_file_release_01_wrote_upgrades_and_serves(backend, tmp_path):
    """A real database file written by release 0.1's code (tests/data/README.md)."""
    inst = tmp_path / "inst"
    inst.mkdir()
    db = inst / "hemei.sqlite3"
    shutil.copy(RELEASE_01, db)
    url = f"sqlite:///{db}"
    old = table_checksums(url)
    r = hemei_cli(["db", "history"], url, tmp_path)
    assert [line.split()[0] for line in r.stdout.splitlines()] == [
        "0001", "0002", "0003", "0004"]
    r = hemei_cli(["db", "upgrade"], url, tmp_path)
    assert r.returncode == 0 and "upgraded 0001 → 0004" in r.stdout, r.stderr
    new = table_checksums(url)
    assert {t: n for t, (n, _) in new.items()} == {t: n for t, (n, _) in old.items()}
    # Untouched tables are byte-for-byte the same (0002 and 0003 add columns to these).
    for table in set(old) - {"cases", "idempotency_keys"}:
        assert new[table] == old[table], table

    from webapp import create_app

    app = create_app({"TESTING": True, "INSTANCE": str(inst), "TILES": "none"})
    try:
        c = app.test_client()
        c.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {RELEASE_01_TOKEN}"
        assert c.get("/api/v1/me").get_json()["username"] == "gw"
        case = c.get("/api/v1/issues/1").get_json()["properties"]
        assert case["grid_code"] == "451102003003006"
        assert [e["to"] for e in case["history"]] == ["reported", "verified"]
        made = c.post("/api/v1/issues", json={
            "category": "roof_leak", "title": "又漏了", "description": "雨后又漏",
            "lon": 111.57, "lat": 24.40})
        assert made.status_code == 201 and made.get_json()["id"] == 5
        hemei = app.extensions["hemei"]
        grid_version = max(v["id"] for v in hemei.store.layer_versions()
                           if v["level"] == "grid" and v["active"])
        assert hemei.store.get_case(5).grid_version_id == grid_version
        assert hemei.store.get_case(1).grid_version_id == grid_version
    finally:
        app.extensions["hemei"].store.dispose()
