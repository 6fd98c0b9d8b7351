"""Where Kafka's default partitioner puts a key: the route sends each customer's claims to the
windows partition a keyed producer would pick."""

from __future__ import annotations

from aiokafka.partitioner import murmur2


def default_partition(key: bytes, partitions: int) -> int:
    """The partition (of ``partitions``) Kafka's default partitioner picks for ``key``."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
