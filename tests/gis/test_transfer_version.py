"""``hemei migrate-store`` and the data version: the copy leaves the target's version
strictly above both its own before the copy and the source's. (It used to bring the
source's counter over as it was, so ``--force`` into a database a running service used
could give a version the workers had already cached with other data: stale figures and
304s.) Run SQLite → SQLite always, SQLite → PostGIS and PostGIS → SQLite when
``HEMEI_TEST_PG_URL`` names a server; each with a target whose version was higher than
the source's and one whose version was lower."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from gis.backup import data_version, table_checksums
from gis.storage import open_store
from gis.transfer import migrate_store
from tests.conftest import REPO

HEMEI = [sys.executable, "-m", "webapp.cli"]


def _set_version(url: str, main: int, slots: dict[int, int] | None = None) -> int:
    """Give the database ``url`` the main data-version row ``main`` and the report slot
    rows ``slots`` (slot → value; PostGIS reports move those); returns the version."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM meta WHERE key LIKE 'data_version.%'"))
            conn.execute(sa.text("UPDATE meta SET value = :v WHERE key = 'data_version'"),
                         {"v": str(main)})
            for slot, value in (slots or {}).items():
                conn.execute(sa.text("INSERT INTO meta (key, value) VALUES (:k, :v)"),
                             {"k": f"data_version.{slot}", "v": str(value)})
    finally:
        engine.dispose()
    return data_version(url)


@pytest.fixture
def source(seeded_template, tmp_path) -> str:
    """A copy of the seeded SQLite instance's database (the demo street, accounts), its
    data version moved to 500 (a street that has been running a while)."""
    inst = Path(shutil.copytree(seeded_template, tmp_path / "src"))
    url = f"sqlite:///{inst / 'hemei.sqlite3'}"
    assert _set_version(url, 500) == 500
    return url


def _sqlite_target(tmp_path: Path, name: str) -> str:
    url = f"sqlite:///{tmp_path / name / 'hemei.sqlite3'}"
    open_store(url).dispose()  # a new, empty store: version 1
    return url


def _check(src: str, dst: str, *, force: bool) -> tuple[int, int, int]:
    """Copy ``src`` to ``dst``; returns (the source's version, the target's before, the
    target's after) and checks the copy is otherwise equal."""
    src_v, before = data_version(src), data_version(dst)
    migrate_store(src, dst, force=force)
    after = data_version(dst)
    assert table_checksums(dst) == table_checksums(src)  # the version's value left out
    assert data_version(src) == src_v  # the source is only read
    assert after == max(before, src_v) + 1  # as `hemei restore` leaves it
    return src_v, before, after


def test_sqlite_to_sqlite_into_a_lower_version(source, tmp_path):
    dst = _sqlite_target(tmp_path, "low")
    src_v, before, after = _check(source, dst, force=False)
    assert before < src_v
    assert after > src_v and after > before
    assert after == src_v + 1


def test_sqlite_to_sqlite_into_a_higher_version_with_force(source, tmp_path):
    """The operator's case: ``--force`` into the database a running service uses, whose
    version (the key of its workers' caches) has run past the source's."""
    from gis.service import Hemei
    from gis.settings import read_settings

    dst_inst = Path(shutil.copytree(Path(sa.make_url(source).database).parent,
                                    tmp_path / "live"))
    dst = f"sqlite:///{dst_inst / 'hemei.sqlite3'}"
    _set_version(dst, 900)
    h = Hemei(read_settings(env={}, INSTANCE=str(dst_inst)))  # a worker on the target
    try:
        cached = h.store.data_version()
        src_v, before, after = _check(source, dst, force=True)
        assert before == cached == 900 > src_v
        assert after > before and after > src_v
        assert h.store.data_version() == after  # the worker sees a version it never had
    finally:
        h.store.dispose()


def test_the_command_moves_the_version_past_both(source, tmp_path):
    """``hemei migrate-store --force`` as an operator runs it."""
    dst = _sqlite_target(tmp_path, "cli")
    _set_version(dst, 700, {3: 40})  # slots too: the version is their sum with the main row
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEMEI_")}
    env.update({"HEMEI_INSTANCE": str(tmp_path / "inst"), "PYTHONIOENCODING": "utf-8"})
    r = subprocess.run(HEMEI + ["migrate-store", "--from", source, "--to", dst, "--force"],
                       env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "counts and checksums equal" in r.stdout
    assert data_version(dst) > 740 and data_version(dst) > data_version(source)


# -- PostGIS ---------------------------------------------------------------------------------
def test_sqlite_to_postgis_lower_and_higher(source, pg_databases):
    dst = pg_databases.new()  # no schema yet: made by the copy (version 1 before it)
    open_store(dst).dispose()
    src_v, before, after = _check(source, dst, force=False)
    assert before < src_v and after > src_v and after > before

    # Now the target runs on (reports move the slot rows) past the source's version.
    high = _set_version(dst, 800, {0: 25, 7: 30})
    assert high == 855 > src_v
    src_v, before, after = _check(source, dst, force=True)
    assert before == high
    assert after > high and after > src_v
    # The target's own slot rows went with its other rows: the version is the main row.
    engine = sa.create_engine(dst, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            slots = conn.execute(sa.text(
                "SELECT count(*) FROM meta WHERE key LIKE 'data_version.%'")).scalar()
    finally:
        engine.dispose()
    assert slots == 0  # the source's rows: SQLite has the main row only


def test_postgis_to_sqlite_lower_and_higher(source, pg_databases, tmp_path):
    pg_src = pg_databases.new()
    migrate_store(source, pg_src)
    src_v = _set_version(pg_src, 300, {2: 150, 9: 90})  # a PostGIS store's slot rows
    assert src_v == 540

    low = _sqlite_target(tmp_path, "low")
    _, before, after = _check(pg_src, low, force=False)
    assert before < src_v and after > src_v and after > before

    high = f"sqlite:///{tmp_path / 'high.sqlite3'}"
    migrate_store(source, high)
    _set_version(high, 2000)
    _, before, after = _check(pg_src, high, force=True)
    assert before == 2000 and after > 2000 and after > src_v
