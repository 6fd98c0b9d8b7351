"""One typed settings class for every Upstream process, and the only reader of the environment.

Values come from environment variables with the ``UPSTREAM_`` prefix (Sentry's own two
without it); CLI flags override them by passing keyword arguments to :func:`load_settings`.
Settings are read once, at the composition root, and passed down. Each field's description
is its documentation: ``docs/configuration.md`` is generated from this class
(``scripts/config_docs.py``), under the headings of :data:`SECTIONS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "UPSTREAM_"

# The first field of each section → the section's heading and what it is about.
SECTIONS: dict[str, tuple[str, str]] = {
    "kafka_bootstrap": ("Connections", "Empty means: start the embedded one (dev and tests)."),
    "topic_claims": ("Topics", "Names of the topics; `upstream topics create` makes them."),
    "app_id": ("Worker", "The Faust worker: its group, batches and fetches."),
    "bucket_hours": ("Windows and detection", "Event-time buckets, windows and drift tests."),
    "sink_group": ("Sink", "The Postgres sink."),
    "report_cron": ("Scheduled jobs", "Run by the worker group's leader; need a database."),
    "metrics_host": ("Health, metrics, logs and errors", ""),
    "notifier_host": ("Notifier", "The WebSocket and HTTP server, and its tokens."),
}


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names the variable."""


class Settings(BaseSettings):
    """Configuration of the worker, sink, notifier, CLI, generator and dev stack."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    kafka_bootstrap: str = Field(default="", description="Kafka bootstrap servers, `host:port`.")
    database_url: str = Field(
        default="", description="Postgres, as `postgresql+psycopg://user@host:port/db`."
    )
    schema_registry_url: str = Field(
        default="",
        description="A Confluent-compatible schema registry; records are JSON without one.",
    )

    topic_claims: str = Field(default="claims.decided", description="Claim decisions in.")
    topic_claims_dlq: str = Field(
        default="claims.decided.dlq", description="Claims refused, with the reason in headers."
    )
    topic_drift: str = Field(default="drift.events", description="Drift events out.")
    topic_alerts: str = Field(default="alerts.events", description="Alert transitions out.")
    topic_commands: str = Field(
        default="alerts.commands", description="Operator commands (acknowledge, resolve, …)."
    )
    topic_rules: str = Field(
        default="alerts.rules", description="Alert rules, compacted, keyed `customer|rule_id`."
    )
    topic_commands_dlq: str = Field(
        default="alerts.commands.dlq", description="Commands and alert input refused."
    )
    topic_sink_dlq: str = Field(default="sink.dlq", description="Records the sink refused.")
    topic_reports: str = Field(default="reports.weekly", description="Weekly summaries (JSON).")
    topic_ingest_ledger: str = Field(
        default="ingest.ledger",
        description="Which files `upstream ingest` published, and how far (compacted).",
    )
    partitions: int = Field(
        default=4,
        ge=1,
        description="Partitions of each topic `topics create` makes; a customer's windows "
        "live in one of them.",
    )

    app_id: str = Field(
        default="upstream-worker", description="The worker's consumer group and table prefix."
    )
    session_timeout_s: float = Field(
        default=6.0,
        gt=0,
        description="Consumer group session timeout. Tansu finishes a group join only after "
        "half of it, so it is short.",
    )
    heartbeat_interval_s: float = Field(default=1.0, gt=0, description="Group heartbeats.")
    batch_max: int = Field(
        default=2000,
        ge=1,
        description="Messages per worker batch (route and windows; also bounds an alerts batch).",
    )
    batch_within_s: float = Field(
        default=0.02,
        gt=0,
        description="The longest a route batch waits for more claims; past the high-water "
        "mark of its buffer (a backlog) it does not wait.",
    )
    windows_batch_within_s: float = Field(
        default=0.01,
        gt=0,
        description="The same for a windows batch. Each route batch sends its by-key messages "
        "at once, so a short wait still takes a route batch's whole output.",
    )
    alerts_batch_within_s: float = Field(
        default=0.01,
        gt=0,
        description="The same for an alerts or commands batch. A bucket close sends its "
        "evaluations at once, so one batch takes them whole.",
    )
    fetch_max_wait_ms: int = Field(
        default=100,
        ge=0,
        description="How long the broker may hold the worker's fetch with nothing new "
        "(Faust's own is 1,500).",
    )
    standby_replicas: int = Field(
        default=0,
        ge=0,
        description="Standby copies of other workers' tables (Faust's own is 1). A standby "
        "reads every changelog record of the partitions it stands by for, and a takeover "
        "re-reads the windows changelog from its start anyway.",
    )
    worker_data_dir: str = Field(
        default=".cache/worker", description="The worker's local data (Faust's table files)."
    )
    gc_threshold: int = Field(
        default=50_000,
        ge=1,
        description="Allocations past frees before the worker's youngest-generation garbage "
        "collection (Python's own is 700). A batch allocates tens of thousands of short-lived "
        "objects, nearly all freed by reference counting; 700 restores Python's behaviour.",
    )

    bucket_hours: int = Field(default=24, ge=1, description="Width of an event-time bucket.")
    grace_days: float = Field(
        default=3.0,
        ge=0,
        description="How far a customer's watermark stays behind its newest claims.",
    )
    short_window_buckets: int = Field(
        default=7, ge=1, description="Buckets of the short current window."
    )
    long_window_buckets: int = Field(
        default=30, ge=1, description="Buckets of the long current window."
    )
    baseline_buckets: int = Field(
        default=60,
        ge=1,
        description="Buckets of the baseline before the long window; with it, the history a "
        "customer keeps (older claims are dead-lettered as `beyond_history`).",
    )
    min_current_n: int = Field(
        default=30, ge=1, description="Fewest claims in a current window to test it."
    )
    min_baseline_n: int = Field(
        default=100, ge=1, description="Fewest claims in the baseline to test against it."
    )
    min_expected_count: float = Field(
        default=5.0,
        ge=0,
        description="Fewest expected denials and approvals for the denial-rate z-test.",
    )
    denial_rate_floor: float = Field(
        default=0.05, ge=0, description="Smallest denial-rate change reported (absolute)."
    )
    decision_lag_floor_days: float = Field(
        default=2.0, ge=0, description="Smallest decision-lag change reported, in days."
    )
    allowed_amount_floor: float = Field(
        default=0.10, ge=0, description="Smallest allowed-amount change reported (relative)."
    )
    idle_close_after_s: float = Field(
        default=600.0,
        gt=0,
        description="A customer's feed, or one claims partition of it, quiet this long "
        "(wall clock) lets the customer's watermark advance without it.",
    )
    idle_check_interval_s: float = Field(
        default=5.0, gt=0, description="How often the worker looks for idle feeds."
    )
    fdr_q_max: float = Field(
        default=0.001,
        gt=0,
        le=1,
        description="Benjamini–Hochberg false discovery rate over a customer's keys per close.",
    )

    sink_group: str = Field(
        default="upstream-sink",
        description="The sink's consumer group for claims; drift events and alerts are read "
        "by `<it>-events`.",
    )
    reference_dir: Path | None = Field(
        default=None,
        description="Per-customer mappings, `<dir>/<customer_id>/payers.csv` and "
        "`cpt_groups.csv`, for ingest and the worker.",
    )
    sink_claims: bool = Field(
        default=True, description="Whether the sink stores every claim in `claim_records`."
    )
    sink_batch_max: int = Field(
        default=5000,
        ge=1,
        description="Messages the sink reads, decodes and writes as one batch.",
    )
    sink_claim_lanes: int = Field(
        default=2,
        ge=1,
        description="Connections that write one batch's claims at once (1,000 claims or more "
        "each).",
    )
    sink_claims_poll_every_s: float = Field(
        default=0.1,
        ge=0,
        description="The claims loop polls at most this often, so a batch holds what arrived "
        "meanwhile: each batch is a transaction and a commit, whatever its size.",
    )

    report_cron: str = Field(
        default="0 6 * * 1", description="The weekly drift summary (cron, UTC): Mondays 06:00."
    )
    retention_cron: str = Field(default="30 3 * * *", description="Retention (cron, UTC).")
    retention_days: int = Field(
        default=90,
        ge=1,
        description="Rows older than this, and older than this before their customer's "
        "newest row, are deleted by retention.",
    )

    metrics_host: str = Field(
        default="127.0.0.1", description="Where worker and sink serve their health endpoints."
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of `/healthz`, `/readyz` and `/metrics` of worker and sink; 0: off. "
        "The notifier serves them on its own port.",
    )
    ready_max_lag: int = Field(
        default=100_000,
        ge=0,
        description="Consumer lag (messages) above which worker and sink report not ready.",
    )
    log_format: Annotated[Literal["auto", "json", "text"], BeforeValidator(_lower)] = Field(
        default="auto",
        description="`json` (one object per line), `text`, or `auto`: text on a terminal, "
        "else JSON.",
    )
    sentry_dsn: SecretStr = Field(
        default=SecretStr(""),
        validation_alias=AliasChoices("SENTRY_DSN"),
        description="Sentry error reporting (scrubbed of secrets) for worker, sink and "
        "notifier; off when unset.",
    )
    sentry_environment: str = Field(
        default="production",
        validation_alias=AliasChoices("SENTRY_ENVIRONMENT"),
        description="Sentry's environment tag.",
    )

    notifier_host: str = Field(default="127.0.0.1", description="The notifier's address.")
    notifier_port: int = Field(default=8765, ge=0, le=65535, description="The notifier's port.")
    notifier_secret: SecretStr = Field(
        default=SecretStr(""),
        description="HS256 secret of operator tokens, at least 32 bytes; `upstream dev` makes "
        "one when unset.",
    )
    notifier_previous_secrets: SecretStr = Field(
        default=SecretStr(""),
        description="While the secret is rotated: earlier secrets (space or comma separated) "
        "whose tokens are still accepted; new tokens are signed with the current one.",
    )
    notifier_connections_per_address: int = Field(
        default=200,
        ge=1,
        description="WebSocket connections from one client address (raise it behind a reverse "
        "proxy, where every client has the proxy's address).",
    )
    notifier_connections_per_operator: int = Field(
        default=20, ge=1, description="WebSocket connections per token subject and customer."
    )
    notifier_commands_per_second: float = Field(
        default=5.0,
        gt=0,
        description="Commands per connection and second on average: 20 in any window of 20 / "
        "this seconds, rounded up to whole seconds (so at most 20 a second).",
    )
    feed_watch_s: float = Field(
        default=900.0,
        ge=1,
        description="How often the worker group's leader checks each customer's feed (silence, a "
        "day's volume, dead letters); also the period its feed alerts update in. Needs the "
        "database.",
    )
    feed_silence_floor_hours: float = Field(
        default=48.0,
        gt=0,
        description="A feed silence alert never comes sooner, whatever the feed's usual gap "
        "(a daily feed's allowance is 48 h: its gap of a day, plus the day).",
    )
    feed_volume_drop: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="A day that brings less than this share of its weekday's usual claims is low.",
    )
    feed_dead_letter_floor: int = Field(
        default=20, ge=1, description="Rejected claims in an hour below this never alert."
    )
    console_url: str = Field(
        default="http://127.0.0.1:8765",
        description="The console's address in alert notifications (their link to the alert).",
    )
    dispatcher_poll_s: float = Field(
        default=1.0, gt=0, description="How often the dispatcher looks for transitions and sends."
    )
    delivery_give_up_s: float = Field(
        default=86_400.0, gt=0, description="A notification not delivered this long is dead."
    )
    delivery_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a dispatcher holds the notifications it is sending; a dispatcher "
        "that died is taken over after it (those it sent may go twice, with one Idempotency-Key).",
    )
    smtp_host: str = Field(default="127.0.0.1", description="SMTP server for email receivers.")
    smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port.")
    smtp_starttls: bool = Field(default=False, description="Upgrade the SMTP session with TLS.")
    smtp_username: str | None = Field(default=None, description="SMTP login, if any.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP password, if any.")
    delivery_private_targets: bool = Field(
        default=False,
        description="Let routes set over the HTTP API send to loopback, private and link-local "
        "addresses (the CLI always may). Off, an operator cannot aim the dispatcher at the "
        "deployment's own network.",
    )
    smtp_sender: str = Field(
        default="upstream@localhost", description="The From address of alert emails."
    )

    @property
    def grace_ms(self) -> int:
        """``grace_days`` in ms: how far a customer's watermark stays behind its claims."""
        return int(self.grace_days * 86_400_000)

    @property
    def history_days(self) -> float:
        """How far behind its newest claims a customer's claims still count, in days: the
        grace plus the buckets a drift test reads (long window and baseline)."""
        buckets = self.long_window_buckets + self.baseline_buckets
        return self.grace_days + buckets * self.bucket_hours / 24


def env_name(field: str) -> str:
    """The environment variable of ``field``."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return ENV_PREFIX + field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment, apply non-None ``overrides`` (CLI flags)."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**clean)
    except ValidationError as exc:
        problems = "; ".join(f"{_variable(err['loc'])}: {err['msg']}" for err in exc.errors())
        raise SettingsError(f"invalid configuration: {problems}") from exc


def _variable(loc: tuple[int | str, ...]) -> str:
    name = "_".join(str(p) for p in loc)
    return name if name.isupper() else env_name(name) if name in Settings.model_fields else name
