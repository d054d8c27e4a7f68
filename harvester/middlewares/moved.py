"""MovedSourceMiddleware: say when a URL of the sources file has moved for good."""

from __future__ import annotations

import logging
from urllib.parse import urljoin, urlsplit

from scrapy.crawler import Crawler
from scrapy.http import Request, Response
from w3lib.url import safe_url_string

from harvester import messages
from harvester import stats as hstats
from harvester.exceptions import BadRedirect
from harvester.middlewares.conditional import SOURCE_META

logger = logging.getLogger(__name__)

PERMANENT = (301, 308)
#: What Scrapy's RedirectMiddleware follows.
REDIRECTS = frozenset((301, 302, 303, 307, 308))


class MovedSourceMiddleware:
    """Notices a URL of the sources file answered with a permanent redirect (301, 308).

    Scrapy follows the redirect and the crawl goes on, so nothing would tell the operator
    that every run pays an extra round trip and that the old address may stop answering
    one day. The source's run records ``moved`` (old URL → new): one line of the crawl
    summary, ``crawl_runs.stats``, a WARNING once, and from there ``harvest sources``,
    ``harvest stats``, ``GET /sources`` and the ``moved:SOURCE`` ops alert.
    Only the URLs the sources file lists are watched: an article link that redirects to its
    canonical address is the site's business, not the operator's. A rendered source's page
    is redirected inside Chromium, out of Scrapy's sight, and is not watched.

    A redirect (any request's) to something that is not a web address (``javascript:``)
    fails its request with :class:`~harvester.exceptions.BadRedirect`, which says so.

    Sits just inside ``RedirectMiddleware`` (600) in ``DOWNLOADER_MIDDLEWARES``, so it sees
    the redirect before Scrapy turns it into the next request.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._listed: dict[str, frozenset[str]] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> MovedSourceMiddleware:
        return cls(crawler)

    def process_response(self, request: Request, response: Response) -> Response:
        if response.status not in REDIRECTS:
            return response
        location = response.headers.get(b"Location")
        if not location:
            return response
        target = safe_url_string(urljoin(request.url, location.decode("latin-1")))
        if urlsplit(target).scheme.lower() not in ("http", "https"):
            # Scrapy would fail on it with "ValueError: Missing scheme in request url".
            raise BadRedirect(f"HTTP {response.status} redirects to {target[:200]!r}, which is "
                              "not a web address (the server's redirect is broken)")
        if response.status not in PERMANENT or request.meta.get("redirect_urls"):
            return response
        source = request.meta.get(SOURCE_META)
        if source is None or request.url not in self._urls_of(source):
            return response
        if hstats.moved(self.crawler.stats, source, request.url, target):
            logger.warning("Source %s (HTTP %d)", messages.moved(source, request.url, target),
                           response.status, extra={"spider": self.crawler.spider})
        return response

    def _urls_of(self, name: str) -> frozenset[str]:
        urls = self._listed.get(name)
        if urls is None:
            sources = getattr(self.crawler.spider, "sources", [])
            listed = next((getattr(s, "urls", []) for s in sources if s.name == name), [])
            urls = self._listed[name] = frozenset(safe_url_string(u) for u in listed)
        return urls
