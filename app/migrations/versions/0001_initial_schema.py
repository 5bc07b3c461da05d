"""Initial schema: enquiries, their dispatches, attempts, timeline, idempotency, gazetteer.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "enquiry",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("reference", sa.String(16), nullable=False, unique=True),
        sa.Column("service_code", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, index=True),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("location", sa.JSON(), nullable=True),
        sa.Column("place", sa.JSON(), nullable=True),
        sa.Column("citizen", sa.JSON(), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("consent", sa.JSON(), nullable=True),
        sa.Column("advice", sa.JSON(), nullable=True),
        sa.Column("client_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
    )
    op.create_index("ix_enquiry_created", "enquiry", ["created_at", "id"])

    op.create_table(
        "dispatch",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "enquiry_id",
            sa.Uuid(),
            sa.ForeignKey("enquiry.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("organisation_id", sa.String(64), nullable=False, index=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTC, nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", UTC, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("remote_reference", sa.String(128), nullable=True),
        sa.Column("delivered_at", UTC, nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
    )
    op.create_index("ix_dispatch_due", "dispatch", ["state", "next_attempt_at"])

    op.create_table(
        "dispatch_attempt",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "dispatch_id",
            sa.Uuid(),
            sa.ForeignKey("dispatch.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(64), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=False),
    )

    op.create_table(
        "event",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column(
            "enquiry_id", sa.Uuid(), sa.ForeignKey("enquiry.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("dispatch_id", sa.Uuid(), nullable=True),
        sa.Column("organisation_id", sa.String(64), nullable=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
    )
    op.create_index("ix_event_enquiry", "event", ["enquiry_id", "created_at"])

    op.create_table(
        "idempotency_record",
        sa.Column("client_id", sa.String(64), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.JSON(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False, index=True),
    )

    op.create_table(
        "gazetteer_postcode",
        sa.Column("postcode", sa.String(8), primary_key=True),
        sa.Column("county_code", sa.String(9), nullable=True),
        sa.Column("district_code", sa.String(9), nullable=True),
        sa.Column("police_area", sa.String(9), nullable=True),
        sa.Column("health_area", sa.String(9), nullable=True),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("terminated", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_gazetteer_point", "gazetteer_postcode", ["latitude", "longitude"])


def downgrade() -> None:
    for table in (
        "gazetteer_postcode",
        "idempotency_record",
        "event",
        "dispatch_attempt",
        "dispatch",
        "enquiry",
    ):
        op.drop_table(table)
