"""The notifier's edges against a running notifier: no message crashes a handler, tokens end
at their expiry, and HTTP methods other than GET are refused."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from notifier.tokens import mint_token, token_id
from tests.integration.stack import (
    SECRET,
    ServiceStack,
    get_json,
    http_get,
    notifier_ready,
    ws_url,
)

pytestmark = pytest.mark.integration

DEEP = "[" * 60_000  # once a RecursionError in the handler: close 1011 and a traceback


async def _reply(ws: Any) -> dict[str, Any]:
    reply: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
    return reply


async def test_malformed_messages_get_an_error_and_never_a_1011(
    notifier_stack: ServiceStack,
) -> None:
    """Deep nesting before and after auth, an infinite cursor, a wrong type: each answered
    (4400 before auth, an ``error`` after), the connection kept, nothing logged as an error."""
    stack = notifier_stack
    await (await notifier_ready(stack)).close()
    async with connect(f"ws://127.0.0.1:{stack.notifier_port}/ws") as anonymous:
        await anonymous.send(DEEP)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(anonymous.recv(), 30)
    assert anonymous.close_code == 4400
    async with connect(ws_url(stack, mint_token(SECRET, "demo", "alice"))) as ws:
        for bad in (DEEP, '{"type":"subscribe","since":1e400}', '{"type":"subscribe","since":1.5}',
                    '{"type":"subscribe","since":"x"}', '{"type":"subscribe","since":-1}',
                    '{"type":"subscribe","drift_types":["nope"]}',
                    '{"type":"subscribe","min_severity_level":"urgent"}',
                    "{" * 40 + "}" * 40, "[]", "null", '{"type":"ack"}'):  # fmt: skip
            await ws.send(bad)
            assert (await _reply(ws))["type"] == "error", bad
        await ws.send(json.dumps({"type": "subscribe"}))
        assert (await _reply(ws))["type"] == "snapshot"  # still served
    log = stack.log("notifier")
    assert "Traceback" not in log, log[-3000:]
    assert '"level": "error"' not in log, log[-3000:]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12,
)  # fmt: skip
FIELDS = ("since", "alert_id", "command_id", "verdict", "note", "payer_ids", "drift_types",
          "min_severity_level", "token")  # fmt: skip
PROTOCOL = st.builds(
    lambda kind, fields: json.dumps({"type": kind, **fields}),
    st.sampled_from(["subscribe", "acknowledge", "resolve", "judge", "auth", "ack", "", "x"])
    | JSON,
    st.dictionaries(st.sampled_from(FIELDS), JSON | st.integers(-(2**70), 2**70), max_size=4),
)
MESSAGES = st.one_of(
    PROTOCOL,
    JSON.map(json.dumps),
    st.text(max_size=50),
    st.binary(max_size=50),
    st.integers(1, 5000).map(lambda n: "[" * n),
    st.integers(1, 5000).map(lambda n: '{"a":' * n),
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(messages=st.lists(MESSAGES, min_size=1, max_size=15))
def test_fuzzed_messages_leave_the_connection_open_and_the_log_clean(
    notifier_stack: ServiceStack, messages: list[str | bytes]
) -> None:
    """Any sequence of protocol-shaped, random or hostile messages on an authenticated
    connection: the server never closes it (no 1011) and logs no error."""
    stack = notifier_stack

    async def exchange() -> None:
        await (await notifier_ready(stack)).close()
        async with connect(ws_url(stack, mint_token(SECRET, "demo", "fuzz"))) as ws:
            for message in messages:
                await ws.send(message)
            await ws.send('{"type":"no such type"}')  # the last answer: every message read
            while (await _reply(ws)).get("message") != "unknown type 'no such type'":
                pass

    asyncio.run(exchange())
    log = stack.log("notifier")
    assert "Traceback" not in log, log[-3000:]
    assert '"level": "error"' not in log, log[-3000:]


async def test_a_token_that_expires_closes_its_connection(notifier_stack: ServiceStack) -> None:
    """A token valid for 3 s: subscribed, then closed with 4401 at its expiry."""
    stack = notifier_stack
    await (await notifier_ready(stack)).close()
    async with connect(ws_url(stack, mint_token(SECRET, "demo", "alice", ttl_s=3))) as ws:
        await ws.send(json.dumps({"type": "subscribe"}))
        assert (await _reply(ws))["type"] == "snapshot"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
    assert (ws.close_code, ws.close_reason) == (4401, "token expired")


@pytest.mark.parametrize("method", ["POST", "DELETE", "PUT", "PATCH"])
@pytest.mark.parametrize("path", ["/", "/api/alerts?customer_id=demo", "/healthz", "/ws"])
async def test_methods_other_than_get_are_refused(
    notifier_stack: ServiceStack, method: str, path: str
) -> None:
    """405 with ``Allow: GET`` on every path: everything the notifier serves is read-only."""
    await (await notifier_ready(notifier_stack)).close()
    url = f"http://127.0.0.1:{notifier_stack.notifier_port}{path}"
    request = urllib.request.Request(url, method=method)
    with pytest.raises(urllib.error.HTTPError) as refused:
        await asyncio.to_thread(urllib.request.urlopen, request, timeout=10)
    refused.value.close()  # or the notifier's shutdown waits for this connection
    assert refused.value.code == 405
    assert refused.value.headers["Allow"] == "GET"


async def test_a_revoked_token_is_refused_and_its_connections_closed(
    notifier_stack: ServiceStack,
) -> None:
    """``upstream token revoke`` (by jti or the whole token): the open connection closes with
    4401 within seconds, a new one and the HTTP API are refused, another token is unaffected,
    and the audit log names who revoked it."""
    stack = notifier_stack
    await (await notifier_ready(stack)).close()
    token, other = mint_token(SECRET, "demo", "alice"), mint_token(SECRET, "demo", "bob")
    async with connect(ws_url(stack, token)) as ws, connect(ws_url(stack, other)) as kept:
        for client in (ws, kept):
            await client.send(json.dumps({"type": "subscribe"}))
            assert (await _reply(client))["type"] == "snapshot"
        revoked = await asyncio.to_thread(
            stack.cli, "token", "revoke", token_id(token), "--customer", "demo", "--reason", "t"
        )
        assert revoked.returncode == 0, revoked.stderr
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
        assert (ws.close_code, ws.close_reason) == (4401, "token revoked")
        await kept.send('{"type":"no such type"}')
        assert (await _reply(kept))["type"] == "error"  # still connected
    async with connect(ws_url(stack, token)) as again:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(again.recv(), 30)
    assert again.close_code == 4401
    status, body = await asyncio.to_thread(
        get_json, f"http://127.0.0.1:{stack.notifier_port}/api/alerts?customer_id=demo",
        {"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert (status, body["error"]) == (401, "token revoked")
    with psycopg.connect(stack.database_url.replace("+psycopg", "")) as conn:
        audit = conn.execute("SELECT action, subject, customer_id FROM audit_log").fetchall()
    assert ("revoke_token", token_id(token), "demo") in audit


async def test_the_session_cookie_serves_the_console_origin_only(
    notifier_stack: ServiceStack,
) -> None:
    """GET /session trades a token for an HttpOnly, SameSite=Strict cookie that the WebSocket
    and the API accept; a WebSocket from another origin with it is refused (4403)."""
    stack = notifier_stack
    await (await notifier_ready(stack)).close()
    base = f"127.0.0.1:{stack.notifier_port}"
    token = mint_token(SECRET, "demo", "alice")
    status, headers, _ = await asyncio.to_thread(
        http_get, f"http://{base}/session", {"Authorization": f"Bearer {token}"}
    )
    assert status == 200
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"upstream_session={token};")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    session = {"Cookie": f"upstream_session={token}"}
    status, _ = await asyncio.to_thread(get_json, f"http://{base}/api/alerts?customer_id=demo",
                                        session)  # fmt: skip
    assert status == 200
    own = {**session, "Origin": f"http://{base}"}
    async with connect(f"ws://{base}/ws", additional_headers=own) as ws:
        await ws.send(json.dumps({"type": "subscribe"}))
        assert (await _reply(ws))["type"] == "snapshot"
    foreign = {**session, "Origin": "http://evil.example"}
    async with connect(f"ws://{base}/ws", additional_headers=foreign) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 30)
    assert ws.close_code == 4403
    status, _, _ = await asyncio.to_thread(http_get, f"http://{base}/session")
    assert status == 401
