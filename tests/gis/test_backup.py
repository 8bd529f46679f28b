"""Backups: an online SQLite backup while the app writes, a restore into a fresh instance,
and every table compared (row counts and checksums; ``meta`` holds the data version, which
a restore moves past the target's and the backup's, so it is compared on its own); the
``hemei backup``/``restore`` commands; a PostGIS round trip through pg_dump/pg_restore when
a server is available, its counts taken from the dump's snapshot while others write."""

from __future__ import annotations

import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from gis import pg
from gis.backup import BackupError, backup, data_version, restore, table_checksums
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


def _data(url: str) -> dict[str, tuple[int, str]]:
    """Every table's row count and checksum but ``meta``'s (the data version, which a
    restore moves on purpose) and ``meta``'s row count."""
    sums = table_checksums(url)
    meta = sums.pop("meta")
    return {**sums, "meta rows": meta[0]}


def _restored_counts(url: str) -> dict[str, int]:
    return {t: n for t, (n, _) in table_checksums(url).items()}


def test_checksums_cover_every_table(source):
    from gis.storage import metadata

    sums = table_checksums(_url(source))
    assert set(sums) == {t.name for t in metadata.sorted_tables}
    assert sums["cases"][0] >= 400 and sums["users"][0] == 1 and sums["api_tokens"][0] == 1


@contextmanager
def _writing(h):
    """Reports written one after another on a thread while the block runs: at least five
    before it starts and five after it ends. Yields the list of the case ids written so
    far; a writer's error fails the test."""
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

    t = threading.Thread(target=writer)
    t.start()
    try:
        while len(written) < 5 and not errors:
            time.sleep(0.01)
        yield written
        after = len(written)
        while len(written) < after + 5 and not errors:
            time.sleep(0.01)
    finally:
        stop.set()
        t.join()
    assert not errors, errors


def test_online_backup_while_writing_then_restore_matches_every_table(source, tmp_path):
    from gis.service import Hemei

    h = Hemei(read_settings(env={}, INSTANCE=str(source)))
    chain = h.locator.locate(*INSIDE)
    before = table_checksums(_url(source))["cases"][0]
    online = tmp_path / "online.sqlite3"
    with _writing(h) as written:
        counts = backup(_url(source), online)
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
    assert table_checksums(f"sqlite:///{quiet}") == table_checksums(_url(source))
    want = _data(_url(source))
    assert _data(_url(fresh)) == want
    assert restored == _restored_counts(_url(source))
    assert data_version(_url(fresh)) == data_version(f"sqlite:///{quiet}") + 1
    assert not list(fresh.glob(".hemei.sqlite3.*"))  # no staged copy left behind
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
    assert _data(target) == _data(_url(source))


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
    assert _data(_url(other)) == _data(_url(source))


def test_a_restore_moves_the_data_version_past_the_targets_and_the_backups(source,
                                                                          tmp_path):
    """Caches are keyed on the data version: restored to the backup's, the next writes
    would reach versions the server had already seen with other data. After a restore
    it is above both what the target had and what the backup has, and writes go on
    from there."""
    from gis.service import Hemei

    url = _url(source)
    saved = tmp_path / "s.sqlite3"
    backup(url, saved)
    at_backup = data_version(url)
    assert data_version(f"sqlite:///{saved}") == at_backup
    h = Hemei(read_settings(env={}, INSTANCE=str(source)))
    try:
        chain = h.locator.locate(*INSIDE)
        for i in range(2):
            h.store.create_case(NewCase("street_light", INSIDE[0], INSIDE[1], "路灯不亮",
                                        f"备份后 {i}"), chain, None)
        before = h.store.data_version()
        assert before == at_backup + 2
        restore(url, saved, force=True)
        after = h.store.data_version()  # the running store sees the restored file
        assert after == max(before, at_backup) + 1
        h.store.create_case(NewCase("street_light", INSIDE[0], INSIDE[1], "路灯不亮",
                                    "恢复后"), chain, None)
        assert h.store.data_version() == after + 1
    finally:
        h.store.dispose()
    # A backup holding a higher version than the target: above the backup's.
    from gis.storage import open_store

    low = tmp_path / "low"
    open_store(_url(low)).dispose()  # a new, empty database: version 1
    restore(_url(low), saved, force=True)
    assert data_version(_url(low)) == at_backup + 1


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
    # A backup that is there is kept: a mistyped name must not replace yesterday's.
    before = out.read_bytes()
    again = run(["backup", str(out)], source)
    assert again.returncode == 2 and again.stderr.startswith("error:")
    assert "exists" in again.stderr and "--force" in again.stderr
    assert out.read_bytes() == before
    assert run(["backup", str(out), "--force"], source).returncode == 0
    fresh = tmp_path / "fresh"
    r = run(["restore", str(out)], fresh)
    assert r.returncode == 0, r.stderr
    assert "restored" in r.stderr
    assert _data(_url(fresh)) == _data(_url(source))
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
    if not url or not all(shutil.which(t) for t in ("pg_dump", "pg_restore", "psql")):
        pytest.skip(f"{PG_URL_ENV} is not set or pg_dump/pg_restore/psql are not on PATH")
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
    want = _data(src)
    assert _data(dst) == want
    assert restored == _restored_counts(src)
    assert data_version(dst) == data_version(src) + 1
    with pytest.raises(BackupError, match="not empty"):
        restore(dst, out)
    before = data_version(dst)
    restore(dst, out, force=True)
    assert _data(dst) == want
    assert data_version(dst) == before + 1  # above what the target had
    bad = tmp_path / "bad.dump"
    bad.write_bytes(b"PGDMP but not really")
    with pytest.raises(BackupError, match="failed"):
        restore(dst, bad, force=True)
    assert _data(dst) == want


def _pg_writes(url: str, inst: Path, n: int) -> int:
    """Report ``n`` cases on the PostGIS store ``url``; returns its data version after."""
    from gis.service import Hemei

    h = Hemei(read_settings(env={}, INSTANCE=str(inst), DATABASE_URL=url))
    try:
        chain = h.locator.locate(*INSIDE)
        for i in range(n):
            h.store.create_case(NewCase("street_light", INSIDE[0], INSIDE[1], "路灯不亮",
                                        f"写入 {i}"), chain, None)
        return h.store.data_version()
    finally:
        h.store.dispose()


def test_postgis_restore_moves_the_data_version_past_both(pg_pair, tmp_path):
    """The target's version counts the report slots (data_version.N rows) too: after a
    restore the sum is max(the target's before, the backup's) + 1."""
    src, _ = pg_pair
    _seed(tmp_path / "inst", src)
    _pg_writes(src, tmp_path / "inst", 3)  # some slot rows in the backup
    out = tmp_path / "s.dump"
    backup(src, out)
    at_backup = data_version(src)
    before = _pg_writes(src, tmp_path / "inst", 2)
    assert before == at_backup + 2
    restore(src, out, force=True)
    after = data_version(src)
    assert after == before + 1
    assert _pg_writes(src, tmp_path / "inst", 2) == after + 2  # never a version seen


def test_postgis_backup_counts_are_the_dumps_while_others_write(pg_pair, tmp_path):
    """The counts printed are taken in the snapshot pg_dump reads, not from the live
    database afterwards: with a writer busy throughout, they equal what the dump
    restores."""
    from gis.service import Hemei

    src, dst = pg_pair
    _seed(tmp_path / "inst", src)
    h = Hemei(read_settings(env={}, INSTANCE=str(tmp_path / "inst"), DATABASE_URL=src))
    out = tmp_path / "busy.dump"
    try:
        with _writing(h):
            counts = backup(src, out)
    finally:
        h.store.dispose()
    restored = restore(dst, out)
    assert counts == restored
    assert counts["cases"] < _restored_counts(src)["cases"]  # others wrote on meanwhile


def test_postgis_a_restore_that_fails_half_way_changes_nothing(pg_pair, tmp_path):
    """A dump whose table of contents reads but whose data is cut off: pg_restore fails
    part-way through, and psql's transaction is abandoned before its COMMIT."""
    src, dst = pg_pair
    _seed(tmp_path / "inst", src)
    out = tmp_path / "whole.dump"
    backup(src, out)
    restore(dst, out)
    want, version = _data(dst), data_version(dst)
    cut = tmp_path / "cut.dump"
    cut.write_bytes(out.read_bytes()[: int(out.stat().st_size * 0.6)])
    with pytest.raises(BackupError, match="pg_restore failed") as failed:
        restore(dst, cut, force=True)
    assert "nothing was changed" not in str(failed.value)  # pg_restore's own failure
    assert _data(dst) == want and data_version(dst) == version


def test_postgis_a_restore_the_server_refuses_half_way_changes_nothing(pg_pair, tmp_path):
    """psql stops at the first error (here a view, made by hand, that depends on a
    table the restore must drop): its error is reported, and nothing is changed."""
    src, dst = pg_pair
    _seed(tmp_path / "inst", src)
    out = tmp_path / "whole.dump"
    backup(src, out)
    restore(dst, out)
    engine = sa.create_engine(dst, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE VIEW open_cases AS SELECT id FROM cases")
    engine.dispose()
    want, version = _data(dst), data_version(dst)
    with pytest.raises(BackupError, match="nothing was changed.*depend"):
        restore(dst, out, force=True)
    assert _data(dst) == want and data_version(dst) == version
