"""Prometheus metrics of the worker, named ``upstream_*`` with units in the name."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLAIMS_PROCESSED = Counter(
    "upstream_claims_processed_total", "Claims counted into the windows (new, or corrected)"
)
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
CONSUMER_LAG = Gauge(
    "upstream_worker_consumer_lag_messages",
    "Messages behind the end, per assigned partition",
    ["topic", "partition"],
)
CLAIMS_BY_OUTCOME = Counter(
    "upstream_claims_valid_total", "Valid claims routed to the windows, by outcome", ["outcome"]
)
EVENT_TIME_LAG = Histogram(
    "upstream_event_time_lag_seconds",
    "Wall clock minus a claim's event time when its windows are updated",
    buckets=(1, 10, 60, 600, 3600, 6 * 3600, 86_400, 7 * 86_400, 30 * 86_400, 365 * 86_400),
)
CLAIMS_AMENDED = Counter(
    "upstream_claims_amended_total",
    "Claims counted into a bucket that had already closed (late claims inside the history)",
)
CLAIMS_PENDING = Gauge(
    "upstream_claims_pending",
    "Claims waiting for their customer's watermark to reach their source's clock",
)
CLAIMS_REDELIVERED = Counter(
    "upstream_claims_redelivered_total",
    "Claims skipped by the windows as already applied (a replay after a crash or rebalance)",
)
BUCKET_CLOSES = Counter(
    "upstream_bucket_closes_total", "Buckets closed by customers' watermarks (one per customer)"
)
FEED_DETECTIONS = Counter(
    "upstream_feed_findings_total",
    "Feed watch findings (a silent feed, a low day, a dead-letter burst), one per period each",
    ["drift_type"],
)
GAUGES_EVERY_S = 2.0  # how often a worker's health loop refreshes its gauges
ACTIVE_KEYS = Gauge("upstream_active_window_keys", "(customer, payer, CPT group) keys in memory")
CHANGELOG_SPLIT_FLUSHES = Counter(
    "upstream_changelog_split_flushes_total",
    "Changelog flushes too large for one record batch (not atomic against a crash; see logs)",
)
