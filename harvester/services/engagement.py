"""Engagement normalised per source: a percentile against that source's recent signals.

A thousand upvotes on a large subreddit and fifty points on Hacker News are both "high" for
where they were posted; raw counts are not comparable across sources, ranks within a
source are. Each kind with engagement has one number (:data:`METRICS`); a signal's
percentile is where that number falls among the source's last :data:`DEFAULT_WINDOW`
signals of the last :data:`DEFAULT_DAYS` days, loaded once per crawl with one query and
searched in-process (``bisect`` over a sorted list). Kinds without engagement (feeds,
pages, sitemaps), sources with too little history and an unreachable database all give
"no percentile": the scorer then uses a neutral factor.
"""

from __future__ import annotations

import asyncio
import json
import logging
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from harvester.messages import first_line

logger = logging.getLogger(__name__)

#: The engagement counts summed into a kind's one number (keys of ``Signal.engagement``).
METRICS: dict[str, tuple[str, ...]] = {
    "reddit": ("score",),
    "hackernews": ("score",),
    "x": ("like_count", "retweet_count", "quote_count"),
}
#: How the number reads in an explanation.
LABELS: dict[str, str] = {
    "reddit": "Reddit score",
    "hackernews": "HN points",
    "x": "likes + reposts + quotes",
}
DEFAULT_WINDOW = 500
DEFAULT_DAYS = 30
#: Fewer reference values than this and a percentile says little: neutral instead.
MIN_HISTORY = 10


@dataclass(frozen=True, slots=True)
class Engagement:
    """One signal's engagement as scored: the number, its percentile (0–1, None = neutral)
    and how many of the source's recent signals it was ranked against."""

    kind: str | None = None
    value: float | None = None
    percentile: float | None = None
    reference: int = 0


NEUTRAL = Engagement()


#: Counts from 18 digits up are none (see parsers/counts.py); stored before it refused
#: them, 10**400 raised OverflowError in the score step.
LARGEST_COUNT = 10**18


def engagement_value(kind: str, engagement: Mapping[str, Any] | None) -> float | None:
    """The kind's one engagement number, or None when the kind or the item has none."""
    keys = METRICS.get(kind)
    if not keys or not engagement:
        return None
    total = 0.0
    found = False
    for key in keys:
        value = engagement.get(key)
        if (isinstance(value, (int, float)) and not isinstance(value, bool)
                and abs(value) < LARGEST_COUNT):  # NaN and infinities fail it too
            total += value
            found = True
    return total if found else None


def percentile(ordered: Sequence[float], value: float) -> float:
    """Mid-rank percentile of ``value`` in the sorted ``ordered`` (ties count half)."""
    below = bisect_left(ordered, value)
    equal = bisect_right(ordered, value, lo=below) - below
    return (below + equal / 2) / len(ordered)


class References:
    """Recent engagement numbers per source, sorted once, ranked against per item."""

    __slots__ = ("_sorted",)

    def __init__(self, values: Mapping[str, Iterable[float]] | None = None) -> None:
        self._sorted = {source: sorted(v) for source, v in (values or {}).items()}

    def __len__(self) -> int:
        return sum(map(len, self._sorted.values()))

    def measure(self, source: str, kind: str,
                engagement: Mapping[str, Any] | None) -> Engagement:
        value = engagement_value(kind, engagement)
        if value is None:
            return NEUTRAL
        ordered = self._sorted.get(source, ())
        if len(ordered) < MIN_HISTORY:
            return Engagement(kind, value, None, len(ordered))
        return Engagement(kind, value, round(percentile(ordered, value), 4), len(ordered))


# The stored number of a signal: the one its last scoring saw (engagement grows while a
# post is re-seen, and the ``engagement`` column keeps the first sighting's counts), else
# the one computed from the column with the keys of METRICS.
# Numbers of 18 digits or more (stored before counts.py refused them) are passed over:
# cast to float8, or summed to past its range, they failed the whole query, and every
# later run of the source scored its engagement as neutral.
_VALUE = """
CASE WHEN jsonb_typeof(e.score_breakdown #> '{engagement,value}') = 'number'
      AND abs((e.score_breakdown #>> '{engagement,value}')::numeric) < 1e18
     THEN (e.score_breakdown #>> '{engagement,value}')::float8
     ELSE (SELECT sum((e.engagement ->> k)::float8)
           FROM jsonb_array_elements_text(%(metrics)s::jsonb -> e.kind) AS k
           WHERE jsonb_typeof(e.engagement -> k) = 'number'
             AND abs((e.engagement ->> k)::numeric) < 1e18)
END"""
_REFERENCE = f"""
SELECT src.name, v.value
FROM unnest(%(sources)s::text[]) AS src(name)
CROSS JOIN LATERAL (
    SELECT {_VALUE} AS value
    FROM (SELECT kind, engagement, score_breakdown FROM signals
          WHERE source = src.name AND kind = ANY(%(kinds)s) AND last_seen >= %(since)s
          ORDER BY last_seen DESC
          LIMIT %(window)s) AS e
) AS v
WHERE v.value IS NOT NULL
"""
# (The value is computed outside the sorted subquery so that only the kept rows are read.)


def _params(sources: Sequence[str], window: int, days: float) -> dict[str, Any]:
    return {"sources": list(sources), "kinds": list(METRICS), "window": window,
            "metrics": json.dumps(METRICS),
            "since": datetime.now(UTC) - timedelta(days=days)}


def _group(rows: Iterable[tuple[str, float]]) -> References:
    values: dict[str, list[float]] = {}
    for source, value in rows:
        values.setdefault(source, []).append(float(value))
    return References(values)


async def load_references(conn: psycopg.AsyncConnection[Any], sources: Sequence[str],
                          window: int = DEFAULT_WINDOW,
                          days: float = DEFAULT_DAYS) -> References:
    """The recent engagement numbers of ``sources``: one query."""
    cur = await conn.execute(_REFERENCE, _params(sources, window, days))
    return _group(await cur.fetchall())


def load_references_sync(conn: psycopg.Connection[Any], sources: Sequence[str],
                         window: int = DEFAULT_WINDOW, days: float = DEFAULT_DAYS) -> References:
    """:func:`load_references` for synchronous connections (``harvest rescore``)."""
    return _group(conn.execute(_REFERENCE, _params(sources, window, days)).fetchall())


async def fetch_references(sources: Sequence[str], window: int = DEFAULT_WINDOW,
                           days: float = DEFAULT_DAYS) -> References:
    """:func:`load_references` on a connection of its own; with the database unreachable,
    no references (every percentile neutral) and a warning, never an error."""
    if not sources:
        return References()
    # Here, not at the top: the store worker imports this module (through scoring) and
    # has no use for the settings (pydantic) or the database helpers.
    from harvester.config import get_config
    from harvester.services import database

    try:
        url = await asyncio.to_thread(database.resolve_url, get_config())
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
            return await load_references(conn, sources, window, days)
    except psycopg.errors.UndefinedTable:
        # A database the store has not migrated yet (the first crawl of a new one): no
        # history is what there is, not a fault to warn of.
        logger.info("No engagement history yet (the database has no signals table); "
                    "engagement is neutral this run")
        return References()
    except (database.DatabaseUnavailable, psycopg.Error) as exc:
        logger.warning("No engagement history loaded (%s); engagement is neutral this run",
                       first_line(exc))
        return References()
