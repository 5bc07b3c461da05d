"""The event table by time: the alert feed reads every event past its cursor every few
seconds (and the webhook feed past its subscriptions'), which was a scan of the whole table.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_event_created", "event", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_event_created", table_name="event")
