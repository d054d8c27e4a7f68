"""StorePipeline: batched upserts into PostgreSQL, spooled to disk when it is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.settings import BaseSettings

from harvester import stats as hstats
from harvester.config import get_config
from harvester.exceptions import InvalidSignal, StoredRejection
from harvester.items import Rejection, Signal
from harvester.services import clusters, database, spool
from harvester.services.batch import Batch, BatchResult
from harvester.services.replay import replay_pending
from harvester.services.runs import run_record
from harvester.services.store import write_batch
from harvester.signals import validators_seen

logger = logging.getLogger(__name__)

# Errors that mean "the database is not there", as opposed to a bug in our SQL.
DB_DOWN = (psycopg.OperationalError, psycopg.InterfaceError)


@dataclass(frozen=True, slots=True)
class StoreConfig:
    batch_size: int
    max_in_flight: int
    flush_seconds: float
    reconnect_seconds: float
    connect_timeout: int
    spool_dir: Path
    cluster_distance: int

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> StoreConfig:
        spool_dir = settings.get("HARVEST_STORE_SPOOL_DIR")
        config = cls(
            batch_size=settings.getint("HARVEST_STORE_BATCH_SIZE", 500),
            max_in_flight=max(1, settings.getint("HARVEST_STORE_MAX_IN_FLIGHT", 2)),
            flush_seconds=settings.getfloat("HARVEST_STORE_FLUSH_SECONDS", 5.0),
            reconnect_seconds=settings.getfloat("HARVEST_STORE_RECONNECT_SECONDS", 10.0),
            connect_timeout=settings.getint("HARVEST_STORE_CONNECT_TIMEOUT", 5),
            spool_dir=Path(spool_dir) if spool_dir else get_config().spool_dir,
            cluster_distance=clusters.check_distance(settings.getint(
                "HARVEST_CLUSTER_DISTANCE", clusters.DEFAULT_DISTANCE)),
        )
        if config.batch_size < 1 or config.flush_seconds <= 0:
            raise ValueError("HARVEST_STORE_BATCH_SIZE and HARVEST_STORE_FLUSH_SECONDS must be > 0")
        return config


def signal_row(item: Signal, run_id: str) -> dict[str, Any]:
    return {
        "key": item.key, "source": item.source, "kind": item.kind, "url": item.url,
        "canonical_url": item.canonical_url, "feed_url": item.feed_url,
        "link_url": item.link_url,
        "external_id": item.external_id,
        "title": item.title, "text": item.text, "author": item.author,
        "published_at": item.published_at, "updated_at": item.updated_at,
        "fetched_at": item.fetched_at, "language": item.language, "tags": item.tags,
        "engagement": item.engagement, "score": item.score,
        "score_breakdown": item.score_breakdown, "run_id": run_id,
    }


def reject_row(rejection: Rejection, run_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id, "source": rejection.source, "reason": rejection.reason,
        "field": rejection.field, "url": rejection.url, "raw": rejection.raw,
        "created_at": datetime.now(UTC),
    }


class StorePipeline:
    """Writes signals and rejections in batches; a crawl never loses an item it scraped.

    Batches flush by size (``HARVEST_STORE_BATCH_SIZE``, 500), by time
    (``HARVEST_STORE_FLUSH_SECONDS``, 5) and at close. When PostgreSQL is unreachable a batch
    goes to ``$HARVEST_HOME/spool`` (``HARVEST_STORE_SPOOL_DIR``) and is replayed by the next
    run or ``harvest replay``; reconnects are tried every ``HARVEST_STORE_RECONNECT_SECONDS``.
    Writes the ``crawl_runs`` row and per-source state when the spider closes.
    Stats: ``harvest/new``, ``harvest/reseen``, ``harvest/rejected``, ``harvest/spooled``,
    ``harvest/store/batches``, ``harvest/store/spool_files``, ``harvest/store/replayed``.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.config = StoreConfig.from_settings(crawler.settings)
        self.run_id = str(uuid.uuid4())
        self.started_at = datetime.now(UTC)
        self._buffer = Batch()
        self._lock = asyncio.Lock()
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._url: str | None = None
        self._next_connect = 0.0
        self._ticker: asyncio.Task[None] | None = None
        # Batches being written while the crawl goes on; bounded for back-pressure.
        self._in_flight: deque[asyncio.Task[None]] = deque()
        self._validators: dict[str, dict[str, dict[str, str]]] = {}
        crawler.signals.connect(self._item_dropped, signal=signals.item_dropped)
        crawler.signals.connect(self._spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self._validators_seen, signal=validators_seen)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StorePipeline:
        return cls(crawler)

    async def open_spider(self) -> None:
        self.crawler.stats.set_value("harvest/run_id", self.run_id)
        try:
            self._url = await asyncio.to_thread(database.resolve_url, get_config())
            await asyncio.to_thread(database.ensure_schema, self._url)
        except (database.DatabaseUnavailable, *DB_DOWN) as exc:
            logger.error("Database unavailable (%s): items will be spooled to %s",
                         str(exc).strip().splitlines()[0], self.config.spool_dir)
        else:
            await self._connect()
            await self._replay()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def process_item(self, item: Any) -> Any:
        if isinstance(item, Signal):
            self._buffer.signals.append(signal_row(item, self.run_id))
        elif isinstance(item, Rejection):
            self._buffer.rejects.append(reject_row(item, self.run_id))
            # A rejection is stored, not scraped: it must not count as an item.
            raise StoredRejection(item.reason)
        if len(self._buffer) >= self.config.batch_size:
            await self._flush()
        return item

    async def close_spider(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self._flush()
        await self._drain(0)

    # -- signal handlers -------------------------------------------------------------

    def _item_dropped(self, item: Any, response: Any, exception: BaseException,
                      spider: Spider) -> None:
        if isinstance(exception, InvalidSignal) and isinstance(item, Signal):
            raw = {k: _plain(getattr(item, k)) for k in ("url", "external_id", "title",
                                                          "author", "published_at", "feed_url")}
            raw["text"] = (item.text or "")[:2000]
            self._buffer.rejects.append(reject_row(
                Rejection(source=item.source, reason=exception.reason, field=exception.field,
                          url=item.url, raw=raw),
                self.run_id,
            ))

    def _validators_seen(self, source: str, url: str, etag: str | None,
                         last_modified: str | None) -> None:
        entry = {k: v for k, v in (("etag", etag), ("last_modified", last_modified)) if v}
        self._validators.setdefault(source, {})[url] = entry

    async def _spider_closed(self, spider: Spider, reason: str) -> None:
        await self._flush()  # anything dropped after close_spider's flush
        await self._drain(0)
        batch = Batch(run=run_record(
            run_id=self.run_id,
            spider=spider.name,
            sources=getattr(spider, "source_names", []),
            job_id=getattr(spider, "_job", None),
            started_at=self.started_at,
            reason=reason,
            stats=self.crawler.stats.get_stats(),
            validators=self._validators,
            cursors=getattr(spider, "cursors", None),
            disable_after=get_config().disable_after,
        ))
        async with self._lock:
            await self._write(batch)
            if self._conn is not None:
                await self._replay()
                await self._conn.close()

    # -- internals -------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_seconds)
            if len(self._buffer):
                await self._flush()

    async def _flush(self) -> None:
        """Hand the buffer to a background write; wait only when too many are in flight,
        so the crawl keeps parsing while PostgreSQL works."""
        if not len(self._buffer):
            return
        batch, self._buffer = self._buffer, Batch()
        self._in_flight.append(asyncio.get_running_loop().create_task(self._write_locked(batch)))
        await self._drain(self.config.max_in_flight)

    async def _drain(self, keep: int) -> None:
        while len(self._in_flight) > keep:
            await self._in_flight.popleft()  # re-raises what a write could not handle

    async def _write_locked(self, batch: Batch) -> None:
        async with self._lock:
            await self._write(batch)

    async def _connect(self) -> bool:
        if self._url is None:
            try:
                self._url = await asyncio.to_thread(database.resolve_url, get_config(), start=False)
            except database.DatabaseUnavailable:
                return False
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self._url, connect_timeout=self.config.connect_timeout
            )
        except DB_DOWN as exc:
            self._conn = None
            logger.error("Cannot connect to the database (%s)", str(exc).strip().splitlines()[0])
            return False
        return True

    async def _write(self, batch: Batch) -> None:
        stats = self.crawler.stats
        if self._conn is None or self._conn.closed:
            self._conn = None
            now = time.monotonic()
            if now >= self._next_connect:
                self._next_connect = now + self.config.reconnect_seconds
                await self._connect()
        if self._conn is not None:
            try:
                result = await write_batch(self._conn, batch, self.config.cluster_distance)
            except DB_DOWN as exc:
                logger.error("Database write failed (%s): spooling %d rows",
                             str(exc).strip().splitlines()[0], len(batch))
                await self._drop_connection()
            except psycopg.Error as exc:
                # The database is up but refused this batch (a bug or a value it cannot
                # hold): keep the rows on disk for the operator rather than lose them.
                logger.error("Database refused a batch (%s): spooling %d rows",
                             str(exc).strip().splitlines()[0], len(batch))
            else:
                stats.inc_value("harvest/store/batches")
                self._count(result)
                return
        path = spool.write(self.config.spool_dir, batch)
        stats.inc_value("harvest/store/spool_files")
        for row in batch.signals:
            hstats.inc(stats, row["source"], "spooled")
        for row in batch.rejects:
            hstats.inc(stats, row["source"], "rejected")
        logger.warning("Spooled %d signals and %d rejections to %s",
                       len(batch.signals), len(batch.rejects), path)

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(*DB_DOWN):
                await self._conn.close()
        self._conn = None
        self._next_connect = time.monotonic() + self.config.reconnect_seconds

    def _count(self, result: BatchResult) -> None:
        stats = self.crawler.stats
        for source, n in result.new.items():
            hstats.inc(stats, source, "new", n)
        for source, n in result.reseen.items():
            hstats.inc(stats, source, "reseen", n)
        for source, n in result.rejected.items():
            hstats.inc(stats, source, "rejected", n)

    async def _replay(self) -> None:
        assert self._conn is not None
        try:
            report = await replay_pending(self._conn, self.config.spool_dir,
                                          self.config.cluster_distance)
        except DB_DOWN as exc:
            logger.error("Spool replay stopped, database went away (%s)", exc)
            await self._drop_connection()
            return
        if report.batches:
            self.crawler.stats.inc_value("harvest/store/replayed", report.batches)
            logger.info("Replayed %d spooled batches (%d signals, %d already applied)",
                        report.batches, report.signals, report.already_applied)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
