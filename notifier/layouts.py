"""Operators' dashboard layouts: checked where they come in (the WebSocket's ``layout``
message), stored per operator of a customer, read back by ``GET /api/layout``."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from notifier.messages import WIDGETS, Error, Layout, LayoutSaved, Widget
from notifier.tokens import Operator
from sinks import layouts as stored

log = logging.getLogger("upstream.notifier")

DEFAULT_LAYOUT = Layout(order=list(WIDGETS), hidden=[])


def as_layout(raw: Any) -> Layout:
    """``raw`` as a layout: every widget once in ``order``, some in ``hidden``; ValueError
    naming the problem otherwise."""
    if not isinstance(raw, dict) or set(raw) != {"order", "hidden"}:
        raise ValueError('a layout is {"order": [widgets], "hidden": [widgets]}')
    order, hidden = raw["order"], raw["hidden"]
    names = ", ".join(WIDGETS)
    if not isinstance(order, list) or sorted(map(str, order)) != sorted(WIDGETS):
        raise ValueError(f"order must name each widget once: {names}")
    if not isinstance(hidden, list) or not set(map(str, hidden)) <= set(WIDGETS):
        raise ValueError(f"hidden must name widgets among: {names}")
    known: dict[str, Widget] = {w: w for w in WIDGETS}
    return Layout(order=[known[w] for w in order], hidden=sorted({known[w] for w in hidden}))


def with_every_widget(saved: Any) -> Any:
    """A stored layout with the widgets it does not name (added since it was saved) shown at
    the end; anything but a layout as it was."""
    if not isinstance(saved, dict) or not isinstance(saved.get("order"), list):
        return saved
    missing = [w for w in WIDGETS if w not in saved["order"]]
    return {**saved, "order": [*saved["order"], *missing]}


class Layouts:
    """Each operator's layout in Postgres."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def load(self, customer_id: str, operator: str) -> Layout:
        """The operator's saved layout, or the default (every widget, in their order)."""
        async with self.engine.connect() as conn:
            saved = await stored.load_layout(conn, customer_id, operator)
        if saved is None:
            return DEFAULT_LAYOUT
        try:
            return as_layout(with_every_widget(saved))
        except ValueError:  # a stored layout that does not check (edited by hand, say)
            return DEFAULT_LAYOUT

    async def save(self, customer_id: str, operator: str, layout: Layout) -> None:
        """Store the operator's layout."""
        async with self.engine.begin() as conn:
            await stored.save_layout(conn, customer_id, operator, dict(layout))


async def save_layout(
    layouts: Layouts | None, operator: Operator, message: dict[str, Any]
) -> LayoutSaved | Error:
    """Store the layout of a ``layout`` message for its operator; the answer to send."""
    if layouts is None:
        return Error(type="error", message="this notifier keeps no layouts")
    try:
        layout = as_layout(message.get("layout"))
        await layouts.save(operator.customer_id, operator.operator, layout)
    except ValueError as exc:
        return Error(type="error", message=f"layout: {exc}")
    except Exception as exc:  # Postgres down: the console keeps its layout until next time
        log.warning("layout not saved: %s", exc)
        return Error(type="error", message="layout not saved; retry")
    return LayoutSaved(type="layout_saved", layout=layout)
