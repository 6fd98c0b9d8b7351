"""The dispatcher against real receivers on 127.0.0.1 (an aiohttp server standing in for a
webhook, Slack and PagerDuty; aiosmtpd for email) and real Postgres, on an injected clock."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from typing import Any

import psycopg
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.delivery.dispatcher import Backoff, Dispatcher, Mail, Pace
from notifier.delivery.routes import TRANSITION_EVENTS, Receiver, Route, route_spec
from notifier.delivery.silences import Silence, silence_spec
from sinks.delivery import add_silence, save_route
from streams.devtools.stack import free_port
from tests.apidocs import check_webhook
from tests.integration.stack import store_rows
from tests.unit.events import alert_event

pytestmark = pytest.mark.integration


@dataclass
class Receivers:
    """What the local receivers got, and whether the webhook answers 503 for now."""

    port: int = 0
    smtp_port: int = 0
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    mails: list[bytes] = field(default_factory=list)
    down: bool = False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [json.loads(body) for p, _, body in self.requests if p == f"/{path}"]


@pytest.fixture
async def receivers() -> AsyncIterator[Receivers]:
    got = Receivers(port=free_port(), smtp_port=free_port())

    async def take(request: web.Request) -> web.Response:
        if got.down and request.path == "/hook":
            return web.Response(status=503, text="down")
        if request.path == "/refuse":  # as PagerDuty answers a wrong routing key
            return web.Response(status=400, body=b"\xff\xfe not UTF-8")
        got.requests.append((request.path, dict(request.headers), await request.read()))
        return web.Response(status=202, text="ok")

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 -- aiosmtpd's name
            got.mails.append(envelope.content)
            return "250 OK"

    app = web.Application()
    app.router.add_post("/{path}", take)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", got.port).start()
    smtp = Controller(Handler(), hostname="127.0.0.1", port=got.smtp_port)
    smtp.start()
    try:
        yield got
    finally:
        smtp.stop()
        await runner.cleanup()


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.now


async def _setup(engine: AsyncEngine, got: Receivers, route: Route) -> tuple[Dispatcher, Clock]:
    async with engine.begin() as conn:
        await save_route(conn, route.customer_id, route.name, route_spec(route), "alice")
    clock = Clock()
    dispatcher = Dispatcher(
        engine, "http://console.example", clock=clock,
        mail=Mail(host="127.0.0.1", port=got.smtp_port, sender="upstream@example.org"),
        backoff=Backoff(base_s=10, cap_s=60, give_up_s=3600),
    )  # fmt: skip
    return dispatcher, clock


async def test_every_receiver_gets_its_format(
    database: tuple[str, AsyncEngine], receivers: Receivers
) -> None:
    url, engine = database
    route = Route("acme", "ops", (
        Receiver("webhook", receivers.url("hook"), "s3cret"),
        Receiver("slack", receivers.url("slack")),
        Receiver("pagerduty", receivers.url("pagerduty"), "R" * 32),
        Receiver("email", "ops@example.org"),
    ))  # fmt: skip
    dispatcher, _ = await _setup(engine, receivers, route)
    alerts = [
        alert_event("a1", 1, "triggered"),
        alert_event("a1", 2, "resolved", status="resolved"),
    ]
    await store_rows(url, [], alerts, [])
    try:
        assert await dispatcher.step() == (8, 8)
        assert await dispatcher.step() == (0, 0)
    finally:
        await dispatcher.close()
    hooks = [(h, b) for p, h, b in receivers.requests if p == "/hook"]
    assert [h["Idempotency-Key"] for h, _ in hooks] == ["a1:1", "a1:2"]  # in order
    for headers, body in hooks:
        t, v1 = (part.split("=", 1)[1] for part in headers["X-Upstream-Signature"].split(","))
        expected = hmac.new(b"s3cret", f"{t}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected)
    assert [b["event"] for b in receivers.bodies("hook")] == ["opened", "resolved"]
    for name, path in (("alertWebhook", "hook"), ("slackIncomingWebhook", "slack"),
                       ("pagerDutyEventsV2", "pagerduty")):  # fmt: skip
        for received in receivers.bodies(path):
            check_webhook(name, received)  # as openapi.json documents it: PagerDuty's own limits
    sent = receivers.bodies("hook")[0]["alert"]
    assert (sent["alert_id"], sent["version"], sent["status"]) == ("a1", 1, "active")
    assert datetime.fromisoformat(sent["first_seen"]).tzinfo is not None
    link = "<http://console.example/#alert=a1|Open in Upstream>"
    assert all(link in b["blocks"][1]["elements"][0]["text"] for b in receivers.bodies("slack"))
    pager = receivers.bodies("pagerduty")
    assert [p["event_action"] for p in pager] == ["trigger", "resolve"]
    assert {p["dedup_key"] for p in pager} == {"acme|default|a1"}
    mails = [message_from_bytes(m, policy=policy.default) for m in receivers.mails]
    assert [m["Message-ID"] for m in mails] == [
        "<a1.1@upstream.invalid>",
        "<a1.2@upstream.invalid>",
    ]
    assert all(m["To"] == "ops@example.org" for m in mails)


async def test_a_receiver_down_gets_everything_after_once_in_order(
    database: tuple[str, AsyncEngine], receivers: Receivers
) -> None:
    url, engine = database
    every = frozenset(TRANSITION_EVENTS)
    route = Route("acme", "ops", (Receiver("webhook", receivers.url("hook")),), events=every)
    dispatcher, clock = await _setup(engine, receivers, route)
    await store_rows(url, [], [alert_event("a1", 1, "triggered"), alert_event("a1", 2, "updated"),
                               alert_event("a2", 1, "triggered")], [])  # fmt: skip
    receivers.down = True
    try:
        assert await dispatcher.step() == (3, 0)
        for _ in range(5):  # ten minutes of retries, backoff and jitter
            clock.now += 120
            await dispatcher.step()
        receivers.down = False
        clock.now += 120
        await dispatcher.step()
        clock.now += 120
        await dispatcher.step()
    finally:
        await dispatcher.close()
    keys = [h["Idempotency-Key"] for p, h, _ in receivers.requests if p == "/hook"]
    assert sorted(keys) == ["a1:1", "a1:2", "a2:1"]  # each once
    assert keys.index("a1:1") < keys.index("a1:2")  # in order per alert


async def test_a_receiver_down_past_the_give_up_time_leaves_the_notification_dead(
    database: tuple[str, AsyncEngine], receivers: Receivers
) -> None:
    url, engine = database
    route = Route("acme", "ops", (Receiver("webhook", receivers.url("hook")),))
    dispatcher, clock = await _setup(engine, receivers, route)  # gives up after an hour
    await store_rows(url, [], [alert_event("a1", 1, "triggered")], [])
    dead_before = REGISTRY.get_sample_value(
        "upstream_notifications_dead_total", {"kind": "webhook"}
    )
    receivers.down = True
    try:
        await dispatcher.step()
        for _ in range(4):
            clock.now += 1200
            await dispatcher.step()
        receivers.down = False
        clock.now += 1200
        assert await dispatcher.step() == (0, 0)  # nothing due: given up
    finally:
        await dispatcher.close()
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT status, last_code, last_error FROM notifications").fetchone()
    assert row is not None
    assert (row[0], row[1], row[2].startswith("HTTP 503")) == ("dead", 503, True)
    dead = REGISTRY.get_sample_value("upstream_notifications_dead_total", {"kind": "webhook"})
    assert (dead or 0) - (dead_before or 0) == 1
    assert receivers.requests == []  # none taken, none sent once the receiver was back


async def test_a_refusal_is_final_and_a_route_that_does_not_parse_stops_no_other(
    database: tuple[str, AsyncEngine], receivers: Receivers
) -> None:
    """A 400 (with a body that is not text) is not tried again: dead at once. A stored route
    that no longer parses is left out; the other routes are served."""
    url, engine = database
    route = Route("acme", "ops", (Receiver("webhook", receivers.url("refuse")),
                                  Receiver("webhook", receivers.url("hook"))))  # fmt: skip
    dispatcher, _ = await _setup(engine, receivers, route)
    async with engine.begin() as conn:
        await save_route(conn, "acme", "broken", {"receivers": "not a list"}, "alice")
    await store_rows(url, [], [alert_event("a1", 1, "triggered")], [])
    try:
        assert await dispatcher.step() == (2, 1)
        assert await dispatcher.step() == (0, 0)
    finally:
        await dispatcher.close()
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT receiver, status, attempts, last_code FROM notifications ORDER BY receiver"
        ).fetchall()
    assert [(r[0].rsplit("/", 1)[1], *r[1:]) for r in rows] == [
        ("hook", "delivered", 1, 202), ("refuse", "dead", 1, 400)
    ]  # fmt: skip


async def test_a_pass_stops_after_its_batches_and_says_more_is_due(
    database: tuple[str, AsyncEngine], receivers: Receivers
) -> None:
    """Ten batches a pass: with batches of one and eleven due, the first pass sends ten and
    says more is due (the service then runs the next at once); the second sends the last."""
    url, engine = database
    route = Route("acme", "ops", (Receiver("webhook", receivers.url("hook")),))
    dispatcher, _ = await _setup(engine, receivers, route)
    dispatcher.pace = Pace(batch=1)
    await store_rows(url, [], [alert_event(f"a{i}", 1, "triggered") for i in range(11)], [])
    try:
        assert (await dispatcher.step(), dispatcher.backlog) == ((11, 10), True)
        assert (await dispatcher.step(), dispatcher.backlog) == ((0, 1), False)
    finally:
        await dispatcher.close()


async def test_a_silence_holds_notifications_until_it_ends(
    database: tuple[str, AsyncEngine], receivers: Receivers
) -> None:
    url, engine = database
    route = Route("acme", "ops", (Receiver("webhook", receivers.url("hook")),))
    dispatcher, clock = await _setup(engine, receivers, route)
    start = datetime.fromtimestamp(clock.now, UTC) - timedelta(minutes=1)
    silence = Silence("s1", "acme", start, start + timedelta(hours=1), payer_ids=frozenset({"p1"}))
    async with engine.begin() as conn:
        await add_silence(conn, {"silence_id": "s1", "customer_id": "acme", "starts_at": start,
                                 "ends_at": silence.ends_at, "spec": silence_spec(silence)},
                          "alice")  # fmt: skip
    await store_rows(url, [], [alert_event("a1", 1, "triggered")], [])
    try:
        assert await dispatcher.step() == (1, 0)
        assert receivers.requests == []
        clock.now += 3600
        assert await dispatcher.step() == (0, 1)
    finally:
        await dispatcher.close()
    assert [h["Idempotency-Key"] for _, h, _ in receivers.requests] == ["a1:1"]


async def test_reminders_and_one_escalation_until_someone_acknowledges(
    database: tuple[str, AsyncEngine], receivers: Receivers
) -> None:
    url, engine = database
    hook, pager = (
        Receiver("webhook", receivers.url("hook")),
        Receiver("slack", receivers.url("esc")),
    )
    route = Route("acme", "ops", (hook,), repeat_interval_s=3600, escalate_after_s=900,
                  escalation=(pager,))  # fmt: skip
    dispatcher, clock = await _setup(engine, receivers, route)
    await store_rows(url, [], [alert_event("a1", 1, "triggered")], [])
    try:
        assert await dispatcher.step() == (1, 1)  # opened
        clock.now += 600
        assert await dispatcher.step() == (0, 0)  # not yet
        clock.now += 301
        assert await dispatcher.step() == (1, 1)  # escalated, once
        clock.now += 3600
        assert await dispatcher.step() == (1, 1)  # a reminder: an hour since the escalation
        clock.now += 3600
        assert await dispatcher.step() == (1, 1)  # and another
        acknowledged = alert_event("a1", 2, "acknowledged", status="acknowledged") | {
            "notify": False
        }
        await store_rows(url, [], [acknowledged], [])
        clock.now += 7200
        assert await dispatcher.step() == (0, 0)  # acknowledged: quiet
    finally:
        await dispatcher.close()
    assert [b["event"] for b in receivers.bodies("hook")] == ["opened", "repeat", "repeat"]
    assert len(receivers.bodies("esc")) == 1
