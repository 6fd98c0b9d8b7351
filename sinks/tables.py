"""SQLAlchemy Core tables of the Postgres store (docs/data.md, "Postgres tables").

The schema itself is created by the Alembic migrations in ``sinks/migrations``; these objects
describe it for queries and writes.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Identity,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)

metadata = MetaData()

drift_events = Table(
    "drift_events",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("payer_id", String(128), nullable=False),
    Column("cpt_group", String(128), nullable=False),
    Column("drift_type", String(32), nullable=False),
    Column("window_days", Float, nullable=False),
    Column("baseline_start", DateTime(timezone=True), nullable=False),
    Column("baseline_end", DateTime(timezone=True), nullable=False),
    Column("current_start", DateTime(timezone=True), nullable=False),
    Column("current_end", DateTime(timezone=True), nullable=False),
    Column("baseline_value", Float, nullable=False),
    Column("current_value", Float, nullable=False),
    Column("delta_value", Float, nullable=False),
    Column("baseline_n", BigInteger, nullable=False),
    Column("current_n", BigInteger, nullable=False),
    Column("p_value", Float, nullable=False),
    Column("q_value", Float, nullable=False),
    Column("severity", Float, nullable=False),
    Column("severity_level", String(16), nullable=False),
    Column("confidence", Float, nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False),
)

_ALERT_COLUMNS = (
    ("dedup_key", String(700), False),
    ("customer_id", String(128), False),
    ("rule_id", String(128), False),
    ("drift_event_id", String(64), False),
    ("payer_id", String(128), False),
    ("cpt_group", String(128), False),
    ("drift_type", String(32), False),
    ("status", String(16), False),
    ("transition", String(16), False),
    ("severity", Float, False),
    ("severity_level", String(16), False),
    ("occurrence_count", BigInteger, False),
    ("first_seen", DateTime(timezone=True), False),
    ("last_seen", DateTime(timezone=True), False),
    ("acknowledged_by", String(128), True),
    ("resolved_by", String(128), True),
    ("resolution", String(16), True),
    ("verdict", String(32), True),
    ("message", Text, False),
    ("notify", Boolean, False),
    ("assignee", String(128), True),
    ("actor", String(128), True),
    ("note", Text, True),
)


def _alert_columns() -> list[Column[object]]:
    return [Column(name, type_, nullable=nullable) for name, type_, nullable in _ALERT_COLUMNS]


alert_events = Table(
    "alert_events",
    metadata,
    Column("alert_id", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
    *_alert_columns(),
    # When operators were first told of the alert, by the wall clock: the sink stored its first
    # transition (the notifier sends it on at once). Set by Postgres on insert, never updated;
    # null for alerts stored before the column existed.
    Column("first_notified_at", DateTime(timezone=True), nullable=True, server_default=func.now()),
)

# Every version of every alert, in the order the sink stored them (``seq``).
alert_transitions = Table(
    "alert_transitions",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("alert_id", String(64), nullable=False),
    Column("version", BigInteger, nullable=False),
    *_alert_columns(),
    # When the sink stored the transition, by the wall clock (an operator's command is stored
    # within a second); null for transitions stored before the column existed.
    Column("stored_at", DateTime(timezone=True), nullable=True, server_default=func.now()),
    UniqueConstraint("alert_id", "version", name="uq_alert_transitions_alert_version"),
)

ALERT_FIELDS = ("alert_id", "version", *(name for name, _, _ in _ALERT_COLUMNS))
NOTIFY_CHANNEL = "upstream_alert_transitions"

# Each customer's feed per day it reached the sink (UTC, wall clock): claim messages received
# (new + resent + amended), new claims, resent unchanged, amended (a value changed), rejected.
feed_days = Table(
    "feed_days",
    metadata,
    Column("customer_id", String(128), primary_key=True),
    Column("day", Date, primary_key=True),
    *(Column(name, BigInteger, nullable=False, server_default="0")
      for name in ("received", "new", "resent", "amended", "invalid")),
    Column("last_received_at", DateTime(timezone=True), nullable=True),
)  # fmt: skip

# The claim messages the sink rejected, by Kafka position (a redelivery adds nothing).
claim_rejections = Table(
    "claim_rejections",
    metadata,
    Column("source_partition", Integer, primary_key=True),
    Column("source_offset", BigInteger, primary_key=True),
    Column("customer_id", String(128), nullable=True),
    Column("claim_id", String(128), nullable=True),
    Column("reason", String(64), nullable=False),
    Column("detail", Text, nullable=False),
    Column("rejected_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
