"""Scheduled jobs of the worker, run by the Faust leader only (one worker of the group).

- The weekly drift summary per customer (roadmap P-1): for the last full ISO week, written to
  ``weekly_reports`` and published as JSON on ``reports.weekly`` (key ``customer_id``);
  rerunning a week replaces its rows.
- Retention: rows older than ``UPSTREAM_RETENTION_DAYS`` (default 90) leave ``claim_records``,
  ``drift_events``, ``alert_transitions`` and resolved ``alert_events``.

Both need ``UPSTREAM_DATABASE_URL``; without it they are not scheduled. A failing run is
logged and the next one tries again; the worker itself carries on.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from sinks.reports import apply_retention, last_full_week, store_summaries, weekly_summaries
from streams.settings import Settings

log = logging.getLogger("upstream.jobs")


class ScheduledJobs:
    """The crontab jobs of one worker app."""

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.reports_topic = app.topic(
            settings.topic_reports, key_type=bytes, value_type=bytes, key_serializer="raw",
            value_serializer="raw",
        )  # fmt: skip
        self._engine: AsyncEngine | None = None

    def register(self) -> None:
        """Schedule the jobs on the leader, if there is a database to work on."""
        if not self.settings.database_url:
            log.info("no UPSTREAM_DATABASE_URL: weekly reports and retention are not scheduled")
            return
        self.app.crontab(self.settings.report_cron, on_leader=True, timezone=UTC)(
            self.weekly_reports
        )
        self.app.crontab(self.settings.retention_cron, on_leader=True, timezone=UTC)(self.retention)

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
