"""The OpenAPI document of the notifier's HTTP API (written by ``api_docs.py``)."""

# ruff: noqa: E501 -- long literal descriptions read better on one line

from __future__ import annotations

from pydantic import TypeAdapter

from notifier.answers import (
    ActiveAlerts,
    AlertDetail,
    AlertSeries,
    Dashboard,
    DenialTrend,
    DriftEventPage,
    ErrorAnswer,
    Live,
    Ready,
    Session,
)
from notifier.delivery.payloads import (
    Deleted,
    Expired,
    PagerDutyEvent,
    RouteListed,
    Routes,
    RouteSpec,
    SilenceAsked,
    SilenceListed,
    Silences,
    SlackMessage,
    WebhookBody,
)
from notifier.messages import Layout
from notifier.params import (
    AlertParams,
    AlertSeriesParams,
    DenialTrendParams,
    DriftEventsParams,
    ExportParams,
    Params,
)

REF = "#/components/schemas/{model}"
COMPONENTS: dict[str, dict] = {}  # the HTTP answers' schemas, each type once, by name


def component(kind: type) -> dict:
    """A reference to ``kind``'s schema (a type of :mod:`notifier.answers`), which goes into
    the OpenAPI components with the types it nests."""
    schema = TypeAdapter(kind).json_schema(ref_template=REF)
    COMPONENTS.update(schema.pop("$defs", {}))
    COMPONENTS[kind.__name__] = schema
    return {"$ref": REF.format(model=kind.__name__)}


ERRORS = {
    "400": "Bad parameter",
    "401": "Missing, forged or expired token",
    "403": "Token for another customer",
    "404": "No such alert, route or silence for this customer",
    "413": "Body too large",
    "415": "Body not sent as application/json",
    "429": "Rate limited (see Retry-After)",
    "503": "Database unavailable; retry",
}


def answer(description: str, kind: type, media: str = "application/json") -> dict:
    """An OpenAPI response whose body is ``kind``."""
    return {"description": description, "content": {media: {"schema": component(kind)}}}


def errors(*codes: str) -> dict:
    """OpenAPI responses for the error ``codes``."""
    return {code: answer(ERRORS[code], ErrorAnswer) for code in codes}


STR = {"type": "string"}


def param(name, schema, description=None, required=False):
    """An OpenAPI query parameter."""
    out = {"name": name, "in": "query"}
    if required:
        out["required"] = True
    if description:
        out["description"] = description
    return {**out, "schema": schema}


def query(model: type[Params]) -> list[dict]:
    """The query parameters of a route, from the model the notifier parses them with
    (:mod:`notifier.params`)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    out = []
    for name, prop in schema["properties"].items():
        prop = {k: v for k, v in prop.items() if k != "title"}
        description = prop.pop("description", None)
        options = [o for o in prop.pop("anyOf", ()) if o.get("type") != "null"]
        prop = {**options[0], **prop} if options else prop  # ``X | None``: X, or absent
        if prop.get("default") in (None, []):
            prop.pop("default", None)
        out.append(param(name, prop, description, name in required))
    return out


def _api_get(operation_id, summary, parameters, ok, codes):
    """An OpenAPI GET of the API: the bearer token, ``ok`` as its 200 answer, the usual errors
    and ``codes``."""
    responses = {"200": ok, **errors(*codes, "401", "403", "429", "503")}
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": parameters,
            "responses": responses,
        }
    }


def get(operation_id, summary, parameters, kind, *codes):
    """An OpenAPI GET of the API answering ``kind`` as JSON."""
    ok = answer(" ".join(kind.__doc__.split()), kind)
    return _api_get(operation_id, summary, parameters, ok, codes)


def download(operation_id, summary, parameters, media, *codes):
    """An OpenAPI GET of a file download (an attachment of one of the ``media`` types)."""
    body = {kind: {"schema": {"type": "string", "format": "binary", "description": what}}
            for kind, what in media.items()}  # fmt: skip
    ok = {"description": "The file (Content-Disposition: attachment)", "content": body}
    return _api_get(operation_id, summary, parameters, ok, codes)


def change(operation_id, summary, kind, status="200", body=None, path_param=None):
    """An OpenAPI operation that changes something (the ``act`` scope): ``body`` as its JSON
    request, ``kind`` as its answer with ``status``."""
    codes = ("400", "401", "403", "429", "503")
    if body is not None:
        codes += ("413", "415")
    if path_param is not None:
        codes += ("404",)
    out = {
        "operationId": operation_id,
        "summary": summary,
        "responses": {status: answer(" ".join(kind.__doc__.split()), kind), **errors(*codes)},
    }
    if path_param is not None:
        out["parameters"] = [{"name": path_param, "in": "path", "required": True, "schema": STR}]
    if body is not None:
        schema = component(body)
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
    return out


def receiver(operation_id, summary, kind, headers=()):
    """An OpenAPI webhook: what Upstream POSTs to a receiver (any 2xx answer takes it)."""
    out = {
        "operationId": operation_id,
        "summary": summary,
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": component(kind)}},
        },
        "responses": {
            "2XX": {"description": "Taken; anything else (or no answer) is tried again later"}
        },
    }
    if headers:
        out["parameters"] = [
            {"name": name, "in": "header", "required": required, "description": what, "schema": STR}
            for name, required, what in headers
        ]
    return {"post": out}


def open_get(operation_id, summary, responses):
    """An OpenAPI GET that needs no token."""
    return {
        "get": {
            "operationId": operation_id,
            "security": [],
            "summary": summary,
            "responses": responses,
        }
    }


OPENAPI = {
    "openapi": "3.1.0",
    "info": {
        "title": "Upstream notifier HTTP API",
        "version": "1.0.0",
        "description": "Read-side API of the Upstream notifier, on the same port as the WebSocket (/ws). "
        "Authenticate with the operator token (`upstream token`) as `Authorization: Bearer <token>`, "
        "or with the session cookie `GET /session` sets; a token reads its own customer's data only. "
        "Reads need the token's `read` scope, changes its `act` scope. "
        "Read responses are cached for up to 2 s and dropped at once when a new alert transition arrives; "
        "gzip when `Accept-Encoding: gzip`; 40 requests in any 2 s per operator.",
    },
    "servers": [
        {"url": "/", "description": "the notifier that serves this document (default port 8765)"}
    ],
    "security": [{"operatorToken": []}],
    "paths": {
        "/api/alerts": get(
            "listActiveAlerts",
            "The customer's open alerts (active or acknowledged), most recently seen first.",
            query(Params),
            ActiveAlerts,
        ),
        "/api/drift-events": get(
            "listDriftEvents",
            "Drift events, newest first, filtered and paginated by cursor.",
            query(DriftEventsParams),
            DriftEventPage,
            "400",
        ),
        "/api/trends/denials": get(
            "monthlyDenialTrend",
            "Decided and denied claims and the denial rate per month and payer.",
            query(DenialTrendParams),
            DenialTrend,
            "400",
        ),
        "/api/alert-series": get(
            "alertSeries",
            "One alert's key, day by day, against the drift event's baseline and current values (the console's chart).",
            query(AlertSeriesParams),
            AlertSeries,
            "400",
            "404",
        ),
        "/api/dashboard": get(
            "dashboard",
            "The console's landing page: open alerts by level; claims decided on the customer's latest decided date and in the week to it, with the denial rate, and its 28-day trend; the payers whose denial rate rose most (last 30 days against the 60 before) with the extra denials and the allowed amount at stake, and those with the most at stake; a timeline of the 40 alerts seen last by event time; the latest 20 alert transitions with who made them; and the health of the customer's feed (claims received per day, new, resent, amended and rejected, when it last delivered, the rates and a quality score with its formula).",
            query(Params),
            Dashboard,
        ),
        "/api/layout": get(
            "layout",
            "The operator's dashboard layout as saved over the WebSocket (a layout message), or the default: every widget, none hidden.",
            query(Params),
            Layout,
        ),
        "/api/alert-detail": get(
            "alertDetail",
            "One alert explained (the console's alert detail): the change in words, the test's statistics, the denial reason and CPT codes with the most extra denials, example claim ids, the key's three metrics day by day over both windows, and every version with who acted and when.",
            query(AlertParams),
            AlertDetail,
            "400",
            "404",
        ),
        "/api/export/{kind}.{format}": download(
            "export",
            "The customer's drift events, alerts or claims as a download: CSV (formula-like text quoted) and JSON lines stream as they are read, however many rows; XLSX has a Summary sheet with a chart and a Details sheet. Dates are event dates: claims by decided_date, drift events by detected_at, alerts by last_seen. Each download is written to the audit log.",
            [
                {
                    "name": "kind",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": ["alerts", "drift-events", "claims"]},
                },
                {
                    "name": "format",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": ["csv", "jsonl", "xlsx"]},
                },
                *query(ExportParams),
            ],
            {
                "text/csv": "CSV, a header row first",
                "application/x-ndjson": "one JSON object per row",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "an XLSX workbook",
            },
            "400",
            "404",
        ),
        "/api/report.pdf": download(
            "report",
            "A PDF report of the customer's open alerts (most severe first) and the drift events of the week of event time up to its latest one. Written to the audit log.",
            query(Params),
            {"application/pdf": "the report"},
        ),
        "/api/routes": get(
            "listRoutes",
            "The customer's alert routes: what each matches, the transitions it sends, to which receivers (secrets masked), how often again, and where it escalates.",
            [],
            Routes,
        ),
        "/api/routes/{name}": {
            "put": change(
                "setRoute",
                "Create or replace a route (name: 1-64 letters, digits, '-', '_'). A running dispatcher applies it to the notifications that follow. Audited, secrets masked.",
                RouteListed,
                body=RouteSpec,
                path_param="name",
            ),
            "delete": change("deleteRoute", "Delete a route. Audited.", Deleted, path_param="name"),
        },
        "/api/silences": {
            **get(
                "listSilences",
                "The customer's silences not yet ended, and the open alerts a silence holds now.",
                [],
                Silences,
            ),
            "post": change(
                "addSilence",
                "Silence the matching alerts from now: they exist and show, marked silenced, but send nothing; an alert still open when the silence ends notifies then. Audited.",
                SilenceListed,
                status="201",
                body=SilenceAsked,
            ),
        },
        "/api/silences/{silence_id}": {
            "delete": change(
                "expireSilence",
                "End a running silence now. Audited.",
                Expired,
                path_param="silence_id",
            )
        },
        "/session": open_get(
            "session",
            "Trade the token in `Authorization: Bearer` for an HttpOnly, SameSite=Strict session cookie (until the token expires), which the console then uses.",
            {"200": answer("Session set (Set-Cookie)", Session), **errors("401")},
        ),
        "/healthz": open_get("liveness", "The process is up.", {"200": answer("Up", Live)}),
        "/readyz": open_get(
            "readiness",
            "Postgres followed and Kafka answering; 503 otherwise.",
            {"200": answer("Ready", Ready), "503": answer("Not ready", Ready)},
        ),
        "/docs": open_get(
            "apiDocs",
            "This document in Swagger UI, served by the notifier itself; its requests go to the same origin, with the console's session cookie or a token given to Authorize.",
            {"200": {"description": "The page", "content": {"text/html": {"schema": STR}}}},
        ),
        "/metrics": open_get(
            "metrics",
            "Prometheus metrics (text exposition format).",
            {"200": {"description": "Metrics", "content": {"text/plain": {"schema": STR}}}},
        ),
    },
    "webhooks": {
        "alertWebhook": receiver(
            "alertWebhook",
            "A route's generic webhook receiver: one POST per alert event, at least once, in order per alert, retried with exponential backoff and jitter until the give-up time.",
            WebhookBody,
            [
                (
                    "Idempotency-Key",
                    True,
                    "`<alert_id>:<version>`: the same for every attempt at one transition",
                ),
                (
                    "X-Upstream-Signature",
                    False,
                    '`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>` with the receiver\'s secret (when it has one); refuse an old t',
                ),
            ],
        ),
        "slackIncomingWebhook": receiver(
            "slackIncomingWebhook",
            "A route's Slack receiver (an incoming-webhook URL): a readable message with a link to the alert in the console.",
            SlackMessage,
        ),
        "pagerDutyEventsV2": receiver(
            "pagerDutyEventsV2",
            "A route's PagerDuty receiver (Events API v2, POST /v2/enqueue): trigger, acknowledge and resolve by the alert's dedup key, so PagerDuty's incident follows the alert. Email receivers get the same summary as subject, a plain-text and an HTML body with the link, and a Message-ID of `<alert_id.version@upstream.invalid>`.",
            PagerDutyEvent,
        ),
    },
    "components": {
        "securitySchemes": {
            "operatorToken": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT (HS256: sub, customer_id, scope, exp)",
            }
        },
        "schemas": COMPONENTS,
    },
}
