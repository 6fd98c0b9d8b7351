"""Faust tables used as plain changelog-backed storage, and the domain stores built on them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from streams.domain.alerts import AlertState
from streams.domain.drift import DriftConfig
from streams.domain.processor import PartitionWindows
from streams.domain.windows import KeyWindows

log = logging.getLogger("upstream.worker")
WATERMARK_PREFIX = "__watermark__|"


class ChangelogTable:
    """A Faust table used as plain changelog-backed storage with explicit partitions.

    Faust's own ``table[k] = v`` picks the changelog partition from the implicit current event;
    batches span partitions, so every write here names its partition.
    """

    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, key: str) -> Any:
        """The stored value, or None."""
        return self._table.data.get(key)

    def put(self, partition: int, key: str, value: Any) -> None:
        """Store ``value`` and append it to changelog partition ``partition``."""
        self._table.data[key] = value
        self._table.send_changelog(partition, key, value)

    def delete(self, partition: int, key: str) -> None:
        """Remove ``key`` and write a tombstone."""
        self._table.data.pop(key, None)
        self._table.send_changelog(partition, key, None, value_serializer="raw")

    def items(self) -> Iterable[tuple[str, Any]]:
        """Every stored item (all assigned partitions)."""
        return list(self._table.data.items())


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
    """The in-memory :class:`PartitionWindows` of assigned partitions, loaded from a table."""

    def __init__(self, table: ChangelogTable, cfg: DriftConfig, grace_ms: int) -> None:
        self.table = table
        self.cfg = cfg
        self.grace_ms = grace_ms
        self.partitions: dict[int, PartitionWindows] = {}

    def get(self, partition: int, sources: int) -> PartitionWindows:
        """The partition's windows, rebuilt from the changelog table on first use."""
        pw = self.partitions.get(partition)
        if pw is None:
            pw = PartitionWindows(partition, self.cfg, self.grace_ms, sources)
            saved = self.table.get(f"{WATERMARK_PREFIX}{partition}")
            if saved:
                pw.watermark.restore(saved)
            for key, value in self.table.items():
                if not key.startswith(WATERMARK_PREFIX) and value["partition"] == partition:
                    pw.keys[key] = KeyWindows.from_dict(value)
            log.info("partition %d: loaded %d keys", partition, len(pw.keys))
            self.partitions[partition] = pw
        return pw

    def save(self, pw: PartitionWindows, changed: Iterable[str], removed: Iterable[str]) -> None:
        """Write changed keys, tombstones for removed ones, and the watermark."""
        for key in changed:
            self.table.put(pw.partition, key, pw.keys[key].to_dict())
        for key in removed:
            self.table.delete(pw.partition, key)
        self.table.put(pw.partition, f"{WATERMARK_PREFIX}{pw.partition}", pw.watermark.to_dict())

    def forget(self) -> None:
        """Drop every partition (on revoke: the new owner rebuilds from the changelog)."""
        self.partitions.clear()
