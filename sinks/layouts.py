"""Operators' console layouts (``operator_layouts``): read and written by the notifier."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_LOAD = text(
    "SELECT layout FROM operator_layouts WHERE customer_id = :customer_id AND operator = :operator"
)
_SAVE = text(
    """
    INSERT INTO operator_layouts (customer_id, operator, layout)
    VALUES (:customer_id, :operator, CAST(:layout AS jsonb))
    ON CONFLICT (customer_id, operator)
    DO UPDATE SET layout = excluded.layout, updated_at = now()
    """
)


async def load_layout(conn: AsyncConnection, customer_id: str, operator: str) -> Any:
    """The operator's saved layout, or None."""
    params = {"customer_id": customer_id, "operator": operator}
    return (await conn.execute(_LOAD, params)).scalar()


async def save_layout(
    conn: AsyncConnection, customer_id: str, operator: str, layout: dict[str, Any]
) -> None:
    """Store the operator's layout (one row per operator of a customer)."""
    params = {"customer_id": customer_id, "operator": operator, "layout": json.dumps(layout)}
    await conn.execute(_SAVE, params)
