"""API clients with hashed keys and scopes; a hashed access token per enquiry for citizens.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_client",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("key_id", sa.String(16), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("channel", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("enquiry") as batch:
        batch.add_column(sa.Column("access_token_hash", sa.String(64), nullable=True))
        batch.create_index("ix_enquiry_client", ["client_id", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("enquiry") as batch:
        batch.drop_index("ix_enquiry_client")
        batch.drop_column("access_token_hash")
    op.drop_table("api_client")
