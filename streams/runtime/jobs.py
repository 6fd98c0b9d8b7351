"""Scheduled jobs of the worker, run by the Faust leader only (one worker of the group).

- The weekly drift summary per customer (roadmap P-1): for the last full ISO week, written to
  ``weekly_reports`` and published as JSON on ``reports.weekly`` (key ``customer_id``);
  rerunning a week replaces its rows.
- Retention: rows older than ``UPSTREAM_RETENTION_DAYS`` (default 90) leave ``claim_records``,
  ``drift_events``, ``alert_transitions`` and resolved ``alert_events``.
- The feed watch, every ``UPSTREAM_FEED_WATCH_S``: each customer's feed as the sink counted it
  (:mod:`streams.stages.feed_watch`); its drift events go to ``drift.events`` and its
  evaluations to the alert input, keyed by customer as the windows stage sends them, so the
  alerts stage opens, updates and resolves feed alerts like any other.

All need ``UPSTREAM_DATABASE_URL``; without it they are not scheduled. A failing run is
logged and the next one tries again; the worker itself carries on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from schemas.registry import ValueCodec
from sinks.feed_watch import feed_states
from sinks.reports import apply_retention, last_full_week, store_summaries, weekly_summaries
from streams.kafka import envelopes
from streams.kafka.records import drift_record
from streams.observability.metrics import FEED_DETECTIONS
from streams.runtime.state import send_keyed
from streams.settings import Settings
from streams.stages.feed_watch import FeedWatch, evaluate

log = logging.getLogger("upstream.jobs")


@dataclass(frozen=True)
class FeedOutputs:
    """Where the feed watch sends: the codec, a producer (a callable: it exists once the app
    runs) and the topics of drift events and of alert input."""

    codec: ValueCodec
    producer: Callable[[], Any]
    drift_topic: str
    alert_input_topic: str


class ScheduledJobs:
    """The crontab jobs of one worker app."""

    def __init__(self, app: Any, settings: Settings, feeds: FeedOutputs) -> None:
        self.app = app
        self.settings = settings
        self.feeds = feeds
        self.watch = FeedWatch(
            every_ms=int(settings.feed_watch_s * 1000),
            silence_floor_h=settings.feed_silence_floor_hours,
            volume_drop=settings.feed_volume_drop,
            dead_letter_floor=settings.feed_dead_letter_floor,
        )
        self.reports_topic = app.topic(
            settings.topic_reports, key_type=bytes, value_type=bytes, key_serializer="raw",
            value_serializer="raw",
        )  # fmt: skip
        self._engine: AsyncEngine | None = None

    def register(self) -> None:
        """Schedule the jobs on the leader, if there is a database to work on."""
        if not self.settings.database_url:
            log.info("no UPSTREAM_DATABASE_URL: reports, retention and the feed watch are off")
            return
        self.app.crontab(self.settings.report_cron, on_leader=True, timezone=UTC)(
            self.weekly_reports
        )
        self.app.crontab(self.settings.retention_cron, on_leader=True, timezone=UTC)(self.retention)
        self.app.timer(self.settings.feed_watch_s, on_leader=True)(self.watch_feeds)

    def engine(self) -> AsyncEngine:
        """The jobs' own small connection pool, made on first use."""
        if self._engine is None:
            self._engine = create_async_engine(self.settings.database_url, pool_size=1)
        return self._engine

    async def weekly_reports(self) -> None:
        """Summarise the last full week per customer; store and publish the summaries."""
        week = last_full_week(datetime.now(UTC))
        try:
            async with self.engine().begin() as conn:
                summaries = await weekly_summaries(conn, week)
                await store_summaries(conn, summaries)
        except (SQLAlchemyError, OSError) as exc:
            log.error("weekly reports for %s failed: %s", week, exc)
            return
        for summary in summaries:
            value = json.dumps(summary, default=str).encode()
            await self.reports_topic.send(key=summary["customer_id"].encode(), value=value)
        log.info("weekly reports written for the week of %s: %d customer(s)", week,
                 len(summaries))  # fmt: skip

    async def retention(self) -> None:
        """Delete rows older than the retention age."""
        age = timedelta(days=self.settings.retention_days)
        cutoff = datetime.now(UTC) - age
        try:
            async with self.engine().begin() as conn:
                deleted = await apply_retention(conn, cutoff, age)
        except (SQLAlchemyError, OSError) as exc:
            log.error("retention failed: %s", exc)
            return
        log.info("retention: deleted rows older than %s: %s", cutoff.date(), deleted)

    async def watch_feeds(self) -> None:
        """Evaluate every customer's feed now; send its drift events, then its evaluations. A
        run that fails is logged; the next one tries again (Faust's timer would stop for good
        on an error)."""
        try:
            await self._watch_feeds(datetime.now(UTC))
        except Exception:  # the database, the broker, a bug: the next period tries again
            log.exception("feed watch failed")

    async def _watch_feeds(self, now: datetime) -> None:
        async with self.engine().connect() as conn:
            feeds = await feed_states(conn, now, self.watch.history_days)
        out = self.feeds
        drifts, evaluations = [], []
        for feed in feeds:
            key = feed.customer_id.encode()
            for evaluation in evaluate(feed, self.watch, now):
                for drift in evaluation.detections:
                    record = drift_record(drift)
                    drifts.append((key, out.codec.encode("DriftEvent", out.drift_topic, record)))
                    FEED_DETECTIONS.labels(drift_type=drift.drift_type).inc()
                evaluations.append((key, envelopes.evaluation_message(evaluation)))
        producer = out.producer()
        # A feed alert names its drift event: the event goes first (the sink stores it first).
        await asyncio.gather(*await send_keyed(producer, out.drift_topic, drifts))
        await asyncio.gather(*await send_keyed(producer, out.alert_input_topic, evaluations))
        if drifts:
            log.info("feed watch: %d customer(s), %d finding(s)", len(feeds), len(drifts))
