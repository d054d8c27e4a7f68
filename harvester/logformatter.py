"""Log dropped items in one short line: the full item (kilobytes of text) is noise."""

from __future__ import annotations

from typing import Any

from scrapy import Spider
from scrapy.http import Response
from scrapy.logformatter import LogFormatter, LogFormatterResult
from twisted.python.failure import Failure

from harvester.exceptions import InvalidSignal
from harvester.items import Rejection, Signal


class HarvestLogFormatter(LogFormatter):
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
            result["args"] = {"source": item.source, "url": item.url or item.external_id,
                              "exception": exception}
        elif isinstance(item, Rejection):
            result["msg"] = "Rejected %(source)s %(url)s: %(reason)s (kept in rejects)"
            result["args"] = {"source": item.source, "url": item.url, "reason": item.reason}
        return result
