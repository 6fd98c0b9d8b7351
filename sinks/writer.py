"""Batched, idempotent writes of claims, drift events and alert transitions.

Effectively-once by keys and versions, so a redelivered or replayed message changes nothing:

- ``claim_records``: upserted, and updated only by a later Kafka position of the claim, so a
  redelivered older version never overwrites a correction; what the feed sent is counted into
  ``feed_days`` in the same transaction (:mod:`sinks.feed`).
- ``drift_events``: insert, ``ON CONFLICT (event_id) DO NOTHING`` (ids are deterministic).
- ``alert_transitions``: insert, ``ON CONFLICT (alert_id, version) DO NOTHING``; ``seq`` is the
  notifier's replay cursor.
- ``alert_events``: upsert of the latest state, only when the incoming version is newer, so a
  stale transition never overwrites a newer one.
- ``operator_judgments``: the latest verdict per alert, by version.

The bulk path is ``COPY`` (Postgres parses and checks the values in C); a few drift events or
alerts go as pipelined ``INSERT … VALUES`` instead, which takes fewer round trips; see
:class:`PostgresWriter`. A batch's drift events and alerts are one transaction that also sends
``NOTIFY`` so notifiers wake up at once; its claims may be split over concurrent transactions.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import psycopg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from sinks.feed import ADD_COUNTS, ADD_REJECTIONS, batch_counts, claim_versions, merge_claims
from sinks.rows import ALERT_TYPES, CLAIM_COLUMNS, DRIFT_COLUMNS, DRIFT_TYPES, Row
from sinks.tables import ALERT_FIELDS, NOTIFY_CHANNEL, drift_events


@dataclass(frozen=True)
class _Bulk:
    """How rows reach one table: COPY straight in, COPY into ``stage`` and merge from there, or
    (a few rows) one ``INSERT … VALUES`` each, pipelined."""

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...] | None  # binary COPY with these Postgres types; text when None
    stage: str
    on_conflict: str  # what a merge or an insert of values does with a key already stored
    ordinal: bool = False  # the stage has an ``ord`` column that keeps the batch's order
    like: str = ""  # the table the stage copies its columns from, when not ``table``
    few_as_values: bool = True  # a few rows go as ``INSERT … VALUES`` (not claims: see below)

    @property
    def create_stage(self) -> str:
        extra = ", ord bigint" if self.ordinal else ""
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} "
            f"(LIKE {self.like or self.table} INCLUDING DEFAULTS{extra}) ON COMMIT DELETE ROWS"
        )

    @property
    def merge(self) -> str:
        """``INSERT … SELECT`` from the stage, in the batch's order when it keeps one."""
        columns = ", ".join(self.columns)
        order = " ORDER BY ord" if self.ordinal else ""
        return (
            f"INSERT INTO {self.table} ({columns}) SELECT {columns} FROM {self.stage}{order} "
            + self.on_conflict
        )

    @property
    def insert_values(self) -> str:
        """``INSERT … VALUES`` of one row."""
        return (
            f"INSERT INTO {self.table} ({', '.join(self.columns)}) "
            f"VALUES ({', '.join(['%s'] * len(self.columns))}) {self.on_conflict}"
        )


# The statements below are built once from fixed column names; no value is interpolated.
_CLAIMS = _Bulk(
    "claim_records", CLAIM_COLUMNS, None, "stage_claims",
    "ON CONFLICT (customer_id, claim_id) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in CLAIM_COLUMNS[2:])
    + ", stored_at = now() WHERE (claim_records.source_partition, claim_records.source_offset)"
    " < (excluded.source_partition, excluded.source_offset)",
    few_as_values=False,  # 30 claims as values: 1.5x the time, 3.5x Postgres' CPU of a COPY
)  # fmt: skip
_MERGE_CLAIMS = merge_claims(_CLAIMS.stage, _CLAIMS.on_conflict)
_DRIFT_EVENTS = _Bulk(
    "drift_events", DRIFT_COLUMNS, DRIFT_TYPES, "stage_drift",
    "ON CONFLICT (event_id) DO NOTHING",
)  # fmt: skip
_TRANSITIONS = _Bulk(
    "alert_transitions", ALERT_FIELDS, ALERT_TYPES, "stage_transitions",
    "ON CONFLICT (alert_id, version) DO NOTHING",
    ordinal=True, like="alert_events",  # without seq, which the insert assigns
)  # fmt: skip
_LATEST = _Bulk(
    "alert_events", ALERT_FIELDS, ALERT_TYPES, "stage_latest",
    "ON CONFLICT (alert_id) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in ALERT_FIELDS[1:])
    + " WHERE alert_events.version < excluded.version",
)  # fmt: skip
_UPSERT_JUDGMENT = (
    "INSERT INTO operator_judgments (alert_id, version, customer_id, verdict, judged_at) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (alert_id) DO UPDATE SET "
    "version = excluded.version, verdict = excluded.verdict, judged_at = excluded.judged_at "
    "WHERE operator_judgments.version < excluded.version"
)
_A_ID, _A_VERSION = ALERT_FIELDS.index("alert_id"), ALERT_FIELDS.index("version")
_A_TRANSITION, _A_VERDICT = ALERT_FIELDS.index("transition"), ALERT_FIELDS.index("verdict")
_JUDGMENT = itemgetter(_A_ID, _A_VERSION, ALERT_FIELDS.index("customer_id"), _A_VERDICT,
                       ALERT_FIELDS.index("last_seen"))  # fmt: skip


def _latest(
    rows: Iterable[Row], key: Callable[[Row], Any], order: Callable[[Row], Any]
) -> list[Row]:
    """One row per key: the one with the greatest ``order`` (the first of equals)."""
    latest: dict[Any, Row] = {}
    for row in rows:
        k = key(row)
        held = latest.get(k)
        if held is None or order(held) < order(row):
            latest[k] = row
    return list(latest.values())


def _first_by(rows: Sequence[Row], key: Callable[[Row], Any]) -> list[Row]:
    """The first row of each key, in batch order (the rest are redeliveries)."""
    first: dict[Any, Row] = {}
    for row in rows:
        first.setdefault(key(row), row)
    return list(first.values())


class PostgresWriter:
    """Writes batches to Postgres through an async SQLAlchemy engine (psycopg 3).

    Rows are deduplicated by key within the batch and then ``COPY``-ed straight into their
    table, inside a savepoint: when nothing in the batch is stored yet (the common case) that
    is all the work there is. A key already stored raises a unique violation; the writer rolls
    back to the savepoint and takes the merge path (COPY into a staging table, one
    ``INSERT … SELECT … ON CONFLICT``), and keeps to the merge path for the next
    :attr:`MERGE_AFTER_CONFLICT` writes to that table, as redeliveries come in runs. Up to
    :attr:`FEW_ROWS` drift events or alerts (an alert or two is the common batch of the drift
    and alert loop) are one ``INSERT … VALUES … ON CONFLICT`` each instead, pipelined by
    ``executemany``: one round trip where a COPY in a savepoint takes four (one drift event and
    one alert: 1.5–1.8 ms a write against 3.1–3.4; still faster at 10 rows each, even at 20,
    slower at 50).

    A batch's claims, once deduplicated, are split into up to ``claim_lanes`` parts of at least
    :attr:`MIN_LANE_ROWS` rows, each written by its own connection at the same time as the
    others (the first shares the drift and alert transaction): one Postgres backend parsing and
    indexing a COPY is what limits claims (1 lane: 54k rows/s here, 2: 82k). The parts hold
    different claims, so the transactions never wait on each other. A batch whose transactions
    did not all commit raises and is written again whole, which the keys make harmless. Drift
    events and alerts stay in one transaction: ``alert_transitions.seq`` is the notifiers'
    cursor, and two transactions could commit their ``seq`` out of order.
    """

    MERGE_AFTER_CONFLICT = 20
    MIN_LANE_ROWS = 1000
    FEW_ROWS = 10  # up to this many drift or alert rows are inserted as values, not copied

    def __init__(self, engine: AsyncEngine, *, claim_lanes: int = 2) -> None:
        if claim_lanes < 1:
            raise ValueError(f"claim_lanes must be at least 1, not {claim_lanes}")
        self.engine = engine
        self.claim_lanes = claim_lanes
        self._merge_for: dict[str, int] = {}  # table -> writes left on the merge path

    async def ping(self) -> None:
        """One round trip to Postgres (readiness); raises when it is unreachable."""
        async with self.engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def stored_drift_events(self, event_ids: Iterable[str]) -> set[str]:
        """Those of ``event_ids`` that ``drift_events`` holds."""
        query = select(drift_events.c.event_id).where(drift_events.c.event_id.in_(event_ids))
        async with self.engine.connect() as conn:
            return set((await conn.execute(query)).scalars())

    async def write(
        self,
        drift_rows: Sequence[Row],
        alert_rows: Sequence[Row],
        claim_rows: Sequence[Row] = (),
    ) -> None:
        """Write one batch (rows as built by the ``*_row`` functions).

        Returns once every transaction of the batch has committed; otherwise raises the first
        error, after the others have ended.
        """
        lanes = self._claim_lanes(claim_versions(claim_rows))
        outcomes = await asyncio.gather(
            self._transaction(lanes[0], drift_rows, alert_rows),
            *(self._transaction(claims, (), ()) for claims in lanes[1:]),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def reject_claims(self, rejections: Sequence[tuple[Any, ...]]) -> None:
        """Store the claim messages the sink rejected (:func:`~sinks.feed.rejection_row`) and
        count them in their customers' ``feed_days``; those stored already count nothing."""
        columns = [list(column) for column in zip(*rejections, strict=True)]
        async with self.engine.begin() as conn:
            await conn.exec_driver_sql(ADD_REJECTIONS, tuple(columns))

    def _claim_lanes(self, claims: list[list[Row]]) -> list[list[list[Row]]]:
        """``claims`` (the versions of each claim) in consecutive parts of even size, one per
        lane; at least one part."""
        lanes = max(1, min(self.claim_lanes, len(claims) // self.MIN_LANE_ROWS))
        size, longer = divmod(len(claims), lanes)  # the first ``longer`` parts get one more
        bounds = [i * size + min(i, longer) for i in range(lanes + 1)]
        return [claims[start:end] for start, end in itertools.pairwise(bounds)]

    async def _transaction(
        self, claims: Sequence[list[Row]], drift_rows: Sequence[Row], alert_rows: Sequence[Row]
    ) -> None:
        """Write claims (the versions of each) and the batch's drift and alert rows in one
        transaction."""
        async with self.engine.begin() as conn:
            raw = await conn.get_raw_connection()
            pg: Any = raw.driver_connection
            async with pg.cursor() as cur:
                if claims:
                    await self._claims(cur, claims)
                if drift_rows:
                    await self._insert(cur, _DRIFT_EVENTS, _first_by(drift_rows, itemgetter(0)))
                if alert_rows:
                    await self._alerts(cur, alert_rows)
                    await cur.execute(f"NOTIFY {NOTIFY_CHANNEL}")

    async def _claims(self, cur: Any, claims: Sequence[list[Row]]) -> None:
        """The newest version of each claim, and what the feed sent counted into
        ``feed_days``: straight in when none is stored (counted here), merged otherwise (the
        merge counts against the stored versions)."""

        async def merge() -> None:
            await cur.execute(_CLAIMS.create_stage)
            await _copy(cur, _CLAIMS.stage, CLAIM_COLUMNS, None, itertools.chain(*claims))
            await cur.execute(_MERGE_CLAIMS)

        if await self._insert(cur, _CLAIMS, [versions[-1] for versions in claims], merge):
            await cur.executemany(ADD_COUNTS, batch_counts(claims))

    async def _alerts(self, cur: Any, rows: Sequence[Row]) -> None:
        await self._insert(cur, _TRANSITIONS, _first_by(rows, itemgetter(_A_ID, _A_VERSION)))
        latest = _latest(rows, itemgetter(_A_ID), itemgetter(_A_VERSION))
        if not await self._as_values(cur, _LATEST, latest):
            await self._merge(cur, _LATEST, latest)
        judged = [r for r in rows if r[_A_TRANSITION] == "judged" and r[_A_VERDICT] is not None]
        if judged:  # rare: one statement per alert judged
            judged = _latest(judged, itemgetter(_A_ID), itemgetter(_A_VERSION))
            await cur.executemany(_UPSERT_JUDGMENT, [_JUDGMENT(r) for r in judged])

    async def _as_values(self, cur: Any, bulk: _Bulk, rows: Sequence[Row]) -> bool:
        """Insert ``rows`` one statement each, pipelined, if they are few enough for that
        (True); otherwise leave them (False)."""
        if not bulk.few_as_values or len(rows) > self.FEW_ROWS:
            return False
        await cur.executemany(bulk.insert_values, rows)
        return True

    async def _insert(
        self,
        cur: Any,
        bulk: _Bulk,
        rows: Sequence[Row],
        merge: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """COPY straight into the table (True); on a key already stored, ``merge`` instead
        (:meth:`_merge` by default; False). A few rows are inserted as values
        (:meth:`_as_values`), which takes fewer round trips."""
        if await self._as_values(cur, bulk, rows):
            return False
        merge = merge or (lambda: self._merge(cur, bulk, rows))
        left = self._merge_for.get(bulk.table, 0)
        if left:
            self._merge_for[bulk.table] = left - 1
            await merge()
            return False
        await cur.execute("SAVEPOINT bulk")
        try:
            await _copy(cur, bulk.table, bulk.columns, bulk.types, rows)
        except psycopg.errors.UniqueViolation:
            await cur.execute("ROLLBACK TO SAVEPOINT bulk")
            self._merge_for[bulk.table] = self.MERGE_AFTER_CONFLICT
            await merge()
            return False
        await cur.execute("RELEASE SAVEPOINT bulk")
        return True

    @staticmethod
    async def _merge(cur: Any, bulk: _Bulk, rows: Sequence[Row]) -> None:
        await cur.execute(bulk.create_stage)
        columns, types = bulk.columns, bulk.types
        if bulk.ordinal:
            rows = [(*r, i) for i, r in enumerate(rows)]
            columns = (*columns, "ord")
            types = types and (*types, "int8")
        await _copy(cur, bulk.stage, columns, types, rows)
        await cur.execute(bulk.merge)


async def _copy(
    cur: Any,
    table: str,
    columns: Sequence[str],
    types: Sequence[str] | None,
    rows: Iterable[Row],
) -> None:
    binary = " (FORMAT BINARY)" if types else ""
    async with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN{binary}") as copy:
        if types:
            copy.set_types(types)
        for row in rows:
            await copy.write_row(row)
