"""The circuit counts failures and successes over a window, and ramps up after it closes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("circuit") as batch:
        batch.add_column(sa.Column("successes", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("ramp", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("circuit") as batch:
        batch.drop_column("ramp")
        batch.drop_column("window_started_at")
        batch.drop_column("successes")
