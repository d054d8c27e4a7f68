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
            if response.status < 400:
                self._arrived(request)
            return response
        location = response.headers.get(b"Location")
        if not location:
            return response
        target = safe_url_string(urljoin(request.url, location.decode("latin-1")))
        if urlsplit(target).scheme.lower() not in ("http", "https"):
            # Scrapy would fail on it with "ValueError: Missing scheme in request url".
            raise BadRedirect(f"HTTP {response.status} redirects to {target[:200]!r}, which is "
                              "not a web address (the server's redirect is broken)")
        return response

    def _arrived(self, request: Request) -> None:
        """A request that answered after redirects: when it started at a listed URL with
        permanent ones, the URL to list now is where they led. Judged once the chain ends
        in an answer: a chain that loops or ends in a 404 named a URL that did not work,
        and 301 → 301 → feed named the middle hop, two edits over two runs."""
        hops = request.meta.get("redirect_urls")
        if not hops:
            return
        source = request.meta.get(SOURCE_META)
        if source is None or hops[0] not in self._urls_of(source):
            return
        chain = [*hops, request.url]
        reasons = request.meta.get("redirect_reasons") or []
        permanent = 0
        while permanent < len(reasons) and reasons[permanent] in PERMANENT:
            permanent += 1
        if not permanent:
            return  # a temporary redirect first: the site's business
        old, new = chain[0], chain[permanent]
        if hstats.moved(self.crawler.stats, source, old, new):
            logger.warning("Source %s (HTTP %s)", messages.moved(source, old, new),
                           reasons[0], extra={"spider": self.crawler.spider})

    def _urls_of(self, name: str) -> frozenset[str]:
        urls = self._listed.get(name)
        if urls is None:
            sources = getattr(self.crawler.spider, "sources", [])
            listed = next((getattr(s, "urls", []) for s in sources if s.name == name), [])
            urls = self._listed[name] = frozenset(safe_url_string(u) for u in listed)
        return urls
