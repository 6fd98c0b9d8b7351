"""Alert delivery: each customer's routes and silences, the delivery log, and where the
dispatcher is in ``alert_transitions``.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _now() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


def upgrade() -> None:
    op.create_table(
        "delivery_routes",
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("spec", JSONB, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "silences",
        sa.Column("silence_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("spec", JSONB, nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        _now(),
    )
    op.create_index("ix_silences_customer_ends", "silences", ["customer_id", "ends_at"])
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("route", sa.String(128), nullable=False),
        sa.Column("receiver", sa.String(700), nullable=False),  # kind:target
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),  # the transition in alert_transitions
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.func.now(),
        ),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_id", sa.String(32), nullable=True),  # who may settle it
        sa.Column("last_code", sa.Integer, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        _now(),
        sa.UniqueConstraint(
            "route",
            "receiver",
            "alert_id",
            "version",
            "event",
            "customer_id",
            name="uq_notifications_once",
        ),
    )
    # The lease reads pending notifications in due order and stops at its limit; for each, it
    # looks for an older pending version of its alert for the same receiver.
    op.create_index(
        "ix_notifications_due",
        "notifications",
        ["next_attempt_at", "id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_notifications_pending_alert",
        "notifications",
        ["customer_id", "alert_id", "route", "receiver", "version"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_notifications_alert", "notifications", ["customer_id", "alert_id", "version"]
    )
    op.create_table(
        "delivery_cursor",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("delivery_cursor", "notifications", "silences", "delivery_routes"):
        op.drop_table(table)
