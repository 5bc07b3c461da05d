"""Citizen details sealed at rest with keyed hashes to find them; closed and anonymised times
for retention; an append-only audit log.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Statuses after which an enquiry counts as closed (app.status.FINAL when this was written).
_FINAL = ("resolved", "closed", "not_our_responsibility", "duplicate", "cancelled")
_REFUSE_CHANGE = "audit_log is append-only"


def upgrade() -> None:
    with op.batch_alter_table("enquiry") as batch:
        batch.add_column(sa.Column("citizen_sealed", sa.Text(), nullable=True))
        batch.add_column(sa.Column("citizen_email_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("citizen_phone_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("anonymised_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_enquiry_email_hash", ["citizen_email_hash"])
        batch.create_index("ix_enquiry_phone_hash", ["citizen_phone_hash"])
        batch.create_index("ix_enquiry_closed", ["closed_at"])
    _seal_existing_citizens()
    op.execute(
        sa.text("UPDATE enquiry SET closed_at = updated_at WHERE status IN :final").bindparams(
            sa.bindparam("final", _FINAL, expanding=True)
        )
    )
    with op.batch_alter_table("enquiry") as batch:
        batch.drop_column("citizen")
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("actor_id", sa.String(64), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False, index=True),
        sa.Column("subject", sa.String(128), nullable=True, index=True),
        sa.Column("detail", sa.JSON(), nullable=True),
    )
    _make_append_only()


def _seal_existing_citizens() -> None:
    """Seal what earlier versions stored in the clear; needs the application's keys."""
    connection = op.get_bind()
    rows = connection.execute(
        sa.text("SELECT id, citizen FROM enquiry WHERE citizen IS NOT NULL")
    ).all()
    if not rows:
        return
    sealer = context.config.attributes.get("sealer")
    if sealer is None:
        raise RuntimeError("enquiries hold citizen details: run this migration with `iap migrate`")
    for enquiry_id, citizen in rows:
        details = json.loads(citizen) if isinstance(citizen, str) else citizen
        connection.execute(
            sa.text(
                "UPDATE enquiry SET citizen_sealed = :sealed, citizen_email_hash = :email, "
                "citizen_phone_hash = :phone WHERE id = :id"
            ),
            {
                "sealed": sealer.seal(details),
                "email": sealer.email_hash(details.get("email")),
                "phone": sealer.phone_hash(details.get("phone")),
                "id": enquiry_id,
            },
        )


def _make_append_only() -> None:
    """The database itself refuses to change or remove an audit entry."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_log_refuse_change() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{_REFUSE_CHANGE}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE "
            "ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()"
        )
        return
    for change in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER audit_log_no_{change.lower()} BEFORE {change} ON audit_log "
            f"BEGIN SELECT RAISE(ABORT, '{_REFUSE_CHANGE}'); END"
        )


def downgrade() -> None:
    sealed = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM enquiry WHERE citizen_sealed IS NOT NULL")
    )
    if sealed:
        raise RuntimeError("refusing to downgrade: it would write sealed citizen details in clear")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION audit_log_refuse_change()")
    op.drop_table("audit_log")
    with op.batch_alter_table("enquiry") as batch:
        batch.add_column(sa.Column("citizen", sa.JSON(), nullable=True))
        batch.drop_index("ix_enquiry_closed")
        batch.drop_index("ix_enquiry_phone_hash")
        batch.drop_index("ix_enquiry_email_hash")
        for column in (
            "anonymised_at",
            "closed_at",
            "citizen_phone_hash",
            "citizen_email_hash",
            "citizen_sealed",
        ):
            batch.drop_column(column)
