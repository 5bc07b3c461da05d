"""Gateway-wide events (about no one enquiry: the daily stuck-work summary) and redrives.

`event.enquiry_id` may be empty now, for an event about the gateway's work as a whole, which
keeps its counts in `event.data`; `dispatch.redriven_at` says when a person last sent a
given-up delivery again, so its next attempt looks the case up before creating it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("event") as batch:
        batch.alter_column("enquiry_id", existing_type=sa.Uuid(), nullable=True)
        batch.add_column(sa.Column("data", sa.JSON(), nullable=True))
    with op.batch_alter_table("dispatch") as batch:
        batch.add_column(sa.Column("redriven_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dispatch") as batch:
        batch.drop_column("redriven_at")
    # An event about no enquiry has no place in the older schema.
    op.execute(
        "DELETE FROM webhook_delivery WHERE event_id IN "
        "(SELECT id FROM event WHERE enquiry_id IS NULL)"
    )
    op.execute("DELETE FROM event WHERE enquiry_id IS NULL")
    with op.batch_alter_table("event") as batch:
        batch.drop_column("data")
        batch.alter_column("enquiry_id", existing_type=sa.Uuid(), nullable=False)
