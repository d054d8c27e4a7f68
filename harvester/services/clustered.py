"""Read-side queries that show one row per story cluster instead of one per duplicate.

A signal's cluster is ``coalesce(cluster_id, id)``: the clustering step sets ``cluster_id``
to the id of the cluster's first signal, and a signal it never grouped is a cluster of its
own. A cluster ranks by its best signal (highest score; ties: newest, then highest id, the
order of ``harvest top``), and that signal's title, URL and breakdown stand for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from harvester.services.queries import TopFilter

# Rows fetched per round trip while walking signals in score order for ``top_clusters``.
_ITERSIZE = 200


def _top_where(flt: TopFilter) -> tuple[str, dict[str, Any]]:
    clauses = ["TRUE"]
    params: dict[str, Any] = {}
    if flt.since is not None:
        clauses.append("coalesce(published_at, first_seen) >= %(since)s")
        params["since"] = flt.since
    if flt.sources:
        clauses.append("source = ANY(%(sources)s)")
        params["sources"] = list(flt.sources)
    if flt.min_score is not None:
        clauses.append("score >= %(min_score)s::real")  # as stored: 15.74 is 15.7399997 in float4
        params["min_score"] = flt.min_score
    return " AND ".join(clauses), params


def _best_signals(conn: psycopg.Connection[Any], flt: TopFilter) -> list[dict[str, Any]]:
    """The best matching signal of each of the top ``flt.limit`` clusters, best first.

    Signals are read in score order through a server-side cursor and the first one seen of
    each cluster is kept, so only about ``limit × cluster size`` rows leave the database
    however large ``signals`` grows (``ORDER BY score`` walks the ``signals_score`` index).
    """
    where, params = _top_where(flt)
    query = f"""
        SELECT coalesce(cluster_id, id) AS cluster_id, id, url, title, source, score,
               published_at, first_seen, last_seen, seen_count, tags, score_breakdown
        FROM signals WHERE {where}
        ORDER BY score DESC, published_at DESC NULLS LAST, id DESC
    """  # only fixed clause strings are joined; values are parameters
    return first_per_cluster(conn, query, params, flt.limit)


def first_per_cluster(conn: psycopg.Connection[Any], query: str, params: dict[str, Any],
                      limit: int) -> list[dict[str, Any]]:
    """The first row of each of the first ``limit`` clusters of ``query`` (which selects a
    ``cluster_id`` column, best first), with the cluster's ``cluster_sources`` (that row's
    source first) and ``cluster_size``. Rows are read through a server-side cursor and the
    walk stops at ``limit`` clusters."""
    best: dict[int, dict[str, Any]] = {}
    with conn.transaction(), conn.cursor(name="first_per_cluster", row_factory=dict_row) as cur:
        cur.itersize = _ITERSIZE
        cur.execute(query, params)  # type: ignore[arg-type]
        for row in cur:
            best.setdefault(row["cluster_id"], row)
            if len(best) >= limit:
                break
    members = cluster_members(conn, list(best))
    for row in best.values():
        sources, size = members.get(row["cluster_id"], ([row["source"]], 1))
        row["cluster_sources"] = [row["source"], *(s for s in sources if s != row["source"])]
        row["cluster_size"] = size
    return list(best.values())


def cluster_members(conn: psycopg.Connection[Any],
                    clusters: Sequence[int]) -> dict[int, tuple[list[str], int]]:
    """Per cluster id: its distinct sources (sorted) and how many signals it has."""
    if not clusters:
        return {}
    # The OR lets PostgreSQL use signals_cluster_id and the primary key; the coalesce keeps
    # the answer exact if a first signal was later moved to another cluster.
    rows = conn.execute("""
        SELECT coalesce(cluster_id, id), array_agg(DISTINCT source ORDER BY source), count(*)
        FROM signals
        WHERE (cluster_id = ANY(%(ids)s) OR id = ANY(%(ids)s))
          AND coalesce(cluster_id, id) = ANY(%(ids)s)
        GROUP BY 1""", {"ids": list(clusters)}).fetchall()
    return {cluster: (sources, size) for cluster, sources, size in rows}


def top_clusters(conn: psycopg.Connection[Any], flt: TopFilter) -> list[dict[str, Any]]:
    """``harvest top`` with one row per cluster.

    The filters choose the clusters (a cluster shows when one of its signals passes them;
    its best such signal represents it); ``cluster_sources`` and ``cluster_size`` describe
    the whole cluster, so ``--source hn`` still tells which other sources carried the story.
    Each row has the signal's id (what ``harvest explain`` takes), url, title, source,
    score, dates, tags and breakdown, plus ``cluster_id``, ``cluster_sources`` (the
    representative's source first, then the others alphabetically), ``cluster_size`` and
    ``duplicates`` (= size − 1).
    """
    best = _best_signals(conn, flt)
    for row in best:
        row["duplicates"] = row["cluster_size"] - 1
    return best


# -- one ISO week, by topic ---------------------------------------------------------------

# The week's signals grouped into clusters and ranked inside each topic they matched. A
# cluster matches a topic when any of its signals did (keywords are the union); clusters
# that matched none are ranked under topic NULL ("other"). Ties on score go to the cluster
# carried by more sources, then to the more recent one.
WEEK_CLUSTERS = """
WITH week AS MATERIALIZED (
    SELECT id, coalesce(cluster_id, id) AS cluster, source, url, title, score,
           coalesce(published_at, first_seen) AS seen_at,
           CASE WHEN jsonb_typeof(score_breakdown -> 'topics') = 'object'
                THEN score_breakdown -> 'topics' ELSE '{}'::jsonb END AS topics
    FROM signals
    WHERE coalesce(published_at, first_seen) >= %(start)s
      AND coalesce(published_at, first_seen) < %(end)s
),
clusters AS (
    SELECT DISTINCT ON (cluster) cluster, id AS best_id, title, url, score, seen_at
    FROM week ORDER BY cluster, score DESC, seen_at DESC, id DESC
),
sizes AS (
    SELECT cluster, count(DISTINCT source) AS n_sources, count(*) AS size, max(seen_at) AS last_at
    FROM week GROUP BY cluster
),
matched AS (
    SELECT w.cluster, t.key AS topic, kw
    FROM week w
    CROSS JOIN LATERAL jsonb_each(w.topics) AS t
    LEFT JOIN LATERAL jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(t.value -> 'keywords') = 'array'
             THEN t.value -> 'keywords' ELSE '[]'::jsonb END) AS kw ON TRUE
),
topics AS (
    SELECT cluster, topic, coalesce(array_agg(DISTINCT kw ORDER BY kw)
                                    FILTER (WHERE kw IS NOT NULL), '{}') AS keywords
    FROM matched GROUP BY cluster, topic
),
placed AS (
    SELECT cluster, topic FROM topics
    UNION ALL
    SELECT cluster, NULL FROM clusters c
    WHERE NOT EXISTS (SELECT 1 FROM topics t WHERE t.cluster = c.cluster)
),
ranked AS (
    SELECT p.topic, c.*, s.n_sources, s.size,
           row_number() OVER (PARTITION BY p.topic
                              ORDER BY c.score DESC, s.n_sources DESC, s.last_at DESC,
                                       c.cluster DESC) AS rank
    FROM placed p JOIN clusters c USING (cluster) JOIN sizes s USING (cluster)
),
chosen AS (SELECT * FROM ranked WHERE rank <= %(limit)s),
links AS (
    SELECT DISTINCT ON (w.cluster, w.source) w.cluster, w.source, w.url, w.id
    FROM week w WHERE w.cluster IN (SELECT cluster FROM chosen)
    ORDER BY w.cluster, w.source, w.score DESC, w.seen_at DESC, w.id DESC
)
SELECT ch.topic, ch.rank, ch.cluster, ch.best_id, ch.title, ch.url, ch.score, ch.seen_at,
       ch.size,
       (SELECT jsonb_agg(jsonb_build_array(l.source, l.url, l.id) ORDER BY l.source)
        FROM links l WHERE l.cluster = ch.cluster) AS links,
       (SELECT coalesce(jsonb_object_agg(t.topic, t.keywords), '{}'::jsonb)
        FROM topics t WHERE t.cluster = ch.cluster) AS matched
FROM chosen ch
ORDER BY lower(ch.topic) NULLS LAST, ch.topic, ch.rank  -- alphabetical: "alpha" before "Zeta"
"""


def week_clusters(conn: psycopg.Connection[Any], start: datetime, end: datetime,
                  limit: int) -> list[dict[str, Any]]:
    """The top ``limit`` clusters per topic among signals dated in ``[start, end)``
    (``published_at``, else ``first_seen``); one row per (topic, cluster), topic ``None``
    for clusters that matched no topic. Sources and links count only the window's signals.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(WEEK_CLUSTERS, {"start": start, "end": end, "limit": limit})
        return cur.fetchall()
