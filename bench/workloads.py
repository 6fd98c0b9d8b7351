"""Detection workload: shifted keys of known size and onset, and drift-free keys.

Every group of keys is a separate customer so that the ground truth is plain: a key either has
one :class:`Shift` (kind, onset day, size) or none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from streams.devtools.generator import GROUPS, KeyProfile, Scenario, Shift

ONSET_DAY = 100
DAYS = 150


@dataclass(frozen=True, slots=True)
class Group:
    """A family of keys: name, how many, claims per day, and the shift they carry."""

    name: str
    keys: int
    per_day: tuple[int, int]
    shift: Shift | None = None
    weekday: tuple[float, ...] = ()


GROUPS_OF_KEYS = (
    Group("denial+8", 20, (30, 30), Shift("denial_rate", ONSET_DAY, 0.08)),
    Group("denial+12", 20, (30, 30), Shift("denial_rate", ONSET_DAY, 0.12)),
    Group("lag+4d", 10, (30, 30), Shift("decision_lag", ONSET_DAY, 4.0)),
    Group("lag-creep", 10, (30, 30), Shift("decision_lag", ONSET_DAY, 8.0, 20)),
    Group("amount-15%", 10, (30, 30), Shift("allowed_amount", ONSET_DAY, -0.15)),
    Group("steady", 40, (20, 40)),
    Group("low-volume", 40, (2, 4)),
    Group("weekday-seasonal", 20, (20, 40), weekday=(0.16, 0.12, 0.10, 0.10, 0.09, 0.05, 0.05)),
)


def detection_scenario(seed: int = 11, scale: float = 1.0) -> tuple[Scenario, dict[str, Group]]:
    """The workload as one scenario, and each key's group (``customer|payer|cpt_group``)."""
    rng = random.Random(seed)
    profiles: list[KeyProfile] = []
    truth: dict[str, Group] = {}
    for group in GROUPS_OF_KEYS:
        for i in range(max(1, round(group.keys * scale))):
            cpt_group, _, billed = GROUPS[i % len(GROUPS)]
            profile = KeyProfile(
                customer_id=group.name,
                payer_id=f"payer-{i:03d}",
                cpt_group=cpt_group,
                billed=billed,
                per_day=rng.randint(*group.per_day),
                weekday_denial=group.weekday,
                shift=group.shift,
            )
            profiles.append(profile)
            truth[profile.key] = group
    scenario = Scenario(name="steady", days=DAYS, seed=seed, profiles=tuple(profiles))
    return scenario, truth
