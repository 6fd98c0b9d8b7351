"""Event-time buckets per window key.

A bucket is ``bucket_ms`` of event time; bucket ``i`` covers ``[i * bucket_ms, (i + 1) *
bucket_ms)``. Each key keeps running sums per bucket, so any window is a sum of buckets.
When a bucket closes is its customer's :class:`streams.domain.watermark.Watermark`.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, TypeAlias

from streams.domain.claims import Claim

# Per-bucket sums, by position: claims, denied, lag days, lag days², amounts > 0,
# ln(allowed $) and ln(allowed $)² in micro-units. All integers: exact, so a sum does not depend
# on the order claims arrived in (float addition would, in the last bits).
LOG_SCALE = 1_000_000
N, DENIED, LAG_SUM, LAG_SQ, AMT_N, AMT_LOG, AMT_LOG_SQ = range(7)
_WIDTH = 7


def bucket_of(timestamp_ms: int, bucket_ms: int) -> int:
    """Index of the bucket holding ``timestamp_ms``."""
    return timestamp_ms // bucket_ms


@dataclass(frozen=True, slots=True)
class WindowSums:
    """Sums of several buckets of one key."""

    n: int
    denied: int
    lag_sum: float
    lag_sq: float
    amount_n: int
    amount_log: float
    amount_log_sq: float


def claim_hash(claim_id: str) -> int:
    """A stable 63-bit hash of a claim id (Python's ``hash`` changes per process)."""
    digest = hashlib.blake2b(claim_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _log_micro(cents: int) -> int:
    """ln(allowed $) in micro-units, as the bucket sums hold it."""
    return round(math.log(cents / 100.0) * LOG_SCALE)


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one claim added to one bucket; packed into one int per claim id."""

    bucket: int
    pended: bool
    denied: bool
    lag_days: int
    allowed_cents: int

    @classmethod
    def of(cls, claim: Claim, bucket: int) -> Contribution:
        """The contribution of ``claim`` to ``bucket``."""
        pended = claim.outcome == "PENDED"
        return cls(bucket, pended, claim.denied, _lag_days(claim), claim.allowed_cents)

    def pack(self) -> int:
        """One non-negative int: bucket | pended | denied | lag | cents."""
        return _pack(self.bucket, self.pended, self.denied, self.lag_days, self.allowed_cents)

    @classmethod
    def unpack(cls, packed: int) -> Contribution:
        """Inverse of :meth:`pack`."""
        head = packed >> _HEAD_SHIFT
        return cls(
            bucket=(head >> 2) - _BUCKET_OFFSET,
            pended=bool(head & _PENDED),
            denied=bool(head & _DENIED),
            lag_days=(packed >> _LAG_SHIFT) & _LAG_MAX,
            allowed_cents=packed & _CENTS_MAX,
        )


# A packed contribution, from the high bits down: the bucket (offset by _BUCKET_OFFSET, so
# never negative), pended, denied (together the "head", from bit _HEAD_SHIFT), the lag in days
# (16 bits from _LAG_SHIFT), the allowed cents (40 bits). The bucket leads so that the packed
# ints of one bucket sort before those of every later one (see KeyWindows.prune_before).
_HEAD_SHIFT = 56
_LAG_SHIFT = 40
_PENDED, _DENIED = 2, 1  # bits of the head
_LAG_MAX = (1 << 16) - 1
_CENTS_MAX = (1 << 40) - 1
_BUCKET_OFFSET = 1 << 31


def _pack(bucket: int, pended: bool, denied: bool, lag_days: int, allowed_cents: int) -> int:
    head = ((bucket + _BUCKET_OFFSET) << 2) | (pended * _PENDED) | (denied * _DENIED)
    return (head << _HEAD_SHIFT) | (lag_days << _LAG_SHIFT) | min(allowed_cents, _CENTS_MAX)


def packed_bucket(packed: int) -> int:
    """The bucket of a packed contribution (see :meth:`Contribution.unpack`)."""
    return (packed >> (_HEAD_SHIFT + 2)) - _BUCKET_OFFSET


def claims_floor(bucket: int) -> int:
    """The least packed contribution of ``bucket``: a key's claim ids packed below it are in
    older buckets (see :meth:`KeyWindows.prune_before`)."""
    return _pack(bucket, False, False, 0, 0)


def packed_claim(claim: Claim, bucket: int) -> tuple[int, int]:
    """``(claim_hash, packed contribution)``: what a key remembers of ``claim`` in ``bucket``.

    The same as ``Contribution.of(claim, bucket).pack()``, without building the contribution
    (one call per claim in the windows' hot path).
    """
    outcome = claim.outcome
    packed = _pack(
        bucket, outcome == "PENDED", outcome == "DENIED", _lag_days(claim), claim.allowed_cents
    )
    return claim_hash(claim.claim_id), packed


def _lag_days(claim: Claim) -> int:
    """The claim's decision lag, within what a packed contribution holds."""
    lag = claim.decision_lag_days
    return 0 if lag < 0 else _LAG_MAX if lag > _LAG_MAX else lag


_NOTHING: frozenset[int] = frozenset()
_NO_CLAIMS: Mapping[int, int | None] = MappingProxyType({})


class Added(Enum):
    """What :meth:`KeyWindows.add` did with a claim."""

    NEW = "new"
    REPLACED = "replaced"  # a resend with corrected values: the old contribution was removed
    DUPLICATE = "duplicate"  # a resend with the same values: counted once already


# A key's buckets live in one flat int64 array, sorted by bucket: ``_ROW`` ints per bucket,
# the bucket's index then its seven sums. No Python object per bucket or per sum (a dict of
# 7-int lists cost ~850 bytes for a key of three buckets; the array costs 256). A sum that
# outgrows int64 (the log² of some 400,000 allowed amounts of $100 in one bucket of one key)
# turns that key's array into a list of Python ints, which index, slice and compare the same.
_ROW = 1 + _WIDTH

Rows: TypeAlias = "array[int] | list[int]"  # array("q"), or a list after an overflow


def _no_rows() -> Rows:
    return array("q")


def _store(rows: Rows, at: int, values: list[int]) -> Rows:
    """``rows[at:at + len(values)] = values``; returns the rows (a list if int64 overflowed)."""
    if isinstance(rows, array):
        try:
            rows[at : at + len(values)] = array("q", values)
            return rows
        except OverflowError:
            rows = list(rows)
    rows[at : at + len(values)] = values
    return rows


@dataclass(slots=True)
class KeyWindows:
    """The buckets of one ``customer_id|payer_id|cpt_group`` key.

    ``rows`` holds each bucket's sums (see ``_ROW``). ``claims`` maps each claim id (hashed)
    still inside the history to its packed contribution, so that a resent claim replaces what
    it added instead of counting twice. Cost: one dict entry (two Python ints, about 100 bytes)
    per claim in the history.
    """

    key: str
    partition: int
    rows: Rows = field(default_factory=_no_rows, repr=False)
    claims: dict[int, int] = field(default_factory=dict)
    # Changed since the last take_changes(): what the changelog must rewrite or delete. None
    # when nothing is: an empty set costs 216 bytes, and most keys are idle between two flushes.
    dirty_buckets: set[int] | None = field(default=None, compare=False, repr=False)
    # Claim hash → its packed contribution now, None once it has gone.
    dirty_claims: dict[int, int | None] | None = field(default=None, compare=False, repr=False)

    def add(self, claim: Claim, bucket: int) -> Added:
        """Count ``claim`` into ``bucket`` once per claim id; a resend replaces the original."""
        ident, packed = packed_claim(claim, bucket)
        return self.add_known(ident, packed, self.claims.get(ident))

    def add_known(self, ident: int, packed: int, previous: int | None) -> Added:
        """:meth:`add` for a claim already hashed and packed (see :func:`packed_claim`), when
        the caller has just read ``previous``, what ``claims`` holds for ``ident`` (None:
        nothing, or only a claim older than the history), and has not changed this key
        since."""
        if previous == packed:
            return Added.DUPLICATE
        if previous is not None:
            self._apply(previous, -1)
        self._apply(packed, +1)
        self.claims[ident] = packed
        if self.dirty_claims is None:
            self.dirty_claims = {ident: packed}
        else:
            self.dirty_claims[ident] = packed
        return Added.NEW if previous is None else Added.REPLACED

    def _apply(self, packed: int, sign: int) -> None:
        """Add (``sign`` +1) or remove (-1) a packed contribution to its bucket's sums."""
        head = packed >> _HEAD_SHIFT
        if head & _PENDED:
            return  # pended: not a decision yet, kept only so that the final decision replaces it
        bucket = (head >> 2) - _BUCKET_OFFSET
        at = self._find(bucket)
        if at < 0:
            if sign < 0:
                return  # the bucket has left the history already
            at = self._insert(~at, bucket, [0] * _WIDTH)
        if self.dirty_buckets is None:
            self.dirty_buckets = {bucket}
        else:
            self.dirty_buckets.add(bucket)
        lag = (packed >> _LAG_SHIFT) & _LAG_MAX
        cents = packed & _CENTS_MAX
        sums = list(self.rows[at + 1 : at + _ROW])  # Python ints: a sum may outgrow int64
        sums[N] += sign
        if head & _DENIED:
            sums[DENIED] += sign
        sums[LAG_SUM] += sign * lag
        sums[LAG_SQ] += sign * lag * lag
        if cents > 0:
            log_amount = _log_micro(cents)
            sums[AMT_N] += sign
            sums[AMT_LOG] += sign * log_amount
            sums[AMT_LOG_SQ] += sign * log_amount * log_amount
        self.rows = _store(self.rows, at + 1, sums)

    def _find(self, bucket: int) -> int:
        """Where ``bucket``'s row starts in ``rows``, or ``~start`` of where it would go."""
        rows = self.rows
        hi = len(rows) // _ROW
        if hi and rows[(hi - 1) * _ROW] == bucket:  # most claims go to the newest bucket
            return (hi - 1) * _ROW
        lo = 0
        while lo < hi:
            mid = (lo + hi) // 2
            found = rows[mid * _ROW]
            if found < bucket:
                lo = mid + 1
            elif found > bucket:
                hi = mid
            else:
                return mid * _ROW
        return ~(lo * _ROW)

    def _start_of(self, bucket: int) -> int:
        """Where ``bucket``'s row starts in ``rows``, or would if it were there."""
        at = self._find(bucket)
        return ~at if at < 0 else at

    def _insert(self, at: int, bucket: int, sums: list[int]) -> int:
        rows = self.rows
        if isinstance(rows, array):
            rows[at:at] = array("q", bytes(8 * _ROW))
        else:
            rows[at:at] = [0] * _ROW
        self.rows = _store(rows, at, [bucket, *sums])
        return at

    def bucket(self, index: int) -> list[int] | None:
        """The seven sums of bucket ``index`` (see ``N`` … ``AMT_LOG_SQ``), None if absent."""
        at = self._find(index)
        return None if at < 0 else list(self.rows[at + 1 : at + _ROW])

    def set_bucket(self, index: int, sums: list[int]) -> None:
        """Replace (or add) bucket ``index``'s sums, as read back from the changelog."""
        at = self._find(index)
        if at < 0:
            self._insert(~at, index, sums)
        else:
            self.rows = _store(self.rows, at + 1, sums)

    @property
    def buckets(self) -> dict[int, list[int]]:
        """Every bucket's sums by index, oldest first (a copy)."""
        rows = self.rows
        return {rows[at]: list(rows[at + 1 : at + _ROW]) for at in range(0, len(rows), _ROW)}

    def sums(self, first: int, last: int) -> WindowSums:
        """Sums over buckets ``first..last`` inclusive."""
        start, end = self._start_of(first), self._start_of(last + 1)
        rows = self.rows
        total = [sum(rows[start + 1 + i : end : _ROW]) for i in range(_WIDTH)]
        return WindowSums(
            total[N],
            total[DENIED],
            float(total[LAG_SUM]),
            float(total[LAG_SQ]),
            total[AMT_N],
            total[AMT_LOG] / LOG_SCALE,
            total[AMT_LOG_SQ] / (LOG_SCALE * LOG_SCALE),
        )

    def prune_before(self, bucket: int, claims: bool = True) -> bool:
        """Forget buckets older than ``bucket`` and, with ``claims`` or once no bucket is left,
        the claim ids older too; return whether any went.

        Claim ids are found by a scan of every id the key remembers, which a close of each
        bucket made the largest cost of a claim (a claim is scanned once per bucket of the
        history). So :class:`~streams.domain.processor.PartitionWindows` scans them only
        every few closes, and reads the ones older than the history as gone until then
        (:func:`claims_floor`). Buckets alone are cheap: a slice of the rows.
        """
        rows = self.rows
        end = self._start_of(bucket)
        if not end and rows and not claims:
            return False
        stale = list(rows[0:end:_ROW])
        del rows[:end]
        old_claims: list[int] = []
        if claims or not rows:  # no bucket left: whether the key is empty depends on its ids
            bound = claims_floor(bucket)
            old_claims = [h for h, packed in self.claims.items() if packed < bound]
            for ident in old_claims:
                del self.claims[ident]
        if stale:
            self.dirty_buckets = {*(self.dirty_buckets or ()), *stale}
        if old_claims:
            self.dirty_claims = {**(self.dirty_claims or {}), **dict.fromkeys(old_claims)}
        return bool(stale or old_claims)

    def take_changes(self) -> tuple[AbstractSet[int], Mapping[int, int | None]]:
        """Buckets changed (or removed) since the last call, and claim hashes changed since
        then with their packed contribution now (None: removed); resets them."""
        changes = (self.dirty_buckets or _NOTHING, self.dirty_claims or _NO_CLAIMS)
        self.dirty_buckets = self.dirty_claims = None
        return changes

    @property
    def is_empty(self) -> bool:
        """No bucket and no remembered claim left."""
        return not self.rows and not self.claims

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "key": self.key,
            "partition": self.partition,
            "buckets": self.buckets,
            "claims": self.claims,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyWindows:
        """Inverse of :meth:`to_dict` (JSON turns int keys into strings)."""
        windows = cls(str(data["key"]), int(data["partition"]))
        for index, sums in data["buckets"].items():
            windows.set_bucket(int(index), [int(x) for x in sums])
        windows.claims = {int(k): int(v) for k, v in data.get("claims", {}).items()}
        return windows
