"""A request too long to send is a failure of its source, not an INFO line in the log.

Scrapy's ``UrlLengthMiddleware`` drops a request whose URL is longer than
``URLLENGTH_LIMIT`` with an INFO record: an X search of 496 Japanese characters (under X's
512, 9 bytes each once percent-encoded) was never sent, and every run showed zeros, exit 0,
until the source was disabled with no error to say why. Here the drop is an error of the
request's source (counted, the source's last error, `harvest crawl` says so) when the
source's own settings made the URL (its URLs, its query), and a rejection of the entry when
a document gave it (a sitemap's page URL).
"""

from __future__ import annotations

from scrapy.http import Request, Response
from scrapy.spidermiddlewares.urllength import UrlLengthMiddleware

from harvester.items import Rejection
from harvester.middlewares.conditional import SOURCE_META


class SourceUrlLengthMiddleware(UrlLengthMiddleware):
    def get_processed_request(self, request: Request,
                              response: Response | None) -> Request | Rejection | None:
        kept = super().get_processed_request(request, response)
        source = request.meta.get(SOURCE_META)
        fail = getattr(self.crawler.spider, "fail", None)
        if kept is not None or source is None or fail is None:
            return kept
        too_long = (f"its URL is {len(request.url):,} characters, longer than URLLENGTH_LIMIT "
                    f"({self.maxlength:,})")
        if response is not None:
            # A link a document gave (a sitemap's page, a listing's item): the site's URL,
            # not the source's settings. As a failure it failed every run of the source,
            # which then kept no resume point; it is a rejection of that entry instead
            # (yielded in the request's place, it reaches the store as an item).
            return Rejection(source=source, reason="url_too_long", field="url",
                             url=request.url[:2000],
                             raw={"length": len(request.url), "found_in": response.url})
        fail(source, request.url,
             f"not sent: {too_long}; shorten the source's query, or raise the limit with "
             "-s URLLENGTH_LIMIT=N if its server takes longer URLs")
        return None
