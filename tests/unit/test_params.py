"""The HTTP API's query parameters: parsed by their models, refused with the parameter named."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from notifier.params import (
    AlertSeriesParams,
    BadParamsError,
    DenialTrendParams,
    DriftEventsParams,
    ExportParams,
    parse_params,
)


def test_defaults_last_value_wins_and_blank_values_are_absent() -> None:
    params = parse_params(DriftEventsParams, {"limit": ["5", "7"], "payer_id": [""], "x": ["1"]})
    assert params.limit == 7
    assert params.payer_id is None
    assert params.min_severity_level == "info"


def test_a_time_without_offset_is_utc_and_one_with_an_offset_is_kept() -> None:
    naive = parse_params(DriftEventsParams, {"since": ["2026-03-01T10:00:00"]})
    assert naive.since == datetime(2026, 3, 1, 10, tzinfo=UTC)
    aware = parse_params(DriftEventsParams, {"until": ["2026-03-01T10:00:00+02:00"]})
    assert aware.until is not None
    assert aware.until.astimezone(UTC) == datetime(2026, 3, 1, 8, tzinfo=UTC)


def test_list_parameters_take_every_value() -> None:
    params = parse_params(ExportParams, {"level": ["warning", "critical"], "since": ["2026-03-01"]})
    assert params.level == ["warning", "critical"]
    assert params.since == date(2026, 3, 1)
    assert params.status == []


@pytest.mark.parametrize(
    ("model", "query", "message"),
    [
        (DriftEventsParams, {"limit": ["0"]}, "limit: Input should be greater than or equal to 1"),
        (DriftEventsParams, {"limit": ["ten"]}, "limit: Input should be a valid integer"),
        (ExportParams, {"status": ["active", "closed"]}, "status.1: Input should be 'active'"),
        (AlertSeriesParams, {}, "alert_id: Field required"),
        (AlertSeriesParams, {"alert_id": ["a"], "days": ["401"]}, "days: Input should be less"),
        (DriftEventsParams, {"since": ["1700000000"]}, "since: Value error, must be an ISO 8601"),
        (DriftEventsParams, {"payer_id": ["p\x00"]}, "payer_id: Value error, must not contain"),
        (ExportParams, {"payer_id": ["a", "b\n"]}, "payer_id.1: Value error, must not contain"),
        (ExportParams, {"until": ["March"]}, "until: Value error, must be an ISO 8601 date"),
    ],
)
def test_a_bad_query_names_each_parameter(
    model: type[DriftEventsParams | ExportParams | AlertSeriesParams | DenialTrendParams],
    query: dict[str, list[str]],
    message: str,
) -> None:
    with pytest.raises(BadParamsError, match="^" + message.replace(".", r"\.")):
        parse_params(model, query)


def test_a_day_may_be_given_as_a_time_of_that_day() -> None:
    params = parse_params(DenialTrendParams, {"since": ["2026-03-01T10:00:00+02:00"]})
    assert params.since == date(2026, 3, 1)
