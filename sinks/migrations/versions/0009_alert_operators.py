"""Who made each alert transition and why, and whom an alert is assigned to: ``assignee``,
``actor`` (the operator of a command; null for Upstream's own transitions) and ``note`` on
``alert_events`` and ``alert_transitions``.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None
TABLES = ("alert_events", "alert_transitions")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("assignee", sa.String(128), nullable=True))
        op.add_column(table, sa.Column("actor", sa.String(128), nullable=True))
        op.add_column(table, sa.Column("note", sa.Text, nullable=True))


def downgrade() -> None:
    for table in TABLES:
        for column in ("note", "actor", "assignee"):
            op.drop_column(table, column)
