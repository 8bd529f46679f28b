"""What an operator sees from ``hemei restore``:

- the row counts it prints are those restored, equal to what ``hemei backup`` printed,
  even when the running service writes a report the moment the restore has committed
  (they used to be counted in the live database afterwards: backup said cases 404,
  restore printed 405);
- a backup of the other kind of database (a SQLite file given to a PostGIS restore, a
  pg_dump archive to a SQLite one) is named for what it is, with ``hemei
  migrate-store`` as the way between the two, in one line with nothing changed (it used
  to be pg_restore's "input file does not appear to be a valid archive").

SQLite always; PostGIS when ``HEMEI_TEST_PG_URL`` names a server and the PostgreSQL
client tools are on PATH."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from gis.backup import BackupError, backup, restore, table_checksums
from gis.cases import NewCase
from gis.settings import read_settings
from gis.transfer import migrate_store
from tests.conftest import INSIDE, REPO

HEMEI = [sys.executable, "-m", "webapp.cli"]


@pytest.fixture
def source(seeded_template, tmp_path) -> str:
    """A copy of the seeded SQLite instance; its database URL."""
    inst = Path(shutil.copytree(seeded_template, tmp_path / "src"))
    return f"sqlite:///{inst / 'hemei.sqlite3'}"


@pytest.fixture
def pg_tools():
    if not all(shutil.which(t) for t in ("pg_dump", "pg_restore", "psql")):
        pytest.skip("pg_dump, pg_restore or psql is not on PATH")


@pytest.fixture
def pg_source(source, pg_databases, pg_tools) -> str:
    """The seeded street on a PostGIS database of its own (copied from SQLite)."""
    url = pg_databases.new()
    migrate_store(source, url)
    return url


def _counts(url: str) -> dict[str, int]:
    return {t: n for t, (n, _) in table_checksums(url).items()}


class _ServiceWritesAfterTheRestore:
    """A running service on the target that takes a report the moment the restore has
    committed: installed where the restore announces the change (right after its
    commit, right before it used to count the rows), it writes one case."""

    def __init__(self, url: str, inst: Path):
        from gis.service import Hemei

        self.h = Hemei(read_settings(env={}, INSTANCE=str(inst), DATABASE_URL=url))
        self.h.ensure_initialised()
        self.wrote = 0

    def __call__(self, url: str) -> None:
        chain = self.h.locator.locate(*INSIDE)
        self.h.store.create_case(NewCase("street_light", INSIDE[0], INSIDE[1], "路灯不亮",
                                         "恢复后的新报告"), chain, None)
        self.wrote += 1

    def close(self) -> None:
        self.h.store.dispose()


def _restore_under_load(monkeypatch, target: str, saved: Path, inst: Path,
                        restore_it) -> tuple[object, int]:
    """Run ``restore_it()`` with a report written right after the restore commits;
    returns what it returned and the target's cases afterwards."""
    import gis.storage

    service = _ServiceWritesAfterTheRestore(target, inst)
    try:
        monkeypatch.setattr(gis.storage, "announce_accounts_changed", service)
        out = restore_it()
        assert service.wrote == 1
    finally:
        service.close()
    return out, _counts(target)["cases"]


@pytest.mark.parametrize("kind", ["sqlite", "postgis"])
def test_restore_returns_the_rows_it_restored_not_the_live_ones(kind, source, tmp_path,
                                                                monkeypatch, request):
    if kind == "postgis":
        src = request.getfixturevalue("pg_source")
        target = request.getfixturevalue("pg_databases").new()
        saved = tmp_path / "s.dump"
    else:
        src, target, saved = source, f"sqlite:///{tmp_path / 't' / 'hemei.sqlite3'}", \
            tmp_path / "s.sqlite3"
    backed_up = backup(src, saved)
    inst = tmp_path / "target-instance"
    restored, live_cases = _restore_under_load(
        monkeypatch, target, saved, inst, lambda: restore(target, saved, force=True))
    assert restored == backed_up
    assert live_cases == backed_up["cases"] + 1  # the report did land, after the restore


def test_the_restore_command_prints_the_backups_counts(source, tmp_path, monkeypatch):
    """``hemei restore`` (in-process, so the service's write can be timed): the table
    lines on stdout are the backup's, and the summary says what they are."""
    from webapp.cli import main

    saved = tmp_path / "s.sqlite3"
    backed_up = backup(source, saved)
    target = f"sqlite:///{tmp_path / 't' / 'hemei.sqlite3'}"
    env = {k: None for k in os.environ if k.startswith("HEMEI_")}
    env.update({"HEMEI_INSTANCE": str(tmp_path / "t"), "HEMEI_DATABASE_URL": target})
    result, live_cases = _restore_under_load(
        monkeypatch, target, saved, tmp_path / "t",
        lambda: CliRunner().invoke(main, ["restore", str(saved), "--force"], env=env))
    assert result.exit_code == 0, result.output
    printed = dict(line.split("\t") for line in result.stdout.splitlines())
    assert {t: int(n) for t, n in printed.items()} == backed_up
    assert live_cases == backed_up["cases"] + 1
    assert "the rows restored" in result.stderr


# -- a backup of the other kind of database ---------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_sqlite_file_for_a_postgis_restore_is_named_before_anything_runs(source,
                                                                          tmp_path):
    """Recognised from the file's first bytes: no server is needed to say so (this URL
    names none), and no tool runs."""
    saved = tmp_path / "hemei-2026-11-26.db"
    backup(source, saved)
    url = f"postgresql+psycopg://hemei:s3cret@127.0.0.1:{_free_port()}/hemei"
    with pytest.raises(BackupError) as err:
        restore(url, saved, force=True)
    msg = err.value.message
    assert "is a SQLite database file" in msg and "PostgreSQL" in msg
    assert "hemei migrate-store" in msg and f"sqlite:///{saved}" in msg
    assert "nothing was changed" in msg and "s3cret" not in msg
    assert len(msg.splitlines()) == 1


def test_a_pg_dump_archive_for_a_sqlite_restore_is_named(source, tmp_path):
    target = tmp_path / "t" / "hemei.sqlite3"
    dump = tmp_path / "hemei.dump"
    dump.write_bytes(b"PGDMP\x01\x0e\x00\x04\x08\x01\x01" + b"\0" * 4000)  # its header
    with pytest.raises(BackupError) as err:
        restore(f"sqlite:///{target}", dump)
    msg = err.value.message
    assert "is a PostgreSQL pg_dump archive" in msg and "SQLite" in msg
    assert "hemei migrate-store" in msg and "nothing was changed" in msg
    assert not target.exists()  # nothing was made
    # Into a database that holds data, with --force: left as it was.
    before = table_checksums(source)
    with pytest.raises(BackupError, match="pg_dump archive"):
        restore(source, dump, force=True)
    assert table_checksums(source) == before


def _cli(args, instance: Path, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if not k.startswith("HEMEI_")}
    e.update({"HEMEI_INSTANCE": str(instance), "PYTHONIOENCODING": "utf-8", **env})
    return subprocess.run(HEMEI + list(args), env=e, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_the_commands_say_it_in_one_line_and_change_nothing(source, pg_source, pg_databases,
                                                            tmp_path):
    # A SQLite backup into a PostGIS database that holds data.
    target = pg_databases.new()
    migrate_store(source, target)
    before = table_checksums(target)
    saved = tmp_path / "hemei.db"
    backup(source, saved)
    r = _cli(["restore", str(saved), "--force"], tmp_path / "i1", HEMEI_DATABASE_URL=target)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "SQLite database file" in lines[0] and "hemei migrate-store" in lines[0]
    assert "valid archive" not in lines[0]
    assert table_checksums(target) == before

    # A real pg_dump archive into a SQLite instance.
    dump = tmp_path / "hemei.dump"
    backup(pg_source, dump)
    sqlite_before = table_checksums(source)
    inst = Path(sa.make_url(source).database).parent
    r = _cli(["restore", str(dump), "--force"], inst)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pg_dump archive" in lines[0], r.stderr
    assert "hemei migrate-store" in lines[0]
    assert table_checksums(source) == sqlite_before
