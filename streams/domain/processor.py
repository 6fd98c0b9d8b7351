"""A customer's windows: claims in; amendments, dead letters and evaluations out.

A windows partition (:class:`streams.domain.partition.PartitionWindows`) holds its customers
and hands each its claims in order. Event time is kept **per customer**
(:class:`CustomerWindows`): a customer's watermark moves
with its own claims only, its buckets close on it, and its keys are evaluated together (one
Benjamini–Hochberg family per customer and close). Claims are applied in the order given, so
the result depends only on each customer's claims and their order within each source (claims)
partition: never on other customers, on how the sources were interleaved or batched, or on
restarts.

When a claim takes effect
-------------------------
A claim read from source ``s`` carries that source's clock for its customer: the latest event
time of the customer's claims in ``s`` up to and including it, ``c``. The customer's
watermark never passes any source's clock minus the grace, so when the claim arrives no
bucket after ``a = last_closable_bucket(c - grace)`` has closed yet — but buckets up to ``a``
may or may not have, depending on how the sources were interleaved. So the claim takes effect
right after the close of bucket ``a``:

- a claim in a bucket after ``a`` is counted at once (no close up to ``a`` reads its bucket);
- a claim in a bucket up to ``a`` (an amendment: its bucket has closed or will have by then)
  waits until bucket ``a`` has closed, then is counted, before the next close;
- a claim that would replace what its claim id counted already (a correction), or whose
  claim id has a copy still waiting, waits too (behind that copy), so that replacements also
  happen before the same closes in every replay;
- a claim whose bucket is older than the history at that moment (``a - history + 1``) is not
  windowed: it comes back in ``StepResult.beyond_history`` for the DLQ.

Every replay therefore counts each claim before the same closes. The one exception is the
wall clock: a customer whose feed is idle advances by it (:meth:`Watermark.idle_tick`), and a
claim arriving from a source the idle clock had passed takes effect at once.

Redeliveries (the same source offset again after a crash) are skipped: the partition keeps,
per source, the last offset it applied, in the same changelog flush as the windows.

Steps of bounded size
---------------------
A step may be given a release budget: the most pending claims it releases. A close that would
release more stops there, and so does the step (``StepResult.taken`` says how many arrivals it
applied); the partition is then ``behind``, and its next steps release the rest and run the
closes that follow, in order, before they apply another arrival. Where a claim takes effect
does not change (the next close comes only after every claim due before it), so a budget
changes how the work is cut into steps, never its outputs; and each step's state fits one
atomic changelog flush. A customer remembers the last pending claim it released
(``released_through``, in heap order), so a restart knows which pending claims took effect.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from streams.domain.claims import Claim
from streams.domain.drift import DriftConfig, evaluate_close
from streams.domain.events import DriftDetected, KeyEvaluated
from streams.domain.watermark import Watermark, last_closable_bucket
from streams.domain.windows import (
    Added,
    KeyWindows,
    bucket_of,
    claims_floor,
    packed_bucket,
    packed_claim,
)


# Arrivals are named tuples: one is built per claim, and a frozen dataclass costs several
# times as much to build.
class ClaimFromSource(NamedTuple):
    """A claim, and the upstream (source) partition of ``sources`` and offset it was read at."""

    source: int
    sources: int
    offset: int
    claim: Claim


class Pending(NamedTuple):
    """A claim waiting for the close of bucket ``effective`` (see the module). Ordered by
    ``(effective, source, offset)``: the order pending claims take effect in."""

    effective: int
    source: int
    offset: int
    window_key: str
    ident: int  # claim_hash of the claim id
    packed: int  # its packed contribution


@dataclass(slots=True)
class StepResult:
    """What applying a batch produced."""

    beyond_history: list[ClaimFromSource] = field(default_factory=list)
    drifts: list[DriftDetected] = field(default_factory=list)
    evaluations: list[KeyEvaluated] = field(default_factory=list)
    # Keys with changes to persist (take_changes()), including keys that were just removed.
    changed: dict[str, KeyWindows] = field(default_factory=dict)
    removed_keys: set[str] = field(default_factory=set)
    # Customers whose watermark moved or whose pending claims changed.
    customers: dict[str, CustomerWindows] = field(default_factory=dict)
    pending_added: list[Pending] = field(default_factory=list)
    pending_done: list[Pending] = field(default_factory=list)
    closes: int = 0
    counted: int = 0  # claims counted into their key (new, or replacing what a resend added)
    duplicates: int = 0  # a resend with the same values as the claim it repeats
    replaced: int = 0  # a resend with corrected values
    amended: int = 0  # counted into a bucket that had closed
    redelivered: int = 0  # a source offset applied before (a replay after a crash)
    taken: int = 0  # arrivals applied (fewer than given when the release budget ran out)
    releases_left: int = -1  # pending claims this step may still release; -1: no limit

    def budget_spent(self) -> bool:
        """Whether the release budget is used up (the step stops at the next arrival)."""
        return self.releases_left == 0


# A close scans the keys' claim ids for those that left the history only when the bucket it
# closes is a multiple of this (or a key has no bucket left); until then the ids older than
# the history stay in memory, ignored (CustomerWindows.claims_floor). At most this many
# buckets' worth of ids stay so, about a tenth of a key's ids with the default 90-bucket
# history; the scans cost an eighth of one per close.
CLAIM_SCAN_BUCKETS = 8


class CustomerWindows:
    """One customer's keys, watermark and pending claims."""

    __slots__ = (
        "_floor",
        "cfg",
        "customer_id",
        "keys",
        "partition",
        "pending",
        "pending_ids",
        "released_through",
        "watermark",
    )

    def __init__(
        self, customer_id: str, partition: int, cfg: DriftConfig, grace_ms: int, sources: int
    ) -> None:
        self.customer_id = customer_id
        self.partition = partition
        self.cfg = cfg
        self.watermark = Watermark(grace_ms=grace_ms, bucket_ms=cfg.bucket_ms, sources=sources)
        self.keys: dict[str, KeyWindows] = {}
        self.pending: list[Pending] = []  # a heap
        # Claim hash → (copies pending, the latest close they wait for).
        self.pending_ids: dict[int, tuple[int, int]] = {}
        # (effective, source, offset) of the last pending claim released: those up to it have
        # taken effect (they are released in that order).
        self.released_through: tuple[int, int, int] | None = None
        self._floor: tuple[int | None, int] = (None, 0)  # (closed_through, its claims floor)

    @property
    def claims_floor(self) -> int:
        """A key's remembered claim packed below this is older than the history the watermark
        has closed: gone, though its id may stay until the next scan (CLAIM_SCAN_BUCKETS)."""
        closed = self.watermark.closed_through
        at, floor = self._floor
        if at != closed:
            floor = 0 if closed is None else claims_floor(closed - self.cfg.history_buckets + 1)
            self._floor = (closed, floor)
        return floor

    def take(self, arrival: ClaimFromSource, result: StepResult, now_ms: int | None) -> None:
        """Apply one claim (see the module), then any closes it brings.

        A claim that would replace what its claim id counted already (a correction), or whose
        claim id has a copy still pending, takes effect at the close its copy waits for at the
        earliest, and never at once: the replacement too happens before the same closes in
        every replay, and a pending original never overwrites its later correction.
        """
        source, sources, offset, claim = arrival
        watermark = self.watermark
        history = self.cfg.history_buckets
        event_ms = claim.event_ms
        bucket = bucket_of(event_ms, self.cfg.bucket_ms)
        clock = watermark.source_max_ms.get(source)
        if clock is None or event_ms > clock:
            clock = event_ms
        effective = last_closable_bucket(clock - watermark.grace_ms, self.cfg.bucket_ms)
        window_key = claim.window_key
        ident, packed = packed_claim(claim, bucket)
        copy = self.pending_ids.get(ident)  # (copies pending, the latest close they wait for)
        previous = self._remembered(window_key, ident)
        if copy is not None and copy[1] > effective:
            effective = copy[1]
        closed = watermark.closed_through
        if closed is not None and closed >= effective:
            # Only after an idle advance (the wall clock) can the closes be ahead of a clock.
            if bucket < closed - history + 1:
                result.beyond_history.append(arrival)
            else:
                self._count(window_key, ident, packed, previous, result)
        elif bucket < effective - history + 1:
            result.beyond_history.append(arrival)
        elif bucket > effective and copy is None and previous in (None, packed):
            self._count(window_key, ident, packed, previous, result)  # new, or an exact resend
        else:
            waiting = Pending(effective, source, offset, window_key, ident, packed)
            heapq.heappush(self.pending, waiting)
            self._note_pending(waiting)
            result.pending_added.append(waiting)
        closing = watermark.advance(event_ms, source, sources)
        if now_ms is not None:
            watermark.touch(source, now_ms)
        result.customers[self.customer_id] = self
        self._run_closes(closing, result)

    @property
    def behind(self) -> bool:
        """Whether releases or closes are due that a step's budget left for the next."""
        pending, closed = self.pending, self.watermark.closed_through
        if pending and closed is not None and pending[0].effective <= closed:
            return True
        return self.watermark.closes_due()

    def catch_up(self, result: StepResult) -> None:
        """Release the pending claims due and run the closes due, as far as the budget goes."""
        result.customers[self.customer_id] = self
        if self._release(result):
            self._run_closes(self.watermark.close_due(), result)

    def _run_closes(self, closing: list[int], result: StepResult) -> None:
        """Close ``closing`` in order; stop after a close whose releases the budget cut short
        (the closes after it stay due: see :meth:`Watermark.close_due`)."""
        watermark = self.watermark
        for bucket_closed in closing:
            watermark.closed_through = bucket_closed  # what a release sees: this close's
            if not self._close(bucket_closed, result):
                return

    def _remembered(self, window_key: str, ident: int) -> int | None:
        """What the claim id counted in its key, None if nothing (or only a claim older than
        the history, forgotten if not yet scanned away)."""
        key = self.keys.get(window_key)
        previous = None if key is None else key.claims.get(ident)
        return None if previous is None or previous < self.claims_floor else previous

    def _note_pending(self, waiting: Pending) -> None:
        copies, latest = self.pending_ids.get(waiting.ident, (0, waiting.effective))
        self.pending_ids[waiting.ident] = (copies + 1, max(latest, waiting.effective))

    def restore_pending(self, entries: list[Pending]) -> None:
        """The pending claims as read back from the changelog."""
        self.pending = list(entries)
        heapq.heapify(self.pending)
        self.pending_ids = {}
        for waiting in self.pending:
            self._note_pending(waiting)

    def idle_tick(self, now_ms: int, idle_after_ms: int, result: StepResult) -> None:
        """Advance by the wall clock if the feed is idle (see :meth:`Watermark.idle_tick`)."""
        closing = self.watermark.idle_tick(now_ms, idle_after_ms)
        if closing:
            result.customers[self.customer_id] = self
        self._run_closes(closing, result)

    def _count(
        self, window_key: str, ident: int, packed: int, previous: int | None, result: StepResult
    ) -> None:
        """Count a claim into its key once per claim id; a resend replaces what it added.
        ``previous`` is what :meth:`_remembered` says the claim id counted, read just before."""
        key = self.keys.get(window_key)
        if key is None:
            key = KeyWindows(window_key, self.partition)
        if previous == packed:  # an exact resend: counted once already
            result.duplicates += 1
            return
        self.keys[window_key] = key
        result.counted += 1
        if key.add_known(ident, packed, previous) is Added.REPLACED:
            result.replaced += 1
        closed = self.watermark.closed_through
        if closed is not None and packed_bucket(packed) <= closed:
            result.amended += 1
        result.changed[window_key] = key

    def _close(self, closed: int, result: StepResult) -> bool:
        """Close bucket ``closed``: prune, evaluate every key, then count the claims that were
        waiting for this close; False if the budget left some of them waiting."""
        result.closes += 1
        oldest = closed - self.cfg.history_buckets + 1
        scan = closed % CLAIM_SCAN_BUCKETS == 0
        active = []
        for name, key in list(self.keys.items()):
            if key.prune_before(oldest, scan):
                result.changed[name] = key
            if key.is_empty:
                del self.keys[name]
                result.removed_keys.add(name)
            else:
                active.append(key)
        drifts, evaluations = evaluate_close(self.cfg, closed, active)
        result.drifts.extend(drifts)
        result.evaluations.extend(evaluations)
        return self._release(result)

    def _release(self, result: StepResult) -> bool:
        """Count the pending claims whose close has come, in order, as far as the budget goes;
        whether none is left due."""
        pending, closed = self.pending, self.watermark.closed_through
        if closed is None:
            return True
        while pending and pending[0].effective <= closed:
            if result.budget_spent():
                return False
            result.releases_left -= 1
            waiting = heapq.heappop(pending)
            copies, latest = self.pending_ids[waiting.ident]
            if copies == 1:
                del self.pending_ids[waiting.ident]
            else:
                self.pending_ids[waiting.ident] = (copies - 1, latest)
            previous = self._remembered(waiting.window_key, waiting.ident)
            self._count(waiting.window_key, waiting.ident, waiting.packed, previous, result)
            result.pending_done.append(waiting)
            self.released_through = (waiting.effective, waiting.source, waiting.offset)
        return True

    def to_dict(self) -> dict[str, Any]:
        """The customer's watermark, JSON-ready (keys and pending claims are kept apart)."""
        return {"partition": self.partition, **self.watermark.to_dict(),
                "released_through": self.released_through}  # fmt: skip

    def restore(self, data: dict[str, Any]) -> None:
        """Load what :meth:`to_dict` saved."""
        self.watermark.restore(data)
        released = data.get("released_through")
        self.released_through = None if released is None else (
            int(released[0]), int(released[1]), int(released[2]))  # fmt: skip

    def took_effect(self, waiting: Pending) -> bool:
        """Whether ``waiting`` (read back from the changelog) was released already."""
        released = self.released_through
        return released is not None and (waiting.effective, waiting.source,
                                         waiting.offset) <= released  # fmt: skip
