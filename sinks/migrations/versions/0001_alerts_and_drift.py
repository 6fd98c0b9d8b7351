"""Drift events, alert state and alert transition history.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _alert_columns() -> list[sa.Column]:
    return [
        sa.Column("dedup_key", sa.String(700), nullable=False),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("drift_event_id", sa.String(64), nullable=False),
        sa.Column("payer_id", sa.String(128), nullable=False),
        sa.Column("cpt_group", sa.String(128), nullable=False),
        sa.Column("drift_type", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("transition", sa.String(16), nullable=False),
        sa.Column("severity", sa.Float, nullable=False),
        sa.Column("severity_level", sa.String(16), nullable=False),
        sa.Column("occurrence_count", sa.BigInteger, nullable=False),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
        sa.Column("acknowledged_by", sa.String(128)),
        sa.Column("resolved_by", sa.String(128)),
        sa.Column("resolution", sa.String(16)),
        sa.Column("verdict", sa.String(32)),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("notify", sa.Boolean, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "drift_events",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("payer_id", sa.String(128), nullable=False),
        sa.Column("cpt_group", sa.String(128), nullable=False),
        sa.Column("drift_type", sa.String(32), nullable=False),
        sa.Column("window_days", sa.Float, nullable=False),
        sa.Column("baseline_start", TS, nullable=False),
        sa.Column("baseline_end", TS, nullable=False),
        sa.Column("current_start", TS, nullable=False),
        sa.Column("current_end", TS, nullable=False),
        sa.Column("baseline_value", sa.Float, nullable=False),
        sa.Column("current_value", sa.Float, nullable=False),
        sa.Column("delta_value", sa.Float, nullable=False),
        sa.Column("baseline_n", sa.BigInteger, nullable=False),
        sa.Column("current_n", sa.BigInteger, nullable=False),
        sa.Column("p_value", sa.Float, nullable=False),
        sa.Column("q_value", sa.Float, nullable=False),
        sa.Column("severity", sa.Float, nullable=False),
        sa.Column("severity_level", sa.String(16), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("detected_at", TS, nullable=False),
    )
    op.create_index(
        "ix_drift_customer_severity_time",
        "drift_events",
        ["customer_id", "severity_level", "detected_at"],
    )
    op.create_index(
        "ix_drift_customer_payer_group", "drift_events", ["customer_id", "payer_id", "cpt_group"]
    )
    op.create_table(
        "alert_events",
        sa.Column("alert_id", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        *_alert_columns(),
    )
    op.create_index(
        "ix_alerts_customer_status_time", "alert_events", ["customer_id", "status", "last_seen"]
    )
    op.create_table(
        "alert_transitions",
        sa.Column("seq", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("alert_id", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        *_alert_columns(),
        sa.UniqueConstraint("alert_id", "version", name="uq_alert_transitions_alert_version"),
    )
    op.create_index("ix_transitions_customer_seq", "alert_transitions", ["customer_id", "seq"])


def downgrade() -> None:
    op.drop_table("alert_transitions")
    op.drop_table("alert_events")
    op.drop_table("drift_events")
