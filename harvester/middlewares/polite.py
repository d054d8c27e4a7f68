"""PoliteMiddleware: per-source request budgets and honouring what rate-limited servers say.

Every request tagged with a source (``meta["harvest_source"]``) passes one gate per source:

* ``requests_per_minute`` in the source entry spaces that source's requests evenly, across
  all of its requests in the crawl (API pages, items, article pages);
* a 429 or 503 with ``Retry-After`` (seconds or HTTP date), or a 429 with the API's reset
  header (X ``x-rate-limit-reset``, Reddit ``X-Ratelimit-Reset``), pauses the whole source
  for that long and then retries the request (``HARVEST_RATE_LIMIT_RETRIES``, default 5);
  a 429 that says nothing backs off exponentially (1, 2, 4 … 60 s);
* a response saying no requests are left in the window (``x-rate-limit-remaining: 0``,
  ``X-Ratelimit-Remaining: 0``) pauses the source until the window resets;
* a server asking for more than ``HARVEST_RETRY_AFTER_MAX`` seconds (default 300) is not
  waited for in this run: the request fails ("rate limited") and so do the source's other
  requests until then, instead of being sent to a server that will refuse them.

A downloader middleware runs before the request joins its host's queue, where AutoThrottle
(and the per-host concurrency) may keep it for seconds: requests that passed the gate
before a 429 went out during the pause. So :class:`PoliteDownloadHandler` asks the gate
again right before a request is sent, and holds it there (or fails it) too. A crawl that is
stopping (Ctrl-C, SIGTERM) sends no request that is still waiting (:class:`NotSent`).

A host whose robots.txt has a ``Crawl-delay`` gets its requests spaced by it (at most
``CRAWL_DELAY_MAX_S``), in the download handler, whichever source (or crawler of the
process) sends them.

Stats: ``harvest/source/<name>/waits`` (and ``harvest/waits``), ``harvest/polite/waited_s``,
``harvest/polite/paced`` (requests delayed by the budget), ``harvest/polite/crawl_delayed``
(by a Crawl-delay), ``retry/…`` for the retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from scrapy import Request
from scrapy.core.downloader.handlers.http11 import HTTP11DownloadHandler
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.retry import get_retry_request
from scrapy.http import Response
from scrapy.settings import BaseSettings
from scrapy.utils.httpobj import urlparse_cached

from harvester import stats as hstats
from harvester.exceptions import NotSent, RateLimited
from harvester.middlewares.conditional import SOURCE_META
from harvester.pipelines.numbers import number
from harvester.services import ratelimit
from harvester.sourcefile import sources_path
from harvester.sources import SourcesError, load_sources

logger = logging.getLogger(__name__)

# A 429 with no hint: wait 1, 2, 4 … seconds, never more than this.
BACKOFF_CAP_S = 60.0
# How often a waiting request looks whether the crawl is stopping.
_TICK_S = 0.5


@dataclass(slots=True)
class _Gate:
    """When the next request of one source may go out."""

    interval: float  # seconds between requests; 0 = no budget
    next_at: float = 0.0  # monotonic time the next request may start (budget)
    paused_until: float = 0.0  # monotonic time the server asked us to wait until
    closed_until: float = 0.0  # the server asked for longer than we wait: fail fast
    closed_reason: str = ""


#: Each crawler's gates, shared by the middleware and the download handler.
_GATES: WeakKeyDictionary[Crawler, dict[str, _Gate]] = WeakKeyDictionary()
#: The longest robots.txt ``Crawl-delay`` honoured, in seconds: some sites ask for an hour,
#: which would hold a whole run on one page.
CRAWL_DELAY_MAX_S = 60.0


@dataclass(slots=True)
class _HostPace:
    """A host's robots.txt ``Crawl-delay``, and when its next request may start."""

    delay: float
    next_at: float = 0.0


#: The paced hosts of this process (netloc → pace), set from robots.txt by
#: :class:`~harvester.middlewares.robots.PoliteRobotsTxtMiddleware`: one for every crawler
#: in it, as `harvest crawl` runs one per source (kept per crawler, three sources on one
#: host sent it three requests per delay).
_PACES: dict[str, _HostPace] = {}


def set_crawl_delay(crawler: Crawler, netloc: str, seconds: float | None) -> None:
    """Space the requests to ``netloc`` by its robots.txt's ``Crawl-delay`` (at most
    ``CRAWL_DELAY_MAX_S``); Scrapy reads robots.txt rules but not this one."""
    if netloc in _PACES or not seconds or not 0 < seconds < float("inf"):
        return
    delay = min(float(seconds), CRAWL_DELAY_MAX_S)
    _PACES[netloc] = _HostPace(delay)
    logger.info("robots.txt of %s asks for a Crawl-delay of %g s%s: its requests are spaced "
                "so", netloc, seconds,
                f" (more than {CRAWL_DELAY_MAX_S:g}; {delay:g} s is kept)"
                if delay < seconds else "")


def stopping(crawler: Crawler) -> bool:
    """Whether the crawl is shutting down (Ctrl-C, SIGTERM, Scrapyd's cancel): its crawler
    stopped or its engine no more running. What waits for a pause gives up then."""
    engine = crawler.engine
    return not crawler.crawling or engine is None or not engine.running


async def _hold(crawler: Crawler, gate: _Gate, until: float) -> None:
    """Sleep until ``until`` and the gate's pause are over; fail the request when the
    server asked for too long, drop it when the crawl is stopping."""
    while True:
        now = time.monotonic()
        if gate.closed_until > now:
            raise RateLimited(gate.closed_reason)
        end = max(until, gate.paused_until)
        if end <= now:
            return
        if stopping(crawler):
            raise NotSent("the crawl is stopping: not sent")
        await asyncio.sleep(min(_TICK_S, end - now))


class PoliteDownloadHandler(HTTP11DownloadHandler):
    """Scrapy's HTTP(S) handler, after one more look at the request's source gate."""

    async def download_request(self, request: Request) -> Response:
        source = request.meta.get(SOURCE_META)
        gate = _GATES.get(self._crawler, {}).get(source) if source is not None else None
        if gate is not None:
            await _hold(self._crawler, gate, 0.0)
        pace = _PACES.get(urlparse_cached(request).netloc)
        if pace is not None:
            # Here, not in a middleware: with several requests to the host open at once
            # (CONCURRENT_REQUESTS_PER_DOMAIN), each takes the next free moment as it goes.
            now = time.monotonic()
            start = max(now, pace.next_at)
            pace.next_at = start + pace.delay
            if start > now:
                self._crawler.stats.inc_value("harvest/polite/crawl_delayed")
                await _hold(self._crawler, gate or _Gate(0.0), start)
        return await super().download_request(request)


@dataclass(frozen=True, slots=True)
class PoliteConfig:
    max_wait: float  # HARVEST_RETRY_AFTER_MAX, seconds
    max_retries: int  # HARVEST_RATE_LIMIT_RETRIES

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> PoliteConfig:
        # NaN compared false with every wait (a Retry-After of 1000 s was waited out), a
        # negative one failed every rate-limited source at once, saying "(-5 s)". 0 retries
        # is a choice: a rate-limited request fails at once.
        return cls(max_wait=number(settings, "HARVEST_RETRY_AFTER_MAX", 300.0, float, above=0,
                                   high=86400),
                   max_retries=number(settings, "HARVEST_RATE_LIMIT_RETRIES", 5, low=0))


class PoliteMiddleware:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        config = PoliteConfig.from_settings(crawler.settings)
        self.max_wait = config.max_wait
        self.max_retries = config.max_retries
        self._gates: dict[str, _Gate] = _GATES.setdefault(crawler, {})
        self._budgets: dict[str, float] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> PoliteMiddleware:
        return cls(crawler)

    def _gate(self, source: str) -> _Gate:
        gate = self._gates.get(source)
        if gate is None:
            if self._budgets is None:
                self._budgets = self._load_budgets()
            rpm = self._budgets.get(source)
            gate = self._gates[source] = _Gate(interval=60.0 / rpm if rpm else 0.0)
        return gate

    def _load_budgets(self) -> dict[str, float]:
        try:
            sources = load_sources(sources_path(self.crawler.settings)).sources
        except SourcesError:  # the spider reports a broken file; nothing gets crawled
            return {}
        return {s.name: s.requests_per_minute for s in sources if s.requests_per_minute}

    async def process_request(self, request: Request) -> None:
        source = request.meta.get(SOURCE_META)
        if source is None:
            return None
        gate = self._gate(source)
        now = time.monotonic()
        if gate.closed_until > now:
            raise RateLimited(gate.closed_reason)
        start = max(now, gate.paused_until, gate.next_at)
        if gate.interval:
            gate.next_at = start + gate.interval
        if start > now:
            if gate.paused_until <= now:
                self.crawler.stats.inc_value("harvest/polite/paced")
            # Paused again while we slept (another request got a 429): that is waited too.
            await _hold(self.crawler, gate, start)
        return None

    def process_response(self, request: Request, response: Response) -> Request | Response:
        source = request.meta.get(SOURCE_META)
        if source is None:
            return response

        def header(name: str) -> str | None:
            value = response.headers.get(name)
            return value.decode("latin-1") if value is not None else None

        gate = self._gate(source)
        wait = ratelimit.wait_for(response.status, header)
        if wait is None and response.status == 429:
            wait = min(BACKOFF_CAP_S, 2.0 ** request.meta.get("retry_times", 0))
        if wait is None:
            if ratelimit.exhausted(header):
                reset = ratelimit.reset_seconds(header)
                if reset is not None and reset <= self.max_wait:
                    self._pause(gate, source, reset, "rate-limit window used up")
            return response
        if wait > self.max_wait:
            gate.closed_until = time.monotonic() + wait
            gate.closed_reason = (f"rate limited: the server asked to wait {wait:.0f} s, more "
                                  f"than HARVEST_RETRY_AFTER_MAX ({self.max_wait:.0f} s)")
            raise RateLimited(gate.closed_reason)
        retry = get_retry_request(
            request, spider=self.crawler.spider, reason=f"{response.status}_wait",
            max_retry_times=self.max_retries,
        )
        if retry is None:
            # Retries used up: the spider sees the 429/503 as a failure, and Scrapy's own
            # retry step must not send it again at once.
            request.meta["dont_retry"] = True
            return response
        self._pause(gate, source, wait, f"HTTP {response.status}")
        return retry

    def _pause(self, gate: _Gate, source: str, seconds: float, why: str) -> None:
        until = time.monotonic() + seconds
        if until > gate.paused_until:
            gate.paused_until = until
        hstats.inc(self.crawler.stats, source, "waits")
        self.crawler.stats.inc_value("harvest/polite/waited_s", round(seconds, 3))
        self.crawler.stats.inc_value(f"harvest/source/{source}/waited_s", round(seconds, 3))
        logger.info("Source %s: %s, waiting %.1f s before its next request", source, why,
                    seconds)
