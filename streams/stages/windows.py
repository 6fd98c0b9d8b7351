"""The windows stage's cut of a batch: slices whose changelog records fit one atomic flush."""

from __future__ import annotations

from collections.abc import Iterator

from streams.domain.processor import ClaimFromSource

# Bytes of changelog records a claim can cost at most where it arrives (a claim-id and a
# bucket record, or a pending-claim record, less the window key twice), of a customer's
# watermark record (plus per source of the claims topic), and the budget of one slice's
# flush. With the claims a step may release (RELEASE_BUDGET, at most CLAIM_RECORDS_BYTES and
# their key each) a step stays under ATOMIC_BATCH_BYTES: one atomic flush.
CLAIM_RECORDS_BYTES = 320
CUSTOMER_RECORD_BYTES = 250
CUSTOMER_RECORD_SOURCE_BYTES = 64
FLUSH_BUDGET_BYTES = 760_000
RELEASE_BUDGET = 500


def flush_slices(arrivals: list[ClaimFromSource]) -> Iterator[list[ClaimFromSource]]:
    """``arrivals`` in order, cut where their changelog records could outgrow one batch.

    A window key is JSON-escaped in the records (up to 12 bytes a character when not ASCII).
    """
    start, cost = 0, 0
    customers: set[str] = set()
    for i, arrival in enumerate(arrivals):
        key = arrival.claim.window_key
        key_bytes = len(key) if key.isascii() else 12 * len(key)
        claim_cost = CLAIM_RECORDS_BYTES + 2 * key_bytes
        customer = arrival.claim.customer_id
        customer_cost = (CUSTOMER_RECORD_BYTES + CUSTOMER_RECORD_SOURCE_BYTES * arrival.sources
                         + 2 * key_bytes)  # fmt: skip
        if customer not in customers:
            claim_cost += customer_cost
        if cost + claim_cost > FLUSH_BUDGET_BYTES and i > start:
            yield arrivals[start:i]
            start, cost = i, 0
            customers.clear()
            claim_cost = CLAIM_RECORDS_BYTES + 2 * key_bytes + customer_cost
        customers.add(customer)
        cost += claim_cost
    if start < len(arrivals):
        yield arrivals[start:]
