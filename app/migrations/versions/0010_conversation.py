"""After submission: messages (information, withdrawal, reopening, staff notes), their
attachments, the follow-up outbox that carries them to each back-office, and the alert outbox
that tells the citizen; `enquiry.alerts_stopped_at` when the citizen unsubscribed.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _outbox_columns() -> list[sa.Column[object]]:
    """The columns every outbox row has (app/core/outbox.py)."""
    return [
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", _TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", _TS, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    ]


def upgrade() -> None:
    with op.batch_alter_table("enquiry") as batch:
        batch.add_column(sa.Column("alerts_stopped_at", _TS, nullable=True))
    op.create_table(
        "message",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "enquiry_id", sa.Uuid(), sa.ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("by", sa.String(64), nullable=False),
        sa.Column("actor_id", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("organisation_id", sa.String(64), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_message_enquiry", "message", ["enquiry_id", "created_at"])
    op.create_table(
        "attachment",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "enquiry_id", sa.Uuid(), sa.ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "message_id", sa.Uuid(), sa.ForeignKey("message.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("storage_key", sa.String(200), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
    )
    op.create_index("ix_attachment_enquiry", "attachment", ["enquiry_id", "created_at"])
    op.create_index("ix_attachment_message_id", "attachment", ["message_id"])
    op.create_table(
        "follow_up",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "message_id", sa.Uuid(), sa.ForeignKey("message.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "dispatch_id",
            sa.Uuid(),
            sa.ForeignKey("dispatch.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "enquiry_id", sa.Uuid(), sa.ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("organisation_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("remote_reference", sa.String(128), nullable=True),
        *_outbox_columns(),
        sa.UniqueConstraint("message_id", "dispatch_id", name="uq_follow_up"),
    )
    op.create_index("ix_follow_up_due", "follow_up", ["state", "next_attempt_at"])
    op.create_index("ix_follow_up_dispatch_id", "follow_up", ["dispatch_id"])
    op.create_index("ix_follow_up_enquiry_id", "follow_up", ["enquiry_id"])
    op.create_table(
        "alert",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "enquiry_id", sa.Uuid(), sa.ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "event_id", sa.Uuid(), sa.ForeignKey("event.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("language", sa.String(35), nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("provider_reference", sa.String(128), nullable=True),
        *_outbox_columns(),
        sa.UniqueConstraint("event_id", "channel", name="uq_alert"),
    )
    op.create_index("ix_alert_due", "alert", ["state", "next_attempt_at"])
    op.create_index("ix_alert_enquiry_id", "alert", ["enquiry_id"])
    op.create_table(
        "feed_cursor",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("fed_until", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feed_cursor")
    op.drop_table("alert")
    op.drop_table("follow_up")
    op.drop_table("attachment")
    op.drop_table("message")
    with op.batch_alter_table("enquiry") as batch:
        batch.drop_column("alerts_stopped_at")
