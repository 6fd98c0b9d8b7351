"""The delivery log on real Postgres: notifications enqueued exactly once with the
dispatcher's cursor, leased in version order per alert and receiver, leased again after a
dispatcher dies, retried, and given up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.delivery.routes import Receiver, Route, planner, route_from, route_spec
from sinks.delivery import (
    Outcome,
    add_silence,
    enqueue,
    expire_silence,
    lease,
    load_routes,
    save_route,
    settle,
)
from sinks.reports import apply_retention
from tests.integration.stack import store_rows
from tests.unit.events import alert_event

pytestmark = pytest.mark.integration
HOOK = Receiver("webhook", "http://127.0.0.1:9/hook", "s3cret")
SLACK = Receiver("slack", "http://127.0.0.1:9/slack")


async def _stored_routes(engine: AsyncEngine) -> list[Route]:
    async with engine.connect() as conn:
        return [route_from(c, n, spec) for c, n, spec in await load_routes(conn)]


async def test_each_notification_is_enqueued_once_and_leased_in_version_order(
    database: tuple[str, AsyncEngine],
) -> None:
    url, engine = database
    routes = [Route("acme", "ops", (HOOK, SLACK)), Route("beta", "ops", (HOOK,))]
    async with engine.begin() as conn:
        for route in routes:
            await save_route(conn, route.customer_id, route.name, route_spec(route), "alice")
    assert await _stored_routes(engine) == routes
    await store_rows(url, [], [
        alert_event("a1", 1, "triggered"),
        alert_event("a1", 2, "updated"),  # notify: the level rose → escalated
        alert_event("a1", 3, "updated") | {"notify": False},  # silent
        alert_event("a2", 1, "triggered") | {"severity_level": "info"},  # below the route
    ], [])  # fmt: skip
    plan = planner(await _stored_routes(engine))
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        assert await enqueue(conn, plan, now) == (4, 4)  # a1 v1 and v2, to both receivers
    async with engine.begin() as conn:
        assert await enqueue(conn, plan, now) == (0, 0)  # the cursor moved with them
        await conn.execute(text("UPDATE delivery_cursor SET seq = 0"))  # a replay
        assert await enqueue(conn, plan, now) == (4, 0)  # nothing twice

    async with engine.begin() as conn:
        first = await lease(conn, now, "l1", lease_s=60)
    assert sorted((n["receiver"], n["version"], n["event"]) for n in first) == [
        ("slack:http://127.0.0.1:9/slack", 1, "opened"),
        ("webhook:http://127.0.0.1:9/hook", 1, "opened"),
    ]  # version 2 waits for version 1, per receiver
    assert {n["alert_id"] for n in first} == {"a1"}
    async with engine.begin() as conn:
        assert await lease(conn, now, "l2") == []  # leased: not again
    hook, slack = sorted(first, key=lambda n: n["receiver"], reverse=True)
    async with engine.begin() as conn:
        retry = now + timedelta(seconds=30)
        await settle(conn, "l1", [Outcome(hook["id"], 200, None, None),
                            Outcome(slack["id"], 503, "unavailable", retry)])  # fmt: skip
        after = await lease(conn, now, "l3")
    assert [(n["receiver"], n["version"]) for n in after] == [(hook["receiver"], 2)]
    async with engine.begin() as conn:  # the dispatcher that leased it died: leased again
        again = await lease(conn, now + timedelta(seconds=61), "l4")
    assert sorted((n["receiver"], n["version"], n["attempts"]) for n in again) == [
        (slack["receiver"], 1, 2), (hook["receiver"], 2, 2),
    ]  # fmt: skip
    async with engine.begin() as conn:
        await settle(conn, "l4", [Outcome(n["id"], None, "gave up", None) for n in again])
        dead = (await conn.execute(
            text("SELECT count(*) FROM notifications WHERE status = 'dead'")
        )).scalar_one()  # fmt: skip
    assert dead == 2
    async with engine.connect() as conn:
        logged = (await conn.execute(text(
            "SELECT status, last_code, last_error, next_attempt_at > :now FROM notifications"
            " WHERE id = :id"), {"id": slack["id"], "now": now})).one()  # fmt: skip
    assert tuple(logged) == ("dead", None, "gave up", True)  # its retry time kept


async def test_only_the_lease_settles_and_an_expired_silence_lets_its_notifications_go(
    database: tuple[str, AsyncEngine],
) -> None:
    """A dispatcher whose lease ran out and was taken over records nothing over the new one's;
    a notification a silence held is due at once when the silence is expired."""
    url, engine = database
    route = Route("acme", "ops", (HOOK,))
    async with engine.begin() as conn:
        await save_route(conn, "acme", "ops", route_spec(route), "alice")
    await store_rows(url, [], [alert_event("a1", 1, "triggered")], [])
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await enqueue(conn, planner(await _stored_routes(engine)), now)
        (first,) = await lease(conn, now, "old", lease_s=1)
    async with engine.begin() as conn:
        (again,) = await lease(conn, now + timedelta(seconds=2), "new")
        await settle(conn, "new", [Outcome(again["id"], 202, None, None)])
        await settle(conn, "old", [Outcome(first["id"], 503, "late", now + timedelta(hours=1))])
        status = (await conn.execute(text("SELECT status FROM notifications"))).scalar_one()
    assert status == "delivered"
    await store_rows(url, [], [alert_event("a2", 1, "triggered")], [])
    until = now + timedelta(hours=4)
    async with engine.begin() as conn:
        await enqueue(conn, planner(await _stored_routes(engine)), now)
        (held,) = await lease(conn, now, "l3")
        await settle(conn, "l3", [Outcome(held["id"], None, "silenced", until, held=True)])
        await add_silence(conn, {"silence_id": "s1", "customer_id": "acme", "starts_at": now,
                                 "ends_at": until, "spec": {}}, "alice")  # fmt: skip
        assert await lease(conn, now + timedelta(minutes=1), "l4") == []  # held
        assert await expire_silence(conn, "acme", "s1")
        (freed,) = await lease(conn, datetime.now(UTC) + timedelta(seconds=1), "l5")
    assert (freed["alert_id"], freed["attempts"]) == ("a2", 1)  # the held try did not count


async def test_retention_drops_settled_notifications_of_closed_alerts_and_ended_silences(
    database: tuple[str, AsyncEngine],
) -> None:
    """A delivered notification of a resolved alert goes once older than the cutoff; an open
    alert's (its reminders are timed from them), a pending one and a recent one stay."""
    url, engine = database
    alerts = [
        alert_event("a1", 1, "triggered"),
        alert_event("a2", 1, "resolved", status="resolved"),
    ]
    await store_rows(url, [], alerts, [])
    old, new = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
    rows = [("a1", "delivered", old), ("a2", "delivered", old), ("a2", "dead", old),
            ("a2", "pending", old), ("a2", "delivered", new)]  # fmt: skip
    async with engine.begin() as conn:
        for i, (alert, status, at) in enumerate(rows):
            await conn.execute(
                text(
                    "INSERT INTO notifications (customer_id, route, receiver, alert_id, version,"
                    " event, seq, status, created_at, next_attempt_at) VALUES ('acme', 'ops',"
                    " 'webhook:h', :a, :v, 'opened', 1, :s, :at, :at)"
                ),
                {"a": alert, "v": i + 1, "s": status, "at": at},
            )
        await conn.execute(
            text(
                "INSERT INTO silences (silence_id, customer_id, spec, starts_at, ends_at,"
                " created_by) VALUES ('s-old', 'acme', '{}', :a, :b, 'x'), ('s-new', 'acme',"
                " '{}', :a, :c, 'x')"
            ),
            {"a": old - timedelta(days=1), "b": old, "c": new},
        )
        deleted = await apply_retention(conn, datetime(2026, 2, 1, tzinfo=UTC), timedelta(90))
    assert (deleted["notifications"], deleted["silences"]) == (2, 1)
    async with engine.connect() as conn:
        kept = (
            await conn.execute(text("SELECT alert_id, status FROM notifications ORDER BY id"))
        ).all()
        silences = (await conn.execute(text("SELECT silence_id FROM silences"))).scalars().all()
    assert [tuple(r) for r in kept] == [("a1", "delivered"), ("a2", "pending"), ("a2", "delivered")]
    assert silences == ["s-new"]
