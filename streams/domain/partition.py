"""One windows partition's state: the customers it holds, and the last offset applied per
source (claims partition), which skips redeliveries. What happens to a customer's claims, and
when, is :mod:`streams.domain.processor`.
"""

from __future__ import annotations

from collections.abc import Sequence

from streams.domain.drift import DriftConfig
from streams.domain.processor import ClaimFromSource, CustomerWindows, StepResult
from streams.domain.windows import KeyWindows


class PartitionWindows:
    """The customers of one windows partition, and the last offset applied per source."""

    def __init__(self, partition: int, cfg: DriftConfig, grace_ms: int, sources: int = 1) -> None:
        self.partition = partition
        self.cfg = cfg
        self.grace_ms = grace_ms
        self.sources = sources
        self.customers: dict[str, CustomerWindows] = {}
        self.offsets: dict[int, int] = {}  # source → the last offset applied
        # Whether a customer may be behind (see the module): after a load, or a step whose
        # budget ran out. Spares every step a look at every customer.
        self.maybe_behind = True

    def customer(self, customer_id: str) -> CustomerWindows:
        """The customer's windows, created empty on first use."""
        found = self.customers.get(customer_id)
        if found is None:
            found = CustomerWindows(
                customer_id, self.partition, self.cfg, self.grace_ms, self.sources
            )
            self.customers[customer_id] = found
        return found

    @property
    def keys(self) -> dict[str, KeyWindows]:
        """Every key of every customer (a new dict)."""
        return {name: key for c in self.customers.values() for name, key in c.keys.items()}

    def key_count(self) -> int:
        """Keys held, over every customer."""
        return sum(len(c.keys) for c in self.customers.values())

    def apply(
        self,
        arrivals: Sequence[ClaimFromSource],
        now_ms: int | None = None,
        release_budget: int | None = None,
    ) -> StepResult:
        """Apply claims in order; evaluate each bucket that closes for their customer.

        With ``release_budget``, the step releases at most that many pending claims: it first
        does what earlier steps left due, and stops before the next arrival once the budget is
        spent (``StepResult.taken``). ``now_ms`` (wall clock) only feeds idle detection;
        results never depend on it.
        """
        result = StepResult(releases_left=-1 if release_budget is None else release_budget)
        if not self._caught_up(result):
            return result
        offsets = self.offsets
        customers = self.customers
        for arrival in arrivals:
            if result.budget_spent():
                break
            result.taken += 1
            source, offset = arrival.source, arrival.offset
            if offset <= offsets.get(source, -1):
                result.redelivered += 1
                continue
            offsets[source] = offset
            self.sources = max(self.sources, arrival.sources)
            customer_id = arrival.claim.customer_id
            customer = customers.get(customer_id)
            if customer is None:
                customer = self.customer(customer_id)
            customer.take(arrival, result, now_ms)
        if result.budget_spent():
            self.maybe_behind = True
        return result

    def idle_tick(
        self, now_ms: int, idle_after_ms: int, release_budget: int | None = None
    ) -> StepResult:
        """Advance idle customers by the wall clock (see :meth:`Watermark.idle_tick`), once
        what earlier steps left due is done (``release_budget``: as :meth:`apply`)."""
        result = StepResult(releases_left=-1 if release_budget is None else release_budget)
        if not self._caught_up(result):
            return result
        for customer_id in sorted(self.customers):
            if result.budget_spent():
                break
            self.customers[customer_id].idle_tick(now_ms, idle_after_ms, result)
        if result.budget_spent():
            self.maybe_behind = True
        return result

    def _caught_up(self, result: StepResult) -> bool:
        """Do what earlier steps left due, within the budget; whether all of it is done."""
        if not self.maybe_behind:
            return True
        for customer in self.customers.values():
            while customer.behind:
                if result.budget_spent():
                    return False
                customer.catch_up(result)
        self.maybe_behind = False
        return True
