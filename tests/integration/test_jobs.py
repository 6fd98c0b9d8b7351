"""Scheduled jobs: the weekly summary and retention run on the leader of two workers only."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from sinks.reports import last_full_week
from sinks.rows import claim_row, drift_row
from sinks.writer import PostgresWriter
from streams.app.services import migrate_database
from streams.devtools.probes import read_all
from streams.devtools.stack import free_port
from streams.kafka.topics import create_topics
from tests.integration.stack import ServiceStack, create_database, get_json, wait_until
from tests.unit.claims import raw_claim

pytestmark = pytest.mark.integration
RAN_REPORTS = "weekly reports written"
RAN_RETENTION = "retention: deleted"


def _drift(event_id: str, customer: str, payer: str, detected: datetime) -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": customer, "payer_id": payer,
            "cpt_group": "radiology", "drift_type": "denial_rate", "window_days": 7.0,
            "baseline_start": detected - timedelta(days=90), "baseline_end": detected,
            "current_start": detected - timedelta(days=7), "current_end": detected,
            "baseline_value": 0.1, "current_value": 0.3, "delta_value": 0.2, "baseline_n": 500,
            "current_n": 60, "p_value": 1e-6, "q_value": 1e-5, "severity": 0.9,
            "severity_level": "critical", "confidence": 0.99, "detected_at": detected}  # fmt: skip


def _claim(claim_id: str, decided: date, customer: str = "acme") -> dict[str, Any]:
    return raw_claim(claim_id=claim_id, customer_id=customer,
                     submitted_date=(decided - timedelta(days=3)).isoformat(),
                     decided_date=decided.isoformat(), allowed_amount="80")  # fmt: skip


async def _fixtures(database_url: str) -> None:
    now = datetime.now(UTC)
    week = datetime.combine(last_full_week(now), time(12), UTC)
    drift = [
        _drift("w1", "acme", "payer-a", week + timedelta(days=1)),
        _drift("w2", "acme", "payer-a", week + timedelta(days=2)),
        _drift("w3", "acme", "payer-b", week + timedelta(days=3)),
        _drift("w4", "beta", "payer-c", week + timedelta(days=4)),
        _drift("old", "acme", "payer-a", now - timedelta(days=60)),  # past the 30-day retention
        # A customer whose feed stalled 200 days ago: its windows still hold its last 30 days.
        _drift("stalled-last", "stalled", "payer-a", now - timedelta(days=200)),
        _drift("stalled-old", "stalled", "payer-a", now - timedelta(days=240)),
    ]
    claims = [_claim("recent", now.date() - timedelta(days=1)),
              _claim("ancient", now.date() - timedelta(days=100)),
              _claim("stalled-last", now.date() - timedelta(days=200), "stalled"),
              _claim("stalled-within", now.date() - timedelta(days=215), "stalled"),
              _claim("stalled-old", now.date() - timedelta(days=240), "stalled")]  # fmt: skip
    engine = create_async_engine(database_url)
    try:
        await PostgresWriter(engine).write(
            [drift_row(d) for d in drift], [], [claim_row(c, 0, i) for i, c in enumerate(claims)]
        )
    finally:
        await engine.dispose()


def _runs(stack: ServiceStack, worker: str, what: str) -> list[datetime]:
    """The minutes ``worker`` logged ``what`` in (its JSON log lines carry their time)."""
    minutes = []
    for line in stack.log(worker).splitlines():
        if what in line and line.startswith("{"):
            ts = datetime.fromisoformat(json.loads(line)["ts"])
            minutes.append(ts.replace(second=0, microsecond=0))
    return minutes


async def test_jobs_run_on_the_leader_only_and_do_their_work(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    """Every minute: reports for last week per customer, old rows gone, on one worker only."""
    database_url = create_database(postgres_url, f"it_{unique}")
    await asyncio.to_thread(migrate_database, database_url)
    stack = ServiceStack(kafka_bootstrap, database_url, unique, tmp_path)
    stack.extra_env.update({"UPSTREAM_REPORT_CRON": "* * * * *",
                            "UPSTREAM_RETENTION_CRON": "* * * * *",
                            "UPSTREAM_RETENTION_DAYS": "30",
                            "UPSTREAM_LOG_FORMAT": "json"})  # fmt: skip
    s = stack.settings()
    await create_topics(s, kafka_bootstrap)
    await _fixtures(database_url)
    ports = {"worker-1": free_port(), "worker-2": free_port()}
    for name, port in ports.items():
        stack.start("worker", name, env={"UPSTREAM_METRICS_PORT": str(port)})
    try:

        async def both_assigned() -> bool:
            for port in ports.values():
                try:
                    _, body = await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/readyz")
                except OSError:
                    return False
                if not body["checks"].get("kafka", {}).get("partitions"):
                    return False
            return True

        await wait_until(both_assigned, 120, "both workers holding partitions")
        # The first whole minute with the group settled; its runs are all logged once a run
        # of a later minute is (every worker's crontab fires at the start of each minute).
        watched = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)

        async def ran_after_watched() -> bool:
            return any(m > watched for w in ports for m in _runs(stack, w, RAN_REPORTS))

        await wait_until(ran_after_watched, 150, "weekly-report runs in two minutes")
        runs = {w: [what for what in (RAN_REPORTS, RAN_RETENTION)
                    if watched in _runs(stack, w, what)] for w in ports}  # fmt: skip
        ran = [w for w, jobs in runs.items() if jobs]
        assert len(ran) == 1, f"jobs ran on {ran} in the minute of {watched}: {runs}"
        assert runs[ran[0]] == [RAN_REPORTS, RAN_RETENTION]

        with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
            reports: dict[str, Any] = dict(
                conn.execute("SELECT customer_id, report FROM weekly_reports").fetchall()
            )
            claims = [r[0] for r in conn.execute("SELECT claim_id FROM claim_records")]
            drift = sorted(r[0] for r in conn.execute("SELECT event_id FROM drift_events"))
        assert set(reports) == {"acme", "beta"}  # "stalled" had nothing last week
        acme = reports["acme"]
        assert acme["week_start"] == last_full_week(datetime.now(UTC)).isoformat()
        assert acme["drift_events"] == 3
        assert acme["by_type_level"] == {"denial_rate:critical": 3}
        assert acme["top_payers"] == [{"payer_id": "payer-a", "drift_events": 2},
                                      {"payer_id": "payer-b", "drift_events": 1}]  # fmt: skip
        assert sorted(claims) == ["recent", "stalled-last", "stalled-within"]
        assert drift == ["stalled-last", "w1", "w2", "w3", "w4"]
        published = {m.key.decode(): json.loads(m.value)
                     for m in await read_all(kafka_bootstrap, s.topic_reports)}  # fmt: skip
        assert published["acme"]["drift_events"] == 3
        assert published["beta"]["drift_events"] == 1
    finally:
        codes = stack.stop_all()
        assert codes == {"worker-1": 0, "worker-2": 0}, stack.log("worker-1")[-3000:]
