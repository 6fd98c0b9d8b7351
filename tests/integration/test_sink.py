"""The sink on real Postgres: idempotent, version-ordered, bulk claims, poison rows to DLQ."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.codec import encode_single_object
from sinks.retrying import REJECTED
from sinks.rows import Row, alert_row, claim_row, drift_row
from sinks.writer import PostgresWriter
from streams.devtools.probes import read_all
from tests.integration.stack import (
    sink_stack,
    table_rows,
    wait_until,
)
from tests.unit.claims import raw_claim
from tests.unit.events import alert_event, drift_event

pytestmark = pytest.mark.integration


def _claims() -> list[Row]:
    rows = [
        claim_row(raw_claim(claim_id=f"c{i}", denial_reason_codes=["CO-97"]), 0, i)
        for i in range(50)
    ]
    # a correction of c3 at a later offset, and a stale redelivery of c4 at an earlier one
    rows.append(claim_row(raw_claim(claim_id="c3", outcome="DENIED", allowed_amount="0"), 0, 90))
    rows.append(claim_row(raw_claim(claim_id="c4", outcome="DENIED", allowed_amount="0"), 0, 1))
    return rows


@pytest.mark.parametrize(
    ("merge_after_conflict", "min_lane_rows", "few_rows"),
    [(0, 1000, 0), (20, 1000, 0), (0, 3, 0), (20, 3, 0), (0, 3, 100)],
)
async def test_every_message_twice_in_shuffled_order_leaves_the_same_tables(
    database: tuple[str, AsyncEngine], merge_after_conflict: int, min_lane_rows: int, few_rows: int
) -> None:
    """Deliver everything twice, shuffled: the tables equal one delivery in order.

    With ``merge_after_conflict`` 0 every redelivered batch first tries the straight COPY and
    falls back to the merge; with 20 the writer stays on the merge path after the first one.
    With ``min_lane_rows`` 3 every batch's claims are written by two transactions at once.
    With ``few_rows`` 100 every batch's drift events and alerts are inserted as values.
    """
    url, engine = database
    writer = PostgresWriter(engine, claim_lanes=2)
    writer.MERGE_AFTER_CONFLICT = merge_after_conflict
    writer.MIN_LANE_ROWS = min_lane_rows
    writer.FEW_ROWS = few_rows
    drifts = [drift_row(drift_event(i)) for i in range(20)]
    alerts = [
        alert_row(alert_event("a1", v, t))
        for v, t in ((1, "triggered"), (2, "updated"), (3, "acknowledged"))
    ]
    alerts.append(alert_row(alert_event("a1", 4, "judged", verdict="true_positive")))
    claims = _claims()
    await writer.write(drifts, alerts, claims)
    once = table_rows(url)

    # Replay on top of the same database: nothing may change.
    rng = random.Random(5)
    for _ in range(2):
        for rows in (drifts, alerts, claims):
            rng.shuffle(rows)
        for start in range(0, 60, 7):
            await writer.write(
                drifts[start : start + 7], alerts[start : start + 7], claims[start : start + 7]
            )
    assert table_rows(url) == once
    assert len(once["claim_records"]) == 50
    by_id = {r[1]: r for r in once["claim_records"]}
    assert by_id["c3"][9] == "DENIED"  # the correction at a later offset won
    assert by_id["c4"][9] == "PAID"  # the stale redelivery did not
    assert once["alert_events"][0][1] == 4  # latest version
    assert [r[1] for r in once["alert_transitions"]] == [1, 2, 3, 4]
    assert once["operator_judgments"][0][3] == "true_positive"


async def test_a_lane_that_fails_leaves_the_others_committed_and_a_rewrite_completes(
    database: tuple[str, AsyncEngine],
) -> None:
    """Claims in two lanes, a row Postgres refuses in the second: the write raises once both
    transactions have ended, the first lane's claims are stored, and writing the batch again
    without the refused row (as the sink's row-by-row path does) stores every claim once."""
    url, engine = database
    writer = PostgresWriter(engine, claim_lanes=2)
    writer.MIN_LANE_ROWS = 5
    good = [claim_row(raw_claim(claim_id=f"g{i}"), 0, i) for i in range(20)]
    row = claim_row(raw_claim(claim_id="g20"), 0, 20)
    refused = (row[0], "nul\u0000byte", *row[2:])  # validation refuses it; Postgres too

    def stored() -> list[str]:
        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            return [r[0] for r in conn.execute("SELECT claim_id FROM claim_records ORDER BY 1")]

    with pytest.raises(REJECTED):
        await writer.write([], [], [*good, refused])  # lanes: good[:11], good[11:] + refused
    assert stored() == sorted(f"g{i}" for i in range(11))
    await writer.write([], [], good)
    assert stored() == sorted(f"g{i}" for i in range(20))


async def test_poison_rows_go_to_sink_dlq_and_the_rest_is_written(
    kafka_bootstrap: str, postgres_url: str, unique: str, tmp_path: Path
) -> None:
    """A NUL byte, a date past 2099 and an undecodable value: dead-lettered; the rest stored,
    and the rejected claims counted in their customer's feed."""
    database_url, stack, s = await sink_stack(
        kafka_bootstrap, postgres_url, "sinkdlq", unique, tmp_path
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    for i in range(30):
        await producer.send_and_wait(
            s.topic_claims, json.dumps(raw_claim(claim_id=f"ok{i}")).encode(), key=f"ok{i}".encode()
        )
    await producer.send_and_wait(
        s.topic_claims, json.dumps(raw_claim(claim_id="nul\u0000byte")).encode(), key=b"nul"
    )
    far_future = raw_claim(claim_id="future", decided_date="9999-12-31")  # the bulk path's CHECK
    await producer.send_and_wait(s.topic_claims, json.dumps(far_future).encode(), key=b"future")
    await producer.send_and_wait(s.topic_drift, b"\x07 not avro", key=b"junk")
    await producer.send_and_wait(
        s.topic_drift, encode_single_object("DriftEvent", drift_event(1)), key=b"good-drift"
    )
    await producer.stop()
    stack.start("sink")
    try:

        async def stored() -> bool:
            dump = await asyncio.to_thread(table_rows, database_url)
            return len(dump["claim_records"]) == 30 and len(dump["drift_events"]) == 1

        await wait_until(stored, 60, "the good rows in Postgres")

        async def dead() -> dict[bytes, bytes] | None:
            messages = await read_all(kafka_bootstrap, s.topic_sink_dlq, idle_s=0.5)
            found = {m.key: dict(m.headers)["error.reason"] for m in messages}
            return found if len(found) >= 3 else None

        found = await wait_until(dead, 60, "three dead letters")
        assert found == {b"nul": b"bad_value", b"junk": b"format",
                         b"future": b"bad_value"}  # fmt: skip
        # The rejected claims (not the drift event) count in their customer's feed health; the
        # NUL-bearing claim id is not kept. They were stored before they were dead-lettered.
        dump = await asyncio.to_thread(table_rows, database_url)
        assert dump["feed_days"] == [("acme", 30, 30, 0, 0, 2)]
        assert sorted(((r[2], r[3], r[4]) for r in dump["claim_rejections"]), key=repr) == [
            ("acme", "future", "bad_value"), ("acme", None, "bad_value")
        ]  # fmt: skip
    finally:
        assert stack.stop_all() == {"sink": 0}, stack.log("sink")[-3000:]


async def test_read_side_queries_against_fixtures(database: tuple[str, AsyncEngine]) -> None:
    """Active alerts, filtered and paginated drift events, and the monthly denial trend."""
    from datetime import UTC, date, datetime
    from decimal import Decimal

    from sinks.queries import DriftFilter, active_alerts, drift_events_page, monthly_denial_trend

    _, engine = database
    writer = PostgresWriter(engine)
    claims = [
        claim_row(
            raw_claim(
                claim_id=f"{month}-{payer}-{i}",
                payer_id=payer,
                decided_date=f"2026-{month:02d}-10",
                outcome="DENIED" if i < denied else "PAID",
            ),
            0,
            month * 100 + i,
        )
        for month, payer, n, denied in ((1, "p1", 10, 1), (2, "p1", 10, 4), (2, "p2", 5, 0))
        for i in range(n)
    ]
    claims.append(
        claim_row(raw_claim(claim_id="pended", decided_date="2026-02-11", outcome="PENDED"), 0, 999)
    )
    drifts = [
        drift_row(dict(drift_event(i), severity_level=("info", "warning", "critical")[i % 3]))
        for i in range(9)
    ]
    alerts = [
        alert_row(alert_event("open", 1, "triggered")),
        alert_row(alert_event("done", 2, "resolved", status="resolved")),
    ]
    await writer.write(drifts, alerts, claims)
    async with engine.connect() as conn:
        assert [a["alert_id"] for a in await active_alerts(conn, "acme")] == ["open"]
        assert await active_alerts(conn, "other") == []

        critical = await drift_events_page(conn, "acme", DriftFilter("critical"))
        assert [d["event_id"] for d in critical] == ["e-8", "e-5", "e-2"]
        first = await drift_events_page(conn, "acme", DriftFilter(payer_id="p1"), limit=2)
        assert [d["event_id"] for d in first] == ["e-7", "e-4"]
        cursor = (first[-1]["detected_at"], first[-1]["event_id"])
        rest = await drift_events_page(conn, "acme", DriftFilter(payer_id="p1"), before=cursor)
        assert [d["event_id"] for d in rest] == ["e-1"]
        since = datetime.fromtimestamp(5 * 86_400, tz=UTC)
        recent = await drift_events_page(conn, "acme", DriftFilter(since=since))
        assert {d["event_id"] for d in recent} == {"e-5", "e-6", "e-7", "e-8"}

        trend = await monthly_denial_trend(conn, "acme", date(2026, 1, 1), date(2026, 3, 1))
        rows = [
            (str(r["month"]), r["payer_id"], r["decided"], r["denied"], r["denial_rate"])
            for r in trend
        ]
        assert rows == [
            ("2026-01-01", "p1", 10, 1, Decimal("0.1000")),
            ("2026-02-01", "p1", 10, 4, Decimal("0.4000")),
            ("2026-02-01", "p2", 5, 0, Decimal("0.0000")),
            ("2026-02-01", "payer-a", 0, 0, None),  # only a PENDED claim: nothing decided
        ]


HOSTILE = [
    "'; DROP TABLE claim_records; --", 'quote " and \\ backslash', "\\N", "tab\there",
    "new\nline", "carriage\rreturn", "comma, {brace} [bracket]", "😀 émoji ünï", "%s %(x)s",
    "$1", "NULL", "a" * 128,
]  # fmt: skip


@pytest.mark.parametrize("few_rows", [0, 100], ids=["copied", "inserted-as-values"])
async def test_hostile_strings_in_every_field_are_stored_verbatim(
    database: tuple[str, AsyncEngine], few_rows: int
) -> None:
    """COPY escaping and bound parameters: every text field round-trips byte for byte (the
    drift and alert rows copied, then inserted as values)."""
    url, engine = database
    writer = PostgresWriter(engine)
    writer.FEW_ROWS = few_rows
    claims, drift, alerts = [], [], []
    for i, text in enumerate(HOSTILE):
        short = text[:32]
        if text.isprintable():  # claim validation refuses control characters
            record = raw_claim(
                claim_id=f"h{i}-{text}"[:128], customer_id=short, payer_id=short.replace("|", "/"),
                payer_name=text, place_of_service=short, denial_reason_codes=[text, short],
            )  # fmt: skip
            claims.append(claim_row(record, 0, i))
        drift.append(
            drift_row(drift_event(i) | {"event_id": f"e{i}-{short}", "payer_id": text[:120]})
        )
        alerts.append(alert_row(alert_event(f"a{i}-{short}", 1, "triggered")
                                | {"message": text, "acknowledged_by": text}))  # fmt: skip
    await writer.write(drift, alerts, claims)
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        stored = {r[0]: r[1:] for r in conn.execute(
            "SELECT claim_id, customer_id, payer_name, place_of_service, denial_reason_codes "
            "FROM claim_records")}  # fmt: skip
        messages = {r[0]: r[1:] for r in conn.execute(
            "SELECT alert_id, message, acknowledged_by FROM alert_events")}  # fmt: skip
        payers = {r[0]: r[1] for r in conn.execute("SELECT event_id, payer_id FROM drift_events")}
        assert conn.execute("SELECT count(*) FROM claim_records").fetchone() == (len(claims),)
    for i, text in enumerate(HOSTILE):
        short = text[:32]
        if text.isprintable():
            assert stored[f"h{i}-{text}"[:128]] == (short, text, short, [text, short])
        assert messages[f"a{i}-{short}"] == (text, text)
        assert payers[f"e{i}-{short}"] == text[:120]
