"""Feed health on real Postgres: what each customer's feed sent, counted once however the sink's
batches fall, are written again or redelivered; rejected claims counted by Kafka position."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.dashboard import dashboard
from sinks.feed import rejection_row
from sinks.reports import apply_retention
from sinks.rows import Row, claim_row
from sinks.writer import PostgresWriter
from tests.unit.claims import raw_claim

pytestmark = pytest.mark.integration


def _feed() -> list[Row]:
    """Two customers' claim messages at offsets 0, 1, … of partition 0: acme sends 20 claims,
    resends 5 unchanged, amends 3 and resends one amendment; beta sends 10 and amends one."""
    values = [raw_claim(claim_id=f"a{i}") for i in range(20)]
    values += [raw_claim(claim_id=f"b{i}", customer_id="beta") for i in range(10)]
    values += [raw_claim(claim_id=f"a{i}") for i in range(5)]  # resent
    values += [raw_claim(claim_id=f"a{i}", outcome="DENIED", allowed_amount="0")
               for i in range(5, 8)]  # fmt: skip
    values.append(raw_claim(claim_id="a5", outcome="DENIED", allowed_amount="0"))  # resent
    values.append(raw_claim(claim_id="b0", customer_id="beta", allowed_amount="65.00"))
    return [claim_row(v, 0, offset) for offset, v in enumerate(values)]


# customer -> received, new, resent, amended, invalid
EXPECTED = {"acme": (29, 20, 6, 3, 0), "beta": (11, 10, 0, 1, 0)}


def _totals(url: str) -> dict[str, tuple[int, ...]]:
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        rows = conn.execute(
            "SELECT customer_id, sum(received), sum(new), sum(resent), sum(amended), sum(invalid)"
            " FROM feed_days GROUP BY customer_id"
        ).fetchall()
    return {r[0]: tuple(int(v) for v in r[1:]) for r in rows}


@pytest.mark.parametrize(
    ("batch", "merge_after_conflict", "min_lane_rows"),
    [(100, 0, 1000), (100, 0, 4), (7, 0, 1000), (7, 20, 1000), (5, 0, 2), (1, 0, 1000)],
)
async def test_each_claim_message_counts_once_however_batched_and_redelivered(
    database: tuple[str, AsyncEngine], batch: int, merge_after_conflict: int, min_lane_rows: int
) -> None:
    """The feed in batches of ``batch`` (one: resends and amendments meet in one batch, on the
    straight COPY; small: they meet the stored version, on the merge), over one or two lanes,
    read again from the start after 36 messages (as after a crash before the offsets were
    committed: a batch then holds versions older and newer than the one stored); then every
    message again, shuffled, twice: the counts are the feed's, once."""
    url, engine = database
    started = datetime.now(UTC).date()  # the feed's day, unless midnight passes meanwhile
    writer = PostgresWriter(engine, claim_lanes=2)
    writer.MERGE_AFTER_CONFLICT = merge_after_conflict
    writer.MIN_LANE_ROWS = min_lane_rows
    feed = _feed()
    for part in (feed[:36], feed):
        for start in range(0, len(part), batch):
            await writer.write([], [], part[start : start + batch])
    assert _totals(url) == EXPECTED

    rng = random.Random(7)
    for _ in range(2):
        again = feed[:]
        rng.shuffle(again)
        for start in range(0, len(again), 6):
            await writer.write([], [], again[start : start + 6])
    assert _totals(url) == EXPECTED
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        day, last = conn.execute(
            "SELECT max(day), max(last_received_at) FROM feed_days"
        ).fetchone() or (None, None)
    assert day in {started, datetime.now(UTC).date()}
    assert last is not None
    assert (datetime.now(UTC) - last).total_seconds() < 600


async def test_rejected_claims_count_once_by_their_kafka_position(
    database: tuple[str, AsyncEngine],
) -> None:
    """Rejects stored with their customer when the record names a usable one; a redelivered
    reject (same position) is neither stored nor counted again."""
    url, engine = database
    writer = PostgresWriter(engine)
    rejects = [
        rejection_row(0, 1, raw_claim(claim_id="x1"), "bad_value", "cpt_code is empty"),
        rejection_row(0, 2, raw_claim(claim_id="x\u00002"), "bad_value", "NUL in\u0000claim_id"),
        rejection_row(1, 2, None, "format", "not JSON"),
        rejection_row(1, 3, {"customer_id": "c" * 200}, "bad_value", "too long"),
    ]
    await writer.reject_claims(rejects)
    await writer.reject_claims(rejects[:2])
    assert _totals(url) == {"acme": (0, 0, 0, 0, 2)}
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        stored = conn.execute(
            "SELECT source_partition, source_offset, customer_id, claim_id, reason, detail"
            " FROM claim_rejections ORDER BY 1, 2"
        ).fetchall()
    assert stored == [
        (0, 1, "acme", "x1", "bad_value", "cpt_code is empty"),
        (0, 2, "acme", None, "bad_value", "NUL inclaim_id"),
        (1, 2, None, None, "format", "not JSON"),
        (1, 3, None, None, "bad_value", "too long"),
    ]


async def test_the_dashboard_shows_each_customers_feed_alone(
    database: tuple[str, AsyncEngine],
) -> None:
    """The dashboard's feed: 14 days ending today with this customer's counts, the rates and
    the score by its formula; another customer's feed is not in it."""
    _, engine = database
    started = datetime.now(UTC).date()
    writer = PostgresWriter(engine)
    await writer.write([], [], _feed())
    await writer.reject_claims([rejection_row(0, 99, raw_claim(claim_id="bad"), "bad_value", "x")])
    async with engine.connect() as conn:
        acme = (await dashboard(conn, "acme"))["feed"]
        beta = (await dashboard(conn, "beta"))["feed"]
        nobody = (await dashboard(conn, "nobody"))["feed"]
    today = datetime.now(UTC).date()
    assert acme["days"][-1]["day"] in {started, today}
    assert len(acme["days"]) == 14
    filled = [d for d in acme["days"] if d["received"]]  # one day, unless midnight passed
    assert filled == [{"day": filled[0]["day"], "received": 29, "new": 20, "resent": 6,
                       "amended": 3, "invalid": 1}]  # fmt: skip
    assert acme["received"] == 29
    assert acme["dead_letter_rate"] == pytest.approx(1 / 30)
    assert acme["duplicate_rate"] == pytest.approx(6 / 29)
    assert acme["amendment_rate"] == pytest.approx(3 / 29)
    assert acme["quality_score"] == round(100 * (1 - 1 / 30 - 0.5 * 6 / 29 - 0.25 * 3 / 29), 1)
    assert acme["last_received_at"] is not None
    assert sum(d["received"] for d in beta["days"]) == 11
    assert sum(d["invalid"] for d in beta["days"]) == 0
    assert nobody["last_received_at"] is None
    assert nobody["quality_score"] is None
    assert all(d["received"] == 0 for d in nobody["days"])


async def test_retention_drops_feed_days_wholly_past_the_cutoff_and_older_rejects(
    database: tuple[str, AsyncEngine],
) -> None:
    """By the wall clock alone: a day goes once all of it is before the cutoff (the cutoff's own
    day stays); a reject goes once it is older than the cutoff."""
    url, engine = database
    cutoff = datetime(2026, 1, 10, 12, tzinfo=UTC)
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        conn.execute(
            "INSERT INTO feed_days (customer_id, day, received) VALUES"
            " ('acme', '2026-01-09', 1), ('acme', '2026-01-10', 2), ('acme', '2026-01-11', 3)"
        )
        conn.execute(
            "INSERT INTO claim_rejections (source_partition, source_offset, customer_id, reason,"
            " detail, rejected_at) VALUES (0, 1, 'acme', 'bad_value', 'x', '2026-01-10T11:00Z'),"
            " (0, 2, 'acme', 'bad_value', 'x', '2026-01-10T13:00Z')"
        )
    async with engine.begin() as conn:
        deleted = await apply_retention(conn, cutoff, timedelta(days=90))
    assert (deleted["feed_days"], deleted["claim_rejections"]) == (1, 1)
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        days = [r[0].isoformat() for r in conn.execute("SELECT day FROM feed_days ORDER BY 1")]
        offsets = [r[0] for r in conn.execute("SELECT source_offset FROM claim_rejections")]
    assert days == ["2026-01-10", "2026-01-11"]
    assert offsets == [2]
