"""Backups: an online SQLite backup while the app writes, a restore into a fresh instance,
and every table compared (row counts and checksums); the ``hemei backup``/``restore``
commands; a PostGIS round trip through pg_dump/pg_restore when a server is available."""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from gis import pg
from gis.backup import BackupError, backup, restore, table_checksums
from gis.cases import NewCase
from gis.settings import read_settings
from tests.conftest import INSIDE, PG_URL_ENV

HEMEI = [sys.executable, "-m", "webapp.cli"]


def _seed(inst: Path, database_url: str | None = None) -> str:
    """The demo street, an account with a token and one transition; returns the URL."""
    from gis.service import Hemei

    h = Hemei(read_settings(env={}, INSTANCE=str(inst), DATABASE_URL=database_url))
    try:
        h.ensure_initialised()
        u = h.accounts.add_user("admin", "admin", password="admin-pass-1",
                                display_name="管理员")
        h.accounts.create_token(u.id, "backup test")
        reported, _ = h.store.list_cases(status="reported", limit=1)
        h.store.transition(reported[0].id, "verified", actor="admin", note="备份测试")
        return str(h.settings["DATABASE_URL"])
    finally:
        h.store.dispose()


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    inst = tmp_path_factory.mktemp("backup_seed")
    _seed(inst)
    return inst


@pytest.fixture
def source(seeded, tmp_path) -> Path:
    """A fresh copy of the seeded instance."""
    return Path(shutil.copytree(seeded, tmp_path / "source"))


def _url(inst: Path) -> str:
    return f"sqlite:///{inst / 'hemei.sqlite3'}"


def test_checksums_cover_every_table(source):
    from gis.storage import metadata

    sums = table_checksums(_url(source))
    assert set(sums) == {t.name for t in metadata.sorted_tables}
    assert sums["cases"][0] >= 400 and sums["users"][0] == 1 and sums["api_tokens"][0] == 1


def test_online_backup_while_writing_then_restore_matches_every_table(source, tmp_path):
    from gis.service import Hemei

    h = Hemei(read_settings(env={}, INSTANCE=str(source)))
    chain = h.locator.locate(*INSIDE)
    stop = threading.Event()
    written: list[int] = []
    errors: list[BaseException] = []

    def writer():
        try:
            while not stop.is_set():
                c = h.store.create_case(NewCase("street_light", INSIDE[0], INSIDE[1],
                                                "路灯不亮", f"并发 {len(written)}"), chain, None)
                written.append(c.id)
        except BaseException as err:  # noqa: BLE001  (reported below)
            errors.append(err)

    before = table_checksums(_url(source))["cases"][0]
    t = threading.Thread(target=writer)
    t.start()
    try:
        while len(written) < 5:
            time.sleep(0.01)
        online = tmp_path / "online.sqlite3"
        counts = backup(_url(source), online)
        n_at_backup = len(written)
        while len(written) < n_at_backup + 5:
            time.sleep(0.01)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    # A consistent snapshot: every case with its first event, no dangling keys.
    assert before + 5 <= counts["cases"] <= before + len(written)
    with sqlite3.connect(online) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("SELECT count(*) FROM cases WHERE id NOT IN "
                            "(SELECT case_id FROM case_events)").fetchone()[0] == 0
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not list(tmp_path.glob(".online*"))  # no temporary file left behind

    # A backup of the quiet database restores into a fresh instance table for table.
    h.store.dispose()
    quiet = tmp_path / "quiet.sqlite3"
    backup(_url(source), quiet)
    fresh = tmp_path / "fresh"
    restored = restore(_url(fresh), quiet)
    want = table_checksums(_url(source))
    assert table_checksums(f"sqlite:///{quiet}") == want
    got = table_checksums(_url(fresh))
    assert got == want
    assert restored == {t: n for t, (n, _) in want.items()}
    # And the restored instance works.
    h2 = Hemei(read_settings(env={}, INSTANCE=str(fresh)))
    try:
        assert h2.accounts.by_username("admin").role == "admin"
        assert h2.locator.locate(*INSIDE)["grid"]["code"] == chain["grid"]["code"]
    finally:
        h2.store.dispose()


def test_restore_into_an_initialised_empty_schema_is_allowed(source, tmp_path):
    from gis.storage import open_store

    out = tmp_path / "b.sqlite3"
    backup(_url(source), out)
    target = f"sqlite:///{tmp_path / 'empty' / 'hemei.sqlite3'}"
    open_store(target).dispose()  # the schema and the meta row, no data
    restore(target, out)
    assert table_checksums(target) == table_checksums(_url(source))


def test_restore_refuses_a_non_empty_target_without_force(source, seeded, tmp_path):
    from gis.storage import open_store

    out = tmp_path / "b.sqlite3"
    backup(_url(source), out)
    other = Path(shutil.copytree(seeded, tmp_path / "other"))
    store = open_store(_url(other))
    try:
        with store._write() as conn:
            conn.exec_driver_sql("DELETE FROM api_tokens")
    finally:
        store.dispose()
    changed = table_checksums(_url(other))
    with pytest.raises(BackupError, match="not empty; use --force"):
        restore(_url(other), out)
    assert table_checksums(_url(other)) == changed  # untouched
    restore(_url(other), out, force=True)
    assert table_checksums(_url(other)) == table_checksums(_url(source))


def test_a_corrupt_or_foreign_backup_is_a_clean_error(source, tmp_path):
    target = _url(tmp_path / "t")
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(BackupError, match="not a valid SQLite database"):
        restore(target, garbage)
    good = tmp_path / "good.sqlite3"
    backup(_url(source), good)
    truncated = tmp_path / "truncated.sqlite3"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(BackupError):
        restore(target, truncated)
    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE x (a)")
    with pytest.raises(BackupError, match="not a Hemei Grid backup"):
        restore(target, foreign)
    with pytest.raises(BackupError, match="no backup file"):
        restore(target, tmp_path / "missing.sqlite3")
    assert not (tmp_path / "t" / "hemei.sqlite3").exists()  # nothing was made
    with pytest.raises(BackupError, match="no database"):
        backup(_url(tmp_path / "nowhere"), tmp_path / "x.sqlite3")


# -- the commands ----------------------------------------------------------------------------
def run(args, instance: Path):
    env = {**os.environ, "HEMEI_INSTANCE": str(instance), "PYTHONIOENCODING": "utf-8"}
    env.pop("HEMEI_DATABASE_URL", None)
    return subprocess.run(HEMEI + list(args), env=env, capture_output=True, text=True,
                          timeout=120)


def test_backup_and_restore_commands(source, tmp_path):
    out = tmp_path / "cli.sqlite3"
    r = run(["backup", str(out)], source)
    assert r.returncode == 0, r.stderr
    assert "cases\t" in r.stdout and "backed up" in r.stderr and out.exists()
    fresh = tmp_path / "fresh"
    r = run(["restore", str(out)], fresh)
    assert r.returncode == 0, r.stderr
    assert "restored" in r.stderr
    assert table_checksums(_url(fresh)) == table_checksums(_url(source))
    again = run(["restore", str(out)], fresh)
    assert again.returncode != 0
    assert again.stderr.startswith("error:") and "--force" in again.stderr
    assert run(["restore", str(out), "--force"], fresh).returncode == 0
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"\0" * 4096)
    r = run(["restore", str(bad), "--force"], fresh)
    assert r.returncode != 0
    assert r.stderr.startswith("error:") and "Traceback" not in r.stderr


# -- PostGIS ---------------------------------------------------------------------------------
@pytest.fixture
def pg_pair():
    url = os.environ.get(PG_URL_ENV)
    if not url or not shutil.which("pg_dump") or not shutil.which("pg_restore"):
        pytest.skip(f"{PG_URL_ENV} is not set or pg_dump/pg_restore are not on PATH")
    base = sa.make_url(url)
    prefix = f"hemei_backup_{os.getpid()}_{secrets.token_hex(3)}"
    urls = [base.set(database=f"{prefix}_{i}").render_as_string(hide_password=False)
            for i in (0, 1)]
    try:
        for u in urls:
            pg.create_database(u)
            engine = sa.create_engine(u, poolclass=sa.pool.NullPool)
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
            engine.dispose()
        yield urls
    finally:
        for u in urls:
            pg.drop_database(u)


def test_postgis_round_trip(pg_pair, tmp_path):
    src, dst = pg_pair
    _seed(tmp_path / "inst", src)
    out = tmp_path / "hemei.dump"
    counts = backup(src, out)
    assert counts["cases"] >= 400 and out.stat().st_size > 0
    restored = restore(dst, out)
    want = table_checksums(src)
    assert table_checksums(dst) == want
    assert restored == {t: n for t, (n, _) in want.items()}
    with pytest.raises(BackupError, match="not empty"):
        restore(dst, out)
    restore(dst, out, force=True)
    assert table_checksums(dst) == want
    bad = tmp_path / "bad.dump"
    bad.write_bytes(b"PGDMP but not really")
    with pytest.raises(BackupError, match="failed"):
        restore(dst, bad, force=True)
    assert table_checksums(dst) == want
