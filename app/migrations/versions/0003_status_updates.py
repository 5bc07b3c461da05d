"""Status coming back: updates recorded once each, pushed-message ids, per-organisation polling.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dispatch") as batch:
        batch.add_column(sa.Column("remote_status", sa.String(32), nullable=True))
        batch.add_column(sa.Column("remote_status_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_dispatch_remote", ["organisation_id", "remote_reference"])
    op.create_table(
        "status_update",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("organisation_id", sa.String(64), nullable=False),
        sa.Column("update_id", sa.String(255), nullable=False),
        sa.Column(
            "dispatch_id",
            sa.Uuid(),
            sa.ForeignKey("dispatch.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "enquiry_id",
            sa.Uuid(),
            sa.ForeignKey("enquiry.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("their_status", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_via", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("organisation_id", "update_id", name="uq_status_update"),
    )
    op.create_table(
        "inbound_message",
        sa.Column("organisation_id", sa.String(64), primary_key=True),
        sa.Column("message_id", sa.String(255), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )
    op.create_table(
        "poll_state",
        sa.Column("organisation_id", sa.String(64), primary_key=True),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("poll_state")
    op.drop_table("inbound_message")
    op.drop_table("status_update")
    with op.batch_alter_table("dispatch") as batch:
        batch.drop_index("ix_dispatch_remote")
        batch.drop_column("remote_status_at")
        batch.drop_column("remote_status")
