"""StorePipeline: batched upserts into PostgreSQL through a store worker process, spooled
to disk when the database is unreachable."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scrapy import Spider, signals
from scrapy.crawler import Crawler
from scrapy.settings import BaseSettings

from harvester import stats as hstats
from harvester.config import get_config
from harvester.exceptions import InvalidSignal, StoredRejection
from harvester.extensions.gc import gc_threshold
from harvester.failures import describe_failure
from harvester.items import Rejection, Signal
from harvester.messages import first_line
from harvester.pipelines import numbers
from harvester.services import clusters, database, spool
from harvester.services.batch import Batch, BatchResult
from harvester.services.dberrors import DB_DOWN
from harvester.services.runs import run_record
from harvester.services.store_worker import SHARED, Config, Outcome, StoreWorker
from harvester.signals import validators_seen
from harvester.spiders.base import SourceSpider

logger = logging.getLogger(__name__)

#: The rejection of an item a pipeline raised on (see :meth:`StorePipeline._item_error`).
PIPELINE_ERROR = "pipeline_error"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    batch_size: int
    max_in_flight: int
    flush_seconds: float
    reconnect_seconds: float
    connect_timeout: int
    spool_dir: Path
    cluster_distance: int
    gc_threshold: int | None

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> StoreConfig:
        spool_dir = settings.get("HARVEST_STORE_SPOOL_DIR")

        def number(name: str, default: float, kind: type[int] | type[float] = int,
                   **bounds: float) -> Any:
            return numbers.number(settings, name, default, kind, **bounds)

        return cls(
            batch_size=number("HARVEST_STORE_BATCH_SIZE", 500, low=1),
            max_in_flight=number("HARVEST_STORE_MAX_IN_FLIGHT", 4, low=1),
            flush_seconds=number("HARVEST_STORE_FLUSH_SECONDS", 5.0, float, above=0),
            reconnect_seconds=number("HARVEST_STORE_RECONNECT_SECONDS", 10.0, float, above=0,
                                     high=86400),
            connect_timeout=number("HARVEST_STORE_CONNECT_TIMEOUT", 5, low=1, high=3600),
            spool_dir=Path(spool_dir) if spool_dir else get_config().spool_dir,
            cluster_distance=clusters.check_distance(number(
                "HARVEST_CLUSTER_DISTANCE", clusters.DEFAULT_DISTANCE)),
            gc_threshold=gc_threshold(settings),
        )


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
        "partial": item.partial,
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
    Stats: ``harvest/scraped`` (signals handed to a batch), ``harvest/new``,
    ``harvest/reseen``, ``harvest/rejected``, ``harvest/spooled``, ``harvest/lost``,
    ``harvest/store/batches``, ``harvest/store/spool_files``,
    ``harvest/store/lost_batches``, ``harvest/store/replayed``,
    ``harvest/store/worker_restarts``.

    The database work (fingerprints, cluster lookups, COPY encoding, round trips) runs in
    a store worker process (``services/store_worker.py``) so that it takes neither the
    crawl's core nor turns of its event loop; a batch stays here until the worker
    acknowledges it and is spooled if the worker dies. A forced stop (a second Ctrl-C stops
    the event loop before the spider closes) spools what is left: see
    :func:`spool_unfinished`.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.config = StoreConfig.from_settings(crawler.settings)
        self.run_id = str(uuid.uuid4())
        self.started_at = datetime.now(UTC)
        self._buffer = Batch()
        self._lock = asyncio.Lock()  # one worker start at a time
        self._flushing = asyncio.Lock()  # one flush waits for room at a time
        self._worker: StoreWorker | None = None
        self._config_for_worker: Config | None = None
        self._url: str | None = None
        self._schema_refused = False  # the database has a schema this code does not know
        self._next_start = 0.0
        self._ticker: asyncio.Task[None] | None = None
        # Batches being written while the crawl goes on: at most HARVEST_STORE_MAX_IN_FLIGHT.
        self._in_flight: deque[asyncio.Task[None]] = deque()
        #: This run's spool files → their signals per source (see _spool_stored).
        self._spooled: dict[Path, Counter[str]] = {}
        self._validators: dict[str, dict[str, dict[str, str]]] = {}
        #: Batches handed to _write and neither stored nor spooled yet, by batch id.
        self._unsettled: dict[str, Batch] = {}
        crawler.signals.connect(self._item_dropped, signal=signals.item_dropped)
        crawler.signals.connect(self._item_error, signal=signals.item_error)
        crawler.signals.connect(self._spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self._validators_seen, signal=validators_seen)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StorePipeline:
        return cls(crawler)

    @property
    def _log_extra(self) -> dict[str, Any]:
        """``extra`` of the pipeline's log records: its crawler's spider (OwnLogCount)."""
        return {"spider": self.crawler.spider}

    async def open_spider(self) -> None:
        self.crawler.stats.set_value("harvest/run_id", self.run_id)
        _UNFINISHED.add(self)
        try:
            self._url = await asyncio.to_thread(database.resolve_url, get_config())
            await asyncio.to_thread(database.ensure_schema, self._url)
        except database.SchemaUnknown as exc:
            # A newer harvest's schema: nothing of this run is written into it (the store
            # worker was started on it all the same, and stored the run "spooled").
            self._schema_refused = True
            logger.error("Database unusable (%s): items will be spooled to %s",
                         first_line(exc), self.config.spool_dir, extra=self._log_extra)
        except (database.DatabaseUnavailable, *DB_DOWN) as exc:
            logger.error("Database unavailable (%s): items will be spooled to %s",
                         first_line(exc), self.config.spool_dir, extra=self._log_extra)
        else:
            if await self._ready_worker(force=True):
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
        await self._flush(force=True)
        await self._drain(0)

    # -- signal handlers -------------------------------------------------------------

    def _item_dropped(self, item: Any, response: Any, exception: BaseException,
                      spider: Spider) -> None:
        if isinstance(exception, InvalidSignal) and isinstance(item, Signal):
            self._buffer.rejects.append(reject_row(
                Rejection(source=item.source, reason=exception.reason, field=exception.field,
                          url=item.url, raw=_raw(item)),
                self.run_id,
            ))

    def _item_error(self, item: Any, response: Any, spider: Spider, failure: Any) -> None:
        """A pipeline raised on this item (a bug; Scrapy logs the traceback): the item is
        kept as the rejection ``pipeline_error`` and its source counts a failure, rather
        than the item being gone with nothing but a log line."""
        if not isinstance(item, (Signal, Rejection)):
            return
        error = describe_failure(failure)
        raw = _raw(item) if isinstance(item, Signal) else {
            "reason": item.reason, "field": item.field, "raw": item.raw}
        raw["error"] = error
        self._buffer.rejects.append(reject_row(
            Rejection(source=item.source, reason=PIPELINE_ERROR, url=item.url, raw=raw),
            self.run_id,
        ))
        if isinstance(spider, SourceSpider):  # counts and reports the source's failure
            hstats.inc(self.crawler.stats, item.source, "bugs")  # fails the run
            spider.fail(item.source, str(item.url),
                        f"a pipeline failed on this item ({error}); kept as rejection "
                        f"{PIPELINE_ERROR!r}")

    def _validators_seen(self, source: str, url: str, etag: str | None,
                         last_modified: str | None) -> None:
        entry = {k: v for k, v in (("etag", etag), ("last_modified", last_modified)) if v}
        if entry:  # when this full answer came: a later 304 sees again what it listed
            entry["seen_at"] = datetime.now(UTC).isoformat()
        self._validators.setdefault(source, {})[url] = entry

    async def _spider_closed(self, spider: Spider, reason: str) -> None:
        await self._flush(force=True)  # anything dropped after close_spider's flush
        await self._drain(0)
        # The spool first (this run's batches, if the database came back, and older ones),
        # so that the run record counts what of this run it stored.
        worker = await self._ready_worker(force=True)
        if worker is not None and worker.alive:
            await self._replay()
        self._spool_stored()
        await self._write(self._run_batch(spider, reason, self._validators), force=True)
        _UNFINISHED.discard(self)
        await SHARED.leave(self)

    def _run_batch(self, spider: Spider, reason: str,
                   validators: dict[str, dict[str, dict[str, str]]]) -> Batch:
        """The batch of this run's ``crawl_runs`` row and its sources' state (cursors are
        kept only for a run that finished with nothing failed: see ``run_record``)."""
        return Batch(run=run_record(
            run_id=self.run_id,
            spider=spider.name,
            sources=getattr(spider, "source_names", []),
            job_id=getattr(spider, "_job", None),
            started_at=self.started_at,
            reason=reason,
            stats=self.crawler.stats.get_stats(),
            validators=validators,
            cursors=getattr(spider, "cursors", None),
            unchanged=getattr(spider, "unchanged", None),
            disable_after=get_config().disable_after,
        ))

    def _spool_stored(self) -> None:
        """This run's spooled signals whose files a replay took (this one at close, or
        another process's meanwhile) are stored: counted per source as ``spool_stored``,
        so the summary does not send the operator to replay what is in the database."""
        for path, sources in self._spooled.items():
            set_aside = (path.with_suffix(".refused").exists()
                         or path.with_suffix(".bad").exists())
            if path.exists() or set_aside:
                continue
            for source, n in sources.items():
                hstats.inc(self.crawler.stats, source, "spool_stored", n)
        self._spooled.clear()

    # -- internals -------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_seconds)
            if len(self._buffer):
                await self._flush(force=True)

    async def _flush(self, force: bool = False) -> None:
        """Hand the buffer to a background write, so the crawl keeps parsing while the
        worker stores it. With ``HARVEST_STORE_MAX_IN_FLIGHT`` writes under way, first wait
        for one to finish; items that arrive meanwhile join the buffer and their own
        flushes queue here (back-pressure). Batches hold at most
        ``HARVEST_STORE_BATCH_SIZE`` rows; only ``force`` (time, close) writes a smaller
        one, so the queued flushes do not each write a handful."""
        async with self._flushing:
            while len(self._buffer) >= (1 if force else self.config.batch_size):
                await self._drain(self.config.max_in_flight - 1)
                batch = self._buffer.take(self.config.batch_size)
                # Counted here, a batch at a time: a receiver of Scrapy's item_scraped
                # signal costs the crawl ≈ 10 µs an item (docs/benchmarks.md, session 16).
                for source, n in Counter(row["source"] for row in batch.signals).items():
                    hstats.inc(self.crawler.stats, source, "scraped", n)
                self._in_flight.append(
                    asyncio.get_running_loop().create_task(self._write(batch)))

    async def _drain(self, keep: int) -> None:
        while len(self._in_flight) > keep:
            await self._in_flight.popleft()  # re-raises what a write could not handle

    async def _ready_worker(self, force: bool = False) -> StoreWorker | None:
        """The process's running store worker, or a new one; after a failure a new one is
        tried at most every ``HARVEST_STORE_RECONNECT_SECONDS`` unless ``force`` (the run
        record)."""
        async with self._lock:
            if self._schema_refused:
                return None
            if self._config_for_worker is not None and (
                    worker := SHARED.running(self._config_for_worker, self)):
                self._worker = worker
                return worker
            now = time.monotonic()
            if not force and now < self._next_start:
                return None
            self._next_start = now + self.config.reconnect_seconds
            if self._url is None:
                try:
                    self._url = await asyncio.to_thread(database.resolve_url, get_config(),
                                                        start=False)
                except database.DatabaseUnavailable:
                    return None
            self._config_for_worker = Config(self._url, self.config.connect_timeout,
                                             self.config.reconnect_seconds,
                                             self.config.cluster_distance,
                                             self.config.gc_threshold)
            try:
                self._worker, replaced = await SHARED.start(self._config_for_worker, self)
            except OSError as exc:
                logger.error("Cannot start the store worker (%s)", exc, extra=self._log_extra)
                self._worker = None
                return None
            if replaced:
                self.crawler.stats.inc_value("harvest/store/worker_restarts")
            return self._worker

    async def _write(self, batch: Batch, force: bool = False) -> None:
        self._unsettled[batch.batch_id] = batch
        try:
            worker = await self._ready_worker(force)
            outcome = (await worker.write(batch) if worker is not None
                       else Outcome("unreachable"))
            if outcome.status == "stored":
                assert outcome.result is not None
                self.crawler.stats.inc_value("harvest/store/batches")
                self._count(outcome.result)
                return
            _log_failure(outcome, self._log_extra, "spooling %d rows", len(batch))
            self._spool(batch)
        finally:
            self._unsettled.pop(batch.batch_id, None)

    def _spool(self, batch: Batch) -> bool:
        """Write ``batch`` to the spool and count it; False when it is lost."""
        stats = self.crawler.stats
        try:
            path = spool.write(self.config.spool_dir, batch)
        except OSError as exc:
            self._lost(batch, exc)
            return False
        stats.inc_value("harvest/store/spool_files")
        self._spooled[path] = Counter(row["source"] for row in batch.signals)
        for row in batch.signals:
            hstats.inc(stats, row["source"], "spooled")
        for row in batch.rejects:
            hstats.inc(stats, row["source"], "rejected")
        if batch.run is not None:
            # The summary says where the run went (it said so only after a forced stop; a
            # database down at the close left "Spooled 0 signals and 0 rejections").
            for source in getattr(self.crawler.spider, "source_names", []):
                hstats.inc(stats, source, "run_spooled")
        logger.warning("Spooled %d signals and %d rejections%s to %s", len(batch.signals),
                       len(batch.rejects), " and the run record" if batch.run else "", path,
                       extra=self._log_extra)
        return True

    def forced_stop(self) -> None:
        """Spool what a forced stop left: the buffer, the batches the worker had not
        acknowledged (a batch it did store is recognised by its id at replay) and a run
        record, so that the items land, the run is on record and the next crawl or `harvest
        replay` stores them. Before, they and the run record were lost with the process.
        The run record keeps no validators (ETag, Last-Modified) and no cursors: items of a
        fetched page may not have reached this pipeline yet, and a 304 next time would skip
        them for good; the next crawl fetches every page again instead."""
        _UNFINISHED.discard(self)
        batches = list(self._unsettled.values())
        self._unsettled.clear()
        while len(self._buffer):
            batch = self._buffer.take(self.config.batch_size)
            for source, n in Counter(row["source"] for row in batch.signals).items():
                hstats.inc(self.crawler.stats, source, "scraped", n)
            batches.append(batch)
        spooled = [self._spool(batch) for batch in batches]
        spider = self.crawler.spider
        if not all(spooled) or spider is None or any(batch.run for batch in batches):
            return  # the run record is among them (the stop came as the spider closed)
        if self._spool(self._run_batch(spider, "shutdown", validators={})):
            logger.warning("Stopped before the spider closed: %d signals, %d rejections and "
                           "the run record are in the spool; the next crawl or `harvest "
                           "replay` stores them", sum(len(b.signals) for b in batches),
                           sum(len(b.rejects) for b in batches), extra=self._log_extra)

    def _lost(self, batch: Batch, exc: OSError) -> None:
        """Neither the database nor the spool took the batch: the one case where rows are
        lost, so it is counted per source (``lost``), fails the sources' run (``harvest
        crawl`` exits 1) and says what to fix."""
        message = (f"cannot write the spool in {self.config.spool_dir} ({exc}): make it "
                   "writable (HARVEST_STORE_SPOOL_DIR) or bring the database back")
        logger.error("%d signals and %d rejections%s are lost: %s", len(batch.signals),
                     len(batch.rejects), " and the run record" if batch.run else "", message,
                     extra=self._log_extra)
        stats = self.crawler.stats
        stats.inc_value("harvest/store/lost_batches")
        lost = Counter(row["source"] for row in (*batch.signals, *batch.rejects))
        for source, count in lost.items():
            hstats.inc(stats, source, "lost", count)
            hstats.set_last_error(stats, source, message)

    def _count(self, result: BatchResult) -> None:
        stats = self.crawler.stats
        for source, n in result.new.items():
            hstats.inc(stats, source, "new", n)
        for source, n in result.reseen.items():
            hstats.inc(stats, source, "reseen", n)
        for source, n in result.rejected.items():
            hstats.inc(stats, source, "rejected", n)

    async def _replay(self) -> None:
        assert self._worker is not None
        outcome = await self._worker.replay(self.config.spool_dir)
        if outcome.report is None:
            _log_failure(outcome, self._log_extra, "spool replay stopped")
            return
        report = outcome.report
        if report.refused:
            logger.error("%d spooled batches were refused and set aside as .refused in %s "
                         "(%s); fix the cause, then `harvest replay --retry-refused`",
                         len(report.refused), self.config.spool_dir, "; ".join(report.refused),
                         extra=self._log_extra)
        if report.batches:
            self.crawler.stats.inc_value("harvest/store/replayed", report.batches)
            logger.info("Replayed %d spooled batches (%d signals, %d already applied)",
                        report.batches, report.signals, report.already_applied)


#: Store pipelines whose spider has not closed yet.
_UNFINISHED: set[StorePipeline] = set()


def spool_unfinished() -> None:
    """A forced stop (a second Ctrl-C, or SIGINT twice to `scrapy crawl`) ends the event
    loop before any spider closes: each open pipeline spools what it holds. Called by
    `harvest crawl` before its summary, and at exit for every other way of running."""
    for pipeline in list(_UNFINISHED):
        pipeline.forced_stop()


atexit.register(spool_unfinished)


def _log_failure(outcome: Outcome, extra: dict[str, Any], consequence: str,
                 *args: Any) -> None:
    if outcome.status == "unreachable" and not outcome.error:
        return  # a reconnect is not due yet: the spool warning says enough
    what = {"unreachable": "Cannot connect to the database",
            "down": "Database write failed",
            "refused": "Database refused a batch",
            "failed": "The store worker could not write a batch"}.get(
                outcome.status, "The store worker is gone")
    logger.error("%s (%s): " + consequence, what, outcome.error, *args, extra=extra)


def _raw(item: Signal) -> dict[str, Any]:
    """What a rejection keeps of a signal: its identifying fields and the start of its text."""
    raw = {k: _plain(getattr(item, k)) for k in ("url", "external_id", "title", "author",
                                                  "published_at", "feed_url")}
    raw["text"] = (item.text or "")[:2000]
    return raw


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
