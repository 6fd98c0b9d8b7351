"""How an operator proves who they are: a token as ``Authorization: Bearer`` (the HTTP API,
``GET /session``), the session cookie ``GET /session`` sets (console, API, WebSocket), or, on
the WebSocket, ``?token=`` or a first ``{"type":"auth"}`` message."""

from __future__ import annotations

import asyncio
from collections.abc import Container
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter
from starlette.websockets import WebSocket

from notifier.connection import close, receive
from notifier.messages import BAD_MESSAGE, parse_message
from notifier.tokens import CLOSE_FORBIDDEN, Keys, Operator, TokenError, verify_token

AUTH_TIMEOUT_S = 10.0
CLOSE_BAD_MESSAGE = 4400  # before authentication: the first message is not a JSON object
WS_REFUSED = Counter("upstream_ws_auth_refusals_total", "Connections refused", ["code"])


SESSION_COOKIE = "upstream_session"  # the console's token, set by GET /session


def bearer_token(headers: Any) -> str:
    """The token of an ``Authorization: Bearer …`` header in ``headers``, or ""."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def session_token(headers: Any) -> str:
    """The token of the session cookie in request ``headers``, or ""."""
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get("Cookie", ""))
    except CookieError:
        return ""
    morsel = cookies.get(SESSION_COOKIE)
    return morsel.value if morsel is not None else ""


async def authenticate(ws: WebSocket, keys: Keys, revoked: Container[str]) -> Operator | None:
    """The operator a new connection authenticates as (a ``?token=``, the session cookie from
    the console's own origin, or a first ``{"type":"auth"}`` message), or None once the
    connection is closed with the refusal's code (the connection is accepted: see
    :meth:`notifier.server.NotifierServer.handle`)."""
    query = ws.query_params  # a parameter given blank counts as not given
    token = query.get("token") or ""
    try:
        if not token and (token := session_token(ws.headers)):
            origin = ws.headers.get("Origin", "")
            if urlsplit(origin).netloc != ws.headers.get("Host"):
                # A page of another site cannot borrow an operator's session.
                raise TokenError("a session cookie is accepted from the console's own "
                                 "origin only", CLOSE_FORBIDDEN)  # fmt: skip
        if not token:
            first = await asyncio.wait_for(receive(ws), AUTH_TIMEOUT_S)
            if first is None:
                return None  # gone before it said anything: nothing to refuse
            message = parse_message(first)
            if message is None:
                raise TokenError(BAD_MESSAGE, CLOSE_BAD_MESSAGE)
            if message.get("type") != "auth":
                raise TokenError('the first message must be {"type":"auth","token":…}')
            token = str(message.get("token", ""))
        operator = verify_token(keys, token, revoked)
        wanted = query.get("customer_id") or operator.customer_id
        if wanted != operator.customer_id:
            raise TokenError("token is for another customer", CLOSE_FORBIDDEN)
        return operator
    except (TokenError, TimeoutError, ValueError) as exc:
        code = exc.close_code if isinstance(exc, TokenError) else 4401
        WS_REFUSED.labels(code=str(code)).inc()
        await close(ws, code, str(exc))
        return None
