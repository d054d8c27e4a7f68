"""DedupePipeline: one item per canonical URL (or source id) per run; across runs the
database key does the same (``INSERT … ON CONFLICT`` in the store step)."""

from __future__ import annotations

from typing import Any

from scrapy.crawler import Crawler

from harvester import stats as hstats
from harvester.exceptions import DuplicateSignal, InvalidSignal
from harvester.items import Signal
from harvester.services.urls import canonical_url, id_key, url_key


def assign_key(item: Signal) -> str:
    if item.url:
        # A spider may know better (pages: an entry's anchor on the listing page itself).
        item.canonical_url = item.canonical_url or canonical_url(item.url)
    if item.key:
        # Keyed by its id by the spider: a feed entry whose link is not its own address
        # (services/urls.keyed_by_id).
        return item.key
    if item.canonical_url:
        item.key = url_key(item.canonical_url)
    else:
        assert item.external_id, "validate guarantees a URL or an id"
        item.key = id_key(item.source, item.external_id)
    return item.key


class DedupePipeline:
    """Drops items already seen in this run.

    Stats: ``harvest/duplicates`` (and per source).
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self._seen: set[str] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DedupePipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, Signal):
            return item
        try:
            key = assign_key(item)
        except ValueError as exc:
            # A URL validate's quick check let through that does not parse ("http://[::1",
            # a port that is not a number): a stored rejection, not a lost item.
            detail = f"{(item.url or '')[:200]}: {exc}"
            raise InvalidSignal("url", "unparsable_url", detail) from exc
        if key in self._seen:
            hstats.inc(self.crawler.stats, item.source, "duplicates")
            raise DuplicateSignal(f"already seen in this run: {item.canonical_url or key}")
        self._seen.add(key)
        return item
