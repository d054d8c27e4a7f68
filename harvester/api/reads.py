"""The API's read queries. Every value is a bound parameter; only fixed clause strings
from this module are joined into SQL.

Full-text search matches ``FTS_DOCUMENT @@ websearch_to_tsquery('simple', q)``: the
expression must stay byte-for-byte the one indexed by migration 0007 (``signals_fts``), or
PostgreSQL cannot use the index. ``websearch_to_tsquery`` accepts any input (quotes, ``or``,
``-word``) without a syntax error, so a user's query can never break the statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from harvester.api.pagination import Cursor, Sort
from harvester.services import queries
from harvester.services.clustered import cluster_members, first_per_cluster

FTS_DOCUMENT = "to_tsvector('simple'::regconfig, coalesce(title, ''))"
SEEN_AT = "coalesce(published_at, first_seen)"
SORT_KEYS: dict[str, str] = {"recent": SEEN_AT, "score": "score"}
LIST_COLUMNS = ("id, source, kind, url, link_url, title, author, published_at, first_seen, "
                "last_seen, seen_count, score, tags, language, "
                "coalesce(cluster_id, id) AS cluster_id")
DETAIL_COLUMNS = (LIST_COLUMNS + ", canonical_url, feed_url, external_id, text, updated_at, "
                  "fetched_at, engagement, score_breakdown, simhash, run_id")
# At most this many siblings come with one signal; the cluster's size is exact.
MAX_SIBLINGS = 50


@dataclass(frozen=True, slots=True)
class SignalFilter:
    q: str | None = None
    sources: tuple[str, ...] = ()
    topic: str | None = None
    since: datetime | None = None
    min_score: float | None = None
    cluster: int | None = None


def _where(flt: SignalFilter) -> tuple[list[str], dict[str, Any]]:
    clauses: list[str] = []
    params: dict[str, Any] = {}
    if flt.q:
        clauses.append(f"{FTS_DOCUMENT} @@ websearch_to_tsquery('simple'::regconfig, %(q)s)")
        params["q"] = flt.q
    if flt.sources:
        clauses.append("source = ANY(%(sources)s)")
        params["sources"] = list(flt.sources)
    if flt.topic:
        clauses.append("score_breakdown -> 'topics' ? %(topic)s")
        params["topic"] = flt.topic
    if flt.since is not None:
        clauses.append(f"{SEEN_AT} >= %(since)s")
        params["since"] = flt.since
    if flt.min_score is not None:
        clauses.append("score >= %(min_score)s::real")  # as stored: 15.74 is 15.7399997 in float4
        params["min_score"] = flt.min_score
    if flt.cluster is not None:
        # The OR lets PostgreSQL use signals_cluster_id and the primary key.
        clauses.append("(cluster_id = %(cluster)s OR id = %(cluster)s) "
                       "AND coalesce(cluster_id, id) = %(cluster)s")
        params["cluster"] = flt.cluster
    return clauses, params


def list_signals(conn: psycopg.Connection[Any], flt: SignalFilter, sort: Sort, limit: int,
                 after: Cursor | None) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One page in ``sort`` order (newest or best first, ties by id) and the cursor of the
    next page, None on the last one."""
    clauses, params = _where(flt)
    key = SORT_KEYS[sort]
    if after is not None:
        # Written out rather than a row comparison so the single-column score index and
        # the (seen_at, id) index both serve it.
        # The score column is a real: the cursor's 67.7 (a double) is above the stored
        # 67.69999694…, and the boundary row came back on the next page. Compared as reals.
        bound = "%(after_key)s::real" if sort == "score" else "%(after_key)s"
        clauses.append(f"{key} <= {bound} AND ({key} < {bound} OR id < %(after_id)s)")
        params["after_key"], params["after_id"] = after.key, after.id
    params["limit"] = limit + 1
    query = (f"SELECT {LIST_COLUMNS}, {key} AS sort_key FROM signals "
             f"WHERE {' AND '.join(clauses) or 'TRUE'} "
             f"ORDER BY {key} DESC, id DESC LIMIT %(limit)s")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)  # type: ignore[arg-type]
        rows = cur.fetchall()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = Cursor(sort, rows[-1]["sort_key"], rows[-1]["id"])
    for row in rows:
        del row["sort_key"]
    return rows, next_cursor


def top_clusters(conn: psycopg.Connection[Any], flt: SignalFilter,
                 limit: int) -> list[dict[str, Any]]:
    """The best signal of each of the ``limit`` best clusters passing ``flt`` (the order of
    ``harvest top``), with the cluster's sources and size: one row per story."""
    clauses, params = _where(flt)
    query = (f"SELECT {LIST_COLUMNS} FROM signals WHERE {' AND '.join(clauses) or 'TRUE'} "
             "ORDER BY score DESC, published_at DESC NULLS LAST, id DESC")
    return first_per_cluster(conn, query, params, limit)


def signal(conn: psycopg.Connection[Any], signal_id: int) -> dict[str, Any] | None:
    """One signal with its text, breakdown and up to MAX_SIBLINGS cluster siblings."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT {DETAIL_COLUMNS} FROM signals WHERE id = %s", (signal_id,))
        row = cur.fetchone()
        if row is None:
            return None
        cluster = row["cluster_id"]
        cur.execute(f"""
            SELECT {LIST_COLUMNS} FROM signals
            WHERE (cluster_id = %(c)s OR id = %(c)s) AND coalesce(cluster_id, id) = %(c)s
              AND id <> %(id)s
            ORDER BY score DESC, id DESC LIMIT %(n)s""",
                    {"c": cluster, "id": signal_id, "n": MAX_SIBLINGS})
        row["siblings"] = cur.fetchall()
    sources, size = cluster_members(conn, [cluster]).get(cluster, ([row["source"]], 1))
    row["cluster_size"] = size
    row["cluster_sources"] = sources
    return row


def source_counts(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, datetime | None]]:
    rows = conn.execute("SELECT source, count(*), max(first_seen) FROM signals "
                        "GROUP BY source").fetchall()
    return {source: (count, last) for source, count, last in rows}


def source_rows(conn: psycopg.Connection[Any], table: str,
                columns: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``sources_state`` or ``schedules`` by source (both fixed names from routes)."""
    assert table in ("sources_state", "schedules")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"SELECT source, {', '.join(columns)} FROM {table}")  # type: ignore[arg-type]
        return {row.pop("source"): row for row in cur.fetchall()}


def runs(conn: psycopg.Connection[Any], source: str | None, limit: int) -> list[dict[str, Any]]:
    where = "WHERE %(source)s = ANY(sources)" if source else ""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(f"""
            SELECT id, spider, sources, job_id, started_at, finished_at, finish_reason,
                   scraped, stored, reseen, duplicates, rejected, errors, not_modified,
                   (SELECT coalesce(jsonb_object_agg(src, {queries.RUN_OUTCOME}), '{{}}')
                    FROM unnest(sources) AS src,
                         LATERAL (SELECT stats -> 'harvest/by_source' -> src AS counters) c
                   ) AS outcomes
            FROM crawl_runs {where} ORDER BY started_at DESC, id LIMIT %(limit)s""",  # type: ignore[arg-type]
                    {"source": source, "limit": limit})
        return cur.fetchall()


def brief(conn: psycopg.Connection[Any], week: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT week, generated_at, markdown, html, signal_ids, params "
                    "FROM briefs WHERE week = %s", (week,))
        return cur.fetchone()
