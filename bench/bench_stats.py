"""Writes the crawl's final stats to ``BENCH_STATS_FILE`` (benchmark use only)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from scrapy import Spider, signals
from scrapy.crawler import Crawler


class StatsToFile:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.path = crawler.settings.get("BENCH_STATS_FILE")
        crawler.signals.connect(self._closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StatsToFile:
        return cls(crawler)

    def _closed(self, spider: Spider, reason: str) -> None:
        # Pipelines have flushed (close_spider runs before spider_closed).
        stats: dict[str, Any] = dict(self.crawler.stats.get_stats())
        stats["elapsed_time_seconds"] = (datetime.now(UTC) - stats["start_time"]).total_seconds()
        with open(self.path, "w") as fh:
            json.dump(stats, fh, default=str)
