"""Backups of the database: ``hemei backup OUT`` and ``hemei restore IN``.

SQLite: an *online* backup through SQLite's backup API (:meth:`sqlite3.Connection.backup`),
copied in one step inside one read transaction, so the copy is a consistent snapshot even
while the app keeps writing (under WAL the writers are not blocked). The copy is written
to a temporary file next to ``OUT``, switched to a single-file journal, checked with
``PRAGMA integrity_check`` and only then renamed to ``OUT``. Restoring copies the backup
into the target through the same API (the target's pages are replaced as a whole).

PostgreSQL + PostGIS: ``pg_dump --format=custom`` (a consistent snapshot too) and
``pg_restore --clean --if-exists --no-owner --single-transaction`` (all or nothing).
Both programs must be on ``PATH``, in a version not older than the server's.

A restore refuses a target that holds data (any row outside the ``meta`` table) unless
``force=True``. Stop the app (or restart it afterwards) when restoring: its caches key on
the data version, which the restore puts back to the backup's.

Only the database is backed up. Photos are files in ``<instance>/photos`` (and the
instance's secret key is a file too): back the instance folder up with the usual file
tools (rsync, tar) alongside the database backup.

:func:`table_checksums` gives, for every table of the schema, its row count and a SHA-256
of its rows in primary-key order (values normalised to text, read through SQLAlchemy):
two databases with equal checksums hold the same data, whatever the backend.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import tempfile
import warnings
from contextlib import contextmanager, suppress
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import NullPool

from gis.errors import HemeiError

__all__ = ["BackupError", "backup", "restore", "table_checksums"]


class BackupError(HemeiError):
    """A backup or restore that could not be made (bad file, non-empty target, a tool
    missing or failing)."""

    status = 500
    code = "backup_failed"


# -- URLs ------------------------------------------------------------------------------------
def _backend(url: str) -> str:
    try:
        name = sa.make_url(url).get_backend_name()
    except sa.exc.ArgumentError as err:
        raise BackupError(f"not a database URL: {url!r}") from err
    if name not in ("sqlite", "postgresql"):
        raise BackupError(f"backups support SQLite and PostgreSQL, not {name!r}")
    return name


def _sqlite_path(url: str) -> Path:
    database = sa.make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError(f"cannot back up or restore an in-memory database ({url})")
    return Path(database)


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URL for pg_dump/pg_restore (no "+psycopg"; the password passed in the
    environment, not on the command line) and that environment."""
    u = sa.make_url(url)
    env = dict(os.environ)
    if u.password is not None:
        env["PGPASSWORD"] = str(u.password)
    plain = u.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _engine(url: str) -> sa.Engine:
    u = sa.make_url(url)
    if u.get_backend_name() == "postgresql":
        from gis.pg import psycopg_url

        return sa.create_engine(psycopg_url(u), poolclass=NullPool,
                                isolation_level="REPEATABLE READ")
    engine = sa.create_engine(u, poolclass=NullPool)

    # One read transaction over every table (pysqlite would run each SELECT on its own).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN")

    return engine


# -- checksums -------------------------------------------------------------------------------
def _text(value: object) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, Decimal):
        return repr(float(value))
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _tables() -> list[sa.Table]:
    import gis.accounts  # noqa: F401  (its tables join the shared metadata)
    from gis.storage import metadata

    return list(metadata.sorted_tables)


def table_checksums(url: str) -> dict[str, tuple[int, str]]:
    """``{table: (row_count, sha256 of its rows ordered by primary key)}`` for every table
    of the schema the database has, read in one transaction. Only the schema's columns are
    read (not PostGIS's derived geometry columns), so the backends compare equal."""
    if _backend(url) == "sqlite" and not _sqlite_path(url).exists():
        raise BackupError(f"no database at {_sqlite_path(url)}")
    engine = _engine(url)
    try:
        with engine.connect() as conn, conn.begin():
            return checksums(conn)
    except sa.exc.DBAPIError as err:
        raise BackupError(f"cannot read {_safe(url)}: {_first_line(err.orig)}") from err
    finally:
        engine.dispose()


def checksums(conn) -> dict[str, tuple[int, str]]:
    """:func:`table_checksums` on an open connection (in the caller's transaction)."""
    out: dict[str, tuple[int, str]] = {}
    insp = sa.inspect(conn)
    have = set(insp.get_table_names())
    for table in _tables():
        if table.name not in have:
            continue
        # The columns the database has: an older schema (before an upgrade) lacks some.
        with warnings.catch_warnings():  # PostGIS's geometry type is unknown to SQLAlchemy
            warnings.filterwarnings("ignore", "Did not recognize type", sa.exc.SAWarning)
            present = {c["name"] for c in insp.get_columns(table.name)}
        columns = [c for c in table.columns if c.name in present]
        order = list(table.primary_key.columns) or columns
        digest = hashlib.sha256()
        n = 0
        result = conn.execution_options(yield_per=2000).execute(
            sa.select(*columns).order_by(*order))
        for row in result:
            digest.update(("\t".join(map(_text, row)) + "\n").encode("utf-8"))
            n += 1
        out[table.name] = (n, digest.hexdigest())
    return out


def row_counts(url: str) -> dict[str, int]:
    """Rows per table (for the report the CLI prints)."""
    return {t: n for t, (n, _) in table_checksums(url).items()}


def _safe(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def _first_line(err: object) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _has_data(url: str) -> bool:
    """Whether the database holds any row outside ``meta`` and ``alembic_version`` (a
    fresh schema is empty)."""
    if _backend(url) == "sqlite":
        path = _sqlite_path(url)
        if not path.exists() or path.stat().st_size == 0:
            return False
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            for name in insp.get_table_names():
                if (name in ("meta", "spatial_ref_sys", "alembic_version")
                        or name.startswith("sqlite_")):
                    continue
                q = sa.text(f"SELECT 1 FROM {conn.dialect.identifier_preparer.quote(name)} "
                            "LIMIT 1")
                if conn.execute(q).first() is not None:
                    return True
    except sa.exc.DBAPIError as err:
        raise BackupError(f"cannot read {_safe(url)}: {_first_line(err.orig)}") from err
    finally:
        engine.dispose()
    return False


# -- backup ----------------------------------------------------------------------------------
@contextmanager
def _temp_beside(path: Path, suffix: str):
    """A temporary file next to ``path``; renamed onto it on success, removed otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with suppress(FileNotFoundError):
            tmp.unlink()


def _integrity(conn: sqlite3.Connection, what: str) -> None:
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as err:
        raise BackupError(f"{what} is not a valid SQLite database: {err}") from err
    if rows != ["ok"]:
        raise BackupError(f"{what} failed the integrity check: {'; '.join(rows[:5])}")


def backup(url: str, out_path: str | os.PathLike) -> dict[str, int]:
    """Back up the database ``url`` names to ``out_path``; returns rows per table of the
    copy (SQLite) or of the database (PostgreSQL)."""
    out = Path(out_path)
    if out.is_dir():
        raise BackupError(f"{out} is a folder; name the backup file")
    if _backend(url) == "sqlite":
        return _backup_sqlite(_sqlite_path(url), out)
    return _backup_pg(url, out)


def _backup_sqlite(src_path: Path, out: Path) -> dict[str, int]:
    if not src_path.exists():
        raise BackupError(f"no database at {src_path}")
    if src_path.resolve() == out.resolve():
        raise BackupError("the backup file cannot be the database itself")
    try:
        with _temp_beside(out, ".part") as tmp:
            src = sqlite3.connect(src_path, timeout=30)
            dst = sqlite3.connect(tmp)
            try:
                src.execute("PRAGMA busy_timeout=30000")
                # pages=-1: every page in one step, i.e. one read transaction — a
                # consistent snapshot that concurrent writers (WAL) neither block nor break.
                src.backup(dst, pages=-1)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
                _integrity(dst, "the backup copy")
            finally:
                dst.close()
                src.close()
            counts = row_counts(f"sqlite:///{tmp}")
    except sqlite3.Error as err:
        raise BackupError(f"backup of {src_path} failed: {err}") from err
    except OSError as err:
        raise BackupError(f"cannot write {out}: {err.strerror or err}") from err
    return counts


def _tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        raise BackupError(f"{name} is not on PATH (install the PostgreSQL client tools)")
    return path


def _run(args: list[str], env: dict[str, str], what: str) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise BackupError(f"{what} failed: {err}") from err
    if r.returncode != 0:
        msg = "; ".join(line for line in r.stderr.strip().splitlines()[:5]) or \
            f"exit status {r.returncode}"
        raise BackupError(f"{what} failed: {msg}")
    return r


def _backup_pg(url: str, out: Path) -> dict[str, int]:
    pg_dump = _tool("pg_dump")
    libpq, env = _libpq(url)
    try:
        with _temp_beside(out, ".part") as tmp:
            _run([pg_dump, "--format=custom", "--file", str(tmp), "--dbname", libpq], env,
                 "pg_dump")
    except OSError as err:
        raise BackupError(f"cannot write {out}: {err.strerror or err}") from err
    return row_counts(url)


# -- restore ---------------------------------------------------------------------------------
def restore(url: str, in_path: str | os.PathLike, *, force: bool = False) -> dict[str, int]:
    """Restore the backup ``in_path`` into the database ``url`` names; returns rows per
    table after the restore. Refuses a target holding data unless ``force``."""
    src = Path(in_path)
    if not src.is_file():
        raise BackupError(f"no backup file at {src}")
    backend = _backend(url)
    if backend == "sqlite":
        _check_sqlite_backup(src)
    else:
        _check_pg_backup(src)
    if not force and _has_data(url):
        raise BackupError(f"the database {_safe(url)} is not empty; use --force to "
                          "overwrite it")
    if backend == "sqlite":
        _restore_sqlite(src, _sqlite_path(url))
    else:
        libpq, env = _libpq(url)
        _run([_tool("pg_restore"), "--clean", "--if-exists", "--no-owner",
              "--single-transaction", "--dbname", libpq, str(src)], env, "pg_restore")
    from gis.storage import announce_accounts_changed

    announce_accounts_changed(url)  # users and tokens may differ now
    return row_counts(url)


def _check_sqlite_backup(src: Path) -> None:
    try:
        conn = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as err:
        raise BackupError(f"cannot open {src}: {err}") from err
    try:
        _integrity(conn, str(src))
        names = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as err:
        raise BackupError(f"{src} is not a valid SQLite database: {err}") from err
    finally:
        conn.close()
    if not {"meta", "cases"} <= names:
        raise BackupError(f"{src} is not a Hemei Grid backup (no meta or cases table)")


def _check_pg_backup(src: Path) -> None:
    libpq_env = dict(os.environ)
    _run([_tool("pg_restore"), "--list", str(src)], libpq_env, f"reading {src}")


def _restore_sqlite(src: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        s = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
        from gis.storage import create_private_file

        create_private_file(target)  # as the database it replaces: owner only
        d = sqlite3.connect(target, timeout=30)
        try:
            d.execute("PRAGMA busy_timeout=30000")
            s.backup(d, pages=-1)
            _integrity(d, f"the restored database {target}")
        finally:
            d.close()
            s.close()
    except sqlite3.Error as err:
        raise BackupError(f"restore into {target} failed: {err}") from err
