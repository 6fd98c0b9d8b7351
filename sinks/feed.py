"""Feed health: what each customer's feed delivered, counted as the sink stores it.

Each claim message with a newer Kafka position than the version stored is *received* and is
one of: *new* (its claim was not stored), *resent* (every value as stored: the feed sent it
again), or *amended* (a value changed: a correction, a late remittance). A message the sink
rejects is *invalid*. The counts go to ``feed_days`` (customer, UTC day the sink stored them)
in the transaction that stores the claims, so a batch written again after a crash, or a
redelivered message, counts nothing twice: it is not newer than what it stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import pairwise
from operator import itemgetter
from typing import Any

from sinks.rows import CLAIM_COLUMNS, Row
from streams.domain.claims import MAX_ID_CHARS

KEY = itemgetter(CLAIM_COLUMNS.index("customer_id"), CLAIM_COLUMNS.index("claim_id"))
POSITION = itemgetter(CLAIM_COLUMNS.index("source_partition"), CLAIM_COLUMNS.index("source_offset"))
_CUSTOMER = CLAIM_COLUMNS.index("customer_id")
# The values a resend repeats and an amendment changes: all but the keys and the position.
_CONTENT = slice(2, -2)
CONTENT = CLAIM_COLUMNS[_CONTENT]
assert CLAIM_COLUMNS[:2] == ("customer_id", "claim_id")
assert CLAIM_COLUMNS[-2:] == ("source_partition", "source_offset")

Counts = tuple[str, int, int, int, int]  # customer, received, new, resent, amended


def claim_versions(rows: Iterable[Row]) -> list[list[Row]]:
    """The rows of each claim, oldest Kafka position first; claims in order of first row."""
    versions: dict[Any, list[Row]] = {}
    for row in rows:
        held = versions.get(key := KEY(row))
        if held is None:
            versions[key] = [row]
        else:
            held.append(row)
            if POSITION(held[-2]) > POSITION(row):  # out of Kafka order: rare
                held.sort(key=POSITION)
    return list(versions.values())


def batch_counts(claims: Sequence[list[Row]]) -> list[Counts]:
    """Counts of claims none of which is stored yet, per customer in code point order (the
    order, ``COLLATE "C"``, in which every writer takes its customers' ``feed_days`` rows, so two
    never wait on each other in a circle): the first version of each is new, and each later one
    resent or amended against the one before."""
    per: dict[str, list[int]] = {}
    for versions in claims:
        counts = per.setdefault(versions[0][_CUSTOMER], [0, 0, 0, 0])
        counts[0] += len(versions)
        counts[1] += 1
        for before, after in pairwise(versions):
            same = before[_CONTENT] == after[_CONTENT]
            counts[2 if same else 3] += 1
    return [(customer, c[0], c[1], c[2], c[3]) for customer, c in sorted(per.items())]


_TODAY = "(now() AT TIME ZONE 'UTC')::date"
_ADD = (
    " ON CONFLICT (customer_id, day) DO UPDATE SET received = d.received + excluded.received,"
    " new = d.new + excluded.new, resent = d.resent + excluded.resent,"
    " amended = d.amended + excluded.amended,"
    " last_received_at = greatest(d.last_received_at, excluded.last_received_at)"
)
ADD_COUNTS = (  # fixed SQL: no value is interpolated
    "INSERT INTO feed_days AS d (customer_id, day, received, new, resent, amended, "  # noqa: S608
    f"last_received_at) VALUES (%s, {_TODAY}, %s, %s, %s, %s, now())" + _ADD
)


def merge_claims(stage: str, on_conflict: str) -> str:
    """One statement that stores the newest version of each claim in ``stage`` (every version
    a batch holds, some perhaps stored already) and counts what the feed sent into
    ``feed_days``: versions no newer than the stored one count nothing, and the rest are
    compared, oldest first, with the version before (the stored one for the first)."""
    columns = ", ".join(CLAIM_COLUMNS)

    def content(alias: str) -> str:
        return "ROW(" + ", ".join(f"{alias}.{c}" for c in CONTENT) + ")::text"

    # Built once from fixed column names; no value is interpolated.
    return f"""
    WITH prior AS (
        SELECT c.customer_id, c.claim_id, c.source_partition, c.source_offset,
               {content("c")} AS content
        FROM claim_records c
        WHERE (c.customer_id, c.claim_id) IN (SELECT customer_id, claim_id FROM {stage})
    ), fresh AS (
        SELECT s.*, {content("s")} AS content, p.content AS prior_content,
               row_number() OVER (PARTITION BY s.customer_id, s.claim_id
                                  ORDER BY s.source_partition DESC, s.source_offset DESC) AS newest
        FROM {stage} s LEFT JOIN prior p USING (customer_id, claim_id)
        WHERE p.claim_id IS NULL
           OR (p.source_partition, p.source_offset) < (s.source_partition, s.source_offset)
    ), stored AS (
        INSERT INTO claim_records ({columns}) SELECT {columns} FROM fresh WHERE newest = 1
        {on_conflict}
        RETURNING customer_id, claim_id
    ), versions AS (
        SELECT customer_id, claim_id, content,
               coalesce(lag(content) OVER (PARTITION BY customer_id, claim_id
                                           ORDER BY source_partition, source_offset),
                        prior_content) AS before
        FROM fresh
    )
    INSERT INTO feed_days AS d (customer_id, day, received, new, resent, amended,
                                last_received_at)
    SELECT v.customer_id, {_TODAY}, count(*), count(*) FILTER (WHERE v.before IS NULL),
           count(*) FILTER (WHERE v.before = v.content),
           count(*) FILTER (WHERE v.before <> v.content), now()
    FROM versions v JOIN stored USING (customer_id, claim_id)
    GROUP BY v.customer_id ORDER BY v.customer_id COLLATE "C"
    {_ADD}
    """  # noqa: S608


REJECTION_COLUMNS = ("source_partition", "source_offset", "customer_id", "claim_id", "reason",
                     "detail")  # fmt: skip
ADD_REJECTIONS = f"""
    WITH added AS (
        INSERT INTO claim_rejections ({", ".join(REJECTION_COLUMNS)})
        SELECT * FROM unnest(%s::int[], %s::bigint[], %s::text[], %s::text[], %s::text[],
                             %s::text[])
        ON CONFLICT DO NOTHING
        RETURNING customer_id
    )
    INSERT INTO feed_days AS d (customer_id, day, invalid)
    SELECT customer_id, {_TODAY}, count(*) FROM added WHERE customer_id IS NOT NULL
    GROUP BY customer_id ORDER BY customer_id COLLATE "C"
    ON CONFLICT (customer_id, day) DO UPDATE SET invalid = d.invalid + excluded.invalid
"""  # noqa: S608


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _id(value: Any) -> str | None:
    """``value`` as the claim validation reads an id (a string or an integer, stripped, 1 to
    :data:`MAX_ID_CHARS` characters, no "|" and no control character), or None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    if not text or len(text) > MAX_ID_CHARS or "|" in text or _CONTROL.search(text):
        return None
    return text


def rejection_row(
    partition: int, offset: int, record: Any, reason: str, detail: str
) -> tuple[Any, ...]:
    """A ``claim_rejections`` row; the customer and claim ids when the record has ones the
    claim validation would take (so a reject counts for the customer its valid claims do)."""
    fields = record if isinstance(record, dict) else {}
    return (
        partition, offset, _id(fields.get("customer_id")), _id(fields.get("claim_id")),
        reason[:64], detail.replace("\x00", "")[:2000],
    )  # fmt: skip
