"""Log dropped items in one short line: the full item (kilobytes of text) is noise."""

from __future__ import annotations

import logging
from typing import Any

from scrapy import Spider
from scrapy.crawler import Crawler
from scrapy.http import Response
from scrapy.logformatter import LogFormatter, LogFormatterResult
from twisted.python.failure import Failure

from harvester.exceptions import InvalidSignal
from harvester.items import Rejection, Signal
from harvester.messages import printable


class HarvestLogFormatter(LogFormatter):
    """Short drop/rejection lines; no per-item "Scraped from" record unless LOG_LEVEL is
    DEBUG (building 20,000 records nobody sees costs measurable time)."""

    def __init__(self, debug: bool = True) -> None:
        self._debug = debug

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> HarvestLogFormatter:
        level = crawler.settings.get("LOG_LEVEL", "DEBUG")
        if isinstance(level, str):
            level = logging.getLevelName(level.upper())
        return cls(debug=not isinstance(level, int) or level <= logging.DEBUG)

    def scraped(self, item: Any, response: Response | Failure | None,
                spider: Spider) -> LogFormatterResult | None:  # type: ignore[override]
        return super().scraped(item, response, spider) if self._debug else None

    def dropped(
        self,
        item: Any,
        exception: BaseException,
        response: Response | Failure | None,
        spider: Spider,
    ) -> LogFormatterResult:
        result = super().dropped(item, exception, response, spider)
        if isinstance(item, Signal):
            kept = " (kept in rejects)" if isinstance(exception, InvalidSignal) else ""
            result["msg"] = "Dropped %(source)s %(url)s: %(exception)s" + kept
            result["args"] = {"source": item.source,
                              "url": printable(item.url or item.external_id or ""),
                              "exception": printable(str(exception))}
        elif isinstance(item, Rejection):
            result["msg"] = "Rejected %(source)s %(url)s: %(reason)s (kept in rejects)"
            result["args"] = {"source": item.source, "url": printable(item.url or ""),
                              "reason": item.reason}
        return result
