"""Each operator's console layout: which dashboard widgets, in which order (``operator_layouts``,
written by the notifier when the operator changes it).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operator_layouts",
        sa.Column("customer_id", sa.String(128), primary_key=True),
        sa.Column("operator", sa.String(128), primary_key=True),
        sa.Column("layout", JSONB, nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("operator_layouts")
