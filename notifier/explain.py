"""An alert's change in words a revenue-cycle lead reads at a glance, from its drift event.

The drift event's values are per claim of the current window (docs/semantics.md): a denial
rate, a mean decision lag in days, or a geometric-mean allowed amount. What the change means for
the window's claims is the difference times their number: denials more than usual (and, with the
key's median allowed amount, what they put at stake), days waited more, dollars allowed less.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from notifier.answers import CodeChange
from streams.domain.alerts import feed_message
from streams.domain.values import FEED_DRIFT_TYPES, DriftType

DAY = timedelta(days=1)


def _money(amount: float) -> str:
    """Dollars, short: $980, $41k, $1.2M."""
    amount = abs(amount)
    if amount >= 999_500:
        return f"${amount / 1e6:.1f}M"
    if amount >= 9_995:
        return f"${amount / 1e3:.0f}k"
    if amount >= 1_000:
        return f"${amount / 1e3:.1f}k"
    return f"${amount:,.0f}"


def _days(start: datetime, end: datetime) -> str:
    """The window's decided dates, its end excluded: "8 Mar – 6 Apr 2026" (the bounds are UTC
    midnights, whatever time zone the database session reads them in)."""
    start, last = start.astimezone(UTC), end.astimezone(UTC) - DAY
    first = f"{start.day} {start:%b}" + ("" if start.year == last.year else f" {start.year}")
    return f"{first} – {last.day} {last:%b %Y}"


def share(part: int, whole: int) -> float | None:
    """``part`` of ``whole`` (denied of decided claims, say); None when there is no whole."""
    return part / whole if whole else None


def explain(drift: dict[str, Any], median_allowed: float | None = None) -> str:
    """One or two sentences for ``drift`` (a stored drift event's columns).

    ``median_allowed``, the key's median allowed amount of paid claims in the baseline window,
    prices extra denials; without it the sentence leaves the money out.
    """
    kind: DriftType = drift["drift_type"]
    if kind in FEED_DRIFT_TYPES:
        start_ms = int(drift["current_start"].timestamp() * 1000)
        return feed_message(kind, drift["baseline_value"], drift["current_value"], start_ms) + "."
    before, now, claims = drift["baseline_value"], drift["current_value"], drift["current_n"]
    extra = (now - before) * claims  # denials, claim-days or dollars, by the drift type
    went = "rose" if now > before else "fell"
    span = (f"of {claims:,} claims decided {_days(drift['current_start'], drift['current_end'])}"
            f" (the last {drift['window_days']:g} days)")  # fmt: skip
    if kind == "denial_rate":
        text = f"Denials {went} from {100 * before:.1f}% to {100 * now:.1f}% {span}; "
        text += f"about {abs(extra):,.0f} {'more' if extra >= 0 else 'fewer'} denials than usual"
        if median_allowed is not None and extra > 0:
            text += f", ≈ {_money(extra * median_allowed)} of allowed amount at stake"
        return text + "."
    if kind == "decision_lag":
        change = "slowed" if now > before else "sped up"
        return (f"Decisions {change} from {before:.1f} to {now:.1f} days on average {span}; "
                f"about {abs(extra):,.0f} claim-days {'more' if extra >= 0 else 'less'} "
                "waiting than usual.")  # fmt: skip
    more = "more" if extra >= 0 else "less"
    return (f"Typical allowed amounts {went} from ${before:,.2f} to ${now:,.2f} a claim {span}; "
            f"about {_money(extra)} {more} allowed than usual.")  # fmt: skip


def reason_changes(
    reasons: list[dict[str, Any]], baseline_claims: int, current_claims: int, top: int = 5
) -> list[CodeChange]:
    """Denial reason codes by how many more denials carry them in the current window than the
    baseline's rate per claim predicts (``reasons``: code, baseline and current denials)."""
    scale = current_claims / baseline_claims if baseline_claims else 0.0
    return _top([_change(r["code"], r["baseline"], r["current"], r["baseline"] * scale)
                 for r in reasons], top)  # fmt: skip


def cpt_changes(codes: list[dict[str, Any]], top: int = 5) -> list[CodeChange]:
    """CPT codes by how many more of their current claims were denied than their baseline
    denial rate predicts (the key's rate for a code new in the current window); ``codes``: code,
    baseline_claims, baseline (denials), current_claims, current (denials)."""
    baseline_claims = sum(c["baseline_claims"] for c in codes)
    overall = sum(c["baseline"] for c in codes) / baseline_claims if baseline_claims else 0.0
    changes = []
    for c in codes:
        rate = c["baseline"] / c["baseline_claims"] if c["baseline_claims"] else overall
        changes.append(_change(c["code"], c["baseline"], c["current"], rate * c["current_claims"]))
    return _top(changes, top)


def _change(code: str, baseline: int, current: int, expected: float) -> CodeChange:
    return CodeChange(code=code, baseline_denials=baseline, current_denials=current,
                      extra_denials=round(current - expected, 1))  # fmt: skip


def _top(changes: list[CodeChange], top: int) -> list[CodeChange]:
    return sorted(changes, key=lambda c: (-c["extra_denials"], c["code"]))[:top]
