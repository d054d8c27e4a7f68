"""Corroboration in SQL: a cluster's members are rescored from the ``base`` the score
pipeline keeps in ``score_breakdown`` (:func:`apply_corroboration`, no Python per row).

The store keeps it up to date batch by batch, in time proportional to the batch:
``cluster_sources`` holds the sources of clusters carried by several sources, so a cluster
is read in full only when a new source raises its factor (at most a few times in its
life), never for each copy that joins it.

Rows that leave or come back other than through the store (retention, archives, restores)
call :func:`rebuild_sync` for their clusters: a cluster whose last member from a source
was deleted no longer counts that source, and its remaining members lose that factor.

The store worker imports this module: it must not pull in pydantic (sources, settings),
which would add ≈ 12 MB to every worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from harvester.services.scoring import (
    CORROBORATION_MAX_EXTRA,
    CORROBORATION_STEP,
    corroboration_factor,
)

# Members of the target clusters (a signal's cluster is coalesce(cluster_id, id)); the OR
# lets PostgreSQL use signals_cluster_id and the primary key. Sources are gathered with a
# window rather than a GROUP BY joined back: CTE row estimates are poor and that join ran
# as a nested loop (quadratic in the batch). A member is rewritten only when its
# corroboration changed, so a batch of singletons writes nothing; rows scored before
# breakdowns kept ``base`` are left for `harvest rescore`.
_CORROBORATE = """
WITH targets AS MATERIALIZED (SELECT ARRAY({targets}) AS ids),
members AS (
    SELECT s.id, s.score_breakdown -> 'base' AS base,
           s.score_breakdown -> 'corroboration' AS stored,
           array_agg(s.source) OVER (PARTITION BY coalesce(s.cluster_id, s.id)) AS sources
    FROM signals s
    WHERE (s.cluster_id = ANY((SELECT ids FROM targets)::bigint[])
           OR s.id = ANY((SELECT ids FROM targets)::bigint[]))
      AND coalesce(s.cluster_id, s.id) = ANY((SELECT ids FROM targets)::bigint[])
),
computed AS (
    SELECT m.id, m.base, m.stored, jsonb_build_object(
               'sources', to_jsonb(d.sources),
               'factor', trim_scale(round(
                   1 + %(step)s * least(cardinality(d.sources) - 1, %(extra)s), 4))
           ) AS corroboration
    FROM members m
    CROSS JOIN LATERAL (SELECT ARRAY(SELECT DISTINCT x FROM unnest(m.sources) AS x
                                     ORDER BY x) AS sources) AS d
    WHERE jsonb_typeof(m.base) = 'number'
),
scored AS (
    SELECT id, corroboration,
           trim_scale(least(100, greatest(0, round(
               (base #>> '{{}}')::numeric * (corroboration ->> 'factor')::numeric, 2))))
               AS score
    FROM computed
    WHERE stored IS DISTINCT FROM corroboration
)
UPDATE signals s
SET score = x.score,
    score_breakdown = s.score_breakdown
        || jsonb_build_object('corroboration', x.corroboration, 'score', x.score)
FROM scored x
WHERE s.id = x.id
"""
_BY_CLUSTER = sql.SQL(_CORROBORATE).format(
    targets=sql.SQL("SELECT unnest(%(ids)s::bigint[])"))
_FACTORS = {"step": Decimal(str(CORROBORATION_STEP)), "extra": CORROBORATION_MAX_EXTRA}


async def apply_corroboration(cur: psycopg.AsyncCursor[Any] | psycopg.AsyncConnection[Any],
                              cluster_ids: Iterable[int]) -> int:
    """Rescore every member of these clusters from its stored ``base`` × corroboration
    (distinct sources in the cluster), in the caller's transaction: one statement.
    Returns how many signals changed."""
    ids = sorted(set(cluster_ids))
    if not ids:
        return 0
    cur = await cur.execute(_BY_CLUSTER, {"ids": ids, **_FACTORS})
    return max(cur.rowcount, 0)


def apply_corroboration_sync(cur: psycopg.Cursor[Any] | psycopg.Connection[Any],
                             cluster_ids: Iterable[int]) -> int:
    """:func:`apply_corroboration` for synchronous connections (commands, tests)."""
    ids = sorted(set(cluster_ids))
    if not ids:
        return 0
    return max(cur.execute(_BY_CLUSTER, {"ids": ids, **_FACTORS}).rowcount, 0)


# Per cluster touched by the batch: its sources before and what the batch brings. Before
# is the stored row; a cluster without one has a single source, read from its first signal
# (the cluster id is that signal's id: a primary-key lookup). That signal may be in the
# batch (a cluster born here, or re-seen): its source is then among what the batch brings,
# so counting it "before" changes nothing. Only when retention deleted it is another
# member looked for. (A member lookup for every cluster, LIMIT 1, ran as one full scan per
# cluster under a generic plan with stale statistics: 0.5-1 s per batch.) A cluster with one
# source before and after the batch, nearly all of them, needs nothing and is not returned:
# reading and looping over them cost the store worker 7-8 µs of CPU a row (now 2-3).
# ``ids`` goes in binary (``%b``, see store._LOOKUP).
_TOUCHED = """
WITH b AS (
    SELECT id, coalesce(cluster_id, id) AS cluster, source
    FROM signals WHERE id = ANY(%(ids)b::bigint[])
)
SELECT t.* FROM (
    SELECT i.cluster, coalesce(
               cs.sources,
               (SELECT ARRAY[r.source] FROM signals r WHERE r.id = i.cluster),
               ARRAY(SELECT m.source FROM signals m
                     WHERE m.cluster_id = i.cluster AND m.id <> ALL(%(ids)b::bigint[]) LIMIT 1)
           ) AS before,
           i.sources, i.ids
    FROM (SELECT cluster, array_agg(DISTINCT source) AS sources, array_agg(id) AS ids
          FROM b GROUP BY cluster) AS i
    LEFT JOIN cluster_sources cs ON cs.cluster_id = i.cluster
) AS t
WHERE NOT (t.before || t.sources) <@ t.sources[1:1]  -- a second source somewhere
"""
_SAVE = """
INSERT INTO cluster_sources (cluster_id, sources) VALUES (%s, %s)
ON CONFLICT (cluster_id) DO UPDATE SET sources = EXCLUDED.sources
"""
# The batch's own rows in multi-source clusters whose factor did not change: the upsert
# wrote their score without corroboration. One statement for all of them: per row, the
# cluster's factor and sources.
_APPLY = """
UPDATE signals AS s
SET score = v.score,
    score_breakdown = s.score_breakdown || jsonb_build_object(
        'corroboration', jsonb_build_object('sources', v.sources, 'factor', v.factor),
        'score', v.score)
FROM (SELECT m.id, u.factor, u.sources,
             trim_scale(least(100, greatest(0, round(
                 (m.score_breakdown ->> 'base')::numeric * u.factor, 2)))) AS score
      FROM unnest(%(ids)s::bigint[], %(factors)s::numeric[], %(sources)s::jsonb[])
           AS u(id, factor, sources)
      JOIN signals m ON m.id = u.id
      WHERE jsonb_typeof(m.score_breakdown -> 'base') = 'number') AS v
WHERE s.id = v.id
"""


async def update_for_batch(cur: psycopg.AsyncCursor[Any], ids: Sequence[int]) -> int:
    """After the batch's upsert (``ids``: its rows, new and re-seen) and cluster
    assignment: record clusters that gained a source and rescore those whole (their factor
    and the sources every member names), and give the batch's own rows in other
    multi-source clusters their factor.
    Returns the clusters rescored in full."""
    if not ids:
        return 0
    touched = await (await cur.execute(_TOUCHED, {"ids": list(ids)})).fetchall()
    grown: list[tuple[int, list[str]]] = []
    rescore: list[int] = []
    apply: dict[str, list[Any]] = {"ids": [], "factors": [], "sources": []}
    # Every cluster returned has two sources or more after the batch (see _TOUCHED).
    for cluster, before, incoming, member_ids in touched:
        before = sorted(set(before or []))
        after = sorted(set(before) | set(incoming))
        if after != before:
            # Every member's breakdown names the cluster's sources: all are rewritten,
            # also when the factor stays (past its cap, a sixth source changes no score).
            grown.append((cluster, after))
            rescore.append(cluster)
        else:
            factor = Decimal(str(corroboration_factor(len(after))))
            for member in member_ids:
                apply["ids"].append(member)
                apply["factors"].append(factor)
                apply["sources"].append(Jsonb(after))
    if grown:  # few: only clusters that just gained a source
        await cur.executemany(_SAVE, grown)
    if rescore:
        await apply_corroboration(cur, rescore)
    if apply["ids"]:
        await cur.execute(_APPLY, apply)
    return len(rescore)


# The sources of each cluster recomputed from its members: a row for two or more, none
# for fewer (a cluster without a row has a single source).
_REBUILD = """
WITH recomputed AS (
    SELECT t.cluster, ARRAY(
               SELECT DISTINCT m.source FROM signals m
               WHERE (m.cluster_id = t.cluster OR m.id = t.cluster)
                 AND coalesce(m.cluster_id, m.id) = t.cluster ORDER BY 1) AS sources
    FROM (SELECT DISTINCT unnest(%(ids)s::bigint[]) AS cluster) AS t
), dropped AS (
    DELETE FROM cluster_sources cs USING recomputed c
    WHERE cs.cluster_id = c.cluster AND cardinality(c.sources) < 2
)
INSERT INTO cluster_sources (cluster_id, sources)
SELECT cluster, sources FROM recomputed WHERE cardinality(sources) >= 2
ON CONFLICT (cluster_id) DO UPDATE SET sources = EXCLUDED.sources
"""
REBUILD_CHUNK = 1000


def rebuild_sync(conn: psycopg.Connection[Any], cluster_ids: Iterable[int]) -> int:
    """Recompute the ``cluster_sources`` of these clusters from their members and rescore
    the members whose corroboration changed, ``REBUILD_CHUNK`` clusters per transaction (a
    savepoint inside the caller's). Returns the signals rescored."""
    ids = sorted(set(cluster_ids))
    changed = 0
    for start in range(0, len(ids), REBUILD_CHUNK):
        chunk = ids[start:start + REBUILD_CHUNK]
        with conn.transaction():
            conn.execute(_REBUILD, {"ids": chunk})
            changed += apply_corroboration_sync(conn, chunk)
    return changed
