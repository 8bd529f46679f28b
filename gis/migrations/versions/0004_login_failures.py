"""Release 0.4: failed logins are counted in the database, shared by every worker.

- ``login_failures``: one row per failed login and key it counts against (the client's
  address, the username), so the login limit holds across every worker process of an
  instance (and every host on one PostGIS database) and survives a restart; before, each
  worker counted in its own memory. The key's value is stored only as an HMAC-SHA256
  (hex) under a key derived from the app's secret key, never in clear; ``at`` is naive
  UTC. The index serves the login's look-up (a key's most recent failures); rows past
  the window are pruned as failures come in (:mod:`gis.throttle`).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_login_failures_key", "login_failures", ["key_kind", "key", "at"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_login_failures_key", table_name="login_failures")
    op.drop_table("login_failures")
