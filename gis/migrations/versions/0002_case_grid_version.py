"""Release 0.2: each case records the grid layer version that located it, and an index
for per-street work.

- ``cases.grid_version_id``: the ``layer_versions.id`` of the grid layer the case's codes
  come from. A report racing a boundary import is detected with it (the store refuses an
  insert located against a layer that is no longer active, and the service locates it
  again), and re-assignment after a redrawn layer sets it. Existing cases get the active
  grid version (they were located against it, or re-located when it was imported).
- ``ix_cases_street_status``: cases by street and status, the first filter of every
  query once several streets share one database (and the key a city partitions by).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cases", sa.Column("grid_version_id", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE cases SET grid_version_id = (SELECT max(v.id) FROM layer_versions v "
        "WHERE v.level = 'grid' AND v.active) WHERE grid_code IS NOT NULL"
    )
    op.create_index("ix_cases_street_status", "cases", ["street_code", "status"])


def downgrade() -> None:
    op.drop_index("ix_cases_street_status", table_name="cases")
    with op.batch_alter_table("cases") as batch:
        batch.drop_column("grid_version_id")
