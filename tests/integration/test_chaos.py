"""``kill -9`` the worker again and again while real claim feeds stream: every output, field for
field, equals an uninterrupted run's.

Three customers share ``claims.decided`` (on time, a remittance feed 5–20 days late, one
onboarding its history mid-stream), with resends, corrections, invalid claims and claims beyond
their customer's history among them. The worker is killed half of the times right after it
reports ready (a restart's recovery, its first batches), half at a random moment 1–8 s after.
Compared with the clean run: every drift event and alert transition (each id must carry the
one payload of the clean run, however often a restart sent it again), every dead letter (key,
value and headers), and every row a sink writes from each run's topics into Postgres. The first
difference is printed.

It runs on the suite's broker: Tansu in ``make test``, Apache Kafka in ``make test-kafka``;
``make chaos`` runs more kills on both. ``UPSTREAM_CHAOS_KILLS`` sets the kills,
``UPSTREAM_CHAOS_SEED`` replays a run (the seed is printed).
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from schemas.registry import ValueCodec
from streams.app.services import migrate_database
from streams.devtools.generator import Scenario, generate_mix, produce
from streams.devtools.probes import read_all
from streams.kafka.topics import create_topics
from tests.integration.stack import (
    ServiceStack,
    create_database,
    table_rows,
    wait_consumed,
    wait_until,
    worker_stack,
)

pytestmark = pytest.mark.integration

FEEDS = {"lab": "on-time", "remit": "remittance", "onboard": "onboarding"}
SCENARIOS = [
    Scenario("denial-spike", customer, days=100, spike_day=70, claims_per_key_per_day=8,
             seed=60 + n, feed=feed, onboard_day=75, late_fraction=0.05,
             very_late_fraction=0.01, resend_fraction=0.03, correction_fraction=0.02)
    for n, (customer, feed) in enumerate(FEEDS.items())
]  # fmt: skip
PRODUCE_S = 30.0  # the claims are produced over this long, the kills falling in and after it
READY = "[^Worker]: Ready"  # what the worker logs once it has recovered and starts consuming


def _claims() -> list[dict[str, Any]]:
    """The feeds' claims, with invalid claims and claims beyond history among them."""
    claims = generate_mix(SCENARIOS)
    lab = [c for c in claims if c["customer_id"] == "lab" and c["decided_date"] < "2026-01-05"]
    out: list[dict[str, Any]] = []
    for i, claim in enumerate(claims):
        out.append(claim)
        if i % 500 == 250:  # invalid: dead-lettered by the route
            out.append({**claim, "claim_id": f"bad-{i}", "outcome": "MAYBE"})
    tail = len(out) - len(out) // 10  # beyond the lab's history by then: dead-lettered
    resent = [{**c, "claim_id": f"old-{n}"} for n, c in enumerate(lab[:40])]
    return out[:tail] + resent + out[tail:]


CLAIMS = _claims()
VALID_MESSAGES = sum(c["outcome"] != "MAYBE" for c in CLAIMS)  # what the sink counts received


async def _outputs(stack: ServiceStack) -> dict[str, Any]:
    """Every payload sent per drift event id and per alert (id, version); every dead letter."""
    s, codec = stack.settings(), ValueCodec()
    drifts: dict[str, list[Any]] = defaultdict(list)
    for m in await read_all(stack.bootstrap, s.topic_drift):
        record = codec.decode(m.value, "DriftEvent", s.topic_drift)
        if record not in drifts[record["event_id"]]:
            drifts[record["event_id"]].append(record)
    alerts: dict[tuple[str, int], list[Any]] = defaultdict(list)
    for m in await read_all(stack.bootstrap, s.topic_alerts):
        record = codec.decode(m.value, "AlertEvent", s.topic_alerts)
        if record not in alerts[(record["alert_id"], record["version"])]:
            alerts[(record["alert_id"], record["version"])].append(record)
    # A set: a restart may dead-letter again what the killed worker had dead-lettered. Every
    # header but the topic's name, which is the run's own.
    dlq = {
        (m.key, m.value, tuple(sorted(h for h in m.headers if h[0] != "source.topic")))
        for m in await read_all(stack.bootstrap, s.topic_claims_dlq)
    }
    return {"drifts": dict(drifts), "alerts": dict(alerts), "dlq": dlq}


def first_difference(expected: dict[str, Any], actual: dict[str, Any]) -> str | None:
    """The first way ``actual`` differs from ``expected`` (outputs of :func:`_outputs` or
    tables), in words; None if they are equal."""
    for part in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(part), actual.get(part)
        if want == got:
            continue
        if isinstance(want, dict) and isinstance(got, dict):
            for key in sorted(want.keys() | got.keys(), key=repr):
                if key not in got:
                    return f"{part}: {key!r} missing; the clean run has {want[key]!r}"
                if key not in want:
                    return f"{part}: {key!r} extra: {got[key]!r}"
                if want[key] != got[key]:
                    return f"{part}: {key!r} is {got[key]!r}; the clean run has {want[key]!r}"
        if isinstance(want, set | list) and isinstance(got, set | list):
            missing = [x for x in want if x not in got]
            extra = [x for x in got if x not in want]
            return (f"{part}: {len(missing)} missing, {len(extra)} extra; first missing "
                    f"{missing[:1]!r}, first extra {extra[:1]!r}")  # fmt: skip
        return f"{part}: {got!r} instead of {want!r}"
    return None


async def _stream(stack: ServiceStack, duration_s: float) -> asyncio.Task[int]:
    s = stack.settings()
    return asyncio.create_task(
        produce(SCENARIOS[0], stack.bootstrap, s.topic_claims, claims=CLAIMS, duration_s=duration_s)
    )


async def _finish(stack: ServiceStack) -> dict[str, Any]:
    await wait_consumed(stack, len(CLAIMS))
    return await _outputs(stack)


async def _sink_tables(
    stack: ServiceStack,
    postgres_url: str,
    name: str,
    tmp_path: Path,
    expected: dict[str, int],
    received: int = VALID_MESSAGES,
) -> dict[str, list[tuple[Any, ...]]]:
    """Run a sink over the topics of ``stack`` into a new database; its tables, once they hold
    ``expected`` rows."""
    url = create_database(postgres_url, name)
    await asyncio.to_thread(migrate_database, url)
    await asyncio.to_thread(tmp_path.mkdir, parents=True, exist_ok=True)
    sink = ServiceStack(stack.bootstrap, url, stack.suffix, tmp_path)
    sink.start("sink")
    try:

        async def stored() -> dict[str, list[tuple[Any, ...]]] | None:
            rows = await asyncio.to_thread(table_rows, url)
            counted = sum(r[1] for r in rows["feed_days"])  # every valid claim message received
            done = counted == received and all(len(rows[t]) == n for t, n in expected.items())
            return rows if done else None

        return await wait_until(stored, 120, f"the sink to store {expected}")
    finally:
        assert sink.stop_all() == {"sink": 0}, sink.log("sink")[-3000:]


@pytest.fixture(scope="module")
async def clean(
    kafka_bootstrap: str, postgres_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The outputs and sink tables of a worker nothing interrupts."""
    tmp = tmp_path_factory.mktemp("clean")
    stack = worker_stack(kafka_bootstrap, f"clean{uuid.uuid4().hex[:10]}", tmp, "")
    await create_topics(stack.settings(), kafka_bootstrap)
    stack.start("worker")
    try:
        producing = await _stream(stack, 0.0)
        await producing
        result = await _finish(stack)
    finally:
        assert stack.stop_all() == {"worker": 0}, stack.log("worker")[-3000:]
    assert {r[0]["customer_id"] for r in result["drifts"].values()} == set(FEEDS)
    assert all(len(payloads) == 1 for payloads in result["drifts"].values())
    reasons = {dict(headers)["error.reason"] for _, _, headers in result["dlq"]}
    assert reasons == {b"bad_value", b"beyond_history"}  # both kinds of dead letter happen
    expected = {
        "drift_events": len(result["drifts"]), "alert_transitions": len(result["alerts"]),
        "claim_records": len({(c["customer_id"], c["claim_id"]) for c in CLAIMS
                              if c["outcome"] != "MAYBE"}),
        "claim_rejections": sum(c["outcome"] == "MAYBE" for c in CLAIMS),
    }  # fmt: skip
    result["expected_rows"] = expected
    result["tables"] = await _sink_tables(stack, postgres_url, f"clean_{stack.suffix}",
                                          tmp / "sink", expected)  # fmt: skip
    return result


async def _ready_again(stack: ServiceStack, before: int) -> None:
    """Wait until the worker's log says it is ready for the ``before + 1``-th time."""

    async def ready() -> bool:
        return stack.log("worker").count(READY) > before

    await wait_until(ready, 120, "the worker to report ready", interval_s=0.05)


async def test_worker_sigkilled_again_and_again_gives_the_clean_outputs_field_for_field(
    kafka_bootstrap: str, postgres_url: str, clean: dict[str, Any], unique: str, tmp_path: Path
) -> None:
    """Kills right after ready and at random moments while the feeds stream; then the same
    drift events, alert transitions, dead letters and Postgres rows as the clean run."""
    kills = int(os.environ.get("UPSTREAM_CHAOS_KILLS", "6"))
    seed = int(os.environ.get("UPSTREAM_CHAOS_SEED", str(random.randrange(1 << 30))))
    print(f"chaos: {kills} kills, UPSTREAM_CHAOS_SEED={seed}")
    rng = random.Random(seed)
    stack = worker_stack(kafka_bootstrap, unique, tmp_path, "")
    await create_topics(stack.settings(), kafka_bootstrap)
    stack.start("worker")
    producing = await _stream(stack, PRODUCE_S)
    try:
        for kill in range(kills):
            await _ready_again(stack, kill)
            right_after_ready = kill % 2 == 0
            await asyncio.sleep(rng.uniform(0.0, 0.3) if right_after_ready else rng.uniform(1, 8))
            assert stack.procs["worker"].poll() is None, stack.log("worker")[-3000:]
            stack.kill("worker")
            when = "right after ready" if right_after_ready else "at random"
            print(f"chaos: kill {kill + 1} {when}, producer done: {producing.done()}")
            stack.start("worker")
        await producing
        result = await _finish(stack)
    finally:
        producing.cancel()
        assert stack.stop_all() == {"worker": 0}, stack.log("worker")[-3000:]
    differences = [first_difference({part: clean[part]}, {part: result[part]})
                   for part in ("drifts", "alerts", "dlq")]  # fmt: skip
    assert differences == [None] * 3, f"seed {seed}: {differences}"
    tables = await _sink_tables(stack, postgres_url, f"chaos_{unique}", tmp_path / "sink",
                                clean["expected_rows"])  # fmt: skip
    difference = first_difference(clean["tables"], tables)
    assert difference is None, f"seed {seed}: {difference}"
