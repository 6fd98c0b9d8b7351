"""Builders for claims in unit tests."""

from datetime import date, timedelta
from typing import Any

from streams.domain.claims import Claim, parse_claim
from streams.domain.processor import ClaimFromSource

DAY_MS = 86_400_000
EPOCH = date(1970, 1, 1)


def raw_claim(**overrides: Any) -> dict[str, Any]:
    """A valid ClaimDecided mapping, with ``overrides`` applied."""
    record: dict[str, Any] = {
        "claim_id": "c-1",
        "customer_id": "acme",
        "payer_id": "payer-a",
        "cpt_code": "71046",
        "submitted_date": "2026-01-01",
        "decided_date": "2026-01-11",
        "outcome": "PAID",
        "billed_amount": "100.00",
        "allowed_amount": "70.00",
    }
    record.update(overrides)
    return record


def claim_on_day(day: int, *, denied: bool = False, payer: str = "payer-a", i: int = 0) -> Claim:
    """A claim decided on ``day`` days after the epoch (noon UTC)."""
    decided = EPOCH + timedelta(days=day)
    return parse_claim(
        raw_claim(
            claim_id=f"{payer}-{day}-{i}",
            payer_id=payer,
            submitted_date=(decided - timedelta(days=10)).isoformat(),
            decided_date=decided.isoformat(),
            decided_at=f"{decided.isoformat()}T12:00:00Z",
            outcome="DENIED" if denied else "PAID",
            allowed_amount="0" if denied else "70.00",
        )
    )


class Feed:
    """Claims as the windows receive them: each source (claims partition) numbers its own
    offsets, in the order claims are read from it."""

    def __init__(self, sources: int = 1) -> None:
        self.sources = sources
        self.next_offset = [0] * sources

    def read(self, claims: list[Claim], source: int = 0) -> list[ClaimFromSource]:
        """``claims`` read from ``source``, in order."""
        out = []
        for claim in claims:
            out.append(ClaimFromSource(source, self.sources, self.next_offset[source], claim))
            self.next_offset[source] += 1
        return out


def day_of_claims(
    day: int, rate: float, payer: str = "payer-b", customer: str = "acme", per_day: int = 20
) -> list[Claim]:
    """``per_day`` claims of ``customer`` decided on ``day``, ``rate`` of them denied."""
    return [
        claim_for(customer, day, denied=i < round(per_day * rate), payer=payer, i=i)
        for i in range(per_day)
    ]


def claim_for(customer: str, day: int, *, denied: bool = False, payer: str = "payer-a",
              i: int = 0) -> Claim:  # fmt: skip
    """:func:`claim_on_day` for ``customer``."""
    claim = claim_on_day(day, denied=denied, payer=payer, i=i)
    return claim._replace(customer_id=customer, claim_id=f"{customer}-{claim.claim_id}")
