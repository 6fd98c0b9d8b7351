"""Faust tables used as plain changelog-backed storage, and the domain stores built on them."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from json.encoder import encode_basestring_ascii
from typing import Any

import faust
from aiokafka.producer.message_accumulator import BatchBuilder
from faust.serializers import codecs

from streams.domain.alerts import AlertState
from streams.domain.drift import DriftConfig
from streams.domain.partition import PartitionWindows
from streams.domain.processor import Pending, StepResult
from streams.domain.windows import KeyWindows, packed_bucket
from streams.kafka.partitioner import default_partition
from streams.observability.metrics import CHANGELOG_SPLIT_FLUSHES

log = logging.getLogger("upstream.worker")
# Windows table keys. Values carry their partition, so a partition can be rebuilt by a scan.
WATERMARK = "w|"  # w|<customer> → {"partition": p, watermark..., "released_through": ...}
OFFSETS = "o|"  # o|<partition> → [partition, last offset applied of source 0, 1, ... (-1: none)]
BUCKET = "b|"  # b|<bucket>|<window key> → [partition, *sums]
CLAIM = "c|"  # c|<claim hash>|<window key> → [partition, packed contribution]
PENDING = "p|"  # p|<source>|<offset>|<window key> → [partition, effective, claim hash, packed]


class _StandardJson(codecs.Codec):
    """JSON through the standard library, whatever else is installed.

    Faust's own ``json`` codec switches to orjson when it is importable, and orjson refuses
    integers wider than 64 bits; packed window contributions are wider.
    """

    def _dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def _loads(self, s: bytes) -> Any:
        return json.loads(s)


TABLE_SERIALIZER = "upstream-json"
codecs.register(TABLE_SERIALIZER, _StandardJson())


class StandardJsonTable(faust.Table):  # type: ignore[type-arg]
    """A Faust table whose keys and values are JSON through :class:`_StandardJson`."""

    def _serializer_from_type(self, typ: Any) -> str:  # noqa: ARG002 - Faust's hook
        return TABLE_SERIALIZER


class ChangelogTable:
    """A Faust table used as plain changelog-backed storage with explicit partitions.

    Faust's own ``table[k] = v`` picks the changelog partition from the implicit current event,
    and sends every record through its producer buffer one by one (which also throttles the
    consumer once the buffer fills). Here every write names its partition and is kept until
    :meth:`flush`; the records are the ones Faust writes (JSON keys and values, ``None`` for a
    tombstone), so Faust's recovery reads them back unchanged.

    A flush is atomic per partition for everything but tombstones: a partition's values go out
    as *one* Kafka record batch, which the broker appends whole or not at all, so a process
    killed mid-flush leaves the partition's state as the previous flush or this one left it,
    never a mix (a mix — a bucket counted, the claim id that marks it counted missing — made a
    successor count replayed claims twice). Tombstones follow once the values are delivered, in
    as many batches as they need, and the flush does not wait for them (the next one checks
    they went out): an owner must be able to lose them (``WindowsState`` drops
    records its watermark has pruned when it loads, and deletes them again).
    """

    def __init__(self, table: Any, producer: Callable[[], Any]) -> None:
        self._table = table
        self._producer = producer  # the app's aiokafka producer, once it has started
        self._pending: dict[str, tuple[int, bytes | None]] = {}  # key → (partition, value)
        self._tombstones: list[Awaitable[Any]] = []  # the last flush's, delivery not awaited

    def get(self, key: str) -> Any:
        """The stored value, or None."""
        return self._table.data.get(key)

    @property
    def pending(self) -> int:
        """Records waiting for the next :meth:`flush`."""
        return len(self._pending)

    def put(self, partition: int, key: str, value: Any, *, keep: bool = True) -> None:
        """Store ``value``; its changelog record (partition ``partition``) waits for flush.

        With ``keep`` false the value is not kept in memory: the caller holds it in a form of
        its own (see :meth:`drop`).
        """
        if keep:
            self._table.data[key] = value
        self._pending[key] = (partition, _dump(value))

    def drop(self, keys: Iterable[str]) -> None:
        """Forget ``keys`` in memory only; their changelog records stay.

        For what Faust's recovery loaded and the caller now holds in its own form. Faust's
        memory store also remembers the partition of each key it recovered: dropped as well.
        """
        store = self._table.data
        partitions = getattr(store, "_key_partition", {})
        for key in keys:
            store.pop(key, None)
            partitions.pop(key, None)

    def read_again_from_start(self) -> None:
        """Have Faust's next recovery read this table's changelog from its start, also for the
        partitions it keeps (it would resume those from where its last recovery stopped)."""
        topic = self._table.changelog_topic.get_topic_name()
        recovery = self._table.app.tables.recovery  # TableManager's; not in TableManagerT
        offsets = recovery.active_offsets  # changelog partition → offset read up to
        for tp in [tp for tp in offsets if tp.topic == topic]:
            del offsets[tp]

    def delete(self, partition: int, key: str) -> None:
        """Remove ``key``; a tombstone waits for flush."""
        self._table.data.pop(key, None)
        self._pending[key] = (partition, None)

    def items(self) -> Iterable[tuple[str, Any]]:
        """Every stored item (all assigned partitions)."""
        return list(self._table.data.items())

    async def flush(self) -> None:
        """Write the pending records (see the class); return once the values are delivered."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        producer = self._producer()
        topic = self._table.changelog_topic.get_topic_name()
        values: dict[int, list[tuple[bytes, bytes | None]]] = {}
        tombstones: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for key, (partition, value) in pending.items():
            if value is None:
                tombstones.setdefault(partition, []).append((_dump(key), None))
            else:
                values.setdefault(partition, []).append((_dump(key), value))
        previous, self._tombstones = self._tombstones, []
        await asyncio.gather(*previous)  # the last flush's tombstones: raise if one failed
        await asyncio.gather(*await _send_batches(producer, topic, values, atomic=True))
        # Not awaited here (a crash may lose them, see the class): no round trip per flush.
        self._tombstones = await _send_batches(producer, topic, tombstones, atomic=False)


async def send_keyed(
    producer: Any, topic: str, records: list[tuple[bytes, bytes]]
) -> list[Awaitable[Any]]:
    """Queue ``records`` to ``topic``, each to the partition Kafka's default partitioner picks
    for its key (murmur2), in order; return the futures of their delivery.

    Record batches per partition, as a changelog flush writes them, instead of one send per
    record through Faust: a bucket close sends an evaluation for every key of its partition,
    and Faust's send path (a pending message, sensors, callbacks) costs tens of microseconds a
    record, which the batch that closed waits for.
    """
    if not records:
        return []
    partitions = sorted(await producer.partitions_for(topic))
    by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for key, value in records:
        partition = partitions[default_partition(key, len(partitions))]
        by_partition.setdefault(partition, []).append((key, value))
    return await _send_batches(producer, topic, by_partition, atomic=False)


async def _send_batches(
    producer: Any,
    topic: str,
    by_partition: Mapping[int, list[tuple[bytes, bytes | None]]],
    atomic: bool,
) -> list[Awaitable[Any]]:
    """Queue the records as record batches (see :func:`_record_batches`); the futures of their
    delivery."""
    delivered = []
    for partition, records in by_partition.items():
        for batch in _record_batches(producer, records, topic, partition, atomic):
            delivered.append(await producer.send_batch(batch, topic, partition=partition))
    return delivered


# One record batch must stay under the broker's message.max.bytes (Kafka's default: 1 MiB + 12).
ATOMIC_BATCH_BYTES = 1_000_000


def _record_batches(
    producer: Any, records: list[tuple[bytes, bytes | None]], topic: str, partition: int,
    atomic: bool,
) -> list[Any]:  # fmt: skip
    """``records`` as record batches: one (up to ATOMIC_BATCH_BYTES) when ``atomic``."""
    new_batch = (lambda: BatchBuilder(ATOMIC_BATCH_BYTES, 0)) if atomic else producer.create_batch
    batches = [new_batch()]
    for key, value in records:
        if batches[-1].append(key=key, value=value, timestamp=None) is None:  # full
            if atomic:
                CHANGELOG_SPLIT_FLUSHES.inc()
                log.warning(
                    "%s[%d]: a flush of %d records is larger than one record batch; it goes "
                    "out in several, which a crash could cut", topic, partition, len(records),
                )  # fmt: skip
                atomic = False
            batches.append(new_batch())
            if batches[-1].append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a {topic} record is larger than a record batch")
    return batches


def _dump(value: Any) -> bytes:
    """What Faust's JSON codec (see :class:`_StandardJson`) writes, faster for the common shapes.

    Keys are strings; most values are short lists of ints (one per claim and bucket written).
    """
    if type(value) is str:
        return encode_basestring_ascii(value).encode()
    if type(value) is list and all(type(x) is int for x in value):
        return ("[" + ",".join(map(str, value)) + "]").encode()
    return json.dumps(value, separators=(",", ":")).encode()


class TableAlertStore:
    """:class:`AlertStore` over a changelog table, writing to one partition.

    Keys: ``alert|<alert_id>`` → state, ``dedup|<dedup_key>`` → current alert id.
    """

    def __init__(self, table: ChangelogTable, partition: int) -> None:
        self.table = table
        self.partition = partition

    def current(self, dedup_key: str) -> AlertState | None:
        """The latest alert under ``dedup_key``."""
        alert_id = self.table.get(f"dedup|{dedup_key}")
        return self.get(alert_id) if alert_id else None

    def get(self, alert_id: str) -> AlertState | None:
        """The alert with ``alert_id``."""
        data = self.table.get(f"alert|{alert_id}")
        return AlertState.from_dict(data) if data else None

    def put(self, state: AlertState) -> None:
        """Persist ``state``."""
        self.table.put(self.partition, f"alert|{state.alert_id}", state.to_dict())

    def point(self, dedup_key: str, alert_id: str) -> None:
        """Make ``alert_id`` current for ``dedup_key``."""
        self.table.put(self.partition, f"dedup|{dedup_key}", alert_id)


class WindowsState:
    """The in-memory :class:`PartitionWindows` of assigned partitions, kept in a table.

    The changelog gets one small record per changed bucket, remembered claim id and pending
    claim, one per customer for its watermark, and one per partition for the last offset
    applied of each source: a batch writes what it changed, a close deletes what it pruned.
    A flush writes a partition's values as one record batch (:class:`ChangelogTable`), so the
    windows and the offsets they include never part.

    Those records live in memory once, as domain objects: a partition's records are dropped
    from the table's memory when it is loaded, and later ones are written to the changelog only
    (keeping both took ~1.4 KB more per key of three claims). So a partition can be loaded again
    only from a recovery that read its changelog from the start, which :meth:`forget` (for a
    revoke) asks Faust for.
    """

    def __init__(self, table: ChangelogTable, cfg: DriftConfig, grace_ms: int) -> None:
        self.table = table
        self.cfg = cfg
        self.grace_ms = grace_ms
        self.partitions: dict[int, PartitionWindows] = {}

    def key_count(self) -> int:
        """Keys held in memory over every partition."""
        return sum(pw.key_count() for pw in self.partitions.values())

    def pending_count(self) -> int:
        """Claims waiting to take effect over every partition."""
        return sum(len(c.pending) for pw in self.partitions.values() for c in pw.customers.values())

    def get(self, partition: int, sources: int) -> PartitionWindows:
        """The partition's windows, rebuilt from the changelog table on first use."""
        pw = self.partitions.get(partition)
        if pw is None:
            pw = self._load(partition, sources)
            self.partitions[partition] = pw
        return pw

    def _load(self, partition: int, sources: int) -> PartitionWindows:
        pw = PartitionWindows(partition, self.cfg, self.grace_ms, sources)
        mine = [(name, value) for name, value in self.table.items()
                if _partition_of(value) == partition]  # fmt: skip
        for name, value in mine:
            if name.startswith(WATERMARK):
                customer = pw.customer(sys.intern(name[len(WATERMARK) :]))
                customer.restore(value)
                customer.watermark.sources = max(customer.watermark.sources, sources)
            elif name.startswith(OFFSETS):
                pw.offsets = {s: o for s, o in enumerate(value[1:]) if o >= 0}
        pruned = []  # tombstones a crash cut off (see ChangelogTable): deleted again
        pending: dict[str, list[Pending]] = {}  # by customer
        for name, value in mine:
            kind = name[:2]
            if kind in (WATERMARK, OFFSETS):
                continue
            _, number, rest = name.split("|", 2)
            if kind == PENDING:
                offset, key = rest.split("|", 1)
                key = sys.intern(key)
                customer = pw.customer(key.split("|", 1)[0])
                effective, ident, contribution = (int(x) for x in value[1:4])
                waiting = Pending(effective, int(number), int(offset), key, ident, contribution)
                if customer.took_effect(waiting):
                    pruned.append(name)  # released; its tombstone was cut off
                else:
                    pending.setdefault(customer.customer_id, []).append(waiting)
                continue
            key = sys.intern(rest)  # as Claim.window_key: one string per key in the process
            customer = pw.customer(key.split("|", 1)[0])
            closed = customer.watermark.closed_through
            packed = None if kind == BUCKET else int(value[1])
            bucket = int(number) if packed is None else packed_bucket(packed)
            if closed is not None and bucket < closed - self.cfg.history_buckets + 1:
                pruned.append(name)
                continue
            windows = customer.keys.get(key)
            if windows is None:
                windows = customer.keys[key] = KeyWindows(key, partition)
            if packed is None:
                windows.set_bucket(bucket, [int(x) for x in value[1:]])
            else:
                windows.claims[int(number)] = packed
        for customer_id, entries in pending.items():
            pw.customers[customer_id].restore_pending(entries)
        for name in pruned:
            self.table.delete(partition, name)
        self.table.drop([name for name, _ in mine])
        log.info("partition %d: loaded %d customers, %d keys (%d records pruned)",
                 partition, len(pw.customers), pw.key_count(), len(pruned))  # fmt: skip
        return pw

    def save(self, pw: PartitionWindows, result: StepResult) -> None:
        """Write what a step changed: keys, pending claims, watermarks, the offsets applied."""
        p = pw.partition
        for windows in result.changed.values():
            buckets, claims = windows.take_changes()
            for bucket in buckets:
                self._write(p, f"{BUCKET}{bucket}|{windows.key}", windows.bucket(bucket))
            for ident, packed in claims.items():
                self._write(
                    p, f"{CLAIM}{ident}|{windows.key}", None if packed is None else [packed]
                )
        for waiting in result.pending_added:
            self._write(p, _pending_name(waiting),
                        [waiting.effective, waiting.ident, waiting.packed])  # fmt: skip
        for waiting in result.pending_done:
            self._write(p, _pending_name(waiting), None)
        for customer in result.customers.values():
            self.table.put(p, f"{WATERMARK}{customer.customer_id}", customer.to_dict(),
                           keep=False)  # fmt: skip
        if pw.offsets:
            offsets = [pw.offsets.get(s, -1) for s in range(max(pw.offsets) + 1)]
            self.table.put(p, f"{OFFSETS}{p}", [p, *offsets], keep=False)

    def _write(self, partition: int, name: str, payload: list[int] | None) -> None:
        if payload is None:
            self.table.delete(partition, name)
        else:
            self.table.put(partition, name, [partition, *payload], keep=False)

    def forget(self) -> None:
        """Drop every partition (on revoke: the new owner rebuilds them from the changelog,
        read from its start)."""
        self.partitions.clear()
        self.table.read_again_from_start()


def _pending_name(waiting: Pending) -> str:
    return f"{PENDING}{waiting.source}|{waiting.offset}|{waiting.window_key}"


def _partition_of(value: Any) -> int | None:
    """The partition a windows record belongs to (its first item, or ``partition``)."""
    if isinstance(value, list) and value:
        return int(value[0])
    if isinstance(value, dict):
        return int(value.get("partition", -1))
    return None
