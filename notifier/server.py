"""The operators' WebSocket ``/ws`` (docs/protocol.md), served by :mod:`notifier.web`.

Authenticate (``?token=``, the console's session cookie, or a first ``{"type":"auth"}``
message), then ``subscribe`` → ``snapshot`` → live ``alert`` messages with cursors, and commands
(``acknowledge``, ``resolve``, ``judge``, ``note``, ``assign``; see :mod:`notifier.commands`).

Limits, each refusal with its own close code or error: connections per address and per
operator (close 4429), commands per second per connection (an ``ack`` with status ``refused``),
message size (close 1009), a client that stops reading (close 4008).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge
from starlette.websockets import WebSocket

from notifier.commands import CommandError, CommandPort, build_command
from notifier.connection import CLOSED, close, receive
from notifier.hub import Filters, Hub, Subscriber
from notifier.layouts import Layouts, save_layout
from notifier.messages import (
    BAD_MESSAGE,
    Ack,
    Error,
    LayoutSaved,
    ServerMessage,
    Snapshot,
    parse_message,
)
from notifier.session import WS_REFUSED, authenticate
from notifier.throttle import Throttle
from notifier.tokens import CLOSE_UNAUTHORIZED, Keys, Operator
from streams.domain.values import COMMANDS, as_drift_type, as_level

log = logging.getLogger("upstream.notifier")
CLOSE_SLOW_CLIENT = 4008
CLOSE_TOO_MANY = 4429
MAX_MESSAGE_BYTES = 64 * 1024
PENDING_COMMANDS_MAX = 10_000  # commands remembered for a rejection notice, newest kept
INBOX_MAX = 64  # a client's messages read ahead of their handling

WS_CLIENTS = Gauge("upstream_ws_clients", "Connected WebSocket clients")
WS_MESSAGES = Counter("upstream_ws_messages_sent_total", "Messages sent to WebSocket clients")
WS_SLOW = Counter("upstream_ws_slow_client_disconnects_total", "Clients dropped for not reading")
COMMAND_OUTCOMES = Counter(
    "upstream_ws_commands_total", "Operator commands received, by outcome", ["command", "outcome"]
)


@dataclass(frozen=True)
class Limits:
    """Per-address and per-operator connections, and commands per second per connection."""

    connections_per_address: int = 200
    connections_per_operator: int = 20
    commands_per_second: float = 5.0
    command_burst: int = 20


def _release(counts: collections.Counter[Any], key: Any) -> None:
    """One connection fewer; forget the key at zero, so the counters do not grow forever."""
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]


class NotifierServer:
    """Serves operators from a :class:`Hub`."""

    def __init__(
        self,
        hub: Hub,
        secret: Keys | str,
        commands: CommandPort | None = None,
        limits: Limits | None = None,
        layouts: Layouts | None = None,
        revoked: Container[str] = (),
    ) -> None:
        self.hub = hub
        self.keys = Keys.of(secret)
        self.revoked = revoked  # token ids (jti) refused, e.g. :class:`Revocations`
        self.commands = commands
        self.layouts = layouts
        self.limits = limits or Limits()
        # Commands and layouts per connection (keyed by its serial number).
        self._throttle = Throttle(self.limits.commands_per_second, self.limits.command_burst)
        self._serial = itertools.count()
        # command_id -> the connection that sent it, to tell it of a rejection by the worker
        self._pending: collections.OrderedDict[str, WebSocket] = collections.OrderedDict()
        self._by_address: collections.Counter[str] = collections.Counter()
        self._by_operator: collections.Counter[tuple[str, str]] = collections.Counter()
        self._closing: set[asyncio.Future[None]] = set()  # closes at token expiry, in flight
        self._by_token: dict[str, set[WebSocket]] = collections.defaultdict(set)

    def _remember(self, command_id: str, ws: WebSocket) -> None:
        self._pending[command_id] = ws
        self._pending.move_to_end(command_id)
        while len(self._pending) > PENDING_COMMANDS_MAX:
            self._pending.popitem(last=False)

    async def rejected(self, command_id: str, reason: str, detail: str) -> None:
        """Tell the operator who sent ``command_id`` (if connected here) the worker rejected it."""
        ws = self._pending.pop(command_id, None)
        if ws is None:
            return
        COMMAND_OUTCOMES.labels(command="any", outcome=f"rejected_{reason}").inc()
        error = f"{reason}: {detail}" if detail else reason
        with contextlib.suppress(*CLOSED):
            await self._send(
                ws, Ack(type="ack", command_id=command_id, status="rejected", error=error)
            )

    async def handle(self, ws: WebSocket) -> None:
        """Serve one connection to its end. The handshake completes first: every refusal is a
        close with its code (4401, 4403, 4429, …), which a client can tell apart."""
        address = ws.client.host if ws.client else "unknown"
        try:
            await ws.accept()
        except CLOSED:
            return
        self._by_address[address] += 1
        try:
            if self._by_address[address] > self.limits.connections_per_address:
                await self._refuse(ws, CLOSE_TOO_MANY, "too many connections from this address")
                return
            operator = await authenticate(ws, self.keys, self.revoked)
            if operator is None:
                return
            who = (operator.customer_id, operator.operator)
            self._by_operator[who] += 1
            try:
                if self._by_operator[who] > self.limits.connections_per_operator:
                    await self._refuse(ws, CLOSE_TOO_MANY, "too many connections for this operator")
                    return
                await self._serve(ws, operator, address)
            finally:
                _release(self._by_operator, who)
        finally:
            _release(self._by_address, address)

    @staticmethod
    async def _refuse(ws: WebSocket, code: int, reason: str) -> None:
        WS_REFUSED.labels(code=str(code)).inc()
        await close(ws, code, reason)

    async def _serve(self, ws: WebSocket, operator: Operator, address: str) -> None:
        WS_CLIENTS.inc()
        subscriber: Subscriber | None = None
        sender: asyncio.Task[None] | None = None
        serial = str(next(self._serial))
        rate = functools.partial(self._throttle.allow, "connection", serial)
        # At the token's expiry the connection closes (4401); a command racing it is refused.
        self._by_token[operator.token_id].add(ws)
        expiry = None
        if math.isfinite(left_s := operator.expires_at_s - time.time()):
            expiry = asyncio.get_running_loop().call_later(
                max(0.0, left_s), lambda: self._close_later(ws, "token expired")
            )
        # Read ahead of the handling: uvicorn reads the socket, and so answers the client's
        # pings, only while a receive is pending, and a subscribe's backlog can take a while.
        inbox: asyncio.Queue[str | bytes] = asyncio.Queue(INBOX_MAX)
        reader = asyncio.create_task(_read_ahead(ws, inbox))
        try:
            while (raw := await _next(inbox, reader, sender)) is not None:
                message = parse_message(raw)
                if message is None:
                    await self._send(ws, Error(type="error", message=BAD_MESSAGE))
                    continue
                kind = message.get("type")
                if kind == "subscribe" and subscriber is None:
                    subscriber = await self._subscribe(ws, operator, message)
                    if subscriber is not None:
                        sender = asyncio.create_task(self._drain(ws, subscriber))
                elif kind == "subscribe":
                    await self._send(ws, Error(type="error", message="already subscribed"))
                elif kind in COMMANDS:
                    await self._command(ws, operator, message, rate, address)
                elif kind == "layout":
                    await self._send(ws, await self._layout(operator, message, rate))
                else:
                    await self._send(ws, Error(type="error", message=f"unknown type {kind!r}"))
        except CLOSED:
            pass
        finally:
            if expiry is not None:
                expiry.cancel()
            self._throttle.forget("connection", serial)
            await self._ended(ws, operator, subscriber, (reader, sender))

    async def _ended(
        self,
        ws: WebSocket,
        operator: Operator,
        subscriber: Subscriber | None,
        tasks: tuple[asyncio.Task[None] | None, ...],
    ) -> None:
        """Forget a connection that ended: its token's entry, its subscription, its tasks."""
        connections = self._by_token[operator.token_id]
        connections.discard(ws)
        if not connections:
            del self._by_token[operator.token_id]
        WS_CLIENTS.dec()
        if subscriber is not None:
            self.hub.unsubscribe(subscriber)
        for task in tasks:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _layout(
        self, operator: Operator, message: dict[str, Any], rate: Callable[[], bool]
    ) -> LayoutSaved | Error:
        """Save a layout message's layout (a write: within the commands' limit)."""
        if not rate():
            return Error(type="error", message="too many messages; slow down")
        return await save_layout(self.layouts, operator, message)

    def revoke(self, token_ids: set[str]) -> None:
        """Close the connections that authenticated with one of ``token_ids`` (4401)."""
        for token_id in token_ids:
            for ws in list(self._by_token.get(token_id, ())):
                self._close_later(ws, "token revoked")

    def _close_later(self, ws: WebSocket, reason: str) -> None:
        task = asyncio.ensure_future(close(ws, CLOSE_UNAUTHORIZED, reason))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _command(
        self,
        ws: WebSocket,
        operator: Operator,
        message: dict[str, Any],
        rate: Callable[[], bool],
        address: str,
    ) -> None:
        """Validate, audit and publish one command; answer with an ``ack``."""
        kind = str(message.get("type"))
        sent_id = message.get("command_id")
        command_id = sent_id if isinstance(sent_id, str) else None
        try:
            if operator.expired():
                raise CommandError("token expired")
            if operator.token_id in self.revoked:
                raise CommandError("token revoked")
            if not rate():
                raise CommandError("too many commands; slow down")
            if self.commands is None:
                raise CommandError("this notifier does not accept commands")
            record = build_command(operator, message, int(time.time() * 1000))
            command_id = record["command_id"]
            self._remember(command_id, ws)
            await self.commands.submit(record, address)
        except CommandError as exc:
            COMMAND_OUTCOMES.labels(command=kind, outcome="refused").inc()
            await self._send(ws, Ack(type="ack", command_id=command_id, status="refused",
                                     error=str(exc)))  # fmt: skip
            return
        except Exception as exc:  # Kafka or Postgres down: the client may retry, same command_id
            log.warning("command %s not accepted: %s", command_id, exc)
            COMMAND_OUTCOMES.labels(command=kind, outcome="failed").inc()
            await self._send(ws, Ack(type="ack", command_id=command_id, status="failed",
                                     error="not accepted; retry"))  # fmt: skip
            return
        COMMAND_OUTCOMES.labels(command=kind, outcome="accepted").inc()
        await self._send(ws, Ack(type="ack", command_id=command_id, status="accepted"))

    async def _subscribe(
        self, ws: WebSocket, operator: Operator, message: dict[str, Any]
    ) -> Subscriber | None:
        try:
            filters = Filters(
                min_severity_level=as_level(message.get("min_severity_level") or "info"),
                payer_ids=frozenset(map(str, message.get("payer_ids") or ())),
                drift_types=frozenset(map(as_drift_type, message.get("drift_types") or ())),
            )
            since = message.get("since")
            if since is not None and (type(since) is not int or not 0 <= since < 2**63):
                raise ValueError("since must be a cursor: an integer from 0 to 2**63 - 1")
        except (TypeError, ValueError) as exc:
            await self._send(ws, Error(type="error", message=f"bad subscribe: {exc}"))
            return None
        subscriber = Subscriber(operator.customer_id, filters)
        try:
            if since is None:
                alerts, since = await self.hub.snapshot(subscriber)
                await self._send(ws, Snapshot(type="snapshot", cursor=since, alerts=alerts))
            await self.hub.follow(subscriber, since, lambda message: self._send(ws, message))
        except ConnectionError as exc:
            await self._send(ws, Error(type="error", message=str(exc)))
            return None
        return subscriber

    async def _drain(self, ws: WebSocket, subscriber: Subscriber) -> None:
        """Send queued messages; once the queue overflows, stop and close with 4008.

        The overflow is watched apart from the sending, which may itself be stuck waiting for
        a client that stopped reading (TCP backpressure).
        """
        sending = asyncio.create_task(self._send_queued(ws, subscriber))
        try:
            await subscriber.overflow.wait()
        finally:
            sending.cancel()
            with contextlib.suppress(asyncio.CancelledError, *CLOSED):
                await sending
        WS_SLOW.inc()
        await close(ws, CLOSE_SLOW_CLIENT, "send queue full: client too slow")

    async def _send_queued(self, ws: WebSocket, subscriber: Subscriber) -> None:
        while True:
            await self._send(ws, await subscriber.queue.get())

    @staticmethod
    async def _send(ws: WebSocket, message: ServerMessage) -> None:
        await ws.send_text(json.dumps(message, default=str))
        WS_MESSAGES.inc()


async def _read_ahead(ws: WebSocket, inbox: asyncio.Queue[str | bytes]) -> None:
    """Put the client's messages into ``inbox`` as they come, until the connection closes (at
    most :data:`INBOX_MAX` ahead of the handler; past that the client waits)."""
    with contextlib.suppress(*CLOSED):
        while (raw := await receive(ws)) is not None:
            await inbox.put(raw)


async def _next(
    inbox: asyncio.Queue[str | bytes], reader: asyncio.Task[None], sender: asyncio.Task[None] | None
) -> str | bytes | None:
    """The client's next message; None once the connection is closed (the reader ended and
    nothing is left), or once ``sender`` (the subscription's) ends: it cut off a client that
    stopped reading, whose close may never be written, and the connection is served no more."""
    if not inbox.empty():
        return inbox.get_nowait()
    if reader.done():
        return None
    getting = asyncio.ensure_future(inbox.get())
    waits: set[asyncio.Future[Any]] = {getting, reader}
    if sender is not None:
        waits.add(sender)
    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    if getting in done:
        return getting.result()
    getting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await getting
    if sender is None or sender not in done:  # the reader ended: what it read first
        return inbox.get_nowait() if not inbox.empty() else None
    return None
