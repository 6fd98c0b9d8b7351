"""Claim records, operator judgments and the audit log, with the roadmap's indexes.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
MONEY = sa.Numeric(14, 2)


def upgrade() -> None:
    op.create_table(
        "claim_records",
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("claim_id", sa.String(128), primary_key=True),
        sa.Column("payer_id", sa.String(128), nullable=False),
        sa.Column("payer_name", sa.Text),
        sa.Column("cpt_code", sa.String(16), nullable=False),
        sa.Column("cpt_group", sa.String(128), nullable=False),
        sa.Column("submitted_date", sa.Date, nullable=False),
        sa.Column("decided_date", sa.Date, nullable=False),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("billed_amount", MONEY, nullable=False),
        sa.Column("allowed_amount", MONEY, nullable=False),
        sa.Column("paid_amount", MONEY),
        sa.Column("denial_reason_codes", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("place_of_service", sa.String(32)),
        # The Kafka position of the version stored: a redelivered older one never wins.
        sa.Column("source_partition", sa.Integer, nullable=False),
        sa.Column("source_offset", sa.BigInteger, nullable=False),
        sa.Column("stored_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("billed_amount >= 0 AND allowed_amount >= 0", name="ck_claim_amounts"),
    )
    op.create_index("ix_claims_customer_decided", "claim_records", ["customer_id", "decided_date"])
    op.create_index("ix_claims_customer_payer", "claim_records", ["customer_id", "payer_id"])
    op.create_index(
        "ix_claims_customer_outcome_decided",
        "claim_records",
        ["customer_id", "outcome", "decided_date"],
    )
    op.create_index(
        "ix_claims_customer_payer_group", "claim_records", ["customer_id", "payer_id", "cpt_group"]
    )
    op.create_table(
        "operator_judgments",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("judged_at", TS, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(700), nullable=False),
        sa.Column("origin", sa.String(256)),
        sa.Column("detail", JSONB, nullable=False, server_default="{}"),
    )
    op.create_index("ix_audit_customer_at", "audit_log", ["customer_id", "at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("operator_judgments")
    op.drop_table("claim_records")
