"""OwnLogCount: ``log_count/<LEVEL>`` stats that count a crawler's own records.

Scrapy's ``LogCount`` puts a handler on the root logger per crawler that counts every
record of the process. ``harvest crawl`` runs one crawler per source side by side, so each
source's ``crawl_runs.stats`` counted the other sources' errors as its own: a healthy feed
showed ``log_count/ERROR`` for a neighbour that was down. This handler skips a record that
names another crawler's spider (Scrapy's own records carry ``extra={"spider": ...}``:
download errors, retries given up, callback errors); a record that names none (the
reactor, a library) is still counted by every crawler, as before, since nothing says
whose it is.
"""

from __future__ import annotations

import logging

from scrapy import Spider
from scrapy.extensions.logcount import LogCount
from scrapy.utils.log import LogCounterHandler


class _OwnRecordsCounter(LogCounterHandler):
    def emit(self, record: logging.LogRecord) -> None:
        spider = getattr(record, "spider", None)
        if isinstance(spider, Spider) and spider is not self.crawler.spider:
            return
        super().emit(record)


class OwnLogCount(LogCount):
    """Scrapy's ``LogCount`` with a handler that leaves other crawlers' records out
    (settings: it replaces ``scrapy.extensions.logcount.LogCount`` in ``EXTENSIONS``)."""

    def spider_opened(self, spider: Spider) -> None:
        self.handler = _OwnRecordsCounter(
            self.crawler, level=self.crawler.settings.get("LOG_LEVEL"))
        logging.root.addHandler(self.handler)
