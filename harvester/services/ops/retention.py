"""Deleting old signals: what ``retain`` and ``archive`` remove, in batches, then VACUUM.

Age is measured by ``last_seen`` — when a source last showed the item — not by
``published_at`` (the source's claim: missing for many items, sometimes wrong) nor by
``first_seen``: an item a feed still lists would be stored again by the next crawl and come
back as *new* (counted, scored and announced a second time). A signal not seen for the
retention age is gone from its sources and stays gone.

The ids to delete are fixed first (a temporary table), then removed 1,000 at a time, each
batch its own short transaction so crawls writing meanwhile never wait long; a row re-seen
after it was chosen is kept (the delete re-checks ``last_seen``). ``VACUUM (ANALYZE)`` at
the end makes the space reusable and refreshes the planner's counts. Before it, clusters
carried by several sources that lost members get their sources and corroboration
recomputed (``corroboration.rebuild_sync``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg

from harvester.services import corroboration
from harvester.services.dberrors import CONFLICTS
from harvester.services.ops import OpsError

T = TypeVar("T")

BATCH = 1000
DOOMED = "ops_doomed"
BEFORE = "ops_scores_before"


@dataclass(frozen=True, slots=True)
class DeleteReport:
    deleted: int
    kept_reseen: int  # chosen, but seen again before its batch was deleted
    batches: int
    rescored: int = 0  # signals left whose corroboration dropped with a deleted source


def preview(conn: psycopg.Connection[Any], cutoff: datetime) -> dict[str, Any]:
    """What a deletion of signals last seen before ``cutoff`` would remove, per source."""
    rows = conn.execute(
        "SELECT source, count(*), min(last_seen), max(last_seen) FROM signals "
        "WHERE last_seen < %s GROUP BY source ORDER BY source", (cutoff,)).fetchall()
    return {
        "cutoff": cutoff,
        "total": sum(r[1] for r in rows),
        "by_source": {r[0]: r[1] for r in rows},
        "oldest_last_seen": min((r[2] for r in rows), default=None),
        "newest_last_seen": max((r[3] for r in rows), default=None),
    }


def choose(conn: psycopg.Connection[Any], cutoff: datetime) -> int:
    """Fix the set of ids to delete (session temp table); call inside the export's snapshot
    when the rows were exported first, so exactly the exported rows are chosen."""
    conn.execute(f"DROP TABLE IF EXISTS {DOOMED}")
    conn.execute(f"CREATE TEMP TABLE {DOOMED} AS SELECT id FROM signals WHERE last_seen < %s",
                 (cutoff,))
    conn.execute(f"CREATE INDEX ON {DOOMED} (id)")
    row = conn.execute(f"SELECT count(*) FROM {DOOMED}").fetchone()
    return row[0] if row else 0


def _retried(conn: psycopg.Connection[Any], work: Callable[[], T]) -> T:
    """``work`` in one transaction, run again after a deadlock with a crawl writing the
    same rows in another order: it stopped the deletion half-way with "the database is
    unreachable … run `harvest db start`"."""
    for attempt in range(_ATTEMPTS):
        try:
            with conn.transaction():
                return work()
        except CONFLICTS:
            if attempt == _ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0.05, 0.25) * (attempt + 1))
    raise AssertionError("unreachable")  # the last attempt returned or raised


_ATTEMPTS = 5


def delete_chosen(conn: psycopg.Connection[Any], cutoff: datetime,
                  batch: int = BATCH) -> DeleteReport:
    """Delete the chosen ids ``batch`` at a time (autocommit connection), then VACUUM.

    Each batch rebuilds the corroboration of the clusters it took members from in its own
    transaction: rebuilt once at the end, a run killed between two batches left those
    clusters naming a deleted source and its members scored with the bonus, and a second
    run found nothing to delete, so nothing ever repaired them."""
    deleted = kept = batches = 0

    def one_batch() -> tuple[int, int]:
        row = conn.execute(f"""
            WITH picked AS (
                DELETE FROM {DOOMED} WHERE id IN (SELECT id FROM {DOOMED} ORDER BY id LIMIT %s)
                RETURNING id),
            gone AS (
                DELETE FROM signals s USING picked
                WHERE s.id = picked.id AND s.last_seen < %s
                RETURNING coalesce(s.cluster_id, s.id) AS cluster)
            SELECT (SELECT count(*) FROM picked), (SELECT count(*) FROM gone),
                   ARRAY(SELECT DISTINCT g.cluster FROM gone g
                         JOIN cluster_sources cs ON cs.cluster_id = g.cluster)""",
            (batch, cutoff)).fetchone()
        assert row is not None
        if row[2]:
            # The scores of the members left, before their first rescoring: the report
            # counts the signals whose score changed, once each (the count of every
            # batch's rescoring summed rows rescored again and rows deleted later).
            conn.execute(f"INSERT INTO {BEFORE} SELECT id, score FROM signals "
                         "WHERE cluster_id = ANY(%s) ON CONFLICT (id) DO NOTHING", (row[2],))
            # A source whose last member of a cluster went no longer corroborates the rest.
            corroboration.rebuild_sync(conn, row[2])
        return row[0], row[1]

    conn.execute(f"DROP TABLE IF EXISTS {BEFORE}")
    conn.execute(f"CREATE TEMP TABLE {BEFORE} (id bigint PRIMARY KEY, score real)")
    while True:
        picked, gone = _retried(conn, one_batch)
        if picked == 0:
            break
        batches += 1
        deleted += gone
        kept += picked - gone
    found = conn.execute(f"SELECT count(*) FROM {BEFORE} b JOIN signals s ON s.id = b.id "
                         "WHERE s.score IS DISTINCT FROM b.score").fetchone()
    rescored = int(found[0]) if found else 0
    conn.execute(f"DROP TABLE IF EXISTS {DOOMED}, {BEFORE}")
    if deleted:
        conn.execute("VACUUM (ANALYZE) signals")
    return DeleteReport(deleted=deleted, kept_reseen=kept, batches=batches, rescored=rescored)


#: One `archive` or `retain` at a time per database (a session-level advisory lock): two
#: archives at once each exported the same rows, and the second, finding them deleted,
#: reported them as "seen again meanwhile, kept" next to an archive file that repeated the
#: first's.
_DELETER_LOCK = "SELECT pg_try_advisory_lock(hashtext('harvest archive/retain'))"
_DELETER_UNLOCK = "SELECT pg_advisory_unlock(hashtext('harvest archive/retain'))"


@contextmanager
def one_deleter(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Hold the database's archive/retain lock (autocommit connection), or refuse."""
    row = conn.execute(_DELETER_LOCK).fetchone()
    if not row or not row[0]:
        raise OpsError("another `harvest archive` or `harvest retain` is deleting signals "
                       "from this database; run this one once it has finished")
    try:
        yield
    finally:
        conn.execute(_DELETER_UNLOCK)


def retain(conn: psycopg.Connection[Any], cutoff: datetime) -> DeleteReport:
    """Delete every signal last seen before ``cutoff`` (no copy is kept)."""
    with one_deleter(conn):
        choose(conn, cutoff)
        return delete_chosen(conn, cutoff)
