"""Claims in → drift and alerts out → Postgres and live WebSocket, on the real components."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import jwt
import psycopg
import pytest
import websockets
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.asyncio.client import connect

from notifier.tokens import mint_token
from schemas.registry import ValueCodec
from sinks.rows import alert_row
from sinks.writer import PostgresWriter
from streams.devtools.generator import (
    SPIKE_GROUP,
    SPIKE_PAYER,
    Scenario,
    alert_transition,
    produce,
)
from streams.devtools.probes import read_all
from tests.integration.stack import (
    SECRET,
    ServiceStack,
    collect,
    notifier_ready,
    send_then_receive,
    subscribe,
    wait_until,
    ws_url,
)

pytestmark = pytest.mark.integration

SCENARIO = Scenario(name="denial-spike", customer_id="demo", days=70, spike_day=50)
MALFORMED = [
    (b"bad-1", b"{this is not json"),
    (b"bad-2", json.dumps({"claim_id": "bad-2", "customer_id": "demo"}).encode()),
    (
        b"bad-3",
        json.dumps(
            {
                "claim_id": "bad-3",
                "customer_id": "demo",
                "payer_id": "payer-a",
                "cpt_code": "71046",
                "submitted_date": "2026-01-01",
                "decided_date": "2026-01-02",
                "outcome": "LOST",
                "billed_amount": "10",
                "allowed_amount": "5",
            }
        ).encode(),
    ),
    (b"bad-4", b"\x07\x08binary garbage"),
]


async def test_denial_spike_becomes_drift_alert_rows_and_live_message(stack: ServiceStack) -> None:
    """Only the spiked key drifts; its alert reaches Kafka, Postgres and the right operator."""
    settings = stack.settings()
    demo = await notifier_ready(stack)
    other = await connect(ws_url(stack, mint_token(SECRET, "other-customer", "bob")))
    await subscribe(demo)
    await subscribe(other)
    demo_msgs: list[dict[str, Any]] = []
    other_msgs: list[dict[str, Any]] = []
    readers = [
        asyncio.create_task(collect(demo, demo_msgs)),
        asyncio.create_task(collect(other, other_msgs)),
    ]

    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    for key, value in MALFORMED:
        await producer.send_and_wait(settings.topic_claims, value=value, key=key)
    await producer.stop()
    sent = await produce(SCENARIO, stack.bootstrap, settings.topic_claims)

    # Live alert for the spiked key at the demo operator.
    await wait_until(lambda: _first_alert(demo_msgs), 120, "an alert message over WebSocket")
    alert_msg = await _first_alert(demo_msgs)
    assert alert_msg is not None
    assert (alert_msg["alert"]["payer_id"], alert_msg["alert"]["cpt_group"]) == (
        SPIKE_PAYER,
        SPIKE_GROUP,
    )
    assert isinstance(alert_msg["cursor"], int)

    # Drift events on Kafka: only for the spiked key.
    codec = ValueCodec()
    drift_records = [
        codec.decode(m.value, "DriftEvent", settings.topic_drift)
        for m in await read_all(stack.bootstrap, settings.topic_drift)
    ]
    assert drift_records, "no drift event on the drift topic"
    assert {(r["customer_id"], r["payer_id"], r["cpt_group"]) for r in drift_records} == {
        ("demo", SPIKE_PAYER, SPIKE_GROUP)
    }
    assert all(r["drift_type"] == "denial_rate" for r in drift_records)
    assert min(r["current_end"] for r in drift_records).date().isoformat() > "2026-02-19"

    alert_records = [
        codec.decode(m.value, "AlertEvent", settings.topic_alerts)
        for m in await read_all(stack.bootstrap, settings.topic_alerts)
    ]
    assert alert_records[0]["transition"] == "triggered"
    assert {r["payer_id"] for r in alert_records} == {SPIKE_PAYER}

    # Dead letters: each malformed claim with its reason, and nothing else.
    dlq = await read_all(stack.bootstrap, settings.topic_claims_dlq)
    reasons = {m.key: dict(m.headers) for m in dlq}
    assert set(reasons) == {key for key, _ in MALFORMED}
    assert reasons[b"bad-1"]["error.reason"] == b"json"
    assert reasons[b"bad-2"]["error.reason"] == b"missing_field"
    assert reasons[b"bad-3"]["error.reason"] == b"bad_value"
    assert reasons[b"bad-4"]["error.reason"] == b"format"
    for headers in reasons.values():
        assert {
            "error.stage",
            "error.message",
            "source.topic",
            "source.partition",
            "source.offset",
        } <= set(headers)

    # Rows in Postgres match the topics.
    async def rows_match() -> bool:
        counts = _counts(stack.database_url)
        return counts == (len({r["event_id"] for r in drift_records}), len(alert_records))

    await wait_until(rows_match, 60, "Postgres rows to match the topics")
    with psycopg.connect(stack.database_url.replace("+psycopg", "")) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM alert_transitions ORDER BY seq")]
        assert seqs == sorted(set(seqs))
        (active,) = conn.execute(
            "SELECT count(*) FROM alert_events WHERE status <> 'resolved'"
        ).fetchone() or (0,)
        assert active >= 1

    # The other customer's operator got nothing of demo's: a transition of its own, stored
    # after all of them, is the first message it receives.
    engine = create_async_engine(stack.database_url)
    try:
        marker = {**alert_transition(0, "other-customer"), "alert_id": "other-marker"}
        await PostgresWriter(engine).write([], [alert_row(marker)])
    finally:
        await engine.dispose()

    async def heard() -> bool:
        return bool(other_msgs)

    await wait_until(heard, 30, "the other customer's own transition")
    assert [m["alert"]["alert_id"] for m in other_msgs] == ["other-marker"]
    assert sent == 70 * 6 * 20
    for task in readers:
        task.cancel()
    await demo.close()
    await other.close()


async def _first_alert(messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((m for m in messages if m["type"] == "alert"), None)


def _counts(database_url: str) -> tuple[int, int]:
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        drift = conn.execute("SELECT count(*) FROM drift_events").fetchone()
        transitions = conn.execute("SELECT count(*) FROM alert_transitions").fetchone()
    return (drift[0] if drift else 0, transitions[0] if transitions else 0)


def _unsigned_token() -> str:
    """A token with ``alg: none`` and every claim right: a forgery that needs no secret."""
    claims = {"sub": "mallory", "customer_id": "demo", "scope": "read act", "exp": 4_000_000_000}
    # PyJWT's annotation of ``key`` leaves out the None that algorithm "none" requires.
    return jwt.encode(claims, key=cast(str, None), algorithm="none")


@pytest.mark.parametrize(
    ("token", "params", "code"),
    [
        ("", {}, 4401),
        ("not-a-jwt", {}, 4401),
        (mint_token("some-other-secret-also-32-bytes-long!", "demo", "mallory"), {}, 4401),
        (mint_token(SECRET, "demo", "late", now_s=1_000_000, ttl_s=60), {}, 4401),
        (mint_token(SECRET, "other-customer", "bob"), {"customer_id": "demo"}, 4403),
        (_unsigned_token(), {}, 4401),
        (
            jwt.encode({"sub": "x", "scope": "read", "exp": 4_000_000_000}, SECRET, "HS256"),
            {},
            4401,
        ),  # no customer_id claim
    ],
    ids=[
        "missing",
        "garbage",
        "wrong-secret",
        "expired",
        "foreign-customer",
        "alg-none",
        "missing-claim",
    ],
)
async def test_bad_tokens_are_closed_before_anything_is_sent(
    notifier_stack: ServiceStack, token: str, params: dict[str, str], code: int
) -> None:
    """Missing, forged, expired or foreign-tenant tokens: closed with 4401/4403, no message."""
    await (await notifier_ready(notifier_stack)).close()
    async with connect(ws_url(notifier_stack, token, **params)) as ws:
        # Without a token in the URL the server expects an auth message first; this is not.
        with pytest.raises(websockets.ConnectionClosed) as info:
            await send_then_receive(ws, {"type": "subscribe"})
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == code
