"""The sink's loop: a batch's offsets are committed after it is stored, in order, and while the
next batch is being written; a batch that fails is never committed; an alert transition is
never written before its drift event, nor held for one already on its way."""

from __future__ import annotations

import asyncio
import json
from typing import Any, NamedTuple, cast

import pytest

from schemas.codec import encode_single_object
from schemas.registry import ValueCodec
from sinks import service as service_module
from sinks.rows import DRIFT_COLUMNS
from sinks.service import SinkService
from sinks.tables import ALERT_FIELDS
from streams.settings import Settings
from tests.unit.claims import raw_claim
from tests.unit.events import alert_event, drift_event


class _Partition(NamedTuple):
    topic: str
    partition: int


class _Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes


class _Log:
    """What happened, in order: ("write", n), ("written", n), ("commit", n), ("committed", n)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def index(self, event: str, batch: int) -> int:
        return self.events.index((event, batch))


class _Consumer:
    """Polls ``batches`` one by one, then stops the service; a commit takes a while."""

    def __init__(self, batches: int, log: _Log, service: SinkService) -> None:
        self.tp = _Partition("claims.decided", 0)
        self.polled_at: list[float] = []
        self.polls = [
            [self._message(10 * b + i) for i in range(10)] for b in range(batches)
        ]  # fmt: skip
        self.log, self.service = log, service

    @staticmethod
    def _message(offset: int) -> _Message:
        value = json.dumps(raw_claim(claim_id=f"c{offset}")).encode()
        return _Message("claims.decided", 0, offset, b"k", value)

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[_Message]]:
        self.polled_at.append(asyncio.get_running_loop().time())
        if not self.polls:
            self.service.stop()
            return {}
        return {self.tp: self.polls.pop(0)}

    async def commit(self, offsets: dict[Any, int]) -> None:
        batch = offsets[self.tp] // 10 - 1
        self.log.events.append(("commit", batch))
        await asyncio.sleep(0.05)  # a round trip to the group coordinator
        self.log.events.append(("committed", batch))


class _Writer:
    """Writes instantly, except the batch numbered ``fails``, which raises."""

    def __init__(self, log: _Log, fails: int | None = None) -> None:
        self.log, self.fails, self.batches = log, fails, 0

    async def write(self, drift: list[Any], alerts: list[Any], claims: list[Any]) -> None:
        batch = self.batches
        self.batches += 1
        self.log.events.append(("write", batch))
        await asyncio.sleep(0)
        if batch == self.fails:
            raise RuntimeError(f"batch {batch} broke")
        self.log.events.append(("written", batch))


def _service(log: _Log, fails: int | None = None) -> SinkService:
    writer: Any = _Writer(log, fails)
    return SinkService(Settings(), "unused:9092", writer, ValueCodec())


async def test_offsets_commit_in_order_after_their_batch_while_the_next_is_written() -> None:
    log = _Log()
    service = _service(log)
    await service.consume(_Consumer(4, log, service), producer=None)
    for batch in range(4):
        assert log.index("written", batch) < log.index("commit", batch)
    for batch in range(1, 4):
        assert log.index("committed", batch - 1) < log.index("commit", batch)
        # the next batch did not wait for the commit before it
        assert log.index("write", batch) < log.index("committed", batch - 1)
    assert log.events[-1] == ("committed", 3)  # nothing left uncommitted at the stop


async def test_a_batch_that_fails_is_not_committed_and_stops_the_loop() -> None:
    log = _Log()
    service = _service(log, fails=2)
    with pytest.raises(RuntimeError, match="batch 2 broke"):
        await service.consume(_Consumer(5, log, service), producer=None)
    assert [b for event, b in log.events if event == "committed"] == [0, 1]
    assert ("write", 3) not in log.events


async def test_a_loop_polls_at_most_as_often_as_it_is_told() -> None:
    log = _Log()
    service = _service(log)
    consumer = _Consumer(4, log, service)
    await service.consume(consumer, producer=None, poll_every_s=0.03)
    gaps = [b - a for a, b in zip(consumer.polled_at, consumer.polled_at[1:], strict=False)]
    assert len(gaps) == 4
    assert min(gaps) >= 0.03 - 0.001
    assert [b for event, b in log.events if event == "committed"] == [0, 1, 2, 3]


class _EventsConsumer:
    """Polls a drift event, then an alert transition naming it; records any read-on."""

    def __init__(self, service: SinkService) -> None:
        s = service.settings
        self.drift, self.alerts = _Partition(s.topic_drift, 0), _Partition(s.topic_alerts, 0)
        drift = encode_single_object("DriftEvent", drift_event(1))
        alert = encode_single_object("AlertEvent", alert_event("a1", 1, "triggered"))
        self.polls = [
            {self.drift: [_Message(s.topic_drift, 0, 0, b"k", drift)]},
            {self.alerts: [_Message(s.topic_alerts, 0, 0, b"k", alert)]},
        ]
        self.read_on: list[tuple[Any, ...]] = []
        self.service = service

    def assignment(self) -> set[_Partition]:
        return {self.drift, self.alerts}

    async def getmany(
        self, *partitions: Any, timeout_ms: int, max_records: int | None = None
    ) -> dict[Any, list[_Message]]:
        if partitions:  # reading on in drift.events for a drift event not seen
            self.read_on.append(partitions)
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        if not self.polls:
            self.service.stop()
            return {}
        return self.polls.pop(0)

    async def commit(self, offsets: dict[Any, int]) -> None:
        pass


class _SlowWriter:
    """Takes a while per batch; knows which drift events it has committed."""

    def __init__(self) -> None:
        self.written: list[tuple[list[str], list[str]]] = []  # (drift ids, alert ids) per batch
        self.stored: set[str] = set()
        self.asked: list[set[str]] = []

    async def write(self, drift: list[Any], alerts: list[Any], claims: list[Any]) -> None:
        await asyncio.sleep(0.05)  # a transaction's round trips
        self.written.append(([r[DRIFT_COLUMNS.index("event_id")] for r in drift],
                             [r[ALERT_FIELDS.index("alert_id")] for r in alerts]))  # fmt: skip
        self.stored |= {r[DRIFT_COLUMNS.index("event_id")] for r in drift}

    async def stored_drift_events(self, event_ids: set[str]) -> set[str]:
        self.asked.append(set(event_ids))
        return self.stored & event_ids


async def test_an_alert_polled_while_its_drift_event_is_written_neither_waits_nor_asks() -> None:
    writer = _SlowWriter()
    service = SinkService(Settings(), "unused:9092", cast(Any, writer), ValueCodec())
    consumer = _EventsConsumer(service)
    await service.consume(consumer, producer=None)
    assert writer.written == [(["e-1"], []), ([], ["a1"])]  # the drift event first
    assert consumer.read_on == []  # the drift event was in the batch being written
    assert writer.asked == []  # and Postgres was not asked for it


async def test_an_alert_whose_drift_event_was_not_handed_on_asks_postgres() -> None:
    writer = _SlowWriter()
    writer.stored.add("e-1")  # stored by an earlier run of the sink
    service = SinkService(Settings(), "unused:9092", cast(Any, writer), ValueCodec())
    consumer = _EventsConsumer(service)
    consumer.polls.pop(0)  # only the alert is polled
    await service.consume(consumer, producer=None)
    assert writer.asked == [{"e-1"}]
    assert consumer.read_on == []
    assert writer.written == [([], ["a1"])]


async def test_only_the_latest_drift_events_handed_on_are_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service_module, "RECENT_DRIFT_EVENTS", 2)
    writer = _SlowWriter()
    service = SinkService(Settings(), "unused:9092", cast(Any, writer), ValueCodec())
    consumer = _EventsConsumer(service)
    alert = consumer.polls.pop()
    s = service.settings
    for i in (2, 3):  # two more drift events push e-1 out of what the sink remembers
        value = encode_single_object("DriftEvent", drift_event(i))
        consumer.polls.append({consumer.drift: [_Message(s.topic_drift, 0, i, b"k", value)]})
    consumer.polls.append(alert)
    await service.consume(consumer, producer=None)
    assert writer.asked == [{"e-1"}]  # e-1 was stored, as Postgres answers
    assert consumer.read_on == []
