"""The detection benchmark's scoring, and a small smoke run of it on the domain engine."""

import pytest

from bench.detection import Detection, score
from bench.workloads import ONSET_DAY, Group
from streams.devtools.generator import Shift

SHIFTED = Group("up", 2, (30, 30), Shift("denial_rate", ONSET_DAY, 0.1))
FREE = Group("free", 1, (30, 30))
TRUTH = {"up|p1|g": SHIFTED, "up|p2|g": SHIFTED, "free|p3|g": FREE}


@pytest.mark.parametrize(
    ("detections", "recall", "delay", "shifted_fa", "free_fa"),
    [
        ([], 0.0, None, 0.0, 0.0),
        ([Detection("up|p1|g", "denial_rate", ONSET_DAY + 4)], 0.5, 4, 0.0, 0.0),
        # wrong type, or found too late, is not a hit
        (
            [
                Detection("up|p1|g", "decision_lag", ONSET_DAY + 4),
                Detection("up|p2|g", "denial_rate", ONSET_DAY + 31),
            ],
            0.0,
            None,
            0.0,
            0.0,
        ),
        # before the onset and on drift-free keys: false alarms, one per (key, day)
        (
            [
                Detection("up|p1|g", "denial_rate", 50),
                Detection("up|p1|g", "decision_lag", 50),
                Detection("free|p3|g", "denial_rate", 10),
            ],
            0.0,
            None,
            5.0,
            6.67,
        ),
    ],
)
def test_score(
    detections: list[Detection],
    recall: float,
    delay: float | None,
    shifted_fa: float,
    free_fa: float,
) -> None:
    """Recall, delay and false alarms per 1,000 key-days follow their definitions."""
    report = score(detections, TRUTH)
    assert report["up"]["recall"] == recall
    assert report["up"]["median_delay_days"] == delay
    assert report["up"]["false_alarms_per_1000_key_days"] == shifted_fa
    assert report["free"]["false_alarms_per_1000_key_days"] == free_fa


def test_a_late_feed_may_find_a_shift_later_by_its_lag() -> None:
    found = [Detection("up|p1|g", "denial_rate", ONSET_DAY + 40)]
    assert score(found, TRUTH)["up"]["recall"] == 0.0
    assert score(found, TRUTH, lag_days=20)["up"]["recall"] == 0.5
