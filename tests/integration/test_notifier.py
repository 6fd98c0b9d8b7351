"""The notifier at depth: operator commands end to end, its limits, messages as documented."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from notifier.tokens import mint_token
from streams.generator import Scenario, produce
from tests.apidocs import check_ws_message
from tests.integration.stack import (
    SECRET,
    ServiceStack,
    collect,
    notifier_ready,
    subscribe,
    wait_until,
    ws_url,
)

pytestmark = pytest.mark.integration

SCENARIO = Scenario(name="denial-spike", customer_id="demo", days=70, spike_day=50)


async def _seen(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any] | None:
    """:func:`_find` for :func:`wait_until`."""
    return _find(messages, **fields)


def _find(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any] | None:
    """The first message whose fields (``alert`` fields under ``alert__``) match."""
    for m in messages:
        alert = m.get("alert") or {}
        if all(
            (alert.get(k[7:]) if k.startswith("alert__") else m.get(k)) == v
            for k, v in fields.items()
        ):
            return m
    return None


async def _reply(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    """Send ``message`` and return the next ack or error (alerts are skipped)."""
    await ws.send(json.dumps(message))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if reply["type"] in ("ack", "error"):
            return reply


async def test_commands_reach_every_operator_of_the_customer_and_the_audit_log(
    stack: ServiceStack,
) -> None:
    """Acknowledge, judge and resolve through the worker; a read-only token is refused."""
    alice = await notifier_ready(stack)  # acts
    carol = await connect(ws_url(stack, mint_token(SECRET, "demo", "carol")))  # only watches
    viewer = await connect(ws_url(stack, mint_token(SECRET, "demo", "vic", scopes=("read",))))
    snapshot = await subscribe(carol)
    seen: list[dict[str, Any]] = []
    reader = asyncio.create_task(collect(carol, seen))
    await produce(SCENARIO, stack.bootstrap, stack.settings().topic_claims)
    await wait_until(lambda: _seen(seen, alert__transition="triggered"), 120, "an alert at carol")
    alert_id = _find(seen, alert__transition="triggered")["alert"]["alert_id"]  # type: ignore[index]

    refused = await _reply(viewer, {"type": "acknowledge", "alert_id": alert_id})
    assert refused["status"] == "refused" and "act" in refused["error"]
    bad = await _reply(alice, {"type": "judge", "alert_id": alert_id, "verdict": "maybe"})
    assert bad["status"] == "refused" and "verdict" in bad["error"]

    ack = await _reply(alice, {"type": "acknowledge", "alert_id": alert_id, "command_id": "c-1"})
    assert ack == {"type": "ack", "command_id": "c-1", "status": "accepted"}
    # Sent twice (a client retrying after a reconnect): applied once.
    assert (await _reply(alice, {"type": "acknowledge", "alert_id": alert_id,
                                 "command_id": "c-1"}))["status"] == "accepted"  # fmt: skip
    judged = await _reply(
        alice, {"type": "judge", "alert_id": alert_id, "verdict": "true_positive", "note": "ok"}
    )
    assert judged["status"] == "accepted" and judged["command_id"]
    assert (await _reply(alice, {"type": "resolve", "alert_id": alert_id}))["status"] == "accepted"

    await wait_until(
        lambda: _seen(seen, alert__alert_id=alert_id, alert__transition="resolved"),
        60,
        f"the resolve transition at carol; saw {[m.get('alert', m) for m in seen][-5:]}\n"
        + stack.log("worker")[-3000:],
    )
    mine = [m["alert"] for m in seen if m.get("alert", {}).get("alert_id") == alert_id]
    operator_steps = [
        (a["transition"], a["acknowledged_by"], a["verdict"], a["resolved_by"])
        for a in mine
        if a["transition"] in ("acknowledged", "judged", "resolved")
    ]
    assert operator_steps == [
        ("acknowledged", "alice", None, None),
        ("judged", "alice", "true_positive", None),
        ("resolved", "alice", "true_positive", "alice"),
    ]

    with psycopg.connect(stack.database_url.replace("+psycopg", "")) as conn:
        audit = conn.execute(
            "SELECT actor, action, subject, origin, detail FROM audit_log ORDER BY id"
        ).fetchall()
        verdict = conn.execute(
            "SELECT verdict FROM operator_judgments WHERE alert_id = %s", [alert_id]
        ).fetchone()
    assert [(a, act, s) for a, act, s, _, _ in audit] == [
        ("alice", "alert.acknowledge", alert_id),
        ("alice", "alert.acknowledge", alert_id),
        ("alice", "alert.judge", alert_id),
        ("alice", "alert.resolve", alert_id),
    ]
    assert all(origin == "127.0.0.1" for *_, origin, _ in audit)
    assert audit[2][4] == {"command_id": judged["command_id"], "verdict": "true_positive",
                           "note": "ok"}  # fmt: skip
    assert verdict == ("true_positive",)
    # Every message the operators got is one asyncapi.json describes.
    for message in [snapshot, *seen, refused, bad, ack, judged]:
        check_ws_message(message)
    reader.cancel()
    for ws in (alice, carol, viewer):
        await ws.close()


async def test_connection_and_command_limits(notifier_stack: ServiceStack) -> None:
    """Past its connection limit an operator is closed with 4429; a command flood is refused."""
    stack = notifier_stack
    first = await notifier_ready(stack)  # alice
    others = [await connect(ws_url(stack, mint_token(SECRET, "demo", "alice"))) for _ in range(19)]
    over = await connect(ws_url(stack, mint_token(SECRET, "demo", "alice")))
    with pytest.raises(websockets.ConnectionClosed) as info:
        await asyncio.wait_for(over.recv(), 15)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4429
    # Another operator of the same customer is not affected.
    bob = await connect(ws_url(stack, mint_token(SECRET, "demo", "bob")))
    await subscribe(bob)

    # Judge without a verdict: refused by validation while within the rate, so no Kafka needed.
    statuses = [await _reply(bob, {"type": "judge", "alert_id": "a-1"}) for _ in range(25)]
    errors = [s["error"] for s in statuses]
    assert all("verdict" in e for e in errors[:20])  # a burst of 20 ...
    assert sum("too many commands" in e for e in errors[20:]) >= 4  # ... then ~5 a second
    for ws in (first, *others, bob):
        await ws.close()
