"""The transition feed: Postgres ``alert_transitions`` fanned out to subscribed clients.

The sink commits transitions and ``NOTIFY``s in one transaction; the hub ``LISTEN``s (and polls
as a fallback), reads rows past its cursor in ``seq`` order and offers each to every client. A
client's own cursor only moves forward, and subscribe/replay happen under the same lock as the
fan-out, so a client sees every transition after its cursor exactly once. A client far behind
gets its backlog page by page outside that lock (:meth:`Hub.follow`).

Cursors are ``seq`` values, assigned at insert: with one sink process they commit in order.
Two sinks writing alerts at once could commit a lower ``seq`` after a higher one was fanned
out, and the hub would skip it: run one sink per database (the compose stack does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg.rows import dict_row

from notifier.messages import Alert, AlertMessage
from sinks.tables import NOTIFY_CHANNEL
from streams.domain.values import LEVELS, DriftType, Level

log = logging.getLogger("upstream.notifier")
SEND_QUEUE_MAX = 1000
REPLAY_PAGE = 500  # < SEND_QUEUE_MAX: the last replay page always fits the queue
CONNECT_WAIT_S = 10.0
_ALERT_COLUMNS = (
    "alert_id", "version", "dedup_key", "customer_id", "rule_id", "drift_event_id", "payer_id",
    "cpt_group", "drift_type", "status", "transition", "severity", "severity_level",
    "occurrence_count", "first_seen", "last_seen", "acknowledged_by", "resolved_by", "resolution",
    "verdict", "message", "notify", "assignee", "actor", "note",
)  # fmt: skip
# Each alert carries its drift event's baseline and current values, for "baseline → current".
_DRIFT_VALUES = "d.baseline_value, d.current_value"
_JOIN_DRIFT = "LEFT JOIN drift_events d ON d.event_id = a.drift_event_id"
_COLUMNS = ", ".join(f"a.{c}" for c in _ALERT_COLUMNS) + ", " + _DRIFT_VALUES
# A transition carries when its alert was first notified, which its alert_events row holds
# (stored in the same transaction).
_JOIN_FIRST = "LEFT JOIN alert_events e ON e.alert_id = a.alert_id"


def psycopg_conninfo(database_url: str) -> str:
    """A psycopg conninfo from a SQLAlchemy URL (``postgresql+psycopg://`` → ``postgresql://``)."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass(frozen=True, slots=True)
class Filters:
    """What a subscription wants to see."""

    min_severity_level: Level = "info"
    payer_ids: frozenset[str] = frozenset()
    drift_types: frozenset[DriftType] = frozenset()

    def matches(self, alert: dict[str, Any]) -> bool:
        """Whether an alert row passes the filters."""
        return (
            LEVELS.index(alert["severity_level"]) >= LEVELS.index(self.min_severity_level)
            and (not self.payer_ids or alert["payer_id"] in self.payer_ids)
            and (not self.drift_types or alert["drift_type"] in self.drift_types)
        )


def alert_json(row: dict[str, Any]) -> Alert:
    """An alert row as JSON-ready fields (times in RFC 3339)."""
    out = {k: v for k, v in row.items() if k != "seq"}
    for name in ("first_seen", "last_seen", "first_notified_at"):
        value = out.get(name)
        if isinstance(value, datetime):
            out[name] = value.isoformat().replace("+00:00", "Z")
    return cast(Alert, out)  # the alert_events columns are the Alert fields


@dataclass(eq=False)
class Subscriber:
    """One WebSocket subscription: its customer, filters, cursor and bounded send queue."""

    customer_id: str
    filters: Filters
    cursor: int = 0
    queue: asyncio.Queue[AlertMessage] = field(
        default_factory=lambda: asyncio.Queue(SEND_QUEUE_MAX)
    )
    overflow: asyncio.Event = field(default_factory=asyncio.Event)  # set when the queue fills

    def message(self, row: dict[str, Any]) -> AlertMessage | None:
        """The ``alert`` message for a transition if it is this client's, new to it, and passes
        its filters (``None`` otherwise); the client's cursor moves past it either way."""
        if row["seq"] <= self.cursor or row["customer_id"] != self.customer_id:
            return None
        self.cursor = row["seq"]
        if not self.filters.matches(row):
            return None
        return AlertMessage(type="alert", cursor=row["seq"], alert=alert_json(row))

    def offer(self, row: dict[str, Any]) -> bool:
        """Queue the transition's message, if any (True if queued); a full queue sets
        :attr:`overflow`."""
        message = self.message(row)
        if message is None:
            return False
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflow.set()
            return False
        return True


class Hub:
    """Owns the Postgres connections and the set of subscribers."""

    def __init__(self, database_url: str, poll_interval_s: float = 1.0) -> None:
        self.conninfo = psycopg_conninfo(database_url)
        self.poll_interval_s = poll_interval_s
        self.subscribers: set[Subscriber] = set()
        self.last_seq = 0
        self.ready = False
        self._connected = asyncio.Event()  # set while the hub follows Postgres
        self._lock = asyncio.Lock()
        self._query: psycopg.AsyncConnection[dict[str, Any]] | None = None

    async def run(self) -> None:
        """Follow the transitions table until cancelled; reconnect on failure."""
        while True:
            try:
                await self._follow()
            except (psycopg.OperationalError, OSError) as exc:
                self.ready = False
                self._connected.clear()
                log.warning("postgres connection lost (%s); reconnecting", exc)
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        listen = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        query = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, row_factory=dict_row
        )
        try:
            await listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
            async with self._lock:
                self._query = query
                if self.last_seq == 0:
                    row = await (
                        await query.execute(
                            "SELECT coalesce(max(seq), 0) AS seq FROM alert_transitions"
                        )
                    ).fetchone()
                    self.last_seq = int(row["seq"]) if row else 0
            self.ready = True
            self._connected.set()
            while True:
                async for _ in listen.notifies(timeout=self.poll_interval_s, stop_after=1):
                    pass
                await self.pump()
        finally:
            self._query = None
            for conn in (listen, query):
                with contextlib.suppress(Exception):
                    await conn.close()

    async def pump(self) -> None:
        """Read transitions past the hub's cursor and offer them to every subscriber."""
        async with self._lock:
            while self._query is not None:
                rows = await self._rows_after(self.last_seq, None, 1000)
                for row in rows:
                    clients = sum(subscriber.offer(row) for subscriber in self.subscribers)
                    self.last_seq = row["seq"]
                    log.info(
                        "alert %s fanned out", row["transition"],
                        extra={"alert_id": row["alert_id"], "event_id": row["drift_event_id"],
                               "seq": row["seq"], "customer_id": row["customer_id"],
                               "clients": clients},
                    )  # fmt: skip
                if len(rows) < 1000:
                    return

    async def _rows_after(
        self, after: int, customer_id: str | None, limit: int, upto: int | None = None
    ) -> list[dict[str, Any]]:
        assert self._query is not None
        sql = (
            f"SELECT a.seq, {_COLUMNS}, e.first_notified_at "  # noqa: S608 - fixed text
            f"FROM alert_transitions a {_JOIN_DRIFT} {_JOIN_FIRST} WHERE a.seq > %s"
        )
        params: list[Any] = [after]
        if customer_id is not None:
            sql += " AND a.customer_id = %s"
            params.append(customer_id)
        if upto is not None:
            sql += " AND a.seq <= %s"
            params.append(upto)
        sql += " ORDER BY a.seq LIMIT %s"
        params.append(limit)
        cursor = await self._query.execute(sql, params)
        return await cursor.fetchall()

    async def snapshot(self, subscriber: Subscriber) -> tuple[list[Alert], int]:
        """The subscriber's open alerts and the cursor they are current as of."""
        await self._wait_connected()
        async with self._lock:
            if self._query is None:
                raise ConnectionError("the notifier is not connected to Postgres yet")
            return await self._snapshot(subscriber)

    async def follow(
        self,
        subscriber: Subscriber,
        since: int,
        send: Callable[[AlertMessage], Awaitable[None]],
    ) -> None:
        """Every transition after ``since`` in order, then register ``subscriber`` for live ones.

        A client far behind (a long disconnect, a burst) is sent its backlog page by page
        straight through ``send``, outside the fan-out lock, so neither its bounded queue nor
        the other clients wait for it. The last, short page is queued under the lock together
        with the registration, so nothing falls between replay and live delivery.
        """
        await self._wait_connected()
        subscriber.cursor = since
        while True:
            async with self._lock:
                if self._query is None:
                    raise ConnectionError("the notifier is not connected to Postgres yet")
                rows = await self._rows_after(
                    subscriber.cursor, subscriber.customer_id, REPLAY_PAGE, upto=self.last_seq
                )
                if len(rows) < REPLAY_PAGE:
                    for row in rows:
                        subscriber.offer(row)
                    subscriber.cursor = max(subscriber.cursor, self.last_seq)
                    self.subscribers.add(subscriber)
                    return
            for row in rows:
                message = subscriber.message(row)
                if message is not None:
                    await send(message)

    async def _wait_connected(self) -> None:
        # A client may subscribe while the hub is still connecting: wait a little, not fail.
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_WAIT_S)
        except TimeoutError:
            raise ConnectionError("the notifier is not connected to Postgres yet") from None

    async def _snapshot(self, subscriber: Subscriber) -> tuple[list[Alert], int]:
        assert self._query is not None
        async with self._query.transaction():
            await self._query.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            row = await (
                await self._query.execute(
                    "SELECT coalesce(max(seq), 0) AS seq FROM alert_transitions"
                )
            ).fetchone()
            cursor = int(row["seq"]) if row else 0
            rows = await (
                await self._query.execute(
                    f"SELECT 0 AS seq, {_COLUMNS}, a.first_notified_at "  # noqa: S608 - fixed text
                    f"FROM alert_events a {_JOIN_DRIFT} "
                    "WHERE a.customer_id = %s AND a.status <> 'resolved' "
                    "ORDER BY a.last_seen DESC, a.alert_id",
                    [subscriber.customer_id],
                )
            ).fetchall()
        alerts = [alert_json(r) for r in rows if subscriber.filters.matches(r)]
        return alerts, cursor

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget ``subscriber``."""
        self.subscribers.discard(subscriber)
