"""Synthetic claims with named drift scenarios, deterministic for a seed.

Each scenario is a set of :class:`KeyProfile` s (one per customer × payer × CPT group) with a
claim volume, a denial rate, a decision lag and an allowed amount, optionally a weekday pattern,
a :class:`Shift` at a known day, late deliveries and resends. :func:`generate` yields ClaimDecided
records in the order an upstream system would send them; the profiles are the ground truth the
detection benchmark scores against.

Scenarios: ``steady``, ``denial-spike`` (payer-b × radiology 10 % → 35 % on ``spike_day``),
``lag-creep`` (payer-c × radiology decides 0.5 day slower each day from ``spike_day``, up to
+10 days), ``amount-drop`` (payer-a × evaluation_management allows 20 % less), ``low-volume``
(40 keys with 2–4 claims a day), ``weekday-seasonal`` (denials 16 % on Mondays, 5 % at
weekends), ``late-arrivals`` (3 % of claims 1–2 days late, 0.5 % 5–10 days late: beyond the
grace), ``resends`` (6 % sent twice, 2 % re-sent with a corrected outcome).

Feeds (how the claims reach Upstream, whatever the scenario): ``on-time`` (sent when
decided), ``remittance`` (sent 5–20 days after the decision, as 835 remittances arrive), and
``onboarding`` (nothing until ``onboard_day``, then the whole history in one burst sorted by
decision date, then daily). The claims are the same in every feed; only when they are sent
differs. :func:`generate_mix` merges several customers' scenarios into one stream.

Each claim has a CPT code of its group and, when denied, a denial reason code (CARC). Both are
drawn from a hash of the claim id, not from the scenario's random stream, so they add to the
claims without changing any other value. A denial-rate shift's extra denials share one reason
(``CO-50``, not medically necessary) and one CPT code (the group's last), as a payer's new
policy on one procedure would: the alert detail's breakdown then points at them.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.registry import ValueCodec

SCENARIOS = (
    "steady", "denial-spike", "lag-creep", "amount-drop", "low-volume", "weekday-seasonal",
    "late-arrivals", "resends",
)  # fmt: skip
FEEDS = ("on-time", "remittance", "onboarding")
REMITTANCE_LAG_DAYS = (5, 20)
PAYERS = ("payer-a", "payer-b", "payer-c")
# (group, a representative CPT code, typical billed dollars)
GROUPS = (("radiology", "71046", 180.0), ("evaluation_management", "99213", 140.0))
CPT_OF = {group: cpt for group, cpt, _ in GROUPS}
# Every CPT code of a group a claim may carry (the representative one first and most often).
CPT_CODES = {
    "radiology": ("71046", "71046", "71045", "70450", "74177"),
    "evaluation_management": ("99213", "99213", "99214", "99203", "99215"),
}
DENIAL_REASONS = ("CO-16", "CO-97", "CO-197", "PR-204", "CO-50", "CO-16")  # CARC codes
SHIFT_REASON = "CO-50"  # not medically necessary: the reason a denial-rate shift's extras give
SPIKE_PAYER = "payer-b"
SPIKE_GROUP = "radiology"
BASE_DENIAL_RATE = 0.10
SPIKE_DENIAL_RATE = 0.35
DAY_S = 86_400


@dataclass(frozen=True, slots=True)
class Shift:
    """A change in a key's behaviour from ``start_day``: ``kind`` is a drift type.

    ``size`` is the full change (denial points, lag days, or relative amount, e.g. -0.2);
    ``ramp_days`` > 0 reaches it linearly over that many days (a creep).
    """

    kind: str
    start_day: int
    size: float
    ramp_days: int = 0

    def at(self, day: int) -> float:
        """The change in effect on ``day``."""
        if day < self.start_day:
            return 0.0
        if self.ramp_days <= 0:
            return self.size
        return self.size * min(1.0, (day - self.start_day + 1) / self.ramp_days)


@dataclass(frozen=True, slots=True)
class KeyProfile:
    """How one customer × payer × CPT group behaves."""

    customer_id: str
    payer_id: str
    cpt_group: str
    billed: float
    per_day: int = 20
    denial_rate: float = BASE_DENIAL_RATE
    lag_days: tuple[int, int] = (5, 30)
    weekday_denial: tuple[float, ...] = ()  # Monday..Sunday rates, overriding denial_rate
    shift: Shift | None = None

    @property
    def key(self) -> str:
        """``customer_id|payer_id|cpt_group``."""
        return f"{self.customer_id}|{self.payer_id}|{self.cpt_group}"


@dataclass(frozen=True, slots=True)
class Scenario:
    """What to generate."""

    name: str = "denial-spike"
    customer_id: str = "demo"
    start: date = date(2026, 1, 1)
    days: int = 120
    spike_day: int = 75
    claims_per_key_per_day: int = 20
    seed: int = 7
    late_fraction: float = 0.0
    very_late_fraction: float = 0.0
    resend_fraction: float = 0.0
    correction_fraction: float = 0.0
    profiles: tuple[KeyProfile, ...] = field(default=())
    feed: str = "on-time"
    onboard_day: int | None = None  # the onboarding burst's day (default: two thirds in)

    def __post_init__(self) -> None:
        if self.name not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.name!r}; choose from {list(SCENARIOS)}")
        if self.feed not in FEEDS:
            raise ValueError(f"unknown feed {self.feed!r}; choose from {list(FEEDS)}")
        if self.days < 1 or self.claims_per_key_per_day < 1:
            raise ValueError("days and claims per key per day must be positive")
        if self.onboard_day is not None and not 0 <= self.onboard_day < self.days:
            raise ValueError(f"the onboarding day must be within the {self.days} days")

    @property
    def onboarding_day(self) -> int:
        """The day the onboarding feed sends the history before it."""
        return self.onboard_day if self.onboard_day is not None else self.days * 2 // 3

    @property
    def spike_key(self) -> str | None:
        """The key of the denial-spike scenario's shift, if any."""
        if self.name != "denial-spike":
            return None
        return f"{self.customer_id}|{SPIKE_PAYER}|{SPIKE_GROUP}"

    def key_profiles(self) -> tuple[KeyProfile, ...]:
        """The profiles: given ones, or the named scenario's."""
        return self.profiles or _profiles(self)


def _profiles(s: Scenario) -> tuple[KeyProfile, ...]:
    def key(payer: str, group: str, billed: float, **kw: Any) -> KeyProfile:
        return KeyProfile(s.customer_id, payer, group, billed, s.claims_per_key_per_day, **kw)

    shifts = {
        "denial-spike": (SPIKE_PAYER, "radiology", Shift("denial_rate", s.spike_day,
                                                         SPIKE_DENIAL_RATE - BASE_DENIAL_RATE)),
        "lag-creep": ("payer-c", "radiology", Shift("decision_lag", s.spike_day, 10.0, 20)),
        "amount-drop": ("payer-a", "evaluation_management",
                        Shift("allowed_amount", s.spike_day, -0.2)),
    }  # fmt: skip
    if s.name == "low-volume":
        rng = random.Random(s.seed)
        return tuple(
            KeyProfile(s.customer_id, f"payer-{i:02d}", group, billed, rng.randint(2, 4))
            for i in range(20)
            for group, _, billed in GROUPS
        )
    weekday = (0.16, 0.12, 0.10, 0.10, 0.09, 0.05, 0.05) if s.name == "weekday-seasonal" else ()
    out = []
    for payer in PAYERS:
        for group, _, billed in GROUPS:
            shift = None
            if s.name in shifts and shifts[s.name][:2] == (payer, group):
                shift = shifts[s.name][2]
            out.append(key(payer, group, billed, weekday_denial=weekday, shift=shift))
    return tuple(out)


def _defaults(s: Scenario) -> Scenario:
    """The late/resend fractions of the named scenarios, unless set explicitly."""
    if s.name == "late-arrivals" and not (s.late_fraction or s.very_late_fraction):
        return replace(s, late_fraction=0.03, very_late_fraction=0.005)
    if s.name == "resends" and not (s.resend_fraction or s.correction_fraction):
        return replace(s, resend_fraction=0.06, correction_fraction=0.02)
    return s


def _claim(p: KeyProfile, rng: random.Random, day: int, start: date, i: int) -> dict[str, Any]:
    decided = start + timedelta(days=day)
    rate = p.weekday_denial[decided.weekday()] if p.weekday_denial else p.denial_rate
    lag_low, lag_high = p.lag_days
    amount_factor = 1.0
    if p.shift is not None:
        change = p.shift.at(day)
        if p.shift.kind == "denial_rate":
            rate = min(1.0, max(0.0, rate + change))
        elif p.shift.kind == "decision_lag":
            lag_low, lag_high = lag_low + round(change), lag_high + round(change)
        else:
            amount_factor = 1.0 + change
    denied = rng.random() < rate
    claim_id = f"{p.customer_id}-{p.payer_id}-{p.cpt_group}-{day}-{i}"
    extra = 0.0  # the share of this day's denials that the shift adds
    if p.shift is not None and p.shift.kind == "denial_rate" and rate > 0:
        extra = max(0.0, p.shift.at(day)) / rate
    billed = round(p.billed * rng.uniform(0.8, 1.2), 2)
    allowed = 0.0 if denied else billed * 0.7 * amount_factor
    decided_at = datetime(decided.year, decided.month, decided.day, tzinfo=UTC) + timedelta(
        seconds=rng.randrange(DAY_S)
    )
    cpt_code, reasons = _codes(p.cpt_group, claim_id, denied, extra)
    claim: dict[str, Any] = {
        "claim_id": claim_id,
        "customer_id": p.customer_id,
        "payer_id": p.payer_id,
        "cpt_code": cpt_code,
        "cpt_group": p.cpt_group,
        "submitted_date": (decided - timedelta(days=rng.randint(lag_low, lag_high))).isoformat(),
        "decided_date": decided.isoformat(),
        "decided_at": decided_at.isoformat().replace("+00:00", "Z"),
        "outcome": "DENIED" if denied else "PAID",
        "billed_amount": f"{billed:.2f}",
        "allowed_amount": f"{allowed:.2f}",
    }
    if reasons:
        claim["denial_reason_codes"] = reasons
    return claim


def _codes(group: str, claim_id: str, denied: bool, extra: float) -> tuple[str, list[str]]:
    """The claim's CPT code and denial reasons, from a hash of its id (see the module): an extra
    denial of a denial-rate shift (a share ``extra`` of the day's denials) carries
    :data:`SHIFT_REASON` and the group's last CPT code."""
    digest = zlib.crc32(claim_id.encode())
    codes = CPT_CODES.get(group, (CPT_OF.get(group, "71046"),))
    if denied and (digest % 10_000) / 10_000 < extra:
        return codes[-1], [SHIFT_REASON]
    cpt_code = codes[(digest >> 14) % len(codes)]
    return cpt_code, [DENIAL_REASONS[(digest >> 20) % len(DENIAL_REASONS)]] if denied else []


def generate(scenario: Scenario) -> list[dict[str, Any]]:
    """ClaimDecided records (JSON field names) in sending order.

    On time, claims are sent at their decision time, except late ones (sent 1–2 or 5–10 days
    later) and resends (sent again 1–3 days later, some with a corrected outcome); the other
    feeds move every sending time (see the module).
    """
    return [claim for _, _, claim in sorted(_sending(scenario), key=lambda x: (x[0], x[1]))]


def generate_mix(scenarios: list[Scenario]) -> list[dict[str, Any]]:
    """Several customers' claims in one stream, in sending order (each customer's own order
    is the one :func:`generate` gives it alone)."""
    customers = [s.customer_id for s in scenarios]
    if len(set(customers)) != len(customers):
        raise ValueError("each scenario of a mix needs its own customer_id")
    sending = [(at, n, seq, claim) for n, s in enumerate(scenarios)
               for at, seq, claim in _sending(s)]  # fmt: skip
    sending.sort(key=lambda x: (x[0], x[1], x[2]))
    return [claim for _, _, _, claim in sending]


def _sending(scenario: Scenario) -> list[tuple[float, int, dict[str, Any]]]:
    """``(sending time, sequence, claim)`` of every claim of ``scenario``, unordered."""
    s = _defaults(scenario)
    rng = random.Random(s.seed)
    feed_rng = random.Random(f"{s.seed}-{s.feed}")  # the feed moves sending times only
    onboard_at = datetime.combine(s.start + timedelta(days=s.onboarding_day), datetime.min.time(),
                                  UTC).timestamp()  # fmt: skip
    sending: list[tuple[float, int, dict[str, Any]]] = []
    for day in range(s.days):
        for p in s.key_profiles():
            for i in range(p.per_day):
                claim = _claim(p, rng, day, s.start, i)
                at = datetime.fromisoformat(claim["decided_at"]).timestamp()
                # Extra draws only where the scenario uses them: other scenarios keep their data.
                roll = rng.random() if s.late_fraction or s.very_late_fraction else 1.0
                if roll < s.very_late_fraction:
                    at += rng.uniform(5, 10) * DAY_S
                elif roll < s.very_late_fraction + s.late_fraction:
                    at += rng.uniform(1, 2) * DAY_S
                at = _fed(s, at, onboard_at, feed_rng)
                sending.append((at, len(sending), claim))
                roll = rng.random() if s.resend_fraction or s.correction_fraction else 1.0
                if roll < s.resend_fraction + s.correction_fraction:
                    again = dict(claim)
                    if roll < s.correction_fraction:
                        again["outcome"] = "PAID" if claim["outcome"] == "DENIED" else "DENIED"
                        again["allowed_amount"] = (
                            f"{float(claim['billed_amount']) * 0.7:.2f}"
                            if again["outcome"] == "PAID" else "0.00"
                        )  # fmt: skip
                    sending.append((at + rng.uniform(1, 3) * DAY_S, len(sending), again))
    return sending


def _fed(s: Scenario, at: float, onboard_at: float, rng: random.Random) -> float:
    """When the feed sends a claim the customer had at ``at``."""
    if s.feed == "remittance":
        return at + rng.uniform(*REMITTANCE_LAG_DAYS) * DAY_S
    if s.feed == "onboarding" and at < onboard_at:
        # The history goes in the burst, in its own order, just before the onboarding day.
        return onboard_at - (onboard_at - at) / 1e6
    return at


def encode_claim(record: dict[str, Any], fmt: str, codec: ValueCodec, topic: str) -> bytes:
    """The claim as JSON or Avro bytes."""
    if fmt == "json":
        return json.dumps(record, separators=(",", ":")).encode()
    return codec.encode("ClaimDecided", topic, record)


async def produce(
    scenario: Scenario,
    bootstrap: str,
    topic: str,
    *,
    fmt: str = "json",
    codec: ValueCodec | None = None,
    duration_s: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
    claims: list[dict[str, Any]] | None = None,
) -> int:
    """Send the scenario's claims (or ``claims``) to ``topic`` keyed by ``claim_id``.

    With ``duration_s`` > 0 sending is spread evenly over that many seconds. Returns the count.
    """
    codec = codec or ValueCodec()
    records = claims if claims is not None else generate(scenario)
    total = len(records)
    step = max(1, total // 100)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    started = time.monotonic()
    try:
        for sent, record in enumerate(records, start=1):
            value = encode_claim(record, fmt, codec, topic)
            await producer.send(topic, value=value, key=record["claim_id"].encode())
            if sent % step == 0 or sent == total:
                if progress is not None:
                    progress(sent, total)
                if duration_s > 0:
                    due = started + duration_s * (sent / total)
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
        await producer.flush()
    finally:
        await producer.stop()
    return total


def alert_transition(n: int, customer: str) -> dict[str, Any]:
    """The ``n``-th of a stream of AlertEvent updates over 20 alerts; ``message`` is ``n``."""
    at = datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=n)
    return {"alert_id": f"{customer}-a{n % 20}", "version": n // 20 + 1, "dedup_key": f"k{n % 20}",
            "customer_id": customer, "rule_id": "default", "drift_event_id": f"e{n}",
            "payer_id": "payer-a", "cpt_group": "radiology", "drift_type": "denial_rate",
            "status": "active", "transition": "updated", "severity": 0.7,
            "severity_level": "critical", "occurrence_count": n // 20 + 1, "first_seen": at,
            "last_seen": at, "acknowledged_by": None, "resolved_by": None, "resolution": None,
            "verdict": None, "message": str(n), "notify": True}  # fmt: skip
