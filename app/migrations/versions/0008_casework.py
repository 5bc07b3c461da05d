"""Casework: staff accounts, the triage desk's claims and closures, and who did each act.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "staff",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(254), nullable=False, unique=True),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("organisation_id", sa.String(64), nullable=True),
        sa.Column("password_hash", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
    )
    with op.batch_alter_table("api_client") as batch:
        batch.add_column(sa.Column("staff_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            "fk_api_client_staff", "staff", ["staff_id"], ["id"], ondelete="CASCADE"
        )
    with op.batch_alter_table("dispatch") as batch:
        batch.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))
        batch.add_column(sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("closure", sa.String(32), nullable=True))
        batch.add_column(sa.Column("closure_note", sa.Text(), nullable=True))
        batch.add_column(sa.Column("closed_by", sa.String(64), nullable=True))
    with op.batch_alter_table("event") as batch:
        batch.add_column(sa.Column("actor_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("actor", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("event") as batch:
        batch.drop_column("actor")
        batch.drop_column("actor_id")
    with op.batch_alter_table("dispatch") as batch:
        for column in ("closed_by", "closure_note", "closure", "claimed_until", "claimed_by"):
            batch.drop_column(column)
    with op.batch_alter_table("api_client") as batch:
        batch.drop_constraint("fk_api_client_staff", type_="foreignkey")
        batch.drop_column("staff_id")
    op.drop_table("staff")
