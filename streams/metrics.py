"""Prometheus metrics of the worker, named ``upstream_*`` with units in the name."""

from __future__ import annotations

from prometheus_client import Counter

CLAIMS_PROCESSED = Counter("upstream_claims_processed_total", "Valid claims applied to the windows")
CLAIMS_DLQ = Counter(
    "upstream_claims_dlq_total", "Claims sent to the dead-letter topic", ["reason"]
)
DRIFT_EVENTS = Counter(
    "upstream_drift_events_total", "Drift events emitted", ["drift_type", "level"]
)
ALERT_TRANSITIONS = Counter(
    "upstream_alert_transitions_total", "Alert transitions emitted", ["transition"]
)
CLAIMS_DUPLICATE = Counter(
    "upstream_claims_duplicate_total", "Resent claims identical to one already counted"
)
COMMANDS = Counter(
    "upstream_commands_total",
    "Operator commands by outcome (applied, duplicate, or a reason)",
    ["outcome"],
)
