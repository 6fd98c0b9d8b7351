"""Claims dated (or decided_at) outside 1900-01-01 .. 2099-12-31 are refused, as the worker
refuses them.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_check_constraint(
        "ck_claim_dates_plausible",
        "claim_records",
        "submitted_date >= DATE '1900-01-01' AND decided_date < DATE '2100-01-01'"
        " AND decided_at >= TIMESTAMPTZ '1900-01-01 00:00:00+00'"
        " AND decided_at < TIMESTAMPTZ '2100-01-01 00:00:00+00'",
    )


def downgrade() -> None:
    op.drop_constraint("ck_claim_dates_plausible", "claim_records")
