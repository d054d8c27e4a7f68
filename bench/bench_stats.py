"""Writes the crawl's final stats to ``BENCH_STATS_FILE`` (benchmark use only), with the
moments the crawl passed its phases (seconds after the engine started)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from scrapy import Spider, signals
from scrapy.crawler import Crawler


class StatsToFile:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.path = crawler.settings.get("BENCH_STATS_FILE")
        self.marks: dict[str, float] = {}
        self._t0 = 0.0
        crawler.signals.connect(self._engine_started, signal=signals.engine_started)
        crawler.signals.connect(self._scraped, signal=signals.item_scraped)
        crawler.signals.connect(self._idle, signal=signals.spider_idle)
        crawler.signals.connect(self._closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StatsToFile:
        return cls(crawler)

    def _mark(self, name: str, first_only: bool = False) -> None:
        if not (first_only and name in self.marks):
            self.marks[name] = round(time.monotonic() - self._t0, 3)

    def _engine_started(self) -> None:
        self._t0 = time.monotonic()

    def _scraped(self, item: Any, response: Any, spider: Spider) -> None:
        self._mark("first_item", first_only=True)
        self._mark("last_item")

    def _idle(self, spider: Spider) -> None:
        self._mark("idle")

    def _closed(self, spider: Spider, reason: str) -> None:
        # Pipelines have flushed (close_spider runs before spider_closed).
        self._mark("closed")
        stats: dict[str, Any] = dict(self.crawler.stats.get_stats())
        stats["elapsed_time_seconds"] = (datetime.now(UTC) - stats["start_time"]).total_seconds()
        stats["bench_marks"] = self.marks
        with open(self.path, "w") as fh:
            json.dump(stats, fh, default=str)
