"""The database schema's version, kept by Alembic (``gis/migrations``), for every backend.

:func:`upgrade` brings a database from empty, or from any earlier release, to the newest
schema, in one transaction (DDL included: SQLite and PostgreSQL both have transactional
DDL), so a failed upgrade leaves the database as it was. A database made by release 0.1,
before there were migrations, has the tables but no ``alembic_version``: it is stamped
``0001`` (its schema) and upgraded from there. On PostgreSQL the upgrade holds an
advisory lock, so several workers starting at once upgrade once, one after the other.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from gis.errors import HemeiError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The revision whose schema release 0.1 made without Alembic (see _stamp_legacy).
LEGACY_REVISION = "0001"


class SchemaOutdated(HemeiError):
    """The database's schema is older than this code's and may not be upgraded here."""

    status = 503
    code = "schema_outdated"


def alembic_config(connection=None, url: str | None = None) -> Config:
    """An Alembic config for our migrations, on an open connection (or a URL, offline)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        cfg.set_main_option("sqlalchemy.url", str(url).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def revisions() -> list[dict]:
    """Every revision, oldest first: id and the first line of its description."""
    script = ScriptDirectory.from_config(alembic_config())
    out = [{"revision": r.revision, "doc": (r.doc or "").strip().splitlines()[0]}
           for r in script.walk_revisions()]
    return out[::-1]


def current(conn) -> str | None:
    """The revision the connected database is at; ``LEGACY_REVISION`` for a release-0.1
    database (tables, no version table); None for an empty one."""
    rev = MigrationContext.configure(conn).get_current_revision()
    if rev is None and sa.inspect(conn).has_table("cases"):
        return LEGACY_REVISION
    return rev


def is_legacy(conn) -> bool:
    """A release-0.1 database: the tables, but no Alembic version table yet."""
    return (MigrationContext.configure(conn).get_current_revision() is None
            and sa.inspect(conn).has_table("cases"))


def _stamp_legacy(conn) -> None:
    if is_legacy(conn):
        command.stamp(alembic_config(conn), LEGACY_REVISION)


def upgrade(conn, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the connected database to ``revision`` inside the caller's transaction.
    Returns (revision before, revision after)."""
    before = current(conn)
    _stamp_legacy(conn)
    command.upgrade(alembic_config(conn), revision)
    return before, current(conn)


def check_current(conn) -> None:
    """Raise :class:`SchemaOutdated` unless the database is at this code's head."""
    have, want = current(conn), head()
    if have != want:
        raise SchemaOutdated(
            f"the database schema is at {have or 'nothing (empty)'}, this release needs "
            f"{want}; back it up (`hemei backup`), then run `hemei db upgrade`")


def upgrade_sql(url: str, revision: str = "head", start: str | None = None,
                legacy: bool = False) -> str:
    """The SQL an upgrade would run (Alembic's offline mode), for a DBA to review and
    run: one transaction (one BEGIN, one COMMIT), as :func:`upgrade` online. With
    ``legacy`` (a release-0.1 database, see :func:`is_legacy`) it starts, inside that
    transaction, by creating the version table stamped ``LEGACY_REVISION``. (The stamp
    used to be a command of its own, which on PostgreSQL printed a transaction of its
    own: committed before the upgrade, it stayed when the upgrade failed.)"""
    buf = io.StringIO()
    cfg = alembic_config(url=url)
    if legacy:
        cfg.attributes["stamp_first"] = LEGACY_REVISION  # see gis/migrations/env.py
        start = LEGACY_REVISION
    target = f"{start}:{revision}" if start else revision
    with redirect_stdout(buf):
        command.upgrade(cfg, target, sql=True)
    return buf.getvalue()
