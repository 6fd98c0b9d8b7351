"""When operators were first told of each alert, by the wall clock: ``alert_events``
``first_notified_at``, set by Postgres when the sink inserts the alert. Alerts stored before
keep null (not recorded).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "alert_events", sa.Column("first_notified_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.alter_column("alert_events", "first_notified_at", server_default=sa.func.now())


def downgrade() -> None:
    op.drop_column("alert_events", "first_notified_at")
