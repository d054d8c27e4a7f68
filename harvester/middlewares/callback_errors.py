"""CallbackErrorMiddleware: a spider callback that raises leaves a stored rejection and a
failure of its source, not only a traceback in the log.

Our parsers turn bad input into rejections themselves; an exception that still escapes a
callback is a bug (ours, or a library's on input nobody expected). Scrapy would log it and
count ``spider_exceptions/<Type>``, and the rest of that response's entries would be gone
without a trace in the database or in the crawl summary. This spider middleware takes
over for the responses of a :class:`SourceSpider`: it logs the traceback and keeps
Scrapy's counters and ``spider_error`` signal as Scrapy would, stores a rejection
``callback_error`` (field ``document``, with the error, the exception type and the first
1000 bytes of the response) and counts a failure of the source (``errors`` and its last
error), so the run is reported failed and the source's health shows it. Entries the
callback yielded before it raised are kept.

Scrapy's own exceptions (``CloseSpider``, ``IgnoreRequest`` and their subclasses such as
our ``RateLimited``, ``HttpError``…) are left to Scrapy, and so is every response of a
spider that is not one of ours.
"""

from __future__ import annotations

import logging

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider, IgnoreRequest
from scrapy.http import Response
from twisted.python.failure import Failure

from harvester import stats as hstats
from harvester.failures import describe_failure
from harvester.items import Rejection
from harvester.messages import printable
from harvester.middlewares.conditional import SOURCE_META
from harvester.spiders.base import SourceSpider

logger = logging.getLogger(__name__)

REASON = "callback_error"
HEAD_BYTES = 1000


class CallbackErrorMiddleware:
    """See the module docstring. Stats: Scrapy's ``spider_exceptions/count`` and
    ``spider_exceptions/<Type>``, and the source's ``errors``."""

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CallbackErrorMiddleware:
        return cls(crawler)

    def process_spider_exception(self, response: Response,
                                 exception: Exception) -> list[Rejection] | None:
        # No spider argument: Scrapy 2.13+ warns on every crawl when the method takes one.
        crawler = self.crawler
        spider = crawler.spider
        source = response.meta.get(SOURCE_META)
        if (not isinstance(spider, SourceSpider) or not source
                or isinstance(exception, (CloseSpider, IgnoreRequest))
                or type(exception).__module__.split(".")[0] == "scrapy"):
            return None
        name = type(exception).__name__
        failure = Failure(exception, type(exception), exception.__traceback__)
        error = describe_failure(failure)
        logger.error("Source %s: the %s spider failed on %s (%s); what it had not yielded "
                     "from that response is not stored: see rejection %r", source,
                     spider.name, response.url, error, REASON, exc_info=exception,
                     extra={"spider": spider})
        crawler.stats.inc_value("spider_exceptions/count")
        crawler.stats.inc_value(f"spider_exceptions/{name}")
        crawler.signals.send_catch_log(
            signal=signals.spider_error, response=response, spider=spider, failure=failure)
        hstats.inc(crawler.stats, source, "errors")
        hstats.inc(crawler.stats, source, "bugs")  # fails the run, whatever else came
        hstats.set_last_error(crawler.stats, source,
                              f"{printable(response.url)}: the spider failed on it: "
                              f"{printable(error)}")
        return [Rejection(source=source, reason=REASON, field="document", url=response.url,
                          raw={"error": error, "exception": name, "head": _head(response)})]


def _head(response: Response) -> str:
    return response.body[:HEAD_BYTES].decode("utf-8", "replace")

