"""Release 0.3: an Idempotency-Key remembers what it was sent with.

- ``idempotency_keys.fingerprint``: a SHA-256 of the report the key first came with (its
  fields and photos). A retry with the same key and the same report gets the first case
  back, as before; the same key with a different report is refused (422) instead of
  silently answering with the first case, which lost the second report. Keys stored
  before this revision have none and are replayed as before.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("idempotency_keys", sa.Column("fingerprint", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("fingerprint")
