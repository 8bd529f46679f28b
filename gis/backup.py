"""Backups of the database: ``hemei backup OUT`` and ``hemei restore IN``.

SQLite: an *online* backup through SQLite's backup API (:meth:`sqlite3.Connection.backup`),
copied in one step inside one read transaction, so the copy is a consistent snapshot even
while the app keeps writing (under WAL the writers are not blocked). The copy is written
to a temporary file next to ``OUT``, switched to a single-file journal, checked with
``PRAGMA integrity_check`` and only then renamed to ``OUT``. Restoring copies the backup
into the target through the same API (the target's pages are replaced as a whole).

PostgreSQL + PostGIS: ``pg_dump --format=custom`` run on a snapshot exported from a
REPEATABLE READ transaction that stays open until the dump is written, and in which the
rows per table the command reports are counted: the counts are the dump's, whatever is
written meanwhile. A restore turns the dump into SQL (``pg_restore --clean --if-exists
--no-owner --file=-``) and runs it through ``psql`` in one transaction (all or nothing)
together with the data-version step below. ``pg_dump``, ``pg_restore`` and ``psql`` must
be on ``PATH``, in a version not older than the server's.

A restore refuses a target that holds data (any row outside the ``meta`` table) unless
``force=True``. It may run under a live server: the server's caches (pages, coverage,
API ETags) are keyed on the data version, so the restore leaves it strictly above both
the target's version before the restore and the backup's (``max(before, backup) + 1``),
set before the restored rows become visible (SQLite: in a copy of the backup that then
replaces the target, with the app's writers held at their write lock; PostgreSQL: in the
restore's transaction, with the tables locked first). Had it been put back to the
backup's value, new writes would reach numbers the caches had already seen with other
data, and they would serve the figures of the rows restored away.

Only the database is backed up. Photos are files in ``<instance>/photos`` (and the
instance's secret key is a file too): back the instance folder up with the usual file
tools (rsync, tar) alongside the database backup.

A restore reports the rows per table it restored, counted in what it restored (SQLite:
the staged copy; PostgreSQL: inside the restore's transaction, before its COMMIT), never
in the live database afterwards, where a report written a moment after the restore
would be counted as restored. A backup of the other kind of database (a SQLite file
given to a PostgreSQL restore, a ``pg_dump`` archive to a SQLite one) is recognised by
its first bytes and refused with a pointer to ``hemei migrate-store``.

:func:`table_checksums` gives, for every table of the schema, its row count and a SHA-256
of its rows in primary-key order (values normalised to text, read through SQLAlchemy):
two databases with equal checksums hold the same data, whatever the backend. The data
version's rows in ``meta`` are counted and hashed by key but not by value: the version is
the caches' key, not data, and restores and ``hemei migrate-store`` move it on purpose.
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
        # yield_per on the statement: Connection.execution_options() changes the
        # caller's connection in place, and its next UPDATE would run as a server-side
        # cursor (PostgreSQL: a syntax error).
        result = conn.execute(sa.select(*columns).order_by(*order)
                              .execution_options(yield_per=2000))
        # The data version's value is left out (see the module docstring): a verified copy
        # or a restore sets it past every value the target's caches have seen.
        version_rows = table.name == "meta" and [c.name for c in columns] == ["key", "value"]
        for row in result:
            if version_rows and _is_version_key(row[0]):
                row = (row[0], "(data version)")
            digest.update(("\t".join(map(_text, row)) + "\n").encode("utf-8"))
            n += 1
        out[table.name] = (n, digest.hexdigest())
    return out


def _is_version_key(key: object) -> bool:
    """A ``meta`` key that holds (a share of) the data version."""
    return key == "data_version" or str(key).startswith("data_version.")


def row_counts(url: str) -> dict[str, int]:
    """Rows per table (for the report the CLI prints)."""
    return {t: n for t, (n, _) in table_checksums(url).items()}


def count_rows(conn) -> dict[str, int]:
    """Rows per table of the schema the connected database has, counted in the caller's
    transaction (``count(*)``: cheaper than :func:`checksums`, same tables)."""
    have = set(sa.inspect(conn).get_table_names())
    return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in _tables() if t.name in have}


#: The data version: the main ``meta`` row plus the PostGIS report slots (see
#: ``gis.storage._DATA_VERSION_SUM``), as plain SQL that SQLite and PostgreSQL both run.
_VERSION_KEYS = "key = 'data_version' OR key LIKE 'data_version.%'"
_VERSION_SUM = f"SELECT COALESCE(SUM(CAST(value AS BIGINT)), 0) FROM meta WHERE {_VERSION_KEYS}"


def data_version(url: str) -> int:
    """The data version of the database ``url`` names (0 when it has none): what the
    server's caches are keyed on."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("meta"):
                return 0
            return int(conn.execute(sa.text(_VERSION_SUM)).scalar() or 0)
    except sa.exc.DBAPIError as err:
        raise BackupError(f"cannot read {_safe(url)}: {_first_line(err.orig)}") from err
    finally:
        engine.dispose()


def _safe(url: str) -> str:
    return sa.make_url(url).render_as_string(hide_password=True)


def _first_line(err: object) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _has_data(url: str) -> bool:
    """Whether the database holds any row outside ``meta``, ``alembic_version`` and
    ``login_failures`` (a fresh schema is empty; failed logins are transient state, not
    data a copy would overwrite)."""
    if _backend(url) == "sqlite":
        path = _sqlite_path(url)
        if not path.exists() or path.stat().st_size == 0:
            return False
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            for name in insp.get_table_names():
                if (name in ("meta", "spatial_ref_sys", "alembic_version", "login_failures")
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


def backup(url: str, out_path: str | os.PathLike, *, force: bool = False) -> dict[str, int]:
    """Back up the database ``url`` names to ``out_path``; returns rows per table of the
    copy (SQLite) or of the snapshot the dump was taken from (PostgreSQL). An existing
    file is replaced only with ``force``: yesterday's good backup is not overwritten by a
    mistyped name (the new file is written beside it and renamed only when complete)."""
    out = Path(out_path)
    if out.is_dir():
        raise BackupError(f"{out} is a folder; name the backup file")
    if out.exists() and not force:
        raise BackupError(f"{out} exists; name a new file, or add --force to replace it")
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
    """``pg_dump`` on a snapshot this function exports and counts the rows in. Counted
    after the dump from the live database, the report named rows the dump did not hold
    (990 cases printed, 930 in the dump, with three writers busy)."""
    pg_dump = _tool("pg_dump")
    libpq, env = _libpq(url)
    engine = _engine(url)  # REPEATABLE READ: one snapshot for the whole transaction
    try:
        with engine.connect() as conn, conn.begin():
            # The first statement fixes the transaction's snapshot; exported, pg_dump
            # reads the same one. It stays valid while this transaction is open, so the
            # transaction ends only after pg_dump has finished.
            snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
            rows = count_rows(conn)
            with _temp_beside(out, ".part") as tmp:
                _run([pg_dump, "--format=custom", f"--snapshot={snapshot}", "--file",
                      str(tmp), "--dbname", libpq], env, "pg_dump")
    except sa.exc.DBAPIError as err:
        raise BackupError(f"cannot read {_safe(url)}: {_first_line(err.orig)}") from err
    except OSError as err:
        raise BackupError(f"cannot write {out}: {err.strerror or err}") from err
    finally:
        engine.dispose()
    return rows


# -- restore ---------------------------------------------------------------------------------
def restore(url: str, in_path: str | os.PathLike, *, force: bool = False) -> dict[str, int]:
    """Restore the backup ``in_path`` into the database ``url`` names; returns the rows
    per table restored, counted in what was restored (see the module docstring), not in
    the live database afterwards. Refuses a target holding data unless ``force``, and a
    backup of the other kind of database (pointing at ``hemei migrate-store``)."""
    src = Path(in_path)
    if not src.is_file():
        raise BackupError(f"no backup file at {src}")
    backend = _backend(url)
    _check_kind(src, backend, url)
    if backend == "sqlite":
        _check_sqlite_backup(src)
    else:
        _check_pg_backup(src)
    if not force and _has_data(url):
        raise BackupError(f"the database {_safe(url)} is not empty; use --force to "
                          "overwrite it")
    if backend == "sqlite":
        counts = _restore_sqlite(src, _sqlite_path(url))
    else:
        counts = _restore_pg(url, src)
    from gis.storage import announce_accounts_changed

    announce_accounts_changed(url)  # users and tokens may differ now
    return counts


#: The first bytes of the two kinds of backup: a SQLite database file and a pg_dump
#: custom-format archive.
SQLITE_HEADER = b"SQLite format 3\x00"
PGDUMP_HEADER = b"PGDMP"


def _check_kind(src: Path, backend: str, url: str) -> None:
    """Refuse a backup of the other kind of database in one line that says what it is:
    pg_restore said only "input file does not appear to be a valid archive" of a SQLite
    file, and SQLite "file is not a database" of a pg_dump archive."""
    try:
        with open(src, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
    except OSError as err:
        raise BackupError(f"cannot read {src}: {err.strerror or err}") from err
    if backend == "postgresql" and head == SQLITE_HEADER:
        raise BackupError(
            f"{src} is a SQLite database file (a backup of a SQLite instance), and "
            f"{_safe(url)} is PostgreSQL, which restores pg_dump archives only: to move "
            f"its data into PostgreSQL, run `hemei migrate-store --from "
            f"sqlite:///{src.resolve()} --to {_safe(url)}`; nothing was changed")
    if backend == "sqlite" and head.startswith(PGDUMP_HEADER):
        raise BackupError(
            f"{src} is a PostgreSQL pg_dump archive (a backup of a PostGIS instance), and "
            f"{_safe(url)} is SQLite, which restores SQLite backups only: restore it into "
            f"a PostgreSQL database, then move its data here with `hemei migrate-store "
            f"--from postgresql+psycopg://… --to {_safe(url)}`; nothing was changed")


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


@contextmanager
def _sqlite_writers_held(target: Path):
    """Hold the write lock the app's writers queue on (``<database>.writelock``, see
    ``gis.storage.SqliteCaseStore``), so no write through Hemei lands between reading the
    target's data version and replacing the target. (flock is per open file: this holds
    off the app's writers in this process too.)"""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the app does not take it either
        yield
        return
    fd = os.open(f"{target}.writelock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _sqlite_version(conn: sqlite3.Connection) -> int:
    """The data version of an open SQLite database; 0 if it has no ``meta`` table."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
                    ).fetchone() is None:
        return 0
    return int(conn.execute(_VERSION_SUM).fetchone()[0] or 0)


def _restore_sqlite(src: Path, target: Path) -> dict[str, int]:
    """Copy the backup into a private temporary file beside the target, move its data
    version past the target's and the backup's there, then copy that into the target
    (SQLite's backup API replaces the target's pages as a whole), holding the app's
    writers off from the first read to the replacement. Returns the rows per table of
    that staged copy: exactly what the target received."""
    from gis.storage import create_private_file

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _sqlite_writers_held(target):
            before = 0
            if target.exists() and target.stat().st_size > 0:
                t = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True,
                                    timeout=30)
                try:
                    before = _sqlite_version(t)
                except sqlite3.DatabaseError:
                    before = 0  # not a database (any more): nothing was cached from it
                finally:
                    t.close()
            # mkstemp: readable by the owner only, as the database (it holds the same).
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".restore",
                                        dir=target.parent)
            os.close(fd)
            staged = Path(name)
            try:
                s = sqlite3.connect(f"{src.resolve().as_uri()}?mode=ro", uri=True)
                c = sqlite3.connect(staged)
                try:
                    s.backup(c, pages=-1)
                    _set_version_sqlite(c, before)
                    counts = _sqlite_counts(c)
                finally:
                    c.close()
                    s.close()
                c = sqlite3.connect(f"{staged.resolve().as_uri()}?mode=ro", uri=True)
                create_private_file(target)  # as the database it replaces: owner only
                d = sqlite3.connect(target, timeout=30)
                try:
                    d.execute("PRAGMA busy_timeout=30000")
                    c.backup(d, pages=-1)
                    _integrity(d, f"the restored database {target}")
                finally:
                    d.close()
                    c.close()
            finally:
                with suppress(FileNotFoundError):
                    staged.unlink()
    except sqlite3.Error as err:
        raise BackupError(f"restore into {target} failed: {err}") from err
    except OSError as err:
        raise BackupError(f"restore into {target} failed: {err.strerror or err}") from err
    return counts


def _sqlite_counts(conn: sqlite3.Connection) -> dict[str, int]:
    """Rows per table of the schema an open SQLite database has (as :func:`count_rows`)."""
    have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {t.name: conn.execute(f'SELECT count(*) FROM "{t.name}"').fetchone()[0]
            for t in _tables() if t.name in have}


def _set_version_sqlite(conn: sqlite3.Connection, before: int) -> None:
    """Set the main data-version row of the (staged) restored database so the version
    is ``max(before, the backup's) + 1``."""
    restored = _sqlite_version(conn)
    slots = int(conn.execute("SELECT COALESCE(SUM(CAST(value AS BIGINT)), 0) FROM meta "
                             "WHERE key LIKE 'data_version.%'").fetchone()[0] or 0)
    main = max(before, restored) + 1 - slots
    with conn:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('data_version', ?)",
                     (str(main),))


def _restore_pg(url: str, src: Path) -> dict[str, int]:
    """``pg_restore`` the dump as SQL into ``psql``, in one transaction with the steps
    around it: first lock the tables and note the target's data version; last set the
    restored main data-version row so the version is ``max(before, backup) + 1`` and
    count the rows per table, still inside the transaction (the tables are locked, so
    they are the restored rows and nothing else). If pg_restore fails, psql is stopped
    before it reaches the end of its input, so its transaction never commits (the
    target is unchanged). Returns those counts."""
    libpq, env = _libpq(url)
    pg_restore, psql = _tool("pg_restore"), _tool("psql")
    # The app's tables in the order its writers lock them (parents first, meta last),
    # locked before anything is read: a writer then either finished before or waits
    # until the restore is over, and none can move the version after it was read.
    names = [t.name for t in _tables() if t.name != "meta"] + ["meta", "alembic_version"]
    array = ", ".join(f"'{n}'" for n in names)
    before_sql = f"""DO $hemei$
DECLARE t text; before bigint := 0;
BEGIN
  FOREACH t IN ARRAY ARRAY[{array}] LOOP
    IF to_regclass('public.' || quote_ident(t)) IS NOT NULL THEN
      EXECUTE 'LOCK TABLE public.' || quote_ident(t) || ' IN ACCESS EXCLUSIVE MODE';
    END IF;
  END LOOP;
  IF to_regclass('public.meta') IS NOT NULL THEN
    SELECT COALESCE(SUM(CAST(value AS bigint)), 0) INTO before FROM public.meta
     WHERE {_VERSION_KEYS};
  END IF;
  PERFORM set_config('hemei.restore_before', before::text, true);
END
$hemei$;"""
    after_sql = f"""INSERT INTO public.meta (key, value) SELECT 'data_version', '0'
 WHERE NOT EXISTS (SELECT 1 FROM public.meta WHERE key = 'data_version');
UPDATE public.meta SET value = CAST(
  GREATEST(CAST(current_setting('hemei.restore_before') AS bigint), v.total) + 1 - v.slots
  AS text)
FROM (SELECT
  COALESCE(SUM(CASE WHEN {_VERSION_KEYS} THEN CAST(value AS bigint) END), 0) AS total,
  COALESCE(SUM(CASE WHEN key LIKE 'data_version.%' THEN CAST(value AS bigint) END), 0)
    AS slots
  FROM public.meta) AS v
WHERE public.meta.key = 'data_version';"""
    # One row per table (the schema's tables the restored database has), marked, so they
    # can be told from the other rows the dump's own SELECTs (setval …) print.
    tables = ", ".join(f"'{t.name}'" for t in _tables())
    count_sql = f"""SELECT '{_COUNT_MARK}', u.t, (xpath('/row/n/text()', query_to_xml(
  format('SELECT count(*) AS n FROM public.%I', u.t), false, true, '')))[1]::text
FROM unnest(ARRAY[{tables}]) WITH ORDINALITY AS u(t, i)
WHERE to_regclass('public.' || quote_ident(u.t)) IS NOT NULL ORDER BY u.i;"""
    with tempfile.TemporaryFile("w+") as err_restore, \
            tempfile.TemporaryFile("w+") as err_psql, \
            tempfile.TemporaryFile("w+") as out_psql:
        try:
            dump = subprocess.Popen(
                [pg_restore, "--clean", "--if-exists", "--no-owner", "--file=-", str(src)],
                env=env, stdout=subprocess.PIPE, stderr=err_restore)
            # -1 wraps every -c/-f in one BEGIN … COMMIT; the COMMIT comes only after
            # stdin ends and the last -c has run.
            run = subprocess.Popen(
                [psql, "--no-psqlrc", "--quiet", "--single-transaction",
                 "--set", "ON_ERROR_STOP=1", "--tuples-only", "--no-align",
                 "--field-separator=\t", "--command", before_sql, "--file", "-",
                 "--command", after_sql, "--command", count_sql, "--dbname", libpq],
                env=env, stdin=subprocess.PIPE, stdout=out_psql, stderr=err_psql)
        except OSError as err:
            raise BackupError(f"pg_restore failed: {err}") from err
        ok = _pump(dump.stdout, run.stdin)
        dump_rc = dump.wait()
        if ok and dump_rc == 0:
            with suppress(BrokenPipeError):
                run.stdin.close()  # end of input: psql runs the last step and COMMITs
        else:
            run.kill()  # before its COMMIT: the server rolls the transaction back
            with suppress(BrokenPipeError):
                run.stdin.close()
        psql_rc = run.wait()
        # psql stopping early (an error, ON_ERROR_STOP) breaks pg_restore's pipe too:
        # then psql's error is the one that says what went wrong.
        if ok and dump_rc != 0:
            raise BackupError(f"pg_restore failed: {_tail(err_restore, dump_rc)}")
        if psql_rc != 0 or not ok:
            raise BackupError(f"pg_restore failed (nothing was changed): "
                              f"{_tail(err_psql, psql_rc)}")
        out_psql.seek(0)
        counts = {}
        for line in out_psql.read().splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[0] == _COUNT_MARK:
                counts[parts[1]] = int(parts[2])
    return counts


_COUNT_MARK = "hemei-restored-rows"


def _pump(src, dst) -> bool:
    """Copy ``src`` to ``dst`` until ``src`` ends (True) or ``dst`` is closed (False)."""
    try:
        while chunk := src.read(1 << 16):
            dst.write(chunk)
        dst.flush()
        return True
    except BrokenPipeError:
        return False
    finally:
        src.close()


def _tail(fh, rc: int) -> str:
    """The first error lines a tool wrote to ``fh`` (a temporary file), or its status."""
    fh.seek(0)
    lines = [line.strip() for line in fh.read().splitlines() if line.strip()]
    errors = [line for line in lines if "ERROR" in line or "error" in line] or lines
    return "; ".join(errors[:5]) or f"exit status {rc}"
