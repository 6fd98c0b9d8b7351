"""The notifier's one port: a Starlette app on uvicorn (docs/protocol.md).

``/ws`` is the operators' WebSocket (:class:`notifier.server.NotifierServer`). Over HTTP: ``/``
the console, ``/session`` (a token traded for the console's cookie), ``/healthz``, ``/readyz``,
``/metrics``, the JSON API ``/api/…`` (:mod:`notifier.api`) with its downloads
(:mod:`notifier.exports`), its descriptions ``/openapi.json`` and ``/asyncapi.json``, and the
interactive docs ``/docs``. Everything over HTTP is read-only: any other method than GET is
answered 405 (commands go by the WebSocket). Answers of 1 KiB and more are gzip-compressed for
clients that accept it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from http import HTTPStatus

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from notifier.answers import Check, ErrorAnswer, Live, Ready, Session
from notifier.api import HttpApi, response
from notifier.delivery_api import DeliveryApi
from notifier.exports import FORMATS, PDF, Exports
from notifier.files import FILES, file_response
from notifier.server import MAX_MESSAGE_BYTES, NotifierServer
from notifier.session import SESSION_COOKIE, bearer_token
from notifier.tokens import TokenError, verify_token

READY_TIMEOUT_S = 2.0
GZIP_MIN_BYTES = 1024
SHUTDOWN_S = 5  # open requests and connections get this long to end when the notifier stops
Probe = Callable[[], Awaitable[bool]]
DOWNLOADS = {"export": "/api/export/{kind}.{format}", "report": "/api/report.pdf"}


class GetOnly:
    """ASGI middleware: 405 with ``Allow: GET`` for any HTTP method but GET, on every path but
    those starting with one of ``writable`` (their routes name their methods)."""

    def __init__(self, app: ASGIApp, writable: tuple[str, ...] = ()) -> None:
        self.app = app
        self.writable = writable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse, or pass the request on."""
        if (
            scope["type"] == "http"
            and scope["method"] != "GET"
            and not scope["path"].startswith(self.writable)
        ):
            body = f"{scope['method']} is not allowed here; use GET\n".encode()
            refusal = response(HTTPStatus.METHOD_NOT_ALLOWED, body, "text/plain", {"Allow": "GET"})
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Web:
    """The HTTP side of the notifier, and the app that serves it with the WebSocket."""

    def __init__(
        self,
        sockets: NotifierServer,
        api: HttpApi | None,
        checks: Mapping[str, Probe],
        private_targets: bool = False,
    ) -> None:
        self.sockets = sockets
        self.api = api
        self.checks = checks  # name -> readiness probe, besides Postgres
        self.private_targets = private_targets  # routes of the API may send to private addresses

    def app(self) -> Starlette:
        """The Starlette application."""
        downloads: list[Route] = []
        if self.api is not None:
            exports = Exports(self.api)
            handlers = {"export": exports.export, "report": exports.report}
            downloads = [Route(path, handlers[name]) for name, path in DOWNLOADS.items()]
            downloads += DeliveryApi(self.api, self.private_targets).routes()
        routes = [
            WebSocketRoute("/ws", self.sockets.handle),
            Route("/session", self._session),
            Route("/healthz", _live),
            Route("/readyz", self._readiness),
            Route("/metrics", _metrics),
            *downloads,
            Route("/api/{endpoint:path}", self._api),
            *(Route(path, _file) for path in FILES),
        ]
        middleware = [
            Middleware(GetOnly, writable=DeliveryApi.WRITABLE),
            Middleware(
                GZipMiddleware,
                minimum_size=GZIP_MIN_BYTES,
                compresslevel=5,
                # compressed already: a workbook is a zip file, a report's streams are deflated
                exclude_content_types=(*DEFAULT_EXCLUDED_CONTENT_TYPES, FORMATS["xlsx"], PDF),
            ),
        ]
        return Starlette(routes=routes, middleware=middleware)

    async def _api(self, request: Request) -> Response:
        if self.api is None:
            return response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        return await self.api.respond(request)

    async def _session(self, request: Request) -> Response:
        """Trade the token in ``Authorization: Bearer`` for a session cookie (HttpOnly,
        SameSite=Strict, until the token expires): the console then drops the token from its
        address bar, and the browser sends the cookie with the WebSocket and the API calls."""
        token = bearer_token(request.headers)
        try:
            if not token:
                raise TokenError("send the token as 'Authorization: Bearer <token>'")
            operator = verify_token(self.sockets.keys, token, self.sockets.revoked)
        except TokenError as exc:
            body = json.dumps(ErrorAnswer(error=str(exc))).encode()
            return response(HTTPStatus.UNAUTHORIZED, body, "application/json")
        max_age = max(0, int(operator.expires_at_s - time.time()))
        cookie = (f"{SESSION_COOKIE}={token}; Max-Age={max_age}; Path=/; HttpOnly; "
                  "SameSite=Strict")  # fmt: skip
        who = json.dumps(Session(customer_id=operator.customer_id, operator=operator.operator))
        return response(HTTPStatus.OK, who.encode(), "application/json", {"Set-Cookie": cookie})

    async def _readiness(self, request: Request) -> Response:  # noqa: ARG002 - a route's signature
        """Postgres followed by the hub, and each extra check (Kafka), with its latency."""
        checks: dict[str, Check] = {"postgres": Check(ok=self.sockets.hub.ready)}
        for name, check in self.checks.items():
            started = time.monotonic()
            try:
                ok = await asyncio.wait_for(check(), READY_TIMEOUT_S)
            except Exception:  # any failure means not ready
                ok = False
            checks[name] = Check(ok=ok, latency_ms=round((time.monotonic() - started) * 1000, 1))
        ready = all(c["ok"] for c in checks.values())
        body = json.dumps(Ready(status="ok" if ready else "unavailable", checks=checks)).encode()
        status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
        return response(status, body, "application/json")


async def _live(request: Request) -> Response:  # noqa: ARG001 - a route's signature
    return response(HTTPStatus.OK, json.dumps(Live(status="ok")).encode(), "application/json")


async def _metrics(request: Request) -> Response:  # noqa: ARG001 - a route's signature
    return response(HTTPStatus.OK, generate_latest(), CONTENT_TYPE_LATEST)


async def _file(request: Request) -> Response:
    return file_response(FILES[request.url.path], request.headers.get("Accept-Encoding", ""))


class _WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol (on the ``websockets`` library), which drops a connection
    the app ends with its close frame unsent and data still unwritten: a client that stopped
    reading (cut off with 4008) would otherwise hold its socket and the unsent buffer forever,
    as closing a transport waits for its buffer to drain."""

    async def run_asgi(self) -> None:
        """Run the app; then abort the transport if it is stuck as described above."""
        await super().run_asgi()
        if not self.close_sent and self.transport.get_write_buffer_size():
            self.transport.abort()


class _Server(uvicorn.Server):
    """uvicorn's server, without the signal handlers it would install: the notifier's process
    handles SIGTERM and SIGINT itself, and stops the server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """No signal handling of its own."""
        yield


class Listening:
    """A running server: its bound addresses; :meth:`stop` ends it."""

    def __init__(self, server: _Server, task: asyncio.Task[None]) -> None:
        self._server, self._task = server, task

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) of each listening socket."""
        return [s.getsockname()[:2] for server in self._server.servers for s in server.sockets]

    async def stop(self) -> None:
        """Stop listening; open connections are closed (1012) and requests get
        :data:`SHUTDOWN_S` to end."""
        self._server.should_exit = True
        await self._task


async def serve(app: ASGIApp, host: str, port: int) -> Listening:
    """Serve ``app`` on ``host:port`` until :meth:`Listening.stop`; returns once it listens."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        ws=_WebSocketProtocol,
        ws_max_size=MAX_MESSAGE_BYTES,
        ws_ping_interval=20,
        ws_ping_timeout=20,
        ws_per_message_deflate=True,
        lifespan="off",
        log_config=None,
        access_log=False,
        # A client's address is its peer's: a header a client sends does not change it (the
        # per-address connection limit, the audit log's origin).
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=SHUTDOWN_S,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(), name="http server")
    while not server.started:
        if task.done():  # uvicorn ends the process (SystemExit) when it cannot listen
            await task
        await asyncio.sleep(0.01)
    return Listening(server, task)
