"""Routes and silences over HTTP, for the operator's own customer, each change audited.

- ``GET /api/routes``: the customer's routes, receiver secrets masked;
- ``PUT /api/routes/{name}``: create or replace a route (JSON, the form ``GET`` lists);
- ``DELETE /api/routes/{name}``;
- ``GET /api/silences``: the silences not yet ended, and the open alerts silenced now;
- ``POST /api/silences``: add one (JSON: ``hours`` or ``ends_at``, matchers, ``weekly``,
  ``comment``); ``DELETE /api/silences/{silence_id}`` ends it now.

Reads need the token's ``read`` scope, changes its ``act`` scope; a body is JSON
(``Content-Type: application/json``, which a form on another site cannot send), at most
:data:`BODY_MAX_BYTES`. A running dispatcher applies a change to the notifications that follow.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from notifier.api import ApiError, HttpApi, error_response, response, unavailable
from notifier.delivery import admin
from notifier.tokens import Operator
from sinks.queries import active_alerts

BODY_MAX_BYTES = 64 * 1024
log = logging.getLogger("upstream.notifier")
T = TypeVar("T")
Handler = Callable[[Request, Operator], Awaitable[tuple[HTTPStatus, Any]]]


class DeliveryApi:
    """Answers the routes and silences endpoints with :class:`HttpApi`'s tokens and limits."""

    def __init__(self, api: HttpApi, private_targets: bool = False) -> None:
        self.api = api
        self.private_targets = private_targets

    WRITABLE = ("/api/routes/", "/api/silences")  # the paths taking more methods than GET

    def routes(self) -> list[Route]:
        """The Starlette routes, to be placed before the catch-all ``/api/...`` one."""
        return [
            Route("/api/routes", self._wrap(self._list_routes, "read"), methods=["GET"]),
            Route("/api/routes/{name}", self._wrap(self._set_route, "act"), methods=["PUT"]),
            Route("/api/routes/{name}", self._wrap(self._delete_route, "act"), methods=["DELETE"]),
            Route("/api/silences", self._wrap(self._list_silences, "read"), methods=["GET"]),
            Route("/api/silences", self._wrap(self._add_silence, "act"), methods=["POST"]),
            Route(
                "/api/silences/{silence_id}",
                self._wrap(self._expire_silence, "act"),
                methods=["DELETE"],
            ),
        ]

    def _wrap(self, handler: Handler, scope: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                operator, _ = self.api.authorize(request)
                if not operator.can(scope):
                    raise ApiError(HTTPStatus.FORBIDDEN, f"the token lacks the {scope!r} scope")
                try:
                    status, payload = await handler(request, operator)
                except (OperationalError, DBAPIError, OSError) as exc:
                    log.warning("delivery API query failed: %s", exc)
                    raise unavailable() from None
            except ApiError as exc:
                return error_response(exc)
            body = json.dumps(payload, default=str).encode()
            return response(status, body, "application/json", {"Cache-Control": "no-store"})

        return endpoint

    async def _list_routes(self, request: Request, operator: Operator) -> tuple[HTTPStatus, Any]:  # noqa: ARG002 - every handler takes the request
        async with self.api.engine.connect() as conn:
            routes = await admin.routes_of(conn, operator.customer_id)
        return HTTPStatus.OK, {"customer_id": operator.customer_id, "routes": routes}

    async def _set_route(self, request: Request, operator: Operator) -> tuple[HTTPStatus, Any]:
        spec = await _body(request)
        if any(
            admin.MASK in str(r.get("secret")) + str(r.get("target")) for r in _receivers_in(spec)
        ):
            raise ApiError(
                HTTPStatus.BAD_REQUEST, "send a receiver's secret and URL themselves, not the mask"
            )
        route = _checked(lambda: admin.checked_route(operator.customer_id, _name(request), spec))
        if not self.private_targets:
            _checked(lambda: admin.public_targets(route))
        async with self.api.engine.begin() as conn:
            await admin.set_route(conn, route, _who(request, operator))
            routes = await admin.routes_of(conn, operator.customer_id)
        return HTTPStatus.OK, next(r for r in routes if r["name"] == route.name)

    async def _delete_route(self, request: Request, operator: Operator) -> tuple[HTTPStatus, Any]:
        name = _name(request)
        async with self.api.engine.begin() as conn:
            if not await admin.delete_route(
                conn, operator.customer_id, name, _who(request, operator)
            ):
                raise ApiError(HTTPStatus.NOT_FOUND, f"no route {name!r}")
        return HTTPStatus.OK, {"deleted": name}

    async def _list_silences(self, request: Request, operator: Operator) -> tuple[HTTPStatus, Any]:  # noqa: ARG002 - every handler takes the request
        now = datetime.now(UTC)
        async with self.api.engine.connect() as conn:
            silences = await admin.silences_of(conn, operator.customer_id)
            alerts = await active_alerts(conn, operator.customer_id)
        silenced = [a["alert_id"] for a in alerts if any(s.silences(a, now) for s in silences)]
        return HTTPStatus.OK, {
            "customer_id": operator.customer_id,
            "silences": [admin.silence_listed(s) | {"active": s.active(now)} for s in silences],
            "silenced_alerts": silenced,
        }

    async def _add_silence(self, request: Request, operator: Operator) -> tuple[HTTPStatus, Any]:
        spec = await _body(request)
        now = datetime.now(UTC)
        silence = _checked(lambda: admin.checked_silence(operator.customer_id, spec, now))
        async with self.api.engine.begin() as conn:
            await admin.add_silence(conn, silence, _who(request, operator))
        return HTTPStatus.CREATED, admin.silence_listed(silence)

    async def _expire_silence(self, request: Request, operator: Operator) -> tuple[HTTPStatus, Any]:
        silence_id = request.path_params["silence_id"]
        who = _who(request, operator)
        async with self.api.engine.begin() as conn:
            if not await admin.expire_silence(conn, operator.customer_id, silence_id, who):
                raise ApiError(HTTPStatus.NOT_FOUND, f"no running silence {silence_id!r}")
        return HTTPStatus.OK, {"expired": silence_id}


def _name(request: Request) -> str:
    name: str = request.path_params["name"]
    return name


def _who(request: Request, operator: Operator) -> admin.Who:
    host = request.client.host if request.client else "unknown"
    return admin.Who(operator.operator, f"api@{host}")


def _checked(make: Callable[[], T]) -> T:
    try:
        return make()
    except admin.BadChangeError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, str(exc)) from None


def _receivers_in(spec: dict[str, Any]) -> list[dict[str, Any]]:
    items = [*(spec.get("receivers") or ()), *(spec.get("escalation") or ())]
    return [r for r in items if isinstance(r, dict)]


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object; ApiError 400/413/415 when it is none."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise ApiError(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send JSON (Content-Type: application/json)"
        )
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > BODY_MAX_BYTES:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {BODY_MAX_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(HTTPStatus.BAD_REQUEST, "send a JSON object")
    return body
