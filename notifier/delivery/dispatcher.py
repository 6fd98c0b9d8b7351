"""The dispatcher: follows ``alert_transitions``, enqueues each notifying transition for the
receivers of the routes it matches, and delivers the delivery log at least once, in order per
alert and receiver, with retries, backoff and jitter, until delivered or given up.

One pass (:meth:`Dispatcher.step`) enqueues what is new (routes read afresh each time, so a
route set while it runs applies to the alerts that follow) and sends what is due, a few at once.
A notification whose alert is silenced waits until the silence ends.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import aiohttp
import aiosmtplib
from prometheus_client import Counter, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.delivery import formats
from notifier.delivery.routes import (
    Event,
    Receiver,
    Route,
    escalation_due,
    planner,
    receiver_key,
    repeat_due,
    route_from,
)
from notifier.delivery.silences import Silence, silence_from
from sinks import delivery as log_

log = logging.getLogger("upstream.dispatcher")
SETTLE_EVERY = 50  # outcomes recorded per transaction
BATCHES_A_PASS = 10  # leased batches sent in one pass, at most
TIMED_EVERY_S = 10.0  # how often a pass looks for reminders and escalations due
SENT = Counter(
    "upstream_notifications_sent_total", "Notification attempts, by receiver kind and outcome",
    ["kind", "outcome"],
)  # fmt: skip
ENQUEUED = Counter(
    "upstream_notifications_enqueued_total",
    "Notifications put in the delivery log (transitions, reminders and escalations)",
)
HELD = Counter(
    "upstream_notifications_held_total",
    "Notifications due but not sent: their alert silenced (deferred), their route deleted (dead)",
    ["reason"],
)
DEAD = Counter(
    "upstream_notifications_dead_total",
    "Notifications given up: still failing at the give-up time, by receiver kind",
    ["kind"],
)
LATENCY = Histogram(
    "upstream_notifications_delivery_seconds", "From enqueue to delivery",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)  # fmt: skip


@dataclass(frozen=True)
class Backoff:
    """Retry delays: ``base_s`` doubling per attempt up to ``cap_s``, times a random factor in
    [0.5, 1) (jitter, so receivers coming back are not hit all at once); give up ``give_up_s``
    after the notification was enqueued."""

    base_s: float = 5.0
    cap_s: float = 600.0
    give_up_s: float = 24 * 3600.0

    def delay_s(self, attempts: int, rng: random.Random) -> float:
        """The wait before the next attempt, after ``attempts`` attempts."""
        doubled = self.base_s * float(2 ** max(0, attempts - 1))
        return min(self.cap_s, doubled) * rng.uniform(0.5, 1.0)


@dataclass(frozen=True)
class Pace:
    """How much is sent at once and for how long: ``concurrency`` sends, each within
    ``timeout_s``, of notifications leased ``batch`` at a time for ``lease_s`` (another
    dispatcher takes them over after that, should this one die)."""

    concurrency: int = 100
    timeout_s: float = 10.0
    lease_s: float = 60.0
    batch: int = 200  # notifications leased at once: what a dispatcher killed may send again


@dataclass(frozen=True)
class Mail:
    """How email leaves: the SMTP server, STARTTLS, login, and the sender address."""

    host: str = "127.0.0.1"
    port: int = 25
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    sender: str = "upstream@localhost"


class Dispatcher:
    """Enqueues and delivers notifications (module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        console_url: str,
        *,
        mail: Mail | None = None,
        backoff: Backoff | None = None,
        pace: Pace | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.console_url = console_url.rstrip("/")
        self.mail = mail or Mail()
        self.backoff = backoff or Backoff()
        self.pace = pace or Pace()
        self.clock = clock
        self._gate = asyncio.Semaphore(self.pace.concurrency)
        self._timeout = aiohttp.ClientTimeout(total=self.pace.timeout_s)
        self._rng = rng or random.Random()
        self._http: aiohttp.ClientSession | None = None
        self.backlog = False  # the last pass stopped at its batches, not for want of work
        self._timed_at = float("-inf")  # when reminders and escalations were last looked for

    async def close(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.close()

    def now(self) -> datetime:
        """The dispatcher's clock, as an aware UTC time."""
        return datetime.fromtimestamp(self.clock(), UTC)

    async def step(self) -> tuple[int, int]:
        """One pass: enqueue what is new, then send what is due, up to :data:`BATCHES_A_PASS`
        batches (a backlog leaves room for what comes meanwhile); (enqueued, sent).
        :attr:`backlog` says whether more may be due already (the next pass need not wait)."""
        enqueued = 0
        while True:
            async with self.engine.begin() as conn:
                routes = _routes(await log_.load_routes(conn))
                read, added = await log_.enqueue(conn, planner(routes), self.now())
            enqueued += added
            if not read:
                break
        if self.clock() - self._timed_at >= TIMED_EVERY_S:  # reminders are minutes apart at least
            self._timed_at = self.clock()
            enqueued += await self._enqueue_timed(routes)
        ENQUEUED.inc(enqueued)
        sent, self.backlog = 0, True
        for _ in range(BATCHES_A_PASS):
            lease_id = uuid.uuid4().hex
            due = await self._lease(lease_id)
            if not due:
                self.backlog = False
                break
            sent += await self._deliver(lease_id, due, routes)
        return enqueued, sent

    async def _enqueue_timed(self, routes: list[Route]) -> int:
        """Reminders and escalations now due (the routes' repeat and escalation times)."""
        now, planned = self.now(), []
        async with self.engine.begin() as conn:
            for route in routes:
                if route.repeat_interval_s is None and route.escalate_after_s is None:
                    continue
                for alert in await log_.notified_active(conn, route.customer_id, route.name):
                    planned += _timed(route, alert, now.timestamp())
            return await log_.enqueue_timed(conn, planned, now)

    async def _lease(self, lease_id: str) -> list[dict[str, Any]]:
        async with self.engine.begin() as conn:
            return await log_.lease(
                conn, self.now(), lease_id, limit=self.pace.batch, lease_s=self.pace.lease_s
            )

    async def _deliver(self, lease_id: str, due: list[dict[str, Any]], routes: list[Route]) -> int:
        """Send the leased notifications ``due``, at most ``concurrency`` at once, recording
        their outcomes as they come, :data:`SETTLE_EVERY` to a transaction (a dispatcher killed
        meanwhile sent at most the batch without recording it: another sends those again, with
        their Idempotency-Key); how many were delivered."""
        now = self.now()
        async with self.engine.connect() as conn:
            customers = sorted({n["customer_id"] for n in due})
            silences = _silences(await log_.active_silences(conn, customers, now))
        created = {n["id"]: n["created_at"] for n in due}
        attempts = [self._attempt(n, routes, silences, now) for n in due]
        done: list[log_.Outcome] = []
        delivered = 0
        for attempt in asyncio.as_completed(attempts):
            done.append(await attempt)
            if len(done) >= SETTLE_EVERY:
                delivered += await self._settle(lease_id, done, created)
                done = []
        if done:
            delivered += await self._settle(lease_id, done, created)
        return delivered

    async def _settle(
        self, lease_id: str, outcomes: list[log_.Outcome], created: dict[int, datetime]
    ) -> int:
        """Record ``outcomes``; how many were deliveries."""
        async with self.engine.begin() as conn:
            await log_.settle(conn, lease_id, outcomes)
        delivered = [o for o in outcomes if o.error is None]
        for outcome in delivered:
            LATENCY.observe(max(0.0, self.clock() - created[outcome.id].timestamp()))
        return len(delivered)

    async def _attempt(
        self, n: dict[str, Any], routes: list[Route], silences: list[Silence], now: datetime
    ) -> log_.Outcome:
        """Send one notification, unless its route is gone or a silence holds its alert. An
        error of any kind is the attempt's outcome: no notification stops the others."""
        receiver = _receiver(n, routes)
        if receiver is None:  # its route or receiver was deleted meanwhile
            HELD.labels(reason="route deleted").inc()
            return log_.Outcome(n["id"], None, "route deleted", None)
        holding = [s.holds_until(now) for s in silences if s.silences(n, now)]
        if holding:  # try again once every silence holding it lets go
            HELD.labels(reason="silenced").inc()
            return log_.Outcome(n["id"], None, "silenced", max(holding), held=True)
        async with self._gate:
            try:
                async with asyncio.timeout(self.pace.timeout_s):
                    code, error = await self._send(receiver, n)
            except Exception as exc:  # a bad body or receiver fails this attempt only
                code, error = None, f"{type(exc).__name__}: {exc}"[:500]
        SENT.labels(kind=receiver.kind, outcome="delivered" if error is None else "failed").inc()
        if error is None:
            return log_.Outcome(n["id"], code, None, None)
        # A 4xx but timeout and rate limit will not change on retry (a wrong key, a bad URL).
        final = code is not None and 400 <= code < 500 and code not in (408, 429)
        next_try = None if final else self._next_try(n)
        if next_try is None:
            DEAD.labels(kind=receiver.kind).inc()
        log.warning("notification %s of route %s (%s) failed (%s): %s", n["id"], n["route"],
                    receiver.kind, code, error)  # fmt: skip
        return log_.Outcome(n["id"], code, error, next_try)

    def _next_try(self, notification: dict[str, Any]) -> datetime | None:
        """When to try again, or None past the give-up time (the notification is dead)."""
        now = self.now()
        if (now - notification["created_at"]).total_seconds() >= self.backoff.give_up_s:
            return None
        return now + timedelta(seconds=self.backoff.delay_s(notification["attempts"], self._rng))

    async def _send(self, receiver: Receiver, n: dict[str, Any]) -> tuple[int | None, str | None]:
        """Send to ``receiver``: (status code, None) when it took it; (code, error) otherwise."""
        event = cast(Event, n["event"].split(":", 1)[0])  # "repeat:2" is the second reminder
        link = f"{self.console_url}/#alert={n['alert_id']}"
        try:
            if receiver.kind == "email":
                message = formats.email(n, event, self.mail.sender, receiver.target, link)
                await aiosmtplib.send(
                    message, hostname=self.mail.host, port=self.mail.port,
                    start_tls=self.mail.starttls, username=self.mail.username,
                    password=self.mail.password, timeout=self._timeout.total,
                )  # fmt: skip
                return None, None
            if receiver.kind == "webhook":
                body, headers = formats.webhook(n, event, receiver.secret, link, int(self.clock()))
            elif receiver.kind == "slack":
                body, headers = formats.slack(n, event, link)
            else:
                body, headers = formats.pagerduty(n, event, receiver.secret or "", link)
            return await self._post(receiver.target, body, headers)
        except (aiohttp.ClientError, aiosmtplib.SMTPException, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=self._timeout)
        async with self._http.post(url, data=body, headers=headers) as reply:
            text = (await reply.read())[:200].decode(errors="replace")
            if 200 <= reply.status < 300:
                return reply.status, None
            return reply.status, f"HTTP {reply.status}: {text}"


def _routes(stored: list[tuple[str, str, dict[str, Any]]]) -> list[Route]:
    """The stored routes that parse; one that does not is logged and left out (its
    notifications wait, then die as their route's)."""
    out = []
    for customer_id, name, spec in stored:
        try:
            out.append(route_from(customer_id, name, spec))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("route %s of %s does not parse, left out: %s", name, customer_id, exc)
    return out


def _silences(stored: list[dict[str, Any]]) -> list[Silence]:
    """The stored silences that parse; one that does not is logged and left out."""
    out = []
    for row in stored:
        try:
            out.append(silence_from(row))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("silence %s does not parse, left out: %s", row.get("silence_id"), exc)
    return out


def _receiver(notification: dict[str, Any], routes: list[Route]) -> Receiver | None:
    """The receiver a notification is for, in the routes as they are now."""
    for route in routes:
        if route.customer_id == notification["customer_id"] and route.name == notification["route"]:
            for receiver in (*route.receivers, *route.escalation):
                if receiver_key(receiver) == notification["receiver"]:
                    return receiver
    return None


def _timed(route: Route, alert: dict[str, Any], now_s: float) -> list[dict[str, Any]]:
    """The reminders and escalations of one notified, active alert that are due at ``now_s``."""
    out: list[dict[str, Any]] = []

    def add(receivers: tuple[Receiver, ...], event: str) -> None:
        out.extend(
            {"customer_id": route.customer_id, "route": route.name, "receiver": receiver_key(r),
             "alert_id": alert["alert_id"], "version": alert["version"], "event": event,
             "seq": alert["seq"]}
            for r in receivers
        )  # fmt: skip

    if repeat_due(route, alert, alert["last_at"].timestamp(), now_s):
        add(route.receivers, f"repeat:{alert['repeats'] + 1}")
    if not alert["escalated"] and escalation_due(
        route, alert, alert["first_at"].timestamp(), now_s
    ):
        add(route.escalation, "escalation")
    return out
