"""The route stage's plan for a batch: what it refuses and why, where each claim goes."""

import json
from dataclasses import dataclass
from typing import Any

from schemas.registry import ValueCodec
from streams import envelopes
from streams.domain.processor import ClaimFromSource, SourceProgressed
from streams.domain.windows import SourceClock
from streams.routing import CHUNK_CLAIMS, Router
from streams.state import default_partition
from tests.unit.claims import raw_claim

DAY_MS = 86_400_000
GRACE_MS = 3 * DAY_MS


@dataclass(frozen=True)
class Message:
    partition: int
    offset: int
    value: bytes
    tp: Any = None


def _value(**overrides: Any) -> bytes:
    return json.dumps(raw_claim(**overrides)).encode()


def _router(partitions: int = 4) -> tuple[Router, dict[int, SourceClock], list[tuple[int, int]]]:
    clocks: dict[int, SourceClock] = {}
    asked: list[tuple[int, int]] = []

    def clock_of(source: int, offset: int) -> SourceClock:
        asked.append((source, offset))
        return clocks.setdefault(source, SourceClock(GRACE_MS, DAY_MS))

    return Router(ValueCodec(), "claims.decided", partitions, clock_of), clocks, asked


def _routed(by_key: list[tuple[int, bytes]]) -> list[tuple[int, Any]]:
    """(partition, arrival) for every arrival of every by-key message, in order."""
    return [
        (partition, arrival)
        for partition, value in by_key
        for arrival, _ in envelopes.arrivals(envelopes.loads(value), "claims.decided")
    ]


def test_refused_claims_carry_stage_and_reason_and_valid_ones_go_on() -> None:
    """Undecodable bytes fail at decode, a bad claim at validate, a late one at route; the
    others ride to their window key's partition."""
    router, _, _ = _router()
    messages = [
        Message(0, 10, _value(claim_id="a", decided_date="2026-03-10")),
        Message(0, 11, b"{not json"),
        Message(0, 12, _value(claim_id="b", outcome="MAYBE")),
        Message(0, 13, _value(claim_id="c", decided_date="2026-03-01")),  # 9 days behind
        Message(0, 14, _value(claim_id="d", decided_date="2026-03-09", outcome="DENIED")),
    ]
    plan = router.plan(messages, sources=1)
    assert [(r.message.offset, r.stage, r.reason) for r in plan.refused] == [
        (11, "decode", "json"),
        (12, "validate", "bad_value"),
        (13, "route", "late"),
    ]
    assert all(r.detail for r in plan.refused)
    claims = [a for _, a in _routed(plan.by_key) if isinstance(a, ClaimFromSource)]
    assert [(c.claim.claim_id, c.source, c.sources) for c in claims] == [("a", 0, 1), ("d", 0, 1)]
    expected = default_partition(claims[0].claim.window_key.encode(), 4)
    assert {p for p, a in _routed(plan.by_key) if isinstance(a, ClaimFromSource)} == {expected}
    # The late claim was valid: it counts among the outcomes, as it did before.
    assert plan.outcomes == {"PAID": 2, "DENIED": 1}


def test_every_partition_hears_each_sources_progress() -> None:
    """Each windows partition gets every source's max event time, claims or not; the clock
    is asked for once per source and batch, at the source's first offset in it."""
    router, clocks, asked = _router()
    messages = [
        Message(0, 5, _value(claim_id="a", decided_date="2026-03-10")),
        Message(2, 7, _value(claim_id="b", decided_date="2026-03-12")),
        Message(0, 6, _value(claim_id="c", decided_date="2026-03-11")),
    ]
    plan = router.plan(messages, sources=3)
    assert asked == [(0, 5), (2, 7)]
    assert {s: (seen.last_offset, seen.clock) for s, seen in plan.sources.items()} == {
        0: (6, clocks[0]),
        2: (7, clocks[2]),
    }
    progress = {
        (partition, a.source, a.max_event_ms)
        for partition, a in _routed(plan.by_key)
        if isinstance(a, SourceProgressed)
    }
    c0, c2 = clocks[0].max_event_ms, clocks[2].max_event_ms
    assert c0 is not None and c2 is not None and c2 > c0
    assert progress == {(p, s, ms) for p in range(4) for s, ms in ((0, c0), (2, c2))}


def test_a_large_partition_is_chunked_with_progress_on_its_last_message() -> None:
    """More than CHUNK_CLAIMS claims for one partition: several messages, in order, and only
    the last carries the progress."""
    router, _, _ = _router(partitions=1)
    count = CHUNK_CLAIMS * 2 + 1
    messages = [Message(0, i, _value(claim_id=f"c{i}")) for i in range(count)]
    plan = router.plan(messages, sources=1)
    envelopes_sent = [json.loads(value) for _, value in plan.by_key]
    assert [len(e["claims"]) for e in envelopes_sent] == [CHUNK_CLAIMS, CHUNK_CLAIMS, 1]
    assert [bool(e["progress"]) for e in envelopes_sent] == [False, False, True]
    offsets = [offset for e in envelopes_sent for _, offset, _ in e["claims"]]
    assert offsets == list(range(count))


def test_a_batch_of_refusals_sends_no_by_key_message() -> None:
    """Nothing valid, no clock moved: no progress to tell, so no message at all."""
    router, _, _ = _router()
    plan = router.plan([Message(1, 0, b"\xff"), Message(1, 1, b'{"claim_id": "x"}')], sources=2)
    assert [r.stage for r in plan.refused] == ["decode", "validate"]
    assert plan.by_key == []
