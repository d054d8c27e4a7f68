"""RobotsTxtMiddleware as RFC 9309 has it for a robots.txt the server cannot serve.

Scrapy parses whatever a robots.txt request returns: a 503 error page allows everything, so
a site whose robots.txt is failing was crawled in full. RFC 9309 (2.3.1.4) says an
unreachable robots.txt because of a server error (5xx, after Scrapy's retries) means
complete disallow: this run fetches nothing from that host, and the source's failure says
why. A 4xx still means no rules (allowed), and a robots.txt that cannot be fetched at all
(refused, timed out) is left to the request's own error, as Scrapy does.
"""

from __future__ import annotations

from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.exceptions import IgnoreRequest
from scrapy.http import Request, Response
from scrapy.robotstxt import RobotParser
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.python import to_unicode

from harvester.middlewares.polite import set_crawl_delay

_DISALLOW_ALL = b"User-agent: *\nDisallow: /\n"


class PoliteRobotsTxtMiddleware(RobotsTxtMiddleware):
    def __init__(self, crawler):  # type: ignore[no-untyped-def]
        super().__init__(crawler)
        self._server_errors: dict[str, int] = {}  # netloc -> the robots.txt's 5xx status
        self._delays_read: set[str] = set()  # netlocs whose Crawl-delay was looked at

    async def _parse_robots(self, response: Response, netloc: str, request: Request) -> None:
        if response.status >= 500:
            self._server_errors[netloc] = response.status
            response = response.replace(body=_DISALLOW_ALL)
        await super()._parse_robots(response, netloc, request)

    def process_request_2(self, rp: RobotParser | None, request: Request) -> None:
        netloc = urlparse_cached(request).netloc
        if rp is not None and netloc not in self._delays_read:
            self._delays_read.add(netloc)
            agent = self._robotstxt_useragent or request.headers.get(
                b"User-Agent", self._default_useragent)
            parsed = getattr(rp, "rp", None)  # Protego, behind Scrapy's ProtegoRobotParser
            if parsed is not None and hasattr(parsed, "crawl_delay"):
                set_crawl_delay(self.crawler, netloc, parsed.crawl_delay(to_unicode(agent)))
        try:
            super().process_request_2(rp, request)
        except IgnoreRequest:
            status = self._server_errors.get(urlparse_cached(request).netloc)
            if status is None:
                raise
            raise IgnoreRequest(
                f"Forbidden by robots.txt: it answered HTTP {status}, and a robots.txt the "
                "server cannot serve means stay away this run (RFC 9309)") from None
