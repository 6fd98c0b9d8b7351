"""The transition feed: Postgres ``alert_transitions`` fanned out to subscribed clients.

The sink commits transitions and ``NOTIFY``s in one transaction; the hub ``LISTEN``s (and polls
as a fallback), reads rows past its cursor in ``seq`` order and offers each to every client. A
client's own cursor only moves forward, and subscribe/replay happen under the same lock as the
fan-out, so a client sees every transition after its cursor exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from sinks.tables import NOTIFY_CHANNEL

log = logging.getLogger("upstream.notifier")
LEVELS = ("info", "warning", "critical")
SEND_QUEUE_MAX = 1000
CONNECT_WAIT_S = 10.0
_ALERT_COLUMNS = (
    "alert_id", "version", "dedup_key", "customer_id", "rule_id", "drift_event_id", "payer_id",
    "cpt_group", "drift_type", "status", "transition", "severity", "severity_level",
    "occurrence_count", "first_seen", "last_seen", "acknowledged_by", "resolved_by", "resolution",
    "verdict", "message", "notify",
)  # fmt: skip
# Each alert carries its drift event's baseline and current values, for "baseline → current".
_DRIFT_VALUES = "d.baseline_value, d.current_value"
_JOIN_DRIFT = "LEFT JOIN drift_events d ON d.event_id = a.drift_event_id"
_COLUMNS = ", ".join(f"a.{c}" for c in _ALERT_COLUMNS) + ", " + _DRIFT_VALUES


def psycopg_conninfo(database_url: str) -> str:
    """A psycopg conninfo from a SQLAlchemy URL (``postgresql+psycopg://`` → ``postgresql://``)."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass(frozen=True, slots=True)
class Filters:
    """What a subscription wants to see."""

    min_severity_level: str = "info"
    payer_ids: frozenset[str] = frozenset()
    drift_types: frozenset[str] = frozenset()

    def matches(self, alert: dict[str, Any]) -> bool:
        """Whether an alert row passes the filters."""
        return (
            LEVELS.index(alert["severity_level"]) >= LEVELS.index(self.min_severity_level)
            and (not self.payer_ids or alert["payer_id"] in self.payer_ids)
            and (not self.drift_types or alert["drift_type"] in self.drift_types)
        )


def alert_json(row: dict[str, Any]) -> dict[str, Any]:
    """An alert row as JSON-ready fields (times in RFC 3339)."""
    out = {k: v for k, v in row.items() if k != "seq"}
    for name in ("first_seen", "last_seen"):
        value = out.get(name)
        if isinstance(value, datetime):
            out[name] = value.isoformat().replace("+00:00", "Z")
    return out


@dataclass(eq=False)
class Subscriber:
    """One WebSocket subscription: its customer, filters, cursor and bounded send queue."""

    customer_id: str
    filters: Filters
    cursor: int = 0
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(SEND_QUEUE_MAX)
    )
    overflowed: bool = False

    def offer(self, row: dict[str, Any]) -> None:
        """Queue the transition if it is this client's, new to it, and passes its filters."""
        if row["seq"] <= self.cursor or row["customer_id"] != self.customer_id:
            return
        self.cursor = row["seq"]
        if not self.filters.matches(row):
            return
        try:
            self.queue.put_nowait({"type": "alert", "cursor": row["seq"], "alert": alert_json(row)})
        except asyncio.QueueFull:
            self.overflowed = True


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
                    for subscriber in self.subscribers:
                        subscriber.offer(row)
                    self.last_seq = row["seq"]
                if len(rows) < 1000:
                    return

    async def _rows_after(
        self, after: int, customer_id: str | None, limit: int, upto: int | None = None
    ) -> list[dict[str, Any]]:
        assert self._query is not None
        sql = (
            f"SELECT a.seq, {_COLUMNS} FROM alert_transitions a {_JOIN_DRIFT} "  # noqa: S608 - fixed text
            "WHERE a.seq > %s"
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

    async def subscribe(
        self, subscriber: Subscriber, since: int | None
    ) -> tuple[list[dict[str, Any]] | None, int]:
        """Register ``subscriber``; return (snapshot or None when resuming, snapshot cursor).

        Without ``since``: the active alerts as of a cursor, then everything after it. With
        ``since``: every transition after ``since``, in order, then live ones.
        """
        # A client may subscribe while the hub is still connecting: wait a little, not fail.
        try:
            await asyncio.wait_for(self._connected.wait(), CONNECT_WAIT_S)
        except TimeoutError:
            raise ConnectionError("the notifier is not connected to Postgres yet") from None
        async with self._lock:
            if self._query is None:
                raise ConnectionError("the notifier is not connected to Postgres yet")
            snapshot: list[dict[str, Any]] | None = None
            if since is None:
                snapshot, since = await self._snapshot(subscriber)
            subscriber.cursor = since
            while True:
                rows = await self._rows_after(
                    subscriber.cursor, subscriber.customer_id, 1000, upto=self.last_seq
                )
                for row in rows:
                    subscriber.offer(row)
                if len(rows) < 1000:
                    break
            subscriber.cursor = max(subscriber.cursor, self.last_seq)
            self.subscribers.add(subscriber)
            return snapshot, since

    async def _snapshot(self, subscriber: Subscriber) -> tuple[list[dict[str, Any]], int]:
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
                    f"SELECT 0 AS seq, {_COLUMNS} FROM alert_events a {_JOIN_DRIFT} "  # noqa: S608
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
