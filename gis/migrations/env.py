"""Alembic's entry point. :func:`gis.schema.upgrade` passes an open connection (inside
the caller's transaction, so one upgrade is all or nothing, DDL included, on SQLite and
PostgreSQL alike); ``hemei db upgrade --sql`` runs it offline to print the SQL instead,
as one transaction too: one BEGIN, every migration, one COMMIT. For a release-0.1
database (:func:`gis.schema.upgrade_sql` sets ``stamp_first``) the version table is made
and stamped inside that same transaction, so a failure anywhere leaves no version
stamp behind that claims a schema the database does not have."""

import sqlalchemy as sa
from alembic import context

import gis.accounts  # noqa: F401  (registers its tables on the shared metadata)
from gis.storage import metadata
from gis.throttle import metadata as throttle_metadata

# What autogenerate compares with: the street's tables and the failed logins (declared
# apart, see gis.throttle, but made by migration 0004 like the rest).
TARGET_METADATA = [metadata, throttle_metadata]

config = context.config
conn = config.attributes.get("connection")


def _stamp(revision: str) -> None:
    """Emit the version table, as Alembic makes it, holding ``revision``: the stamp of a
    database that has the tables but no version table yet (offline mode only)."""
    from sqlalchemy.schema import CreateTable

    version = sa.Table("alembic_version", sa.MetaData(),
                       sa.Column("version_num", sa.String(32), nullable=False),
                       sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))
    context.execute(CreateTable(version))
    context.execute(version.insert().values(version_num=revision))


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=TARGET_METADATA,
        literal_binds=True,
        render_as_batch=True,
        # SQLite's Alembic dialect says it has no transactional DDL and so printed no
        # BEGIN/COMMIT at all; both databases have it, and the script is meant to be
        # all or nothing, so one transaction around every migration on both.
        transactional_ddl=True,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        stamp_first = config.attributes.get("stamp_first")
        if stamp_first:
            _stamp(stamp_first)
        elif (context.get_context().dialect.name == "postgresql"
              and context.get_starting_revision_argument() in (None, "base")):
            # The whole schema from nothing needs PostGIS's types, which the online
            # upgrade creates first (gis.pg.ensure_postgis): the script must too, or
            # it fails at the first geometry column.
            context.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        context.run_migrations()
else:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table.
    context.configure(connection=conn, target_metadata=TARGET_METADATA, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
