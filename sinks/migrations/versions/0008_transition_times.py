"""When the sink stored each alert transition, by the wall clock: ``alert_transitions``
``stored_at``, set by Postgres on insert (an operator's acknowledgement or verdict is stored
within a second of the command). Transitions stored before keep null (not recorded).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "alert_transitions", sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.alter_column("alert_transitions", "stored_at", server_default=sa.func.now())


def downgrade() -> None:
    op.drop_column("alert_transitions", "stored_at")
