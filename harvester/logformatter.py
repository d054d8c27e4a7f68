"""Log dropped items in one short line: the full item (kilobytes of text) is noise."""

from __future__ import annotations

from typing import Any

from scrapy import Spider
from scrapy.http import Response
from scrapy.logformatter import LogFormatter, LogFormatterResult
from twisted.python.failure import Failure

from harvester.items import Signal


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
            result["msg"] = "Dropped %(source)s %(url)s: %(exception)s"
            result["args"] = {"source": item.source, "url": item.url or item.external_id,
                              "exception": exception}
        return result
