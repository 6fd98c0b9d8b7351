"""Feed alerts on the real stack (Kafka, worker, sink, dispatcher, Postgres, a webhook on
127.0.0.1): a customer's feed that stopped opens a feed_silence alert of the whole feed, which
its route sends like any alert; when claims arrive again it resolves, and that is sent too.
Another customer's healthy feed raises nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.integration.stack import Received, http_receiver, sink_stack, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def hook() -> AsyncIterator[Received]:
    """A webhook receiver on 127.0.0.1."""
    async with http_receiver() as got:
        yield got


def _history(conn: psycopg.Connection[Any], customer: str, last: datetime) -> None:
    """30 days of 100 claims a day, each day's last at noon, up to ``last``'s day."""
    for back in range(30):
        day = last.date() - timedelta(days=back)
        at = min(last, datetime(day.year, day.month, day.day, 12, tzinfo=UTC))
        conn.execute(
            "INSERT INTO feed_days (customer_id, day, received, new, last_received_at)"
            " VALUES (%s, %s, 100, 100, %s)",
            (customer, day, at),
        )


async def test_a_stopped_feed_alerts_through_its_route_and_resolves_when_it_is_back(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path,
    hook: Received,
) -> None:  # fmt: skip
    url = f"{hook.url}/hook"
    database_url, stack, _ = await sink_stack(kafka_bootstrap, postgres_url, "feed", unique,
                                              tmp_path)  # fmt: skip
    stack.extra_env["UPSTREAM_FEED_WATCH_S"] = "2"
    now = datetime.now(UTC)
    plain = database_url.replace("+psycopg", "")
    with psycopg.connect(plain) as conn:
        _history(conn, "acme", now - timedelta(days=3))  # silent for three days
        _history(conn, "beta", now - timedelta(minutes=5))
    route = stack.cli("routes", "set", "--customer", "acme", "--name", "ops", "--webhook", url,
                      "--drift-types", "feed_silence,feed_volume,dead_letters")  # fmt: skip
    assert route.returncode == 0, route.stderr
    for service in ("worker", "sink"):
        stack.start(service)
    stack.start("dispatcher", env={"UPSTREAM_DISPATCHER_POLL_S": "0.2"})

    def alerts() -> list[tuple[Any, ...]]:
        with psycopg.connect(plain) as conn:
            return conn.execute(
                "SELECT customer_id, payer_id, cpt_group, drift_type, status, resolution,"
                " severity_level FROM alert_events ORDER BY first_seen"
            ).fetchall()

    async def opened() -> list[tuple[Any, ...]]:
        return alerts()

    async def resolved() -> bool:
        return bool(alerts()) and alerts()[0][4] == "resolved"

    async def sent(event: str) -> bool:
        return any(body["event"] == event for body in hook.bodies("/hook"))

    try:
        found = await wait_until(opened, 90, "a feed alert", interval_s=0.5)
        assert found[0][:5] == ("acme", "*", "*", "feed_silence", "active")
        await wait_until(lambda: sent("opened"), 30, "the alert at the route's webhook")
        with psycopg.connect(plain) as conn:
            conn.execute(
                "INSERT INTO feed_days (customer_id, day, received, new, last_received_at)"
                " VALUES ('acme', %s, 5, 5, now())",
                (now.date(),),
            )
        await wait_until(resolved, 60, "the feed alert resolved", interval_s=0.5)
        await wait_until(lambda: sent("resolved"), 30, "the resolution at the webhook")
    finally:
        codes = stack.stop_all()
    assert codes == {"worker": 0, "sink": 0, "dispatcher": 0}, stack.log("worker")[-3000:]
    final = alerts()
    assert [(a[0], a[3], a[4], a[5]) for a in final] == [
        ("acme", "feed_silence", "resolved", "auto")
    ]
    opened_body = next(b for b in hook.bodies("/hook") if b["event"] == "opened")
    assert opened_body["alert"]["drift_type"] == "feed_silence"
    assert "the feed of customer acme: No claims received for" in opened_body["summary"]
    with psycopg.connect(plain) as conn:
        drift = conn.execute(
            "SELECT DISTINCT customer_id, payer_id, drift_type FROM drift_events"
        ).fetchall()
    assert drift == [("acme", "*", "feed_silence")]  # beta's feed raised nothing
