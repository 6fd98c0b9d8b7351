"""The sink when what it writes to is not there yet: Postgres stopped mid-stream or down at
start, the claims' table locked, an alert's drift event not yet stored."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from schemas.codec import encode_single_object
from sinks.service import DRIFT_WAIT_S
from streams.app.services import migrate_database
from streams.devtools.probes import read_all
from streams.devtools.stack import free_port
from streams.kafka.topics import create_topics
from tests.integration.stack import (
    ServiceStack,
    get_json,
    sink_stack,
    table_rows,
    wait_until,
)
from tests.unit.claims import raw_claim
from tests.unit.events import alert_event, drift_event

pytestmark = pytest.mark.integration
OUTAGE_S = 30.0  # how long Postgres stays down in the outage test


async def test_postgres_outage_mid_stream_loses_and_doubles_nothing(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Postgres stopped for 30 s while claims stream in, then started again: every claim
    exactly once, the sink alive throughout, and its /readyz 503 while Postgres is gone."""
    from streams.devtools.stack import EmbeddedPostgres

    server = EmbeddedPostgres()
    await asyncio.to_thread(server.start)
    stack = ServiceStack(kafka_bootstrap, server.url, unique, tmp_path)
    try:
        await asyncio.to_thread(migrate_database, server.url)
        s = stack.settings()
        await create_topics(s, kafka_bootstrap)
        metrics_port = free_port()
        stack.start("sink", env={"UPSTREAM_METRICS_PORT": str(metrics_port)})
        readyz = f"http://127.0.0.1:{metrics_port}/readyz"

        async def readiness(expected: int) -> bool:
            try:
                status, body = await asyncio.to_thread(get_json, readyz)
            except OSError:  # not listening yet
                return False
            return status == expected and body["checks"]["postgres"]["ok"] == (expected == 200)

        await wait_until(lambda: readiness(200), 60, "the sink ready")
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
        await producer.start()

        async def send(first: int, last: int) -> None:
            for i in range(first, last):
                value = json.dumps(raw_claim(claim_id=f"c{i}")).encode()
                await producer.send(s.topic_claims, value, key=f"c{i}".encode())
            await producer.flush()

        def claim_count() -> int:
            with psycopg.connect(server.url.replace("+psycopg", "")) as conn:
                row = conn.execute("SELECT count(*), count(DISTINCT claim_id) FROM claim_records")
                total, distinct = row.fetchone() or (0, 0)
                assert total == distinct
                return int(total)

        await send(0, 2000)
        await wait_until(
            lambda: asyncio.to_thread(lambda: claim_count() >= 2000), 60, "the first claims stored"
        )
        await asyncio.to_thread(lambda: server.stop(keep_data=True))  # gone mid-stream
        down_since = time.monotonic()
        await send(2000, 4000)
        await send(0, 500)  # redeliveries of stored claims too
        await wait_until(lambda: readiness(503), 30, "/readyz to report Postgres down (503)")
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_since)))
        assert stack.procs["sink"].poll() is None, "the sink gave up during the outage"
        await asyncio.to_thread(server.start)  # … and comes back on the same port
        await wait_until(lambda: readiness(200), 60, "/readyz ready again")
        await wait_until(
            lambda: asyncio.to_thread(lambda: claim_count() == 4000),
            90,
            "every claim stored once after the outage",
        )
        await producer.stop()
        assert await read_all(kafka_bootstrap, s.topic_sink_dlq, idle_s=0.5) == []
        assert "retrying" in stack.log("sink")
    finally:
        assert stack.stop_all() == {"sink": 0}, stack.log("sink")[-3000:]
        await asyncio.to_thread(server.stop)


async def test_a_sink_started_while_postgres_is_down_waits_for_it(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """Postgres down when the sink starts: it stays up, not ready, trying again with backoff;
    once Postgres is back it migrates and stores the claims sent meanwhile."""
    from streams.devtools.stack import EmbeddedPostgres

    server = EmbeddedPostgres()
    await asyncio.to_thread(server.start)
    await asyncio.to_thread(lambda: server.stop(keep_data=True))
    stack = ServiceStack(kafka_bootstrap, server.url, unique, tmp_path)
    try:
        s = stack.settings()
        await create_topics(s, kafka_bootstrap)
        metrics_port = free_port()
        stack.start("sink", env={"UPSTREAM_METRICS_PORT": str(metrics_port)})
        readyz = f"http://127.0.0.1:{metrics_port}/readyz"

        async def postgres_ok() -> bool | None:
            try:
                status, body = await asyncio.to_thread(get_json, readyz)
            except OSError:  # not listening yet
                return None
            check = body["checks"].get("postgres")
            return None if check is None else (status == 200 and check["ok"])

        async def tried_three_times() -> bool:
            return stack.log("sink").count("postgres unavailable") >= 3

        await wait_until(tried_three_times, 60, "the sink to try Postgres again and again")
        assert await postgres_ok() is False  # /readyz 503, postgres not ok
        assert stack.procs["sink"].poll() is None, stack.log("sink")[-3000:]
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        for i in range(100):
            value = json.dumps(raw_claim(claim_id=f"c{i}")).encode()
            await producer.send(s.topic_claims, value, key=f"c{i}".encode())
        await producer.stop()
        await asyncio.to_thread(server.start)
        await wait_until(postgres_ok, 60, "/readyz ready once Postgres is up")

        def claim_count() -> int:
            with psycopg.connect(server.url.replace("+psycopg", "")) as conn:
                row = conn.execute("SELECT count(*) FROM claim_records").fetchone()
                return int(row[0]) if row else 0

        await wait_until(
            lambda: asyncio.to_thread(lambda: claim_count() == 100), 60, "the claims stored"
        )
    finally:
        assert stack.stop_all() == {"sink": 0}, stack.log("sink")[-3000:]
        await asyncio.to_thread(server.stop)


async def test_alerts_are_stored_while_the_claims_wait_for_postgres(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    """The claims' table locked by another session, so their writes wait: a drift event and its
    alert sent after the claims are stored meanwhile (their consumer group is their own), and
    the claims follow once the lock is gone."""
    database_url, stack, s = await sink_stack(
        kafka_bootstrap, postgres_url, "sinkgroups", unique, tmp_path
    )
    locker = await psycopg.AsyncConnection.connect(database_url.replace("+psycopg", ""))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    await producer.start()
    stack.start("sink")
    try:
        await locker.execute("LOCK TABLE claim_records IN EXCLUSIVE MODE")  # reads still pass
        for i in range(200):
            await producer.send(
                s.topic_claims, json.dumps(raw_claim(claim_id=f"c{i}")).encode(), key=b"c%d" % i
            )
        await producer.flush()

        async def claims_waiting() -> bool:  # a write of claims is queued behind the lock
            rows = await locker.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = 'claim_records'::regclass "
                "AND NOT granted"
            )
            waiting: int = (await rows.fetchone() or (0,))[0]
            return waiting > 0

        await wait_until(claims_waiting, 60, "the sink's claims to wait for the lock")
        await producer.send_and_wait(
            s.topic_drift, encode_single_object("DriftEvent", drift_event(1)), key=b"d"
        )
        await producer.send_and_wait(
            s.topic_alerts, encode_single_object("AlertEvent", alert_event("a1", 1, "triggered")),
            key=b"acme",
        )  # fmt: skip

        async def stored(table: str, count: int) -> bool:
            return len((await asyncio.to_thread(table_rows, database_url))[table]) == count

        await wait_until(lambda: stored("alert_transitions", 1), 30, "the alert stored")
        assert await stored("drift_events", 1)
        assert await claims_waiting(), "the claims were not waiting all along"
        await locker.rollback()
        await wait_until(lambda: stored("claim_records", 200), 60, "the claims after the lock")
    finally:
        await producer.stop()
        await locker.close()
        assert stack.stop_all() == {"sink": 0}, stack.log("sink")[-3000:]


async def test_an_alert_waits_for_its_drift_event_and_is_never_held_for_good(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    """An alert transition polled before the drift event it names is written together with it
    (the notifier joins the event's baseline and current values as it fans the alert out); one
    whose drift event never comes is written after the sink's bound all the same."""
    database_url, stack, s = await sink_stack(
        kafka_bootstrap, postgres_url, "sinkorder", unique, tmp_path
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    stack.start("sink")

    async def send_alert(alert: str, drift_event_id: str) -> None:
        record = {**alert_event(alert, 1, "triggered"), "drift_event_id": drift_event_id}
        value = encode_single_object("AlertEvent", record)
        await producer.send_and_wait(s.topic_alerts, value, key=b"acme")

    async def send_drift(i: int) -> None:
        value = encode_single_object("DriftEvent", drift_event(i))
        await producer.send_and_wait(s.topic_drift, value, key=b"d%d" % i)

    def stored() -> tuple[set[str], set[str]]:
        with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
            alerts = {r[0] for r in conn.execute("SELECT alert_id FROM alert_transitions")}
            drift = {r[0] for r in conn.execute("SELECT event_id FROM drift_events")}
        return alerts, drift

    async def alert_stored(alert: str) -> bool:
        return alert in (await asyncio.to_thread(stored))[0]

    try:
        await send_drift(0)
        await send_alert("a0", "e-0")
        await wait_until(lambda: alert_stored("a0"), 60, "the sink to store a first alert")

        await send_alert("a1", "e-1")  # its drift event a second late: within the sink's bound
        late_until = time.monotonic() + 1.0
        while time.monotonic() < late_until:
            alerts, drift = await asyncio.to_thread(stored)
            assert "a1" not in alerts or "e-1" in drift, "the alert stored before its drift event"
            await asyncio.sleep(0.05)
        await send_drift(1)
        await wait_until(lambda: alert_stored("a1"), 30, "the alert whose drift came late")
        assert "e-1" in (await asyncio.to_thread(stored))[1], "stored before its drift event"

        began = time.monotonic()
        await send_alert("a2", "e-never")
        await wait_until(lambda: alert_stored("a2"), 30, "the alert whose drift never comes")
        assert time.monotonic() - began >= DRIFT_WAIT_S * 0.9  # it waited the bound, no longer
        assert "e-never" in stack.log("sink")  # and said so
    finally:
        await producer.stop()
        assert stack.stop_all() == {"sink": 0}, stack.log("sink")[-3000:]
