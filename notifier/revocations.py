"""Revoked operator tokens: ``upstream token revoke`` records them, every notifier follows them.

A revoked token's ``jti`` goes into ``revoked_tokens`` (and the audit log). Each notifier reads
the table again every :data:`FOLLOW_EVERY_S`, refuses the token from then on (WebSocket and
HTTP) and closes the connections that authenticated with it (4401, "token revoked").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from notifier.hub import psycopg_conninfo
from sinks.audit import record_audit

log = logging.getLogger("upstream.notifier")
FOLLOW_EVERY_S = 2.0


async def revoke(database_url: str, jti: str, customer_id: str, actor: str, reason: str) -> None:
    """Record ``jti`` as revoked, and who revoked it, in one transaction."""
    conninfo = psycopg_conninfo(database_url)
    async with await psycopg.AsyncConnection.connect(conninfo) as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO revoked_tokens (jti, reason) VALUES (%s, %s) ON CONFLICT (jti) DO NOTHING",
            (jti, reason or None),
        )
        await record_audit(conn, customer_id=customer_id, actor=actor, action="revoke_token",
                           subject=jti, origin="cli", detail={"reason": reason})  # fmt: skip


class Revocations:
    """The revoked ``jti`` values, followed in Postgres; ``jti in revocations`` asks."""

    def __init__(self, database_url: str, on_revoked: Callable[[set[str]], Any]) -> None:
        self.conninfo = psycopg_conninfo(database_url)
        self.on_revoked = on_revoked
        self.jtis: set[str] = set()

    def __contains__(self, jti: object) -> bool:
        return jti in self.jtis

    async def load(self) -> set[str]:
        """Read the table; the ``jti`` values not known before (also handed to on_revoked)."""
        async with await psycopg.AsyncConnection.connect(self.conninfo) as conn:
            cursor = await conn.execute("SELECT jti FROM revoked_tokens")
            new = {str(row[0]) for row in await cursor.fetchall()} - self.jtis
        if new:
            self.jtis |= new
            self.on_revoked(new)
        return new

    async def run(self) -> None:
        """Follow the table until cancelled; a Postgres outage keeps the last list."""
        while True:
            try:
                await self.load()
            except psycopg.OperationalError as exc:
                log.warning("revoked tokens not read (%s); trying again", exc)
            await asyncio.sleep(FOLLOW_EVERY_S)
