"""``harvest rescore``: scores recomputed where the signals are after a change of topics or
weights, without re-crawling. Corroboration, rescored in SQL when clusters change, is
``services/corroboration.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from harvester.services import engagement
from harvester.services.engagement import Engagement
from harvester.services.scoring import (
    DEFAULT_HALF_LIFE_HOURS,
    HALF_LIFE_MAX,
    SCORING_VERSION,
    Scorer,
)
from harvester.sources import SourcesFile

# -- harvest rescore ----------------------------------------------------------------------

_SELECT = """
SELECT s.id, s.source, s.kind, s.title, s.text, s.published_at, s.fetched_at, s.engagement,
       s.score, s.score_breakdown,
       (SELECT array_agg(DISTINCT m.source) FROM signals m
        WHERE (m.cluster_id = coalesce(s.cluster_id, s.id) OR m.id = coalesce(s.cluster_id, s.id))
          AND coalesce(m.cluster_id, m.id) = coalesce(s.cluster_id, s.id)) AS cluster_sources
FROM signals s
WHERE ({since} OR coalesce(s.published_at, s.first_seen) >= %(since)s)
  AND ({source} OR s.source = %(source)s)
  AND ({every} OR s.source = ANY(%(defined)s) OR s.kind = 'curated')
"""
# The signals of sources the file does not define (a removed source, `harvest demo`'s),
# which a rescore without --source leaves as they were scored.
_LEFT = """
SELECT count(*) FROM signals s
WHERE ({since} OR coalesce(s.published_at, s.first_seen) >= %(since)s)
  AND s.source <> ALL(%(defined)s) AND s.kind <> 'curated'
"""
_TEMP = """
CREATE TEMP TABLE IF NOT EXISTS rescore_updates (id bigint, score real, breakdown jsonb,
                                                 read jsonb, changed boolean)
ON COMMIT DELETE ROWS
"""
_COPY = ("COPY rescore_updates (id, score, breakdown, read, changed) FROM STDIN "
         "(FORMAT BINARY)")
# Only rows still as they were read: a crawl that re-saw an edited item while the rescore
# ran gave it its new title and the score of that title, and the rescore then wrote the
# score of the old title over it (the item sat at 0 with a keyword in its title).
_UPDATE = """
UPDATE signals s SET score = u.score, score_breakdown = u.breakdown
FROM rescore_updates u
WHERE s.id = u.id AND s.score_breakdown IS NOT DISTINCT FROM u.read
RETURNING u.changed
"""


@dataclass(slots=True)
class RescoreReport:
    """What ``harvest rescore`` did: signals read, scores changed, rows written."""

    examined: int = 0
    changed: int = 0
    rewritten: int = 0
    #: signals a crawl scored again while the rescore ran, left as the crawl scored them
    moved: int = 0
    #: signals of sources the file does not define, left as they were scored
    left: int = 0


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


def _stored_half_life(breakdown: dict[str, Any]) -> float | None:
    value = breakdown.get("half_life_hours")
    if isinstance(value, int | float) and 0 < value <= HALF_LIFE_MAX:
        return float(value)
    return None


class Rescorer:
    """Recomputes stored signals' scores with the current sources file."""

    def __init__(self, sources: SourcesFile, half_life_hours: float | None,
                 references: engagement.References,
                 default_half_life: float = DEFAULT_HALF_LIFE_HOURS) -> None:
        # Each signal keeps the half-life it was scored with (its breakdown's) unless
        # ``half_life_hours`` says otherwise; ``default_half_life`` is for a breakdown
        # without one.
        self._scorer = Scorer(sources.topics, default_half_life)
        self._half_life = half_life_hours
        self._weights = {s.name: s.weight for s in sources.sources}
        self._references = references

    def score_row(self, row: tuple[Any, ...]) -> tuple[float, dict[str, Any]]:
        (_, source, kind, title, text, published_at, fetched_at, counts, _, breakdown,
         cluster_sources) = row
        measured = _stored_engagement(kind, breakdown or {})
        if measured is None:
            measured = self._references.measure(source, kind, counts)
        return self._scorer.score(
            title=title, text=text, published_at=published_at, source=source,
            source_weight=self._weight(source, breakdown or {}),
            # The crawl scored as of its fetch, which the row keeps with the score (not
            # last_seen: a 304 or another source's sighting moves that without scoring).
            # Rescoring as of then, with the half-life the signal was scored with, changes
            # only what the topics and weights change, so it is idempotent.
            now=fetched_at, engagement=measured, cluster_sources=cluster_sources,
            half_life_hours=self._half_life or _stored_half_life(breakdown or {}))


    def _weight(self, source: str, breakdown: dict[str, Any]) -> float:
        """The file's weight of ``source``; for one the file no longer defines (or signals
        posted through the API) the weight it was scored with, not 1: taking a source out
        of the file stops its crawls, it does not re-rank what it brought."""
        if (weight := self._weights.get(source)) is not None:
            return weight
        stored = breakdown.get("source_weight")
        return float(stored) if isinstance(stored, int | float) else 1.0


def _select(since: datetime | None, source: str | None) -> sql.Composable:
    # A named source is rescored whether the file defines it or not (its stored weight is
    # kept, see Rescorer._weight); without one, only what the file's topics are for.
    return sql.SQL(_SELECT).format(  # type: ignore[arg-type]
        since=sql.SQL("TRUE" if since is None else "FALSE"),
        source=sql.SQL("TRUE" if source is None else "FALSE"),
        every=sql.SQL("FALSE" if source is None else "TRUE"),
    )


def _write(conn: psycopg.Connection[Any],
           updates: list[tuple[int, float, dict[str, Any], Any, bool]]) -> tuple[int, int]:
    """Write the batch's new scores where the rows are as read; (rows written, of them
    scores changed)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(_TEMP)
        with cur.copy(_COPY) as copy:
            copy.set_types(["int8", "float4", "jsonb", "jsonb", "bool"])
            for update in updates:
                copy.write_row(update)
        written = cur.execute(_UPDATE).fetchall()
    return len(written), sum(1 for (changed,) in written if changed)


def rescore(url: str, sources: SourcesFile, *, half_life_hours: float | None,
            default_half_life: float = DEFAULT_HALF_LIFE_HOURS,
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
    defined = [s.name for s in sources.sources]
    names = [source] if source else defined
    with psycopg.connect(url, connect_timeout=5) as reader, \
            psycopg.connect(url, connect_timeout=5) as writer:
        references = engagement.load_references_sync(reader, names)
        reader.commit()
        rescorer = Rescorer(sources, half_life_hours, references, default_half_life)
        with reader.transaction(), reader.cursor(name="rescore") as cur:
            cur.itersize = batch_size
            params = {"since": since, "source": source, "defined": defined}
            cur.execute(_select(since, source), params)
            while rows := cur.fetchmany(batch_size):
                updates = []
                for row in rows:
                    value, breakdown = rescorer.score_row(row)
                    changed = abs(value - float(row[8])) >= 0.005
                    if not changed and breakdown == row[9]:
                        continue
                    updates.append((row[0], value, breakdown, row[9], changed))
                if updates:
                    written, changed_written = _write(writer, updates)
                    report.rewritten += written
                    report.changed += changed_written
                    report.moved += len(updates) - written
                report.examined += len(rows)
                if progress is not None:
                    progress(report)
        if source is None:
            left = reader.execute(sql.SQL(_LEFT).format(  # type: ignore[arg-type]
                since=sql.SQL("TRUE" if since is None else "FALSE")), params).fetchone()
            report.left = int(left[0]) if left else 0
    return report
