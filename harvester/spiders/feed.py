"""FeedSpider: RSS, Atom, RDF and JSON Feed documents of the feed sources."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider
from scrapy.http import Response
from twisted.python.failure import Failure

from harvester import stats as hstats
from harvester.failures import describe_failure
from harvester.items import Rejection, Signal
from harvester.middlewares.conditional import SOURCE_META
from harvester.parsers.feed import parse_feed
from harvester.sourcefile import sources_path
from harvester.sources import Source, SourcesError, load_sources

logger = logging.getLogger(__name__)


class FeedSpider(Spider):
    """``scrapy crawl feed -a source=NAME`` (or ``NAME,NAME``); without it, every enabled
    feed source. Yields a :class:`Signal` per entry and a :class:`Rejection` per entry or
    document that cannot be used."""

    name = "feed"

    def __init__(self, source: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requested = [s.strip() for s in source.split(",") if s.strip()] if source else []
        self.feed_sources: list[Source] = []
        self.config_error: str | None = None

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.feed_sources]

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> FeedSpider:
        spider: FeedSpider = super().from_crawler(crawler, *args, **kwargs)
        spider.feed_sources = spider._select(crawler)
        return spider

    def _select(self, crawler: Crawler) -> list[Source]:
        try:
            sources = load_sources(sources_path(crawler.settings))
            if not self.requested:
                return sources.enabled("feed")
            chosen = [sources.get(name) for name in self.requested]
        except SourcesError as exc:
            self.config_error = str(exc)
            return []
        wrong = [s.name for s in chosen if s.kind != "feed"]
        if wrong:
            self.config_error = (
                f"source {wrong[0]!r} is not a feed source; crawl it with its own spider"
            )
            return []
        return chosen

    async def start(self) -> AsyncIterator[Request]:
        if self.config_error:
            # Reported here, once the crawl (and its stats) exist; nothing is fetched.
            logger.error("%s", self.config_error)
            self.crawler.stats.set_value("harvest/config_error", self.config_error)
            raise CloseSpider("config_error")
        for source in self.feed_sources:
            for url in source.urls:
                yield Request(
                    url,
                    callback=self.parse,
                    errback=self.on_error,
                    dont_filter=True,
                    meta={SOURCE_META: source.name, "handle_httpstatus_list": [304]},
                )

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Signal | Rejection]:
        source = response.meta[SOURCE_META]
        stats = self.crawler.stats
        if response.status == 304:
            hstats.inc(stats, source, "not_modified")
            return
        hstats.inc(stats, source, "fetched")
        content_type = response.headers.get(b"Content-Type")
        parsed = parse_feed(
            response.body, response.url, content_type.decode("latin-1") if content_type else None
        )
        if parsed.error:
            logger.warning("Source %s: %s is not usable: %s", source, response.url, parsed.error)
            yield Rejection(
                source=source, reason="unusable_document", field="document", url=response.url,
                raw={"error": parsed.error,
                     "head": response.body[:1000].decode("utf-8", "replace")},
            )
        for reject in parsed.rejects:
            yield Rejection(source=source, reason=reject.reason, field=reject.field,
                            url=response.url, raw=reject.raw)
        fetched_at = datetime.now(UTC)
        hstats.inc(stats, source, "entries", len(parsed.entries))
        for entry in parsed.entries:
            yield Signal(source=source, kind="feed", feed_url=response.url,
                         fetched_at=fetched_at, **entry)

    def on_error(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        source = request.meta.get(SOURCE_META, "?")
        message = describe_failure(failure)
        hstats.inc(self.crawler.stats, source, "errors")
        hstats.set_last_error(self.crawler.stats, source, f"{request.url}: {message}")
        logger.error("Source %s: %s failed: %s", source, request.url, message)
