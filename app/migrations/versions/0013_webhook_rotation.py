"""A webhook subscription's previous secret, sealed, still signing until its expiry (rotation
with an overlap window), when a re-enabled subscription sends from, and a description
its client may give it.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_subscription") as batch:
        batch.add_column(sa.Column("previous_secret_sealed", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("previous_secret_until", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("enabled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("description", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("webhook_subscription") as batch:
        batch.drop_column("description")
        batch.drop_column("enabled_at")
        batch.drop_column("previous_secret_until")
        batch.drop_column("previous_secret_sealed")
