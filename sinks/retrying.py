"""Writes retried for as long as Postgres is unreachable, and what counts as unreachable."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy.exc import DBAPIError, OperationalError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

log = logging.getLogger("upstream.sink")
MAX_BACKOFF_S = 10.0
# The bulk path talks to psycopg directly, so errors come from either layer.
UNAVAILABLE = (OperationalError, psycopg.OperationalError)
REJECTED = (DBAPIError, psycopg.DataError, psycopg.IntegrityError)


def reason_of(exc: Exception) -> str:
    """The database's own message, without SQLAlchemy's wrapping."""
    return str(getattr(exc, "orig", None) or exc)[:500]


def postgres_retrying(
    on_retry: Callable[[BaseException | None], None] | None = None, **options: Any
) -> AsyncRetrying:
    """Attempts that are tried again, with exponential backoff and jitter up to
    :data:`MAX_BACKOFF_S`, for as long as Postgres is unreachable; each wait is logged (and
    reported to ``on_retry``). ``options`` go to tenacity (``stop``, ``sleep``)."""

    def report(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        if on_retry is not None:
            on_retry(error)
        reason = reason_of(error) if isinstance(error, Exception) else "?"
        log.warning("postgres unavailable (%s); retrying in %.1fs", reason.splitlines()[0],
                    state.upcoming_sleep)  # fmt: skip

    return AsyncRetrying(
        retry=retry_if_exception_type(UNAVAILABLE),
        wait=wait_exponential_jitter(multiplier=0.2, max=MAX_BACKOFF_S, jitter=0.2),
        before_sleep=report,
        reraise=True,
        **options,
    )
