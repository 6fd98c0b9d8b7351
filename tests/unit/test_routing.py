"""The route stage's plan for a batch: what it refuses and why, where each claim goes."""

import json
from dataclasses import dataclass
from typing import Any

from schemas.registry import ValueCodec
from streams.domain.processor import ClaimFromSource
from streams.kafka import envelopes
from streams.kafka.partitioner import default_partition
from streams.stages.routing import CHUNK_CLAIMS, Router
from tests.unit.claims import raw_claim


@dataclass(frozen=True)
class Message:
    partition: int
    offset: int
    value: bytes


def _value(**overrides: Any) -> bytes:
    return json.dumps(raw_claim(**overrides)).encode()


def _router(partitions: int = 4) -> Router:
    return Router(ValueCodec(), "claims.decided", partitions)


def _routed(by_key: list[tuple[int, bytes]]) -> list[tuple[int, ClaimFromSource]]:
    """(partition, arrival) for every claim of every by-key message, in order."""
    return [
        (partition, arrival)
        for partition, value in by_key
        for arrival in envelopes.arrivals(envelopes.loads(value))
    ]


def test_refused_claims_carry_stage_and_reason_and_valid_ones_go_on() -> None:
    """Undecodable bytes fail at decode, a bad claim at validate; the others — however late —
    ride to their customer's partition with the partition and offset they were read at."""
    router = _router()
    messages = [
        Message(0, 10, _value(claim_id="a", decided_date="2026-03-10")),
        Message(0, 11, b"{not json"),
        Message(0, 12, _value(claim_id="b", outcome="MAYBE")),
        Message(
            0, 13, _value(claim_id="c", submitted_date="2025-02-20", decided_date="2025-03-01")
        ),  # a year behind
        Message(0, 14, _value(claim_id="d", decided_date="2026-03-09", outcome="DENIED")),
    ]
    plan = router.plan(messages, sources=1)
    assert [(r.message.offset, r.stage, r.reason) for r in plan.refused] == [
        (11, "decode", "json"),
        (12, "validate", "bad_value"),
    ]
    assert all(r.detail for r in plan.refused)
    routed = _routed(plan.by_key)
    assert [(a.claim.claim_id, a.source, a.sources, a.offset) for _, a in routed] == [
        ("a", 0, 1, 10), ("c", 0, 1, 13), ("d", 0, 1, 14)
    ]  # fmt: skip
    assert {p for p, _ in routed} == {default_partition(b"acme", 4)}
    assert plan.outcomes == {"PAID": 2, "DENIED": 1}


def test_a_customer_s_claims_all_go_to_one_partition_in_their_order() -> None:
    """Every key of a customer in one windows partition: its watermark and its family of
    tests live there. Claims keep the order of the batch, sources mixed."""
    router = _router(partitions=8)
    messages = [
        Message(
            i % 3,
            100 + i,
            _value(claim_id=f"c{i}", customer_id=f"cust-{i % 5}", payer_id=f"payer-{i % 7}"),
        )
        for i in range(60)
    ]
    plan = router.plan(messages, sources=3)
    routed = _routed(plan.by_key)
    for customer in (f"cust-{n}" for n in range(5)):
        mine = [(p, a.offset) for p, a in routed if a.claim.customer_id == customer]
        assert {p for p, _ in mine} == {default_partition(customer.encode(), 8)}
        assert [o for _, o in mine] == sorted(o for _, o in mine)
    assert len(plan.by_key) == len({p for p, _ in routed})  # one message per partition


def test_a_large_partition_is_chunked_in_order() -> None:
    """More than CHUNK_CLAIMS claims for one partition: several messages, in order."""
    router = _router(partitions=1)
    count = CHUNK_CLAIMS * 2 + 1
    messages = [Message(0, i, _value(claim_id=f"c{i}")) for i in range(count)]
    plan = router.plan(messages, sources=1)
    envelopes_sent = [json.loads(value) for _, value in plan.by_key]
    assert [len(e["claims"]) for e in envelopes_sent] == [CHUNK_CLAIMS, CHUNK_CLAIMS, 1]
    offsets = [offset for e in envelopes_sent for _, offset, _ in e["claims"]]
    assert offsets == list(range(count))


def test_a_batch_of_refusals_sends_no_by_key_message() -> None:
    router = _router()
    plan = router.plan([Message(1, 0, b"\xff"), Message(1, 1, b'{"claim_id": "x"}')], sources=2)
    assert [r.stage for r in plan.refused] == ["decode", "validate"]
    assert plan.by_key == []
