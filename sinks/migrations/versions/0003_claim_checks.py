"""Checks on claim_records that mirror the claim validation of the worker.

The sink's bulk path lets Postgres parse and check values; these constraints make it reject
exactly what ``parse_claim`` rejects beyond types (the row is then dead-lettered).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_check_constraint(
        "ck_claim_outcome", "claim_records", "outcome IN ('PAID', 'DENIED', 'PARTIAL', 'PENDED')"
    )
    op.create_check_constraint(
        "ck_claim_decided_after_submitted", "claim_records", "decided_date >= submitted_date"
    )
    # NaN is larger than every number in Postgres, so an upper bound also rejects it.
    op.create_check_constraint(
        "ck_claim_amount_bounds",
        "claim_records",
        "billed_amount <= 100000000 AND allowed_amount <= 100000000"
        " AND (paid_amount IS NULL OR (paid_amount >= 0 AND paid_amount <= 100000000))",
    )


def downgrade() -> None:
    for name in ("ck_claim_amount_bounds", "ck_claim_decided_after_submitted", "ck_claim_outcome"):
        op.drop_constraint(name, "claim_records", type_="check")
