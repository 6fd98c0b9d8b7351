"""The HTTP API's query parameters, as pydantic models: each route's parameters are parsed and
checked here, and ``openapi.json`` describes them from the same models
(``scripts/openapi_doc.py``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, TypeVar, get_origin

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from notifier.alert_detail import DAYS_MAX
from streams.domain.values import DriftType, Level, Status

PAGE_MAX = 500  # drift events per page


class BadParamsError(ValueError):
    """The query does not check; the message names each parameter and what is wrong."""


def _moment(value: object) -> object:
    """A query's ISO 8601 date or time (UTC when it has no offset); nothing else (no epoch
    seconds)."""
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO 8601 date or time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _day(value: object) -> object:
    """A query's ISO 8601 date; of a time, its date."""
    if not isinstance(value, str):
        return value
    try:
        return (
            datetime.fromisoformat(value).date() if len(value) > 10 else date.fromisoformat(value)
        )
    except ValueError:
        raise ValueError("must be an ISO 8601 date (YYYY-MM-DD)") from None


def _printable(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("must not contain control characters")
    return text


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
Moment = Annotated[datetime, BeforeValidator(_moment)]
Day = Annotated[date, BeforeValidator(_day)]
Text = Annotated[str, AfterValidator(_printable)]


class Params(BaseModel):
    """Every route's parameters: the customer, which must be the token's (checked apart)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    customer_id: Annotated[
        Text | None, Field(description="Optional; must be the token's customer.")
    ] = None


class DriftEventsParams(Params):
    """``/api/drift-events``."""

    min_severity_level: Level = "info"
    payer_id: Text | None = None
    drift_type: DriftType | None = None
    since: Annotated[
        Moment | None, Field(description="detected_at >= since (ISO 8601; UTC when no offset)")
    ] = None
    until: Annotated[Moment | None, Field(description="detected_at < until")] = None
    limit: Annotated[int, Field(ge=1, le=PAGE_MAX)] = 100
    cursor: Annotated[Text | None, Field(description="next_cursor of the previous page")] = None


class DenialTrendParams(Params):
    """``/api/trends/denials``."""

    since: Annotated[
        Day | None,
        Field(description="first day (ISO date); default: the first of the month 12 months "
                          "before until"),
    ] = None  # fmt: skip
    until: Annotated[
        Day | None, Field(description="day after the last (ISO date); default: tomorrow (UTC)")
    ] = None


class AlertParams(Params):
    """``/api/alert-detail``: one alert of the customer."""

    alert_id: Annotated[Text, Field(min_length=1)]


class AlertSeriesParams(AlertParams):
    """``/api/alert-series``."""

    days: Annotated[
        int, Field(ge=1, le=DAYS_MAX, description="days up to the alert's last_seen")
    ] = 120


class ExportParams(Params):
    """``/api/export/{kind}.{format}``: event dates and filters, each any of its values."""

    since: Annotated[Day | None, Field(description="first day (ISO date); default: no start")] = (
        None
    )
    until: Annotated[
        Day | None, Field(description="day after the last (ISO date); default: no end")
    ] = None
    payer_id: Annotated[list[Text], Field(description="any of these payers")] = []
    drift_type: Annotated[list[DriftType], Field(description="alerts, drift events")] = []
    level: Annotated[list[Level], Field(description="alerts, drift events")] = []
    status: Annotated[list[Status], Field(description="alerts")] = []


P = TypeVar("P", bound=Params)


def parse_params(model: type[P], query: Mapping[str, Sequence[str]]) -> P:
    """``query`` (each name's values, as ``parse_qs`` gives them) as ``model``: a list field
    takes every value, any other the last; blank values are left out. BadParamsError otherwise."""
    data: dict[str, object] = {}
    for name, field in model.model_fields.items():
        values = [v for v in query.get(name, ()) if v != ""]
        if values:
            data[name] = values if get_origin(field.annotation) is list else values[-1]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = (f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BadParamsError("; ".join(problems)) from None
