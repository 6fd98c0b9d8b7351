"""The closed value sets: their parse functions accept exactly their members."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streams.domain import values

SETS: list[tuple[Callable[[object], str], tuple[str, ...]]] = [
    (values.as_drift_type, values.DRIFT_TYPES),
    (values.as_level, values.LEVELS),
    (values.as_status, values.STATUSES),
    (values.as_command, values.COMMANDS),
    (values.as_verdict, values.VERDICTS),
    (values.as_outcome, values.OUTCOMES),
]


@pytest.mark.parametrize(("parse", "members"), SETS, ids=lambda x: getattr(x, "__name__", ""))
def test_members_parse_to_themselves_and_anything_else_is_refused(
    parse: Callable[[object], str], members: tuple[str, ...]
) -> None:
    assert [parse(m) for m in members] == list(members)
    for other in ("", members[0].upper() if members[0].islower() else members[0].lower(),
                  f" {members[0]}", None, 1):  # fmt: skip
        with pytest.raises(ValueError, match="one of"):
            parse(other)


def test_the_sets_are_what_the_records_document() -> None:
    """The Avro docs of DriftEvent and AlertEvent list the same values."""
    from schemas.codec import load_schema_json

    def doc(schema: str, field: str) -> list[str]:
        found = [f for f in load_schema_json(schema)["fields"] if f["name"] == field]
        return str(found[0].get("doc", "")).split(" | ")

    assert doc("DriftEvent", "drift_type") == list(values.DRIFT_TYPES)
    assert doc("DriftEvent", "severity_level") == list(values.LEVELS)
    assert doc("AlertEvent", "status") == list(values.STATUSES)
    assert doc("AlertEvent", "transition") == list(values.TRANSITIONS)
