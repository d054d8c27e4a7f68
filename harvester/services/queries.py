"""Read-side queries for the CLI (and later the API)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from w3lib.url import safe_url_string

#: What `harvest crawl` said of one source in one run, from the run's ``finish_reason`` and
#: the source's ``counters`` (``crawl_runs.stats -> 'harvest/by_source' -> source``):
#: "finished" was also the finish reason of a crawl in which every fetch of it failed.
# As stats.succeeded and runner.SourceOutcome.failed judge a run (keep the three alike).
RUN_OUTCOME = """CASE
        WHEN finish_reason IS DISTINCT FROM 'finished' THEN finish_reason
        WHEN counters IS NULL THEN 'finished'
        WHEN counters ->> 'skipped' IS NOT NULL THEN 'skipped'
        WHEN coalesce((counters ->> 'fetched')::bigint, 0)
             + coalesce((counters ->> 'not_modified')::bigint, 0) = 0 THEN 'failed'
        WHEN coalesce((counters ->> 'bugs')::bigint, 0) > 0
          OR (coalesce((counters ->> 'errors')::bigint, 0) > 0
              AND coalesce((counters ->> 'entries')::bigint, 0) = 0
              AND coalesce((counters ->> 'not_modified')::bigint, 0) = 0) THEN 'failed'
        WHEN coalesce((counters ->> 'errors')::bigint, 0) > 0 THEN 'partly failed'
        ELSE 'succeeded' END"""


@dataclass(frozen=True, slots=True)
class TopFilter:
    limit: int = 20
    since: datetime | None = None
    sources: tuple[str, ...] = ()
    min_score: float | None = None


@dataclass(frozen=True, slots=True)
class RejectFilter:
    limit: int = 20
    since: datetime | None = None
    sources: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


def rejects(conn: psycopg.Connection[Any], flt: RejectFilter) -> list[dict[str, Any]]:
    """The newest rejections first, with what they kept of the raw input."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("""
            SELECT id, created_at, source, reason, field, url, raw FROM rejects
            WHERE (cardinality(%(sources)s::text[]) = 0 OR source = ANY(%(sources)s))
              AND (cardinality(%(reasons)s::text[]) = 0 OR reason = ANY(%(reasons)s))
              AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
            ORDER BY id DESC LIMIT %(limit)s""",
                    {"sources": list(flt.sources), "reasons": list(flt.reasons),
                     "since": flt.since, "limit": flt.limit})
        return cur.fetchall()


def stats(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    with conn.cursor() as cur:
        total = cur.execute("SELECT count(*) FROM signals").fetchone()
        by_source = dict(cur.execute(
            "SELECT source, count(*) FROM signals GROUP BY source ORDER BY source").fetchall())
        rejects = dict(cur.execute(
            "SELECT reason, count(*) FROM rejects GROUP BY reason ORDER BY count(*) DESC"
        ).fetchall())
        runs = cur.execute("SELECT count(*), max(finished_at) FROM crawl_runs").fetchone()
    return {
        "signals": total[0] if total else 0,
        "by_source": by_source,
        "rejects": rejects,
        "runs": runs[0] if runs else 0,
        "last_run_finished_at": runs[1].isoformat() if runs and runs[1] else None,
    }


def source_states(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT source, last_attempt, last_success, consecutive_failures, "
                    "disabled, disabled_at, last_error FROM sources_state")
        return {row["source"]: row for row in cur.fetchall()}


def moved_urls(conn: psycopg.Connection[Any], listed: Mapping[str, Iterable[str]]
               ) -> dict[str, tuple[datetime, dict[str, str]]]:
    """Per source of ``listed`` (name → the URLs the sources file lists), the listed URLs its
    latest run found redirecting permanently (old → new) and when that run started. A URL
    the file no longer lists is left out: the operator has acted."""
    with conn.cursor() as cur:
        cur.execute("""
            SELECT source, started_at, moved FROM (
                SELECT DISTINCT ON (src) src AS source, started_at,
                       stats -> 'harvest/by_source' -> src -> 'moved' AS moved
                FROM crawl_runs, unnest(sources) AS src WHERE src = ANY(%s)
                ORDER BY src, started_at DESC) latest
            WHERE moved IS NOT NULL""", (list(listed),))
        out: dict[str, tuple[datetime, dict[str, str]]] = {}
        for source, started, moved in cur.fetchall():
            urls = {safe_url_string(u) for u in listed[source]}
            still = {old: new for old, new in moved.items() if old in urls}
            if still:
                out[source] = (started, still)
        return out


_RECENT_RUNS = """
SELECT id, spider, sources, started_at, finished_at, finish_reason, scraped, stored, reseen,
       duplicates, rejected, errors, not_modified,
       -- each source's outcome, as `harvest crawl` judged it ("finished" was also the
       -- reason of a run whose sources were all skipped or all failed)
       ARRAY(SELECT {outcome} FROM (
                 SELECT r.finish_reason, r.stats -> 'harvest/by_source' -> src AS counters
                 FROM unnest(r.sources) AS src) AS judged) AS outcomes
FROM crawl_runs r ORDER BY started_at DESC LIMIT %s""".replace("{outcome}", RUN_OUTCOME)


def recent_runs(conn: psycopg.Connection[Any], limit: int = 10) -> list[dict[str, Any]]:
    """The newest runs first, with ``outcomes``: one per source of the run."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_RECENT_RUNS, (limit,))  # type: ignore[arg-type]  # fixed query text
        return cur.fetchall()
