"""Scores recomputed where the signals are: corroboration across a cluster's sources (one
set-based statement, run when clusters change) and ``harvest rescore`` after a change of
topics or weights, without re-crawling.

Corroboration needs no Python per row: the score pipeline keeps ``base`` (the score before
corroboration) in ``score_breakdown``, so a cluster's members are rescored from it in SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from harvester.services import engagement
from harvester.services.engagement import Engagement
from harvester.services.scoring import (
    CORROBORATION_MAX_EXTRA,
    CORROBORATION_STEP,
    SCORING_VERSION,
    Scorer,
)
from harvester.sources import SourcesFile

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


# -- harvest rescore ----------------------------------------------------------------------

_SELECT = """
SELECT s.id, s.source, s.kind, s.title, s.text, s.published_at, s.last_seen, s.engagement,
       s.score, s.score_breakdown,
       (SELECT array_agg(DISTINCT m.source) FROM signals m
        WHERE (m.cluster_id = coalesce(s.cluster_id, s.id) OR m.id = coalesce(s.cluster_id, s.id))
          AND coalesce(m.cluster_id, m.id) = coalesce(s.cluster_id, s.id)) AS cluster_sources
FROM signals s
WHERE ({since} OR coalesce(s.published_at, s.first_seen) >= %(since)s)
  AND ({source} OR s.source = %(source)s)
"""
_TEMP = """
CREATE TEMP TABLE IF NOT EXISTS rescore_updates (id bigint, score real, breakdown jsonb)
ON COMMIT DELETE ROWS
"""
_COPY = "COPY rescore_updates (id, score, breakdown) FROM STDIN (FORMAT BINARY)"
_UPDATE = """
UPDATE signals s SET score = u.score, score_breakdown = u.breakdown
FROM rescore_updates u WHERE s.id = u.id
"""


@dataclass(slots=True)
class RescoreReport:
    """What ``harvest rescore`` did: signals read, scores changed, rows written."""

    examined: int = 0
    changed: int = 0
    rewritten: int = 0


def _stored_engagement(kind: str, breakdown: dict[str, Any]) -> Engagement | None:
    """The engagement this signal was ranked with at its last crawl, if it was ranked:
    a rescore changes what topics and weights change, not the percentiles of the past."""
    if breakdown.get("version") != SCORING_VERSION:
        return None
    stored = breakdown.get("engagement") or {}
    if stored.get("percentile") is None:
        return None
    return Engagement(kind, stored.get("value"), stored["percentile"],
                      int(stored.get("reference") or 0))


class Rescorer:
    """Recomputes stored signals' scores with the current sources file."""

    def __init__(self, sources: SourcesFile, half_life_hours: float,
                 references: engagement.References) -> None:
        self._scorer = Scorer(sources.topics, half_life_hours)
        self._weights = {s.name: s.weight for s in sources.sources}
        self._references = references

    def score_row(self, row: tuple[Any, ...]) -> tuple[float, dict[str, Any]]:
        (_, source, kind, title, text, published_at, last_seen, counts, _, breakdown,
         cluster_sources) = row
        measured = _stored_engagement(kind, breakdown or {})
        if measured is None:
            measured = self._references.measure(source, kind, counts)
        return self._scorer.score(
            title=title, text=text, published_at=published_at, source=source,
            source_weight=self._weights.get(source, 1.0),
            # The crawl scored as of the fetch; last_seen is the last one. Rescoring as of
            # then changes only what the topics and weights change, so it is idempotent.
            now=last_seen, engagement=measured, cluster_sources=cluster_sources)


def _select(since: datetime | None, source: str | None) -> sql.Composable:
    return sql.SQL(_SELECT).format(  # type: ignore[arg-type]
        since=sql.SQL("TRUE" if since is None else "FALSE"),
        source=sql.SQL("TRUE" if source is None else "FALSE"),
    )


def _write(conn: psycopg.Connection[Any], updates: list[tuple[int, float, dict[str, Any]]]
           ) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_TEMP)
        with cur.copy(_COPY) as copy:
            copy.set_types(["int8", "float4", "jsonb"])
            for update in updates:
                copy.write_row(update)
        cur.execute(_UPDATE)


def rescore(url: str, sources: SourcesFile, *, half_life_hours: float,
            since: datetime | None = None, source: str | None = None,
            batch_size: int = 500,
            progress: Callable[[RescoreReport], None] | None = None) -> RescoreReport:
    """Recompute the score of every signal dated since ``since`` (``published_at``, else
    ``first_seen``) of ``source`` (all when None) from its stored title, text, engagement
    and times. Read through a server-side cursor on one connection, written per batch
    (COPY to a temporary table, one ``UPDATE … FROM``, commit) on another: memory is one
    batch, and an interrupted rescore keeps its finished batches (running it again is
    safe: a signal whose score and breakdown come out the same is not written)."""
    report = RescoreReport()
    names = [source] if source else [s.name for s in sources.sources]
    with psycopg.connect(url, connect_timeout=5) as reader, \
            psycopg.connect(url, connect_timeout=5) as writer:
        references = engagement.load_references_sync(reader, names)
        reader.commit()
        rescorer = Rescorer(sources, half_life_hours, references)
        with reader.transaction(), reader.cursor(name="rescore") as cur:
            cur.itersize = batch_size
            cur.execute(_select(since, source), {"since": since, "source": source})
            while rows := cur.fetchmany(batch_size):
                updates = []
                for row in rows:
                    value, breakdown = rescorer.score_row(row)
                    if abs(value - float(row[8])) >= 0.005:
                        report.changed += 1
                    elif breakdown == row[9]:
                        continue
                    updates.append((row[0], value, breakdown))
                if updates:
                    _write(writer, updates)
                report.examined += len(rows)
                report.rewritten += len(updates)
                if progress is not None:
                    progress(report)
    return report
