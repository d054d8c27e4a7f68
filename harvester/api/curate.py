"""``POST /signals``: a curator's signal goes through the crawl's own pipelines.

The item is run through ``ValidatePipeline``, ``DedupePipeline`` and ``ScorePipeline``
themselves — built from an unstarted Scrapy ``Crawler`` carrying the project settings and
a stats collector — so a curated signal is cleaned, keyed and scored exactly as a crawled
one, and a change to those pipelines applies here too. It is then stored with the store's
own ``write_batch``; a rejection is kept in ``rejects`` like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from scrapy import Spider
from scrapy.crawler import Crawler
from scrapy.settings import Settings
from scrapy.statscollectors import MemoryStatsCollector

from harvester.api.models import NewSignal
from harvester.exceptions import InvalidSignal
from harvester.items import Rejection, Signal
from harvester.pipelines.dedupe import DedupePipeline
from harvester.pipelines.score import ScorePipeline
from harvester.pipelines.store import reject_row, signal_row
from harvester.pipelines.validate import ValidatePipeline
from harvester.services.batch import Batch
from harvester.services.store import write_batch
from harvester.sources import load_sources

KIND = "curated"
PIPELINES = (ValidatePipeline, DedupePipeline, ScorePipeline)


@dataclass(frozen=True, slots=True)
class Outcome:
    id: int
    created: bool
    key: str
    score: float


def pipeline_crawler(sources_file: Path) -> Crawler:
    """A crawler that is never started: what the pipelines read at construction
    (settings, the sources file) and count into (stats)."""
    settings = Settings()
    settings.setmodule("harvester.settings", priority="project")
    settings.set("HARVEST_SOURCES_FILE", str(sources_file), priority="cmdline")
    crawler = Crawler(Spider, settings)
    crawler.stats = MemoryStatsCollector(crawler)
    return crawler


def as_item(body: NewSignal) -> Signal:
    return Signal(source=body.source, kind=KIND, url=body.url, external_id=body.external_id,
                  title=body.title, text=body.text, author=body.author,
                  published_at=body.published_at, tags=list(body.tags),
                  language=body.language, fetched_at=datetime.now(UTC))


async def prepare(body: NewSignal, sources_file: Path) -> Signal:
    """Validated, keyed and scored; raises ``InvalidSignal`` with the field and reason, and
    ``SourcesError`` when the sources file cannot be read (``ScorePipeline`` would score
    against no topics, as a crawl does after reporting the file: 0 for everything)."""
    load_sources(sources_file)
    crawler = pipeline_crawler(sources_file)
    item: Any = as_item(body)
    for pipeline in PIPELINES:
        item = await pipeline.from_crawler(crawler).process_item(item)
    assert isinstance(item, Signal) and item.key is not None
    return item


# A session lock per key (the connection is in autocommit; write_batch commits itself).
_LOCK = "SELECT pg_advisory_lock(hashtextextended(%s, 20261129))"
_UNLOCK = "SELECT pg_advisory_unlock(hashtextextended(%s, 20261129))"


async def store(database_url: str, item: Signal) -> Outcome:
    """Insert unless the key is stored already (then nothing changes: a repeated POST is
    not a new sighting)."""
    assert item.key is not None
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True,
                                                     connect_timeout=5) as conn:
        # One request per key at a time: 15 identical POSTs at once all found the key
        # missing, and the store's upsert counted 14 of them as sightings.
        await conn.execute(_LOCK, (item.key,))
        try:
            existing = await _stored(conn, item.key)
            created = False
            if existing is None:
                row = signal_row(item, "")
                row["run_id"] = None  # not part of a crawl run
                # A crawl that stored the key meanwhile made the upsert count this POST as a
                # sighting (seen_count, last_seen): undone, as the answer says "not created".
                async with conn.transaction():
                    result = await write_batch(conn, Batch(signals=[row]))
                    created = result.total_new == 1
                    if not created:
                        raise psycopg.Rollback()
                existing = await _stored(conn, item.key)
        finally:
            await conn.execute(_UNLOCK, (item.key,))
    assert existing is not None
    return Outcome(existing[0], created, item.key, existing[1])


async def keep_rejection(database_url: str, body: NewSignal, error: InvalidSignal) -> None:
    raw = body.model_dump(mode="json", exclude_none=True)
    raw["text"] = (body.text or "")[:2000]
    row = reject_row(Rejection(source=body.source, reason=error.reason, field=error.field,
                               url=body.url, raw=raw), "")
    row["run_id"] = None
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True,
                                                     connect_timeout=5) as conn:
        await write_batch(conn, Batch(rejects=[row]))


async def _stored(conn: psycopg.AsyncConnection[Any], key: str) -> tuple[int, float] | None:
    cur = await conn.execute("SELECT id, score FROM signals WHERE key = %s", (key,))
    found = await cur.fetchone()
    return (int(found[0]), round(float(found[1]), 2)) if found else None
