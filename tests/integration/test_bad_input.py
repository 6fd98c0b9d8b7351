"""Hundreds of malformed claims through a real worker: it keeps running, and every record is
either processed or dead-lettered with a reason; the counts reconcile exactly."""

from __future__ import annotations

import asyncio
import json
import os
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka import AIOKafkaProducer

from schemas.codec import DecodeError, encode_single_object
from schemas.registry import ValueCodec
from streams.app.services import migrate_database
from streams.devtools.probes import read_all, scrape
from streams.devtools.stack import free_port
from streams.domain.claims import InvalidClaim, parse_claim
from streams.kafka import envelopes
from streams.kafka.topics import create_topics
from tests.integration.stack import ServiceStack, create_database, get_json, wait_until
from tests.unit.claims import raw_claim

pytestmark = pytest.mark.integration
RECORDS = int(os.environ.get("UPSTREAM_POISON_RECORDS", "400"))  # 10,000 by hand
NASTY = ["", "-1", "1e309", "NaN", "9" * 400, "2026-02-30", "9999-12-31", "\x00", "💥" * 50,
         "DROP TABLE claim_records; --", "2026-01-01T25:00:00Z", 17, None, True, [1],
         {"a": 1}]  # fmt: skip


def _valid(rng: random.Random, i: int) -> dict[str, Any]:
    decided = date(2026, 1, 1) + timedelta(days=i // 20)
    return raw_claim(claim_id=f"fz-{i}", payer_id=rng.choice(["payer-a", "payer-b"]),
                     submitted_date=(decided - timedelta(days=rng.randint(0, 30))).isoformat(),
                     decided_date=decided.isoformat(),
                     outcome=rng.choice(["PAID", "DENIED", "PARTIAL"]))  # fmt: skip


def _record(rng: random.Random, i: int) -> bytes:
    """One value: valid, or broken in one of many ways (seeded, so a failure reproduces)."""
    claim = _valid(rng, i)
    kind = i % 10
    if kind == 0:
        return rng.randbytes(rng.randint(0, 200))
    if kind == 1:
        claim[rng.choice(list(claim))] = rng.choice(NASTY)
    elif kind == 2:
        del claim[rng.choice(list(claim))]
    elif kind == 3:
        return encode_single_object("ClaimDecided", claim)
    elif kind == 4:
        return encode_single_object("ClaimDecided", claim) + b"\x01trailing"
    elif kind == 5:
        return b"\xc3\x01" + rng.randbytes(8) + json.dumps(claim).encode()
    elif kind == 6:
        return json.dumps(claim).encode()[: rng.randint(1, 60)]  # cut short
    elif kind == 7:
        claim["claim_id"] = "x" * 200_000
    elif kind == 8:
        return json.dumps(claim).encode().replace(b"acme", b"ac\xffme")  # invalid UTF-8
    return json.dumps(claim, allow_nan=True).encode()


def _refused_locally(value: bytes) -> bool:
    try:
        parse_claim(ValueCodec().decode(value, "ClaimDecided", "claims.decided"))
    except (DecodeError, InvalidClaim):
        return True
    return False


async def test_malformed_claims_reconcile_and_the_worker_keeps_going(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    """In = processed + dead-lettered, from the metrics and from the topics; worker stays ready."""
    stack = ServiceStack(kafka_bootstrap, "", unique, tmp_path)
    s = stack.settings()
    await create_topics(s, kafka_bootstrap)
    rng = random.Random(20261128)
    values = {f"k{i}".encode(): _record(rng, i) for i in range(RECORDS)}
    refused = {key for key, value in values.items() if _refused_locally(value)}
    assert 50 < len(refused) < RECORDS - 50  # the mix really is mixed
    port = free_port()
    worker = stack.start("worker", env={"UPSTREAM_METRICS_PORT": str(port)})
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=2**21)
        await producer.start()
        for key, value in values.items():
            await producer.send(s.topic_claims, value, key=key)
        await producer.stop()
        metrics = f"http://127.0.0.1:{port}/metrics"

        def counted(sample: dict[str, float]) -> tuple[float, float]:
            dlq = sum(v for k, v in sample.items() if k.startswith("upstream_claims_dlq_total{"))
            done = sample.get("upstream_claims_processed_total", 0.0)
            waiting = sample.get("upstream_claims_pending", 0.0)  # counted once they take effect
            return done + waiting + sample.get("upstream_claims_duplicate_total", 0.0), dlq

        async def all_counted() -> tuple[float, float] | None:
            try:
                processed, dlq = counted(await asyncio.to_thread(scrape, metrics))
            except OSError:
                return None
            return (processed, dlq) if processed + dlq >= RECORDS else None

        processed, dlq = await wait_until(all_counted, 180, "every record counted")
        assert processed + dlq == RECORDS

        letters = await read_all(kafka_bootstrap, s.topic_claims_dlq, idle_s=1.0)
        reasons = {m.key: dict(m.headers)["error.reason"].decode() for m in letters}
        assert len(letters) == len(reasons) == dlq  # one dead letter per refused record
        assert set(reasons) == refused  # what the rules refuse, with a reason; nothing else
        assert worker.poll() is None

        async def ready() -> bool:
            status, _ = await asyncio.to_thread(get_json, f"http://127.0.0.1:{port}/readyz")
            return status == 200

        await wait_until(ready, 60, "the worker still ready after the bad input")
    finally:
        assert stack.stop_all() == {"worker": 0}, stack.log("worker")[-3000:]


def _poison() -> dict[bytes, bytes]:
    """The records that crashed a process once, and records around each size limit."""
    records = {
        b"far-offset": raw_claim(claim_id="p1", decided_at="9999-12-31T23:59:59-01:00"),
        b"dict-payer-name": raw_claim(claim_id="p2", payer_name={"t": 1}),
        b"dict-cpt-group": raw_claim(claim_id="p3", cpt_group={"t": 1}),
        b"dict-decided-at": raw_claim(claim_id="p4", decided_at={"t": 1}),
        b"nul-payer-name": raw_claim(claim_id="p5", payer_name="Acme\x00"),
        b"long-cpt-code": raw_claim(claim_id="p6", cpt_code="71046-" + "9" * 20),
        b"valid-with-notes": raw_claim(claim_id="p7", notes="n" * 900_000),  # unknown: ignored
    }
    values = {key: json.dumps(record).encode() for key, record in records.items()}
    limit = envelopes.DLQ_COPY_MAX_BYTES
    for name, size in [("copied", limit - 1000), ("over-copy", limit + 1000),
                       ("over-producer", 1_000_100)]:  # fmt: skip
        key = f"big-{name}".encode()
        body = json.dumps(raw_claim(claim_id="x" * 200)).encode()  # invalid: id too long
        values[key] = body[:-1] + b', "pad": "' + b"p" * (size - len(key) - len(body) - 11) + b'"}'
        assert len(key) + len(values[key]) == size
    return values


async def test_worker_and_sink_take_and_refuse_the_same_claims_and_never_crash(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    """The mix above and every record that once crashed a process, through a worker and a sink.

    Both keep running; both dead-letter exactly the records the one validation refuses, with
    the same reason (records too large to copy by reference); the sink stores every other one.
    """
    database_url = create_database(postgres_url, f"poison_{unique}")
    await asyncio.to_thread(migrate_database, database_url)
    stack = ServiceStack(kafka_bootstrap, database_url, unique, tmp_path)
    s = stack.settings()
    await create_topics(s, kafka_bootstrap)
    rng = random.Random(20261206)
    # The poison first: at the end, the valid one among them would be beyond history.
    values = _poison() | {f"k{i}".encode(): _record(rng, i) for i in range(RECORDS)}
    reasons = {key: _reason(value) for key, value in values.items()}
    refused = {key: reason for key, reason in reasons.items() if reason is not None}
    big = {
        key for key, value in values.items() if len(key) + len(value) > envelopes.DLQ_COPY_MAX_BYTES
    }
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=2**21)
    await producer.start()
    try:
        for key, value in values.items():
            await producer.send(s.topic_claims, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    stack.start("worker")
    stack.start("sink")
    try:

        async def letters(topic: str) -> dict[bytes, Any] | None:
            messages = await read_all(kafka_bootstrap, topic, idle_s=0.5)
            found = {m.key: m for m in messages}
            return found if len(found) >= len(refused) else None

        worker_dlq = await wait_until(lambda: letters(s.topic_claims_dlq), 180, "worker DLQ")
        sink_dlq = await wait_until(lambda: letters(s.topic_sink_dlq), 180, "sink DLQ")

        expected = {_identity(v) for k, v in values.items() if k not in refused}

        async def stored() -> set[tuple[str, str]] | None:
            with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
                query = "SELECT customer_id, claim_id FROM claim_records"
                ids = {(r[0], r[1]) for r in conn.execute(query)}
            return ids if len(ids) >= len(expected) else None

        ids = await wait_until(stored, 180, "the valid claims in Postgres")
        for dlq in (worker_dlq, sink_dlq):
            assert {k: dict(m.headers)["error.reason"].decode() for k, m in dlq.items()} == refused
            assert {k for k, m in dlq.items() if m.value is None} == big
            for key in big:
                headers = dict(dlq[key].headers)
                assert headers["error.by_reference"] == b"true"
                assert int(headers["source.size"]) == len(key) + len(values[key])
        assert ids == expected
        assert stack.procs["worker"].poll() is None
        assert stack.procs["sink"].poll() is None
    finally:
        assert stack.stop_all() == {"worker": 0, "sink": 0}, stack.log("sink")[-3000:]


def _identity(value: bytes) -> tuple[str, str]:
    claim = parse_claim(ValueCodec().decode(value, "ClaimDecided", "claims.decided"))
    return claim.customer_id, claim.claim_id


def _reason(value: bytes) -> str | None:
    """Why the one validation refuses ``value``, or None."""
    try:
        parse_claim(ValueCodec().decode(value, "ClaimDecided", "claims.decided"))
    except (DecodeError, InvalidClaim) as exc:
        return exc.reason
    return None
