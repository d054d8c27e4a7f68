"""A request too long to send is a failure of its source, not an INFO line in the log.

Scrapy's ``UrlLengthMiddleware`` drops a request whose URL is longer than
``URLLENGTH_LIMIT`` with an INFO record: an X search of 496 Japanese characters (under X's
512, 9 bytes each once percent-encoded) was never sent, and every run showed zeros, exit 0,
until the source was disabled with no error to say why. Here the drop is an error of the
request's source (counted, the source's last error, `harvest crawl` says so).
"""

from __future__ import annotations

from scrapy.http import Request, Response
from scrapy.spidermiddlewares.urllength import UrlLengthMiddleware

from harvester.middlewares.conditional import SOURCE_META


class SourceUrlLengthMiddleware(UrlLengthMiddleware):
    def get_processed_request(self, request: Request,
                              response: Response | None) -> Request | None:
        kept = super().get_processed_request(request, response)
        source = request.meta.get(SOURCE_META)
        fail = getattr(self.crawler.spider, "fail", None)
        if kept is None and source is not None and fail is not None:
            fail(source, request.url,
                 f"not sent: its URL is {len(request.url):,} characters, longer than "
                 f"URLLENGTH_LIMIT ({self.maxlength:,}); shorten the source's query, or "
                 "raise the limit with -s URLLENGTH_LIMIT=N if its server takes longer URLs")
        return kept
