"""Reading and closing an operator's WebSocket (Starlette's, served by uvicorn)."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

CLOSE_TIMEOUT_S = 10.0  # a close that cannot be sent (a client that stopped reading) is given up
# What a send or a close raises on a connection that is gone or closing.
CLOSED = (WebSocketDisconnect, WebSocketDisconnected, OSError)


async def receive(ws: WebSocket) -> str | bytes | None:
    """The next message's text or bytes; None once the connection is closed."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    return text if text is not None else bytes(message.get("bytes") or b"")


async def close(ws: WebSocket, code: int, reason: str) -> None:
    """Close ``ws`` with ``code`` unless it is closed already; a close that cannot be written
    within :data:`CLOSE_TIMEOUT_S` (the client stopped reading) is given up."""
    with contextlib.suppress(*CLOSED, TimeoutError):
        await asyncio.wait_for(ws.close(code, reason[:120]), CLOSE_TIMEOUT_S)
