"""The latency bench's feed and audience: claims sent at a steady rate with when each was
sent (:class:`Sent`, :func:`produce_paced`), an onboarding burst (:class:`Flood`), and the
WebSocket clients that note when each alert arrives (:class:`Clients`)."""

from __future__ import annotations

import asyncio
import bisect
import json
import sys
import threading
import time
from datetime import datetime
from typing import Any

from confluent_kafka import Producer
from websockets.asyncio.client import ClientConnection, connect

from notifier.tokens import mint_token
from streams.devtools.generator import Scenario, generate

SECRET = "latency-bench-secret-of-at-least-32-bytes"  # noqa: S105 -- a throwaway local stack


class Sent:
    """When each claim was handed to the producer, its customer and event time, and (once
    delivered) its partition; then, per customer and partition, the send time of the first
    claim reaching a given time."""

    def __init__(self, count: int) -> None:
        self.at = [0.0] * count
        self.event_ms = [0] * count
        self.customer = [""] * count
        self.partition = [-1] * count
        self.handed = 0  # claims handed to the producer so far
        self._running: dict[str, dict[int, tuple[list[int], list[int]]]] = {}

    def index(self) -> None:
        """Per customer and partition: running max event time (non-decreasing) and the claims'
        indexes."""
        for i, p in enumerate(self.partition):
            if p < 0:
                continue
            partitions = self._running.setdefault(self.customer[i], {})
            maxima, claims = partitions.setdefault(p, ([], []))
            top = max(self.event_ms[i], maxima[-1]) if maxima else self.event_ms[i]
            maxima.append(top)
            claims.append(i)

    def closed_by(self, customer: str, event_ms: int) -> int | None:
        """The claim (index) after which every partition had reached ``event_ms`` for
        ``customer``."""
        latest: int | None = None
        for maxima, claims in self._running.get(customer, {}).values():
            i = bisect.bisect_left(maxima, event_ms)
            if i == len(maxima):
                return None  # never reached by a claim: the idle timer closed it, if anything
            if latest is None or self.at[claims[i]] > self.at[latest]:
                latest = claims[i]
        return latest


def produce_paced(bootstrap: str, topic: str, claims: list[dict[str, Any]], rate: int,
                  sent: Sent, stop: threading.Event) -> float:  # fmt: skip
    """Send ``claims`` at ``rate`` a second; return the achieved rate."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1, "acks": "all"})
    payloads = [(json.dumps(c, separators=(",", ":")).encode(), c["claim_id"].encode())
                for c in claims]  # fmt: skip
    for i, claim in enumerate(claims):
        sent.event_ms[i] = int(datetime.fromisoformat(claim["decided_at"]).timestamp() * 1000)
        sent.customer[i] = claim["customer_id"]

    def delivered(i: int) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is None:
                sent.partition[i] = msg.partition()

        return report

    started = time.monotonic()
    for i, (value, key) in enumerate(payloads):
        if stop.is_set():
            break
        while (ahead := started + i / rate - time.monotonic()) > 0:
            time.sleep(min(ahead, 0.005))
        producer.poll(0)
        sent.at[i] = time.monotonic()
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=delivered(i))
                break
            except BufferError:
                producer.poll(0.01)
        sent.handed = i + 1
        if i % (rate * 10) == 0 and i:
            print(f"  {time.monotonic() - started:4.0f} s: {i:,} claims sent", file=sys.stderr)
    producer.flush(60)
    return len(payloads) / (time.monotonic() - started)


class Clients:
    """One WebSocket client per customer; each alert's arrival time."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.connections: list[ClientConnection] = []

    async def open(self, url: str, customers: list[str]) -> None:
        """Connect one client per customer and subscribe."""
        for customer in customers:
            token = mint_token(SECRET, customer, f"op-{customer}")
            ws = await connect(f"{url}?token={token}", max_size=None, open_timeout=60)
            await ws.send(json.dumps({"type": "subscribe"}))
            snapshot = json.loads(await ws.recv())
            assert snapshot["type"] == "snapshot", snapshot
            self.connections.append(ws)

    async def listen(self) -> None:
        """Record the arrival time of every alert message until closed."""
        await asyncio.gather(*(self._listen(ws) for ws in self.connections))

    async def _listen(self, ws: ClientConnection) -> None:
        async for raw in ws:
            arrived = time.monotonic()
            message = json.loads(raw)
            if message["type"] == "alert":
                self.arrivals.append((arrived, message["alert"]))


class Flood:
    """An onboarding customer's history, produced at once while the live claims stream."""

    def __init__(self, claims: list[dict[str, Any]]) -> None:
        self.claims = claims
        self.handed = 0
        self.started: float | None = None
        self.produced: float | None = None

    def send(self, bootstrap: str, topic: str, after_s: float, stop: threading.Event) -> None:
        """After ``after_s`` seconds, produce every claim as fast as the producer goes."""
        if stop.wait(after_s):
            return
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
        self.started = time.monotonic()
        for claim in self.claims:
            value = json.dumps(claim, separators=(",", ":")).encode()
            while True:
                try:
                    producer.produce(topic, value, claim["claim_id"].encode())
                    break
                except BufferError:
                    producer.poll(0.01)
            self.handed += 1
        producer.flush(120)
        self.produced = time.monotonic()
        print(f"  flood of {len(self.claims):,} claims produced in "
              f"{self.produced - self.started:.1f} s", file=sys.stderr)  # fmt: skip


def flood_claims(count: int) -> list[dict[str, Any]]:
    """An onboarding customer's history of ``count`` claims, in decision order."""
    days = 365
    per_day = -(-count // (days * len(Scenario().key_profiles())))
    scenario = Scenario(customer_id="onboarding", days=days, spike_day=300, seed=99,
                        claims_per_key_per_day=per_day)  # fmt: skip
    return generate(scenario)[:count]
