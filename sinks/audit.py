"""The audit trail: one ``audit_log`` row per operator command or rule change."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import psycopg

_INSERT = (
    "INSERT INTO audit_log (customer_id, actor, action, subject, origin, detail) "
    "VALUES (%s, %s, %s, %s, %s, %s)"
)


async def record_audit(
    conn: psycopg.AsyncConnection[Any],
    *,
    customer_id: str,
    actor: str,
    action: str,
    subject: str,
    origin: str,
    detail: Mapping[str, Any],
) -> None:
    """Insert who (``actor``) did what (``action`` on ``subject``) from where (``origin``)."""
    values = (customer_id, actor, action, subject, origin, json.dumps(detail, default=str))
    await conn.execute(_INSERT, values)
