"""One typed settings class for every Upstream process.

Values come from environment variables with the ``UPSTREAM_`` prefix; CLI flags override them
by passing keyword arguments to :func:`load_settings`. Settings are read once, at the
composition root, and passed down; nothing else reads ``os.environ``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


class Settings(BaseSettings):
    """Configuration of the worker, sink, notifier, generator and dev stack."""

    model_config = SettingsConfigDict(env_prefix="UPSTREAM_", frozen=True, extra="ignore")

    # Connections. Empty means "start the embedded one" (dev and tests only).
    kafka_bootstrap: str = ""
    database_url: str = ""
    schema_registry_url: str = ""

    # Topics (DESIGN.md "Topics").
    topic_claims: str = "claims.decided"
    topic_claims_dlq: str = "claims.decided.dlq"
    topic_drift: str = "drift.events"
    topic_alerts: str = "alerts.events"
    topic_commands: str = "alerts.commands"
    topic_rules: str = "alerts.rules"
    topic_commands_dlq: str = "alerts.commands.dlq"
    topic_sink_dlq: str = "sink.dlq"
    topic_reports: str = "reports.weekly"
    topic_ingest_ledger: str = "ingest.ledger"  # which files `upstream ingest` published
    partitions: int = Field(default=4, ge=1)

    # Faust worker.
    app_id: str = "upstream-worker"
    # Tansu finishes a group join only after half the session timeout: keep it short.
    session_timeout_s: float = Field(default=6.0, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    batch_max: int = Field(default=2000, ge=1)
    # How long a route batch waits for more claims (a backlog never waits): 20 ms, not 50, since
    # the worker has the CPU for smaller batches at 5,000 claims/s (README, "Latency").
    batch_within_s: float = Field(default=0.02, gt=0)
    # The windows read what the routes sent: a burst of by-key messages per route batch, which
    # a short wait takes whole (batches of the routes' size, without another route-length wait).
    windows_batch_within_s: float = Field(default=0.01, gt=0)
    # The alerts and commands stages: few messages, each an operator waits for (a bucket close
    # sends its evaluations at once: one batch takes them whole).
    alerts_batch_within_s: float = Field(default=0.01, gt=0)
    # How long the broker may hold a fetch with nothing new (Faust fixes aiokafka's at 1,500).
    fetch_max_wait_ms: int = Field(default=100, ge=0)
    # Standby copies of other workers' tables (Faust's default is 1). A standby reads every
    # changelog record of the partitions it stands by for, through Faust's per-event path,
    # and a takeover re-reads the windows changelog from its start anyway (WindowsState).
    standby_replicas: int = Field(default=0, ge=0)
    worker_data_dir: str = ".cache/worker"
    # Allocations past frees before the worker's youngest-generation garbage collection
    # (Python's default is 700): a batch allocates tens of thousands of short-lived objects,
    # nearly all freed by reference counting, and each collection also walks the young
    # survivors. 700 restores Python's behaviour.
    gc_threshold: int = Field(default=50_000, ge=1)

    # Semantics (DESIGN.md "Semantics").
    bucket_hours: int = Field(default=24, ge=1)
    grace_days: float = Field(default=3.0, ge=0)
    short_window_buckets: int = Field(default=7, ge=1)
    long_window_buckets: int = Field(default=30, ge=1)
    baseline_buckets: int = Field(default=60, ge=1)
    min_current_n: int = Field(default=30, ge=1)
    min_baseline_n: int = Field(default=100, ge=1)
    min_expected_count: float = Field(default=5.0, ge=0)
    denial_rate_floor: float = Field(default=0.05, ge=0)
    decision_lag_floor_days: float = Field(default=2.0, ge=0)
    allowed_amount_floor: float = Field(default=0.10, ge=0)
    # A customer's feed (or one claims partition of it) quiet this long: wall clock advances it.
    idle_close_after_s: float = Field(default=600.0, gt=0)
    idle_check_interval_s: float = Field(default=5.0, gt=0)
    fdr_q_max: float = Field(default=0.001, gt=0, le=1)

    # Sink.
    sink_group: str = "upstream-sink"
    reference_dir: Path | None = None  # <dir>/<customer_id>/payers.csv, cpt_groups.csv
    sink_claims: bool = True  # also store every claim in claim_records
    sink_batch_max: int = Field(default=5000, ge=1)
    sink_claim_lanes: int = Field(default=2, ge=1)  # connections writing a batch's claims at once
    # The claims loop polls at most this often, so a batch holds what arrived meanwhile: each
    # batch is a transaction and a commit, whose cost does not grow with its rows.
    sink_claims_poll_every_s: float = Field(default=0.1, ge=0)
    # Scheduled jobs of the worker's leader (cron in UTC; need UPSTREAM_DATABASE_URL).
    report_cron: str = "0 6 * * 1"  # the weekly drift summary, Mondays 06:00
    retention_cron: str = "30 3 * * *"  # daily
    retention_days: int = Field(default=90, ge=1)
    # Readiness (/readyz of worker and sink): consumer lag above this many messages is not ready.
    ready_max_lag: int = Field(default=100_000, ge=0)

    # Notifier.
    # Worker and sink serve Prometheus /metrics here when set (the notifier on its own port).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    notifier_host: str = "127.0.0.1"
    notifier_port: int = Field(default=8765, ge=0, le=65535)
    notifier_secret: SecretStr = SecretStr("")
    # While the secret is rotated: earlier secrets (space or comma separated) whose tokens are
    # still accepted; new tokens are signed with notifier_secret.
    notifier_previous_secrets: SecretStr = SecretStr("")
    notifier_public_url: str = ""
    # Behind a reverse proxy every client has the proxy's address: raise the first.
    notifier_connections_per_address: int = Field(default=200, ge=1)
    notifier_connections_per_operator: int = Field(default=20, ge=1)
    notifier_commands_per_second: float = Field(default=5.0, gt=0)

    @property
    def grace_ms(self) -> int:
        """``grace_days`` in ms: how far a customer's watermark stays behind its claims."""
        return int(self.grace_days * 86_400_000)


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, apply non-None ``overrides`` (CLI flags)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        problems = "; ".join(
            f"UPSTREAM_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from exc
