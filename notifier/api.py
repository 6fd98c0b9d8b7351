"""The notifier's JSON API (``/api/…``), on the WebSocket port; described in ``openapi.json``.

Same tokens as the WebSocket (``Authorization: Bearer …``, or the console's session cookie); a
token reads its own customer's data only. Responses are cached briefly per customer and query
and dropped as soon as the hub sees a new alert transition, and rate-limited per operator
(``429`` with ``Retry-After``); :mod:`notifier.web` compresses them. Every error is
``{"error": "…"}`` with its status.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable, Container, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qs

from prometheus_client import Counter
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response

from notifier.alert_detail import alert_detail
from notifier.answers import (
    ActiveAlerts,
    AlertDetail,
    AlertSeries,
    Dashboard,
    DenialMonth,
    DenialTrend,
    DriftEvent,
    DriftEventPage,
    ErrorAnswer,
    SeriesDay,
)
from notifier.dashboard import dashboard
from notifier.explain import share
from notifier.layouts import Layouts
from notifier.messages import Alert, Layout
from notifier.params import (
    AlertParams,
    AlertSeriesParams,
    BadParamsError,
    DenialTrendParams,
    DriftEventsParams,
    P,
    Params,
    parse_params,
)
from notifier.session import bearer_token, session_token
from notifier.throttle import Throttle
from notifier.tokens import Keys, Operator, TokenError, verify_token
from sinks.queries import (
    DriftFilter,
    active_alerts,
    alert_with_drift,
    drift_events_page,
    key_daily,
    monthly_denial_trend,
)

log = logging.getLogger("upstream.notifier")
CACHE_TTL_S = 2.0
CACHE_MAX_ENTRIES = 1000
# Answers of one operator, not of the customer, and changed by the operator's own messages
# rather than by alert transitions: never cached.
PER_OPERATOR = frozenset({"/api/layout"})


_DAILY_VALUE: dict[str, Callable[[dict[str, Any]], float | None]] = {
    # drift type -> its value on one day of sinks.queries.key_daily
    "denial_rate": lambda day: share(day["denied"], day["decided"]),
    "decision_lag": lambda day: day["lag_days"],
    "allowed_amount": lambda day: day["allowed_geomean"],
}
API_REQUESTS = Counter(
    "upstream_api_requests_total",
    "JSON API requests by endpoint and status",
    ["endpoint", "status"],
)


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message}``."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def response(
    status: HTTPStatus, body: bytes, content_type: str, extra: dict[str, str] | None = None
) -> Response:
    """An HTTP response with Content-Type and Content-Length (and ``extra`` headers)."""
    return Response(body, status.value, extra, media_type=content_type)


def unavailable() -> ApiError:
    """The answer when Postgres does not: 503, retry."""
    return ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "database unavailable; retry")


def error_response(exc: ApiError) -> Response:
    """``{"error": …}`` with the error's status and headers."""
    body = json.dumps(ErrorAnswer(error=str(exc))).encode()
    return response(exc.status, body, "application/json", exc.headers)


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _cursor(raw: str | None) -> tuple[datetime, str] | None:
    """Decode a ``next_cursor``: base64 of ``<detected_at ISO>|<event_id>``."""
    if raw is None:
        return None
    try:
        moment, event_id = base64.urlsafe_b64decode(raw.encode()).decode().split("|", 1)
        return datetime.fromisoformat(moment), event_id
    except (ValueError, binascii.Error):
        raise ApiError(HTTPStatus.BAD_REQUEST, "cursor is not one this API returned") from None


def _next_cursor(row: dict[str, Any]) -> str:
    raw = f"{row['detected_at'].isoformat()}|{row['event_id']}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


Answer = (
    ActiveAlerts | DriftEventPage | DenialTrend | AlertSeries | AlertDetail | Dashboard | Layout
)
Handler = Callable[[Operator, Any], Awaitable[Answer]]


class HttpApi:
    """Answers ``/api/*`` requests from Postgres, through a short cache."""

    def __init__(
        self,
        engine: AsyncEngine,
        secret: Keys | str,
        version: Callable[[], int],
        requests_per_second: float = 20.0,
        burst: int = 40,
        revoked: Container[str] = (),
    ) -> None:
        self.engine = engine
        self.keys = Keys.of(secret)
        self.revoked = revoked
        self.version = version  # the hub's last transition seq: a change drops the cache
        self._throttle = Throttle(requests_per_second, burst)  # per operator of a customer
        self._cache: dict[tuple[str, str, str], tuple[float, int, bytes]] = {}
        # path -> the handler and the model of its query parameters
        self._routes: dict[str, tuple[Handler, type[Params]]] = {
            "/api/alerts": (self._alerts, Params),
            "/api/drift-events": (self._drift_events, DriftEventsParams),
            "/api/trends/denials": (self._denial_trend, DenialTrendParams),
            "/api/alert-series": (self._alert_series, AlertSeriesParams),
            "/api/alert-detail": (self._alert_detail, AlertParams),
            "/api/dashboard": (self._dashboard, Params),
            "/api/layout": (self._layout, Params),
        }
        self.layouts = Layouts(engine)

    async def respond(self, request: Request) -> Response:
        """The response to one API request (never raises)."""
        path = request.url.path
        endpoint = path if path in self._routes else "unknown"
        try:
            body = await self._answer(request)
        except ApiError as exc:
            API_REQUESTS.labels(endpoint=endpoint, status=str(exc.status.value)).inc()
            return error_response(exc)
        API_REQUESTS.labels(endpoint=endpoint, status="200").inc()
        cache = "no-store" if path in PER_OPERATOR else f"private, max-age={int(CACHE_TTL_S)}"
        return response(HTTPStatus.OK, body, "application/json", {"Cache-Control": cache})

    def authorize(self, request: Request) -> tuple[Operator, dict[str, list[str]]]:
        """The operator a request comes from (its token), within its rate limit, and the
        request's query, whose ``customer_id`` if given is the token's; or ApiError."""
        operator = self._operator(request)
        self._rate_limit(operator)
        query = parse_qs(request.url.query, keep_blank_values=True)
        wanted = _one(query, "customer_id")
        if wanted is not None and wanted != operator.customer_id:
            raise ApiError(HTTPStatus.FORBIDDEN, "token is for another customer")
        return operator, query

    async def _answer(self, request: Request) -> bytes:
        path, raw_query = request.url.path, request.url.query
        route = self._routes.get(path)
        if route is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint {path}; see /openapi.json")
        handler, model = route
        operator, query = self.authorize(request)
        params = self.params(model, query)
        key = (operator.customer_id, path, "&".join(sorted(raw_query.split("&"))))
        now, version = time.monotonic(), self.version()
        cached = None if path in PER_OPERATOR else self._cache.get(key)
        if cached is not None and cached[0] > now and cached[1] == version:
            return cached[2]
        try:
            payload = await handler(operator, params)
        except (OperationalError, DBAPIError, OSError) as exc:
            log.warning("API query failed: %s", exc)
            raise unavailable() from None
        body = json.dumps(payload, default=_json_default).encode()
        if path in PER_OPERATOR:
            return body
        if len(self._cache) >= CACHE_MAX_ENTRIES:
            self._cache.clear()
        self._cache[key] = (now + CACHE_TTL_S, version, body)
        return body

    @staticmethod
    def params(model: type[P], query: Mapping[str, Sequence[str]]) -> P:
        """``query`` parsed and checked as ``model``; ApiError 400 naming what is wrong."""
        try:
            return parse_params(model, query)
        except BadParamsError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, str(exc)) from None

    def _operator(self, request: Request) -> Operator:
        token = bearer_token(request.headers)
        if not request.headers.get("Authorization"):
            token = session_token(request.headers)  # the console's session (GET /session)
        if not token:
            raise ApiError(
                HTTPStatus.UNAUTHORIZED,
                "send the operator token as 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": "Bearer"},
            )
        try:
            return verify_token(self.keys, token, self.revoked)
        except TokenError as exc:
            status = HTTPStatus.FORBIDDEN if exc.close_code == 4403 else HTTPStatus.UNAUTHORIZED
            raise ApiError(status, str(exc), {"WWW-Authenticate": "Bearer"}) from None

    def _rate_limit(self, operator: Operator) -> None:
        who = (operator.customer_id, operator.operator)
        if not self._throttle.allow(*who):
            retry = str(self._throttle.retry_after_s(*who))
            raise ApiError(
                HTTPStatus.TOO_MANY_REQUESTS, "too many requests; slow down", {"Retry-After": retry}
            )

    async def _layout(self, operator: Operator, params: Params) -> Layout:  # noqa: ARG002 - every route handler takes its parameters
        return await self.layouts.load(operator.customer_id, operator.operator)

    async def _dashboard(self, operator: Operator, params: Params) -> Dashboard:  # noqa: ARG002 - every route handler takes its parameters
        async with self.engine.connect() as conn:
            return await dashboard(conn, operator.customer_id)

    async def _alerts(self, operator: Operator, params: Params) -> ActiveAlerts:  # noqa: ARG002 - every route handler takes its parameters
        async with self.engine.connect() as conn:
            alerts = await active_alerts(conn, operator.customer_id)
        # The rows read are the answer's items (the tests check them against openapi.json).
        return ActiveAlerts(customer_id=operator.customer_id, alerts=cast("list[Alert]", alerts))

    async def _drift_events(self, operator: Operator, params: DriftEventsParams) -> DriftEventPage:
        filters = DriftFilter(
            min_severity_level=params.min_severity_level,
            payer_id=params.payer_id,
            drift_type=params.drift_type,
            since=params.since,
            until=params.until,
        )
        limit = params.limit
        before = _cursor(params.cursor)
        async with self.engine.connect() as conn:
            rows = await drift_events_page(conn, operator.customer_id, filters, limit + 1, before)
        page, more = rows[:limit], len(rows) > limit
        return DriftEventPage(
            customer_id=operator.customer_id,
            drift_events=cast("list[DriftEvent]", page),
            next_cursor=_next_cursor(page[-1]) if more else None,
        )

    async def _denial_trend(self, operator: Operator, params: DenialTrendParams) -> DenialTrend:
        today = datetime.now(UTC).date()
        until_day = params.until or today + timedelta(days=1)
        since_day = params.since or (until_day - timedelta(days=366)).replace(day=1)
        if since_day >= until_day:
            raise ApiError(HTTPStatus.BAD_REQUEST, "since must be before until")
        async with self.engine.connect() as conn:
            months = await monthly_denial_trend(conn, operator.customer_id, since_day, until_day)
        return DenialTrend(
            customer_id=operator.customer_id,
            since=since_day,
            until=until_day,
            months=cast("list[DenialMonth]", months),
        )

    async def _alert_series(self, operator: Operator, params: AlertSeriesParams) -> AlertSeries:
        alert_id, days = params.alert_id, params.days
        async with self.engine.connect() as conn:
            alert = await alert_with_drift(conn, operator.customer_id, alert_id)
            if alert is None:
                raise ApiError(HTTPStatus.NOT_FOUND, f"no alert {alert_id} for this customer")
            until = alert["last_seen"].date() + timedelta(days=1)
            since = until - timedelta(days=days)
            rows = await key_daily(
                conn, operator.customer_id, alert["payer_id"], alert["cpt_group"], since, until
            )
        value = _DAILY_VALUE.get(alert["drift_type"], _DAILY_VALUE["denial_rate"])
        return AlertSeries(
            alert_id=alert_id,
            drift_type=alert["drift_type"],
            baseline_value=alert["baseline_value"],
            current_value=alert["current_value"],
            baseline_start=alert["baseline_start"],
            baseline_end=alert["baseline_end"],
            current_start=alert["current_start"],
            current_end=alert["current_end"],
            days=[SeriesDay(day=r["day"], value=value(r), claims=r["decided"]) for r in rows],
        )

    async def _alert_detail(self, operator: Operator, params: AlertParams) -> AlertDetail:
        alert_id = params.alert_id
        async with self.engine.connect() as conn:
            detail = await alert_detail(conn, operator.customer_id, alert_id)
        if detail is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no alert {alert_id} for this customer")
        return detail
