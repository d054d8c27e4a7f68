"""MetricsExtension: a crawl's counters as ``harvest_*`` Prometheus metrics.

Counts arrive two ways: per event (rejections by reason, HTTP statuses, retried
responses) and from the per-source harvest stats (items handed to the store step, stored,
re-seen, duplicates, spooled, errors, rate-limit waits, fields dropped), which are pushed
as deltas every ``HARVEST_METRICS_SYNC_SECONDS`` (10) and when the spider closes, together
with each source's run outcome and duration. Settings: ``HARVEST_METRICS_ENABLED`` (True),
``HARVEST_METRICS_SYNC_SECONDS`` (10; above 0, at most 3600).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from scrapy import Request, Spider, signals
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Response
from scrapy.settings import BaseSettings

from harvester.exceptions import InvalidSignal, StoredRejection
from harvester.middlewares.conditional import SOURCE_META
from harvester.pipelines.numbers import number, switch
from harvester.services.metrics import CrawlMetrics, crawl_metrics, prepare_directory
from harvester.stats import complete, per_source, succeeded

logger = logging.getLogger(__name__)

# metric attribute → per-source harvest stat it follows
_FROM_STATS = {"scraped": "scraped", "stored": "new", "reseen": "reseen",
               "duplicates": "duplicates", "spooled": "spooled", "lost": "lost",
               "errors": "errors", "waits": "waits"}


#: Free space the metrics directory must have when a crawl starts (its two files start at
#: 1 MB each and grow by doubling).
MIN_FREE_BYTES = 16 * 2**20


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return MIN_FREE_BYTES  # cannot tell: as before


def sync_seconds(settings: BaseSettings) -> float | None:
    """``HARVEST_METRICS_SYNC_SECONDS``, or None with ``HARVEST_METRICS_ENABLED`` off. 0 made
    the sync loop spin a core at 100 %."""
    seconds = number(settings, "HARVEST_METRICS_SYNC_SECONDS", 10.0, float, above=0,
                     high=3600)
    return seconds if switch(settings, "HARVEST_METRICS_ENABLED", True) else None


class MetricsExtension:
    def __init__(self, crawler: Crawler) -> None:
        if (seconds := sync_seconds(crawler.settings)) is None:
            raise NotConfigured
        if (free := _free_bytes(prepare_directory())) < MIN_FREE_BYTES:
            # prometheus-client writes its files through mmap: on a full disk a write to a
            # page the file system cannot back kills the process with SIGBUS, and the
            # crawl's items in memory with it. Without metrics the store step still spools
            # what it can, and says what it could not.
            logger.warning("Metrics are off for this crawl: %.1f MB free in %s (the metrics "
                           "files need %d MB); free space there", free / 2**20,
                           prepare_directory(), MIN_FREE_BYTES // 2**20)
            raise NotConfigured
        self.crawler = crawler
        self.metrics: CrawlMetrics = crawl_metrics()
        self.sync_seconds = seconds
        self._pushed: dict[tuple[str, str], float] = {}
        self._started = time.monotonic()
        self._ticker: asyncio.Task[None] | None = None
        crawler.signals.connect(self._opened, signal=signals.spider_opened)
        crawler.signals.connect(self._closed, signal=signals.spider_closed)
        crawler.signals.connect(self._stopped, signal=signals.engine_stopped)
        # response_downloaded, not response_received: that one sees only the response the
        # downloader middlewares let through, never the 429s and 500s retried or waited out.
        crawler.signals.connect(self._response, signal=signals.response_downloaded)
        crawler.signals.connect(self._dropped, signal=signals.item_dropped)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> MetricsExtension:
        return cls(crawler)

    def _labels(self, source: str) -> tuple[str, str]:
        spider = self.crawler.spider
        return source, spider.name if spider else "?"

    def _opened(self, spider: Spider) -> None:
        self._started = time.monotonic()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.sync_seconds)
            self._sync()

    def _response(self, response: Response, request: Request, spider: Spider) -> None:
        source = request.meta.get(SOURCE_META)
        if source is None:
            return
        labels = self._labels(source)
        self.metrics.responses.labels(*labels, str(response.status)).inc()
        if request.meta.get("retry_times"):
            self.metrics.retries.labels(*labels).inc()

    def _dropped(self, item: Any, exception: BaseException, spider: Spider) -> None:
        source = getattr(item, "source", None)
        if source is None:
            return
        # Duplicates are counted from the stats (the dedupe step keeps them per source).
        if isinstance(exception, (InvalidSignal, StoredRejection)):
            self.metrics.rejected.labels(*self._labels(source), exception.reason).inc()

    def _sources(self) -> list[str]:
        return list(getattr(self.crawler.spider, "source_names", []))

    def _sync(self) -> dict[str, dict[str, Any]]:
        stats = self.crawler.stats.get_stats()
        table = per_source(stats, self._sources())
        for source, row in table.items():
            labels = self._labels(source)
            values = {attr: float(row[stat]) for attr, stat in _FROM_STATS.items()}
            values["wait_seconds"] = float(stats.get(f"harvest/source/{source}/waited_s", 0))
            for attr, value in values.items():
                delta = value - self._pushed.get((source, attr), 0.0)
                if delta > 0:
                    getattr(self.metrics, attr).labels(*labels).inc(delta)
                    self._pushed[(source, attr)] = value
            for field, count in row.get("dropped", {}).items():
                delta = count - self._pushed.get((source, f"dropped:{field}"), 0.0)
                if delta > 0:
                    self.metrics.fields_dropped.labels(*labels, field).inc(delta)
                    self._pushed[(source, f"dropped:{field}")] = count
        return table

    async def _closed(self, spider: Spider, reason: str) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    def _stopped(self) -> None:
        # After every spider_closed handler (the store writes its last batch in its own),
        # so the final counts are in the stats.
        reason = self.crawler.stats.get_value("finish_reason")
        table = self._sync()
        elapsed = time.monotonic() - self._started
        for source, row in table.items():
            if row["skipped"]:
                continue
            labels = self._labels(source)
            outcome = "failed" if not succeeded(row) or reason != "finished" else (
                "succeeded" if complete(row) else "partial")
            self.metrics.runs.labels(*labels, outcome).inc()
            self.metrics.duration.labels(*labels).observe(elapsed)
