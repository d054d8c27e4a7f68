"""Batched writes: one COPY of the batch's new rows into ``signals``, and for the rows already
stored a COPY into a staging table and one ``INSERT … ON CONFLICT`` per batch.

Each batch runs in one transaction that also records its id in ``applied_batches``: a batch
applied twice (a spool replayed again, a commit whose acknowledgement was lost) is a no-op.

A new signal is written once, with its final cluster: the batch's keys are looked up and ids
drawn for the new ones first, their clusters planned (``clusters.plan_clusters``), and the
rows copied with ``id`` and ``cluster_id`` as planned. A key that another writer stores
between the lookup and the COPY fails the COPY on the unique key; the batch is then written
again with every row through the upsert. See docs/clusters.md for that race and the others.

The store worker makes a batch's reads (the key lookup and the nearest stored signals) on
a second connection while the batch before it is written (:func:`plan_batch`); the write
then adds the rows stored since those reads (:class:`Recent`) and makes no reads of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import struct
import uuid
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import postgres, sql
from psycopg.abc import Buffer
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.pq import Format
from psycopg.types.json import Jsonb

from harvester import surrogates
from harvester.messages import first_line
from harvester.services import clusters, corroboration
from harvester.services.batch import REJECT_COLUMNS, SIGNAL_COLUMNS, Batch, BatchResult
from harvester.services.dberrors import CONFLICTS
from harvester.services.simhash import fingerprints

logger = logging.getLogger(__name__)


_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS signals_staging (
    key text, source text, kind text, url text, canonical_url text, feed_url text,
    link_url text, simhash bigint, external_id text,
    title text, text text, author text, published_at timestamptz, updated_at timestamptz,
    fetched_at timestamptz, language text, tags text[], engagement jsonb, score real,
    score_breakdown jsonb, run_id uuid, id bigint, cluster_id bigint
) ON COMMIT DELETE ROWS
"""

_COLS = sql.SQL(", ").join(map(sql.Identifier, SIGNAL_COLUMNS))
_STAGED_COLUMNS = (*SIGNAL_COLUMNS, "id", "cluster_id")
_COPY_SIGNALS = sql.SQL("COPY signals_staging ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(map(sql.Identifier, _STAGED_COLUMNS))
)
# New rows (their keys were not stored at the lookup) go straight into signals: no staging
# row, no conflict check, no RETURNING. A key another writer inserts meanwhile makes the
# COPY fail on the unique key, and the batch is written again through the upsert.
_NEW_COLUMNS = ("id", "cluster_id", *SIGNAL_COLUMNS, "first_seen", "last_seen")
_COPY_NEW = sql.SQL("COPY signals ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(map(sql.Identifier, _NEW_COLUMNS))
)
_COPY_REJECTS = sql.SQL("COPY rejects ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(map(sql.Identifier, REJECT_COLUMNS))
)
# Binary COPY with declared types: psycopg's C dumpers do the work (≈3× text COPY built
# in Python, measured on 2 KB rows).
_TYPES = {"published_at": "timestamptz", "updated_at": "timestamptz",
          "fetched_at": "timestamptz", "created_at": "timestamptz", "tags": "text[]",
          "engagement": "jsonb", "score_breakdown": "jsonb", "raw": "jsonb",
          "score": "float4", "run_id": "uuid", "simhash": "int8", "id": "int8",
          "cluster_id": "int8", "first_seen": "timestamptz", "last_seen": "timestamptz"}
_STAGED_TYPES = [_TYPES.get(c, "text") for c in _STAGED_COLUMNS]
_REJECT_TYPES = [_TYPES.get(c, "text") for c in REJECT_COLUMNS]
_NEW_TYPES = [_TYPES.get(c, "text") for c in _NEW_COLUMNS]
# The ids of the batch's stored keys, and an id drawn for each other key. Arrays of the
# store's statements are sent in binary (``%b``): psycopg builds a text array literal in
# Python, ≈ 10× slower (4.6 µs a key against 0.4, measured), on the store worker's
# critical path.
_LOOKUP = """
WITH stored AS MATERIALIZED (SELECT key, id FROM signals WHERE key = ANY(%(keys)b::text[]))
SELECT key, id FROM stored
UNION ALL
SELECT NULL, nextval('signals_id_seq')
FROM generate_series(1, %(count)s - (SELECT count(*) FROM stored))
"""
# Keys are unique within a batch (see _unique): one INSERT cannot touch a row twice.
# A re-seen row takes its own source's latest version: the score (recency moves) and what
# the score was computed from (an edited title or text, the engagement that grew, a date
# set or changed, the fetch it is scored as of), so the stored row and its breakdown
# agree, and `harvest rescore` ages it from that fetch. Another source's sighting changes
# neither (its text, its weight are not the row's). A column is written only when it
# changed: the same text written again would be a new TOAST value each time an unchanged
# feed is re-crawled.
# The row's cluster is kept (decided at first sight).
# A staged row without an id (its key was stored at the lookup, deleted since) gets one
# here and is its own cluster.
#: What a re-seen row takes from its own source's latest sighting.
LATEST_COLUMNS = ("title", "text", "author", "link_url", "language", "tags", "engagement",
                  "published_at", "simhash", "score", "score_breakdown", "fetched_at")
_UPSERT = sql.SQL("""
INSERT INTO signals (id, cluster_id, {cols}, first_seen, last_seen)
SELECT n.id, COALESCE(n.cluster_id, n.id), {cols}, fetched_at, fetched_at
FROM (SELECT COALESCE(id, nextval('signals_id_seq')) AS id, cluster_id, {cols}
      FROM signals_staging) AS n
ON CONFLICT (key) DO UPDATE SET
        seen_count = signals.seen_count + 1,
        last_seen = GREATEST(signals.last_seen, EXCLUDED.last_seen),
        updated_at = COALESCE(EXCLUDED.updated_at, signals.updated_at),
        {latest}
RETURNING key, (xmax = 0) AS is_new, id, COALESCE(cluster_id, id)
""").format(cols=_COLS, latest=sql.SQL(",\n        ").join(
    sql.SQL("{0} = CASE WHEN EXCLUDED.source = signals.source"
            " AND EXCLUDED.{0} IS DISTINCT FROM signals.{0}"
            " THEN EXCLUDED.{0} ELSE signals.{0} END").format(sql.Identifier(c))
    for c in LATEST_COLUMNS))
# A partial sighting (pages: the article page could not be fetched) of a row its own source
# stored is a sighting only: the row keeps the version its last complete read gave, with
# the score computed from it. Taken as the latest, the listing's fields alone replaced
# the stored article text with nothing on every outage of the article host. Its staged
# row goes, so the upsert after this leaves it alone.
_SEEN_ONLY = """
WITH seen AS (
    DELETE FROM signals_staging AS n USING signals AS s
    WHERE n.key = ANY(%(keys)b::text[]) AND s.key = n.key AND s.source = n.source
    RETURNING n.key, n.fetched_at)
UPDATE signals AS s SET seen_count = s.seen_count + 1,
                        last_seen = GREATEST(s.last_seen, seen.fetched_at)
FROM seen WHERE s.key = seen.key
RETURNING s.key, false, s.id, COALESCE(s.cluster_id, s.id)
"""
# Rows of this batch whose planned cluster is an id no row holds after all (see _repoint).
_REPOINT = """
UPDATE signals AS s SET cluster_id = m.cluster_id
FROM unnest(%(gone)s::bigint[], %(clusters)s::bigint[]) AS m(gone, cluster_id)
WHERE s.cluster_id = m.gone AND s.id = ANY(%(ours)s::bigint[])
"""

_RUN_COLUMNS = ("id", "spider", "sources", "job_id", "started_at", "finished_at",
                "finish_reason", "scraped", "stored", "reseen", "duplicates", "rejected",
                "errors", "not_modified", "stats")
_UPSERT_RUN = sql.SQL("""
INSERT INTO crawl_runs ({cols}) VALUES ({vals})
ON CONFLICT (id) DO UPDATE SET {updates}
""").format(
    cols=sql.SQL(", ").join(map(sql.Identifier, _RUN_COLUMNS)),
    vals=sql.SQL(", ").join(sql.Placeholder(c) for c in _RUN_COLUMNS),
    updates=sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in _RUN_COLUMNS[1:]
    ),
)
_UPSERT_SOURCE_STATE = """
INSERT INTO sources_state AS s (source, last_attempt, last_success, consecutive_failures,
                                validators, cursor, last_error, disabled, disabled_at)
VALUES (%(source)s, %(attempted_at)s::timestamptz,
        CASE WHEN %(success)s THEN %(attempted_at)s::timestamptz END,
        CASE WHEN %(success)s THEN 0 ELSE 1 END, %(validators)s,
        CASE WHEN %(success)s THEN %(cursor)s ELSE '{}'::jsonb END, %(last_error)s,
        NOT %(success)s AND %(disable_after)s = 1,
        CASE WHEN NOT %(success)s AND %(disable_after)s = 1 THEN now() END)
ON CONFLICT (source) DO UPDATE SET
    last_attempt = EXCLUDED.last_attempt,
    last_success = COALESCE(EXCLUDED.last_success, s.last_success),
    consecutive_failures = CASE WHEN EXCLUDED.last_success IS NULL
                                THEN s.consecutive_failures + 1 ELSE 0 END,
    validators = s.validators || EXCLUDED.validators,
    cursor = s.cursor || EXCLUDED.cursor,
    last_error = EXCLUDED.last_error,
    disabled = s.disabled OR (EXCLUDED.last_success IS NULL AND %(disable_after)s > 0
                              AND s.consecutive_failures + 1 >= %(disable_after)s),
    disabled_at = CASE
        WHEN s.disabled THEN s.disabled_at
        WHEN EXCLUDED.last_success IS NULL AND %(disable_after)s > 0
             AND s.consecutive_failures + 1 >= %(disable_after)s THEN now()
    END
-- A run replayed from the spool after a newer one was recorded (harvest replay --dir,
-- --retry-refused days later) must not wind the source's state back to its own.
WHERE s.last_attempt IS NULL OR EXCLUDED.last_attempt >= s.last_attempt
"""


def _unique(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Last row per key, a complete one over a partial one (the article read beats the
    listing's fields alone): the pipeline dedupes within a run, this guards other writers."""
    by_key: dict[str, dict[str, Any]] = {}
    for row in rows:
        kept = by_key.get(row["key"])
        if kept is None or not row.get("partial") or kept.get("partial"):
            by_key[row["key"]] = row
    return list(by_key.values()) if len(by_key) != len(rows) else list(rows)


def _scrub(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL: drop it rather than lose the whole batch
    (a NUL in one raw rejected item would make every replay fail too). Nor can they hold a
    lone surrogate, which psycopg cannot even encode: U+FFFD instead (harvester/surrogates.py;
    validate already replaced those of a crawl's items, ASCII text is passed at once). And
    jsonb cannot hold NaN or an infinity (which Python's json reads from ``NaN`` or
    ``1e999``): None instead."""
    if isinstance(value, str):
        return surrogates.replace(value.replace("\x00", "") if "\x00" in value else value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# Columns whose content comes from outside (our own breakdowns are known to be clean).
_UNTRUSTED_JSON = ("engagement", "raw", "tags")


def _json(value: Any) -> bytes | str:
    """The text of a jsonb value: orjson, 1.2 µs for a score breakdown where ``json.dumps``
    took 13 (the store worker encodes one or two per row). What orjson refuses (an integer
    past 64 bits, a lone surrogate) goes to ``json.dumps``, as everything did before."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        return json.dumps(value)


# The store's COPYs declare their columns' types, so psycopg picks each value's dumper by
# the column's type. For ``text[]`` and ``jsonb`` its dumpers are Python that serves any
# shape (arrays of any depth and element type, wrapped or bare documents); the two below
# serve what the store sends, a flat list of str and a bare document, and took a COPY row
# of the store from 17.5-19.1 to 13.1-14.6 µs of client CPU (two tags, two documents),
# on the store worker's critical path.
_ARRAY_HEAD = struct.Struct("!iiiii")  # dimensions, has NULLs, element type, length, lower bound
_LENGTH = struct.Struct("!i").pack
_TEXT = postgres.types["text"]
_EMPTY_TEXT_ARRAY = struct.pack("!iii", 0, 0, _TEXT.oid)
_NULL = _LENGTH(-1)


class _TextArrayDumper(Dumper):
    """A list of str (or None) as a one-dimensional binary ``text[]``."""

    format = Format.BINARY
    oid = _TEXT.array_oid

    def dump(self, obj: Sequence[str | None]) -> Buffer:
        if not obj:
            return _EMPTY_TEXT_ARRAY
        parts = [b""]
        nulls = 0
        for item in obj:
            if item is None:
                parts.append(_NULL)
                nulls = 1
            elif type(item) is str:
                data = item.encode()
                parts += (_LENGTH(len(data)), data)
            else:
                raise psycopg.DataError(
                    f"a text[] value holds a {type(item).__name__}, not a str: {item!r}")
        parts[0] = _ARRAY_HEAD.pack(1, nulls, _TEXT.oid, len(obj), 1)
        return b"".join(parts)


class _JsonbDumper(Dumper):
    """Any JSON-able value as binary ``jsonb`` (version 1), encoded by :func:`_json`."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: Any) -> Buffer:
        data = _json(obj)
        return b"\x01" + (data if type(data) is bytes else data.encode())


def use_copy_dumpers(adapters: AdaptersMap) -> None:
    """Make a cursor's (or connection's) typed COPYs dump ``text[]`` and ``jsonb`` with the
    store's dumpers: values for them as :func:`copy_values` yields them."""
    adapters.register_dumper(None, _TextArrayDumper)
    adapters.register_dumper(None, _JsonbDumper)


def copy_values(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Iterator[list[Any]]:
    """Each row's values for a binary COPY of ``columns`` with :func:`use_copy_dumpers`:
    scrubbed (ASCII text without NUL, nearly all of it, is taken as it is: ``isascii``
    reads a flag), the run id as a UUID."""
    run_at = columns.index("run_id")
    nested = [i for i, c in enumerate(columns) if c in _UNTRUSTED_JSON]
    run_ids: dict[Any, uuid.UUID | None] = {None: None}  # one run per batch, as a rule
    for row in rows:
        values = [v if type(v) is not str or (v.isascii() and "\x00" not in v) else _scrub(v)
                  for v in map(row.get, columns)]
        for i in nested:
            if values[i]:
                values[i] = _scrub(values[i])
        run_id = values[run_at]
        if run_id not in run_ids:
            run_ids[run_id] = uuid.UUID(str(run_id))
        values[run_at] = run_ids[run_id]
        yield values


async def _copy(cur: psycopg.AsyncCursor[Any], statement: sql.Composable,
                rows: Sequence[dict[str, Any]], columns: Sequence[str],
                types: Sequence[str]) -> None:
    use_copy_dumpers(cur.adapters)
    async with cur.copy(statement) as copy:
        copy.set_types(list(types))
        for values in copy_values(rows, columns):
            await copy.write_row(values)


def _fingerprint(rows: Sequence[dict[str, Any]]) -> None:
    """The simhash of title + text, for rows without a ``simhash`` key (all, from the crawl).
    A row already fingerprinted keeps its value, None for a text without words: the store
    worker's read-ahead and a batch written again take no second pass."""
    todo = [row for row in rows if "simhash" not in row]
    if todo:
        texts = [f"{row.get('title') or ''}\n{row.get('text') or ''}" for row in todo]
        for row, value in zip(todo, fingerprints(texts), strict=True):
            row["simhash"] = value


def prepare(batch: Batch) -> None:
    """The part of storing ``batch`` that needs no database, its fingerprints (half of the
    client's CPU per row), done ahead: the store worker runs it in a thread for the next
    batch while PostgreSQL writes the current one. :func:`write_batch` does whatever was
    not done. The rows of a batch being prepared must not be touched meanwhile."""
    _fingerprint(batch.signals)


#: A new row as later batches match it: (id, simhash, cluster id).
Written = clusters.Stored


class Recent:
    """The new rows one connection stored, batch by batch, numbered: what a :class:`Plan`
    looked up on another connection before they were committed could not see.

    The store worker's planner takes :meth:`mark` before its lookup; the write adds the
    rows stored since that mark (:meth:`since`) to the plan's matches."""

    def __init__(self, keep: int = 16) -> None:
        self._batches: deque[list[Written]] = deque(maxlen=keep)
        self._count = 0

    def mark(self) -> int:
        return self._count

    def since(self, mark: int) -> list[Written] | None:
        """Rows stored after ``mark``; None when some of them are no longer kept."""
        behind = self._count - mark
        if behind > len(self._batches):
            return None
        return [row for batch in list(self._batches)[len(self._batches) - behind:]
                for row in batch]

    def add(self, rows: list[Written]) -> None:
        self._batches.append(rows)
        self._count += 1


@dataclass(slots=True)
class Plan:
    """The database reads of a batch's write, done ahead on another connection (the store
    worker's planner) while the batch before it is written: each key's id (stored, or drawn
    for a new key) and the nearest stored signal of each new one. ``mark``:
    :meth:`Recent.mark` before these reads."""

    looked_up: dict[str, tuple[int, bool]]
    found: list[clusters.Match]
    mark: int


async def plan_batch(conn: psycopg.AsyncConnection[Any], batch: Batch, recent: Recent,
                     cluster_distance: int = clusters.DEFAULT_DISTANCE) -> Plan | None:
    """The reads of :func:`write_batch` for ``batch``, in a transaction of their own on
    ``conn``, for a write on another connection; None for a batch without signals."""
    if not batch.signals:
        return None
    signals = _unique(batch.signals)
    _fingerprint(signals)
    mark = recent.mark()
    async with conn.transaction(), conn.cursor() as cur:
        looked_up = await _lookup(cur, signals)
        found = await clusters.nearest_stored(cur, _new(signals, looked_up), cluster_distance)
    return Plan(looked_up, found, mark)


async def write_batch(conn: psycopg.AsyncConnection[Any], batch: Batch,
                      cluster_distance: int = clusters.DEFAULT_DISTANCE,
                      plan: Plan | None = None, recent: Recent | None = None) -> BatchResult:
    """Store one batch atomically; raise ``psycopg.OperationalError`` when the DB is gone.

    New signals join the cluster of a near-duplicate (simhash within ``cluster_distance``
    bits), stored or earlier in the batch, in the same transaction. With ``plan`` (made on
    another connection) and ``recent`` (the rows this connection stored, which it adds to
    the plan's matches), the batch's own reads are not made again; ``recent`` gets the
    new rows of the batch once it is committed."""
    try:
        result, stored = await _write_batch(conn, batch, cluster_distance, True, plan, recent)
    except psycopg.errors.UniqueViolation:
        # Another writer stored one of the keys this batch looked up as new: write the
        # batch again, every row through the upsert (its lookup now sees that key).
        logger.info("store: a key of the batch was stored meanwhile by another writer; "
                    "writing the batch again through the upsert")
        result, stored = await _rewrite(conn, batch, cluster_distance)
    except CONFLICTS as exc:
        # A deadlock with another writer (two feeds listing the same items in other
        # orders, a retain deleting by id): the database is there, the batch is written
        # again. It was taken for "the database is down" and the crawl spooled on.
        logger.info("store: %s; writing the batch again", first_line(exc))
        result, stored = await _rewrite(conn, batch, cluster_distance)
    if recent is not None and not result.already_applied:
        recent.add(stored)
    return result


async def _rewrite(conn: psycopg.AsyncConnection[Any], batch: Batch,
                   cluster_distance: int) -> tuple[BatchResult, list[Any]]:
    """The batch through the upsert, its lookups made again; a deadlock is retried a few
    times, a short random wait apart (the other transaction goes first)."""
    for attempt in range(_REWRITES):
        try:
            return await _write_batch(conn, batch, cluster_distance, False, None, None)
        except CONFLICTS:
            if attempt == _REWRITES - 1:
                raise
            await asyncio.sleep(random.uniform(0.05, 0.25) * (attempt + 1))
    raise AssertionError("unreachable")


#: Writes of one batch after a deadlock before the error is given to the caller.
_REWRITES = 4


async def _write_batch(conn: psycopg.AsyncConnection[Any], batch: Batch,
                       cluster_distance: int, direct: bool, plan: Plan | None,
                       recent: Recent | None) -> tuple[BatchResult, list[Written]]:
    result = BatchResult()
    stored: list[Written] = []
    async with conn.transaction(), conn.cursor() as cur:
        await cur.execute(
            "INSERT INTO applied_batches (batch_id) VALUES (%s) ON CONFLICT DO NOTHING",
            (batch.batch_id,),
        )
        if cur.rowcount == 0:
            result.already_applied = True
            return result, stored
        if batch.signals:
            signals = _unique(batch.signals)
            planned = await _planned(cur, signals, cluster_distance, plan, recent)
            stored = await _write_signals(cur, signals, planned, result, direct)
        if batch.rejects:
            await _copy(cur, _COPY_REJECTS, batch.rejects, REJECT_COLUMNS, _REJECT_TYPES)
            for row in batch.rejects:
                result.rejected[row["source"]] = result.rejected.get(row["source"], 0) + 1
        if batch.run is not None:
            await _write_run(cur, batch.run)
    return result, stored


def _new(signals: Sequence[dict[str, Any]],
         looked_up: dict[str, tuple[int, bool]]) -> list[clusters.Row]:
    """(id drawn, simhash) of the rows whose keys the lookup did not find, in batch order."""
    return [(looked_up[row["key"]][0], row["simhash"]) for row in signals
            if looked_up[row["key"]][1]]


async def _planned(cur: psycopg.AsyncCursor[Any], signals: Sequence[dict[str, Any]],
                   cluster_distance: int, plan: Plan | None, recent: Recent | None,
                   ) -> tuple[dict[str, tuple[int, bool]], dict[int, int]]:
    """Each key's ``(id, new)`` and each new row's cluster: from ``plan`` and the rows
    stored since it was made, or read here when there is no plan (or it is too old)."""
    since = recent.since(plan.mark) if plan is not None and recent is not None else None
    if plan is not None and since is not None:
        looked_up = plan.looked_up
        assigned = clusters.resolve(_new(signals, looked_up), plan.found, cluster_distance,
                                    since)
    else:
        _fingerprint(signals)
        looked_up = await _lookup(cur, signals)
        assigned = await clusters.plan_clusters(cur, _new(signals, looked_up),
                                                cluster_distance)
    return looked_up, {a.id: a.cluster_id for a in assigned}


async def _write_signals(cur: psycopg.AsyncCursor[Any], signals: list[dict[str, Any]],
                         planned: tuple[dict[str, tuple[int, bool]], dict[int, int]],
                         result: BatchResult, direct: bool) -> list[Written]:
    """``direct``: rows whose keys the lookup did not find are copied into ``signals``
    as they are, the others go through the staging table and the upsert. Returns the new
    rows as stored."""
    looked_up, cluster_of = planned
    fresh: list[dict[str, Any]] = []
    staged: list[dict[str, Any]] = []
    written: list[tuple[str, bool, int, int]] = []
    for row in signals:
        signal_id, is_new = looked_up[row["key"]]
        cluster_id = cluster_of.get(signal_id, signal_id) if is_new else None
        if is_new and direct:
            fresh.append({**row, "id": signal_id, "cluster_id": cluster_id,
                          "first_seen": row.get("fetched_at"),
                          "last_seen": row.get("fetched_at")})
            written.append((row["key"], True, signal_id, cluster_id))
        else:
            staged.append({**row, "id": signal_id if is_new else None,
                           "cluster_id": cluster_id})
    if fresh:
        await _copy(cur, _COPY_NEW, fresh, _NEW_COLUMNS, _NEW_TYPES)
    if staged:
        await cur.execute(_STAGING_DDL)
        await _copy(cur, _COPY_SIGNALS, staged, _STAGED_COLUMNS, _STAGED_TYPES)
        if partial := [row["key"] for row in staged if row.get("partial")]:
            await cur.execute(_SEEN_ONLY, {"keys": partial})
            written += await cur.fetchall()
        await cur.execute(_UPSERT)
        written += await cur.fetchall()
    by_key = {row["key"]: row for row in signals}
    for key, is_new, _, _ in written:
        counts = result.new if is_new else result.reseen
        source = by_key[key]["source"]
        counts[source] = counts.get(source, 0) + 1
    moved = await _repoint(cur, looked_up, written)
    # The COPY and the upsert wrote each row's own score; a story carried by several sources
    # scores higher (and a re-seen row gets its cluster's factor back).
    await corroboration.update_for_batch(cur, _corroborated(written, moved))
    return [(signal_id, by_key[key]["simhash"], moved.get(cluster_id, cluster_id))
            for key, is_new, signal_id, cluster_id in written if is_new]


def _corroborated(written: Sequence[tuple[str, bool, int, int]],
                  moved: dict[int, int]) -> list[int]:
    """The rows of the batch whose clusters corroboration must look at: all of them but the
    new rows that start a cluster of their own and are alone in it (its id was drawn for
    this batch: no other row can be in it yet), which is nearly every row of distinct
    texts. Reading those back only to find one source each cost ≈ 4 ms a batch of 500."""
    members = Counter(moved.get(cluster_id, cluster_id) for _, _, _, cluster_id in written)
    return [signal_id for _, is_new, signal_id, cluster_id in written
            if not (is_new and cluster_id == signal_id and members[cluster_id] == 1)]


async def _lookup(cur: psycopg.AsyncCursor[Any],
                  signals: Sequence[dict[str, Any]]) -> dict[str, tuple[int, bool]]:
    """``{key: (id, new)}``: the stored id, or one drawn for a new key (in batch order,
    so that within the batch an earlier row has the smaller id)."""
    keys = [row["key"] for row in signals]
    await cur.execute(_LOOKUP, {"keys": keys, "count": len(keys)})
    found: dict[str, tuple[int, bool]] = {}
    drawn: list[int] = []
    for key, signal_id in await cur.fetchall():
        if key is None:
            drawn.append(signal_id)
        else:
            found[key] = (signal_id, False)
    fresh = iter(sorted(drawn))
    return {key: found.get(key) or (next(fresh), True) for key in keys}


async def _repoint(cur: psycopg.AsyncCursor[Any], looked_up: dict[str, tuple[int, bool]],
                   written: Sequence[tuple[str, bool, int, int]]) -> dict[int, int]:
    """Another writer may have inserted (or deleted) one of the batch's keys between the
    lookup and the upsert: the id looked up or drawn for that key is then not the id of
    its row, and the batch's new rows planned into that id's cluster move to the cluster
    of the row that holds the key now. ``written``: the upsert's ``RETURNING``. Returns
    the clusters moved: ``{planned: now}``."""
    gone: dict[int, int] = {}
    for key, _, signal_id, cluster_id in written:
        planned_id = looked_up[key][0]
        if planned_id != signal_id:
            gone[planned_id] = cluster_id
    if gone:
        ours = [signal_id for _, is_new, signal_id, _ in written if is_new]
        await cur.execute(_REPOINT, {"gone": list(gone), "clusters": list(gone.values()),
                                     "ours": ours})
        logger.info("store: %d keys of the batch changed meanwhile in another transaction; "
                    "%d new rows moved to their clusters", len(gone), cur.rowcount)
    return gone


# A URL that answered 304 lists what its last full answer listed: those items are seen
# again now. They are the URL's items last seen since that answer (its time is kept with
# the validators, "seen_at"): by the newest last_seen alone, an item another source saw
# later became the newest, and from then on each 304 moved only that one, so retention
# aged out what the feed still listed. Validators kept before "seen_at": the newest
# last_seen, as before. Per URL, by the signals_source index: once a run, not per item.
_SEEN_UNCHANGED = """
UPDATE signals s SET last_seen = coalesce(%(at)s::timestamptz, now())
WHERE s.source = %(source)s AND s.feed_url = %(url)s
  AND s.last_seen < coalesce(%(at)s::timestamptz, now())
  AND s.last_seen >= coalesce(
      (SELECT (st.validators -> %(url)s ->> 'seen_at')::timestamptz FROM sources_state st
       WHERE st.source = %(source)s),
      (SELECT max(m.last_seen) FROM signals m
       WHERE m.source = %(source)s AND m.feed_url = %(url)s))
"""


async def _write_run(cur: psycopg.AsyncCursor[Any], run: dict[str, Any]) -> None:
    params = {c: run.get(c) for c in _RUN_COLUMNS}
    for counter in _RUN_COLUMNS[7:14]:
        params[counter] = int(params[counter] or 0)
    params["stats"] = Jsonb(run.get("stats") or {})
    params["sources"] = list(run.get("sources") or [])
    await cur.execute(_UPSERT_RUN, params)
    for source, state in (run.get("source_states") or {}).items():
        await cur.execute(
            _UPSERT_SOURCE_STATE,
            {
                "source": source,
                "attempted_at": state["attempted_at"],
                "success": bool(state["success"]),
                "validators": Jsonb(state.get("validators") or {}),
                "cursor": Jsonb(state.get("cursor") or {}),
                "last_error": state.get("last_error"),
                "disable_after": int(state.get("disable_after") or 0),
            },
        )
    at = run.get("finished_at")
    for source, urls in (run.get("unchanged") or {}).items():
        for url in urls:
            await cur.execute(_SEEN_UNCHANGED, {"at": at, "source": source, "url": url})


async def load_validators(conn: psycopg.AsyncConnection[Any],
                          sources: Sequence[str]) -> dict[str, dict[str, str]]:
    """ETag/Last-Modified per feed URL from earlier runs of these sources."""
    cur = await conn.execute(
        "SELECT validators FROM sources_state WHERE source = ANY(%s)", (list(sources),)
    )
    merged: dict[str, dict[str, str]] = {}
    for (validators,) in await cur.fetchall():
        merged.update(validators or {})
    return merged
