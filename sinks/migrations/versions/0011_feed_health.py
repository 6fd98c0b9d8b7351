"""Each customer's feed, per day it was received: claims new, resent unchanged, amended and
rejected (``feed_days``), and the rejected claim messages themselves (``claim_rejections``,
whose Kafka position keeps a redelivered reject from being counted twice). Written by the sink.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    counts = [
        sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
        for name in ("received", "new", "resent", "amended", "invalid")
    ]
    op.create_table(
        "feed_days",
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        *counts,
        sa.Column("last_received_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "claim_rejections",
        sa.Column("source_partition", sa.Integer, primary_key=True),
        sa.Column("source_offset", sa.BigInteger, primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=True),
        sa.Column("claim_id", sa.String(128), nullable=True),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column(
            "rejected_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_index(
        "ix_claim_rejections_customer", "claim_rejections", ["customer_id", "rejected_at"]
    )


def downgrade() -> None:
    op.drop_table("claim_rejections")
    op.drop_table("feed_days")
