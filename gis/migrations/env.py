"""Alembic's entry point. :func:`gis.schema.upgrade` passes an open connection (inside
the caller's transaction, so one upgrade is all or nothing, DDL included, on SQLite and
PostgreSQL alike); ``hemei db upgrade --sql`` runs it offline to print the SQL instead."""

from alembic import context

import gis.accounts  # noqa: F401  (registers its tables on the shared metadata)
from gis.storage import metadata

config = context.config
conn = config.attributes.get("connection")

if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table.
    context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
