"""FeedSpider: RSS, Atom, RDF and JSON Feed documents of the feed sources."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

from scrapy import Request
from scrapy.http import Response

from harvester.items import Rejection, Signal
from harvester.middlewares.conditional import SOURCE_META
from harvester.parsers.feed import parse_feed
from harvester.services.urls import id_key, keyed_by_id
from harvester.sources import Source
from harvester.spiders.base import SourceSpider, content_type


class FeedSpider(SourceSpider):
    """``scrapy crawl feed -a source=NAME`` (or ``NAME,NAME``); without it, every enabled
    feed source. Yields a :class:`Signal` per entry and a :class:`Rejection` per entry or
    document that cannot be used."""

    name = "feed"
    kind = "feed"

    async def start_source(self, source: Source) -> AsyncIterator[Request]:
        for url in source.urls:
            yield self.request(source, url, self.parse, conditional=True)

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Signal | Rejection]:
        source = response.meta[SOURCE_META]
        if self.not_modified(source, response):
            return
        parsed = parse_feed(response.body, response.url, content_type(response),
                            max_size=self.inflate_limit)
        if parsed.error:
            # A failure of the source, not only a rejection: a feed that turned into a parked
            # page or a login wall must fail its runs (and be disabled, go stale), as an
            # API source answering with a document that is not its API's does.
            yield self.unusable(source, response, parsed.error)
            return
        self.fetched(source)
        if parsed.truncated:
            # A 304 next run would lose the entries after the cut until the feed changes.
            self.forget_validators(source, response.url)
            # An error of the source too: a feed that only ever arrives cut short (no entry
            # before the cut) passed for a good run, fresh in /health, with a rejection or
            # two no monitor would notice.
            self.fail(source, response.url, f"the document is cut short: "
                      f"{len(parsed.entries)} entries before the cut were kept")
        for reject in parsed.rejects:
            yield Rejection(source=source, reason=reject.reason, field=reject.field,
                            url=response.url, raw=reject.raw)
        fetched_at = datetime.now(UTC)
        self.count(source, "entries", len(parsed.entries))
        for entry in parsed.entries:
            if "dropped" in entry:
                self.dropped(source, entry)
            by_id = keyed_by_id(entry["url"], entry["external_id"])
            yield Signal(source=source, kind="feed", feed_url=response.url,
                         fetched_at=fetched_at,
                         key=id_key(source, entry["external_id"]) if by_id else None, **entry)
