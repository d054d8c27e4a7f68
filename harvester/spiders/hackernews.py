"""HackerNewsSpider: Hacker News through the Firebase API (story lists → items) or Algolia
search (query/tags, only items newer than the last successful run)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlencode

from scrapy import Request
from scrapy.http import Response

from harvester.items import Rejection, Signal
from harvester.middlewares.conditional import SOURCE_META
from harvester.parsers.hackernews import (
    ALGOLIA_BASE,
    FEED_LISTS,
    FIREBASE_BASE,
    ParsedItem,
    head,
    load_json,
    parse_hit,
    parse_id_list,
    parse_item,
    parse_search_page,
)
from harvester.sources import Source
from harvester.spiders.base import SourceSpider

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 30
DEFAULT_MAX_PAGES = 1
#: Algolia indexes a new item a little after it is posted; asking again for this much
#: before the last successful run keeps an item posted just before that run (and indexed
#: just after it) from being lost. Items seen twice are deduplicated by their URL.
INDEX_LAG_S = 300


class HackerNewsSpider(SourceSpider):
    """``scrapy crawl hackernews -a source=NAME``.

    ``feed = "top"|"new"|"best"``: the first ``limit`` ids of the Firebase list, one item
    request each. An item that is ``null``, 404, deleted or dead is counted as ``missing``;
    a comment or poll option in a story list is rejected (``not_a_post``).
    ``query``/``tags``: Algolia ``search_by_date``, ``limit`` hits per page, up to
    ``max_pages`` pages, with ``created_at_i`` after the last successful run (less
    :data:`INDEX_LAG_S`). Stats (per source): ``missing``, ``missing_<why>``, ``entries``,
    ``unfetched`` (hits beyond ``max_pages``).
    """

    name = "hackernews"
    kind = "hackernews"

    async def start_source(self, source: Source) -> AsyncIterator[Request]:
        if source.feed:
            base = source.api_base or FIREBASE_BASE
            url = f"{base}/{FEED_LISTS[source.feed]}.json"
            yield self.request(source, url, self.parse_list,
                               meta={"handle_httpstatus_list": [304]})
        else:
            yield self._search(source, page=0, since=self._since(source))

    # -- Firebase ------------------------------------------------------------------------

    def parse_list(self, response: Response) -> Iterator[Request | Rejection]:
        source = self._source(response)
        if self.not_modified(source, response):
            return
        ids, bad, error = parse_id_list(response.body)
        if error:
            yield self.unusable(source, response, error)
            return
        self.fetched(source)
        for entry in bad:
            yield self.reject(source, "not_an_item_id", field="id", url=response.url,
                              raw={"value": repr(entry)[:200]})
        base = source.api_base or FIREBASE_BASE
        for item_id in ids[: source.limit or DEFAULT_LIMIT]:
            yield self.request(source, f"{base}/item/{item_id}.json", self.parse_item,
                               meta={"handle_httpstatus_list": [304, 404]},
                               cb_kwargs={"asked": item_id})

    def parse_item(self, response: Response,
                   asked: int | None = None) -> Iterator[Signal | Rejection]:
        source = self._source(response)
        if self.not_modified(source, response):
            return
        if response.status == 404:
            # An id in the list whose item is gone: the list is a few minutes behind.
            self._missing(source, "not_found", response.url)
            return
        self.fetched(source)
        data, error = load_json(response.body)
        if error:
            yield self.reject(source, "invalid_json", field="item", url=response.url,
                              raw={"error": error, "head": head(response.body)})
            return
        if (asked is not None and isinstance(data, dict) and data.get("id") is not None
                and str(data.get("id")).strip() != str(asked)):
            # Another item's answer (a cache or proxy mix-up): stored, it would carry the
            # other id with whatever this one's fields are.
            yield self.reject(source, "id_mismatch", field="external_id", url=response.url,
                              raw={"asked": asked, "answered": head(response.body)})
            return
        yield from self._emit(source, parse_item(data), response.url)

    # -- Algolia -------------------------------------------------------------------------

    def _since(self, source: Source) -> int | None:
        last = self.since(source)  # not the last success: a partly failed run's
        return int(last.timestamp()) - INDEX_LAG_S if last else None  # misses come again

    def _search(self, source: Source, page: int, since: int | None) -> Request:
        params: dict[str, Any] = {}
        if source.query:
            params["query"] = source.query
        if source.tags:
            params["tags"] = source.tags
        params["hitsPerPage"] = source.limit or DEFAULT_LIMIT
        params["page"] = page
        if since is not None:
            params["numericFilters"] = f"created_at_i>{since}"
        url = f"{source.api_base or ALGOLIA_BASE}/search_by_date?{urlencode(params)}"
        return self.request(source, url, self.parse_search,
                            cb_kwargs={"page": page, "since": since})

    def parse_search(self, response: Response, page: int,
                     since: int | None) -> Iterator[Signal | Rejection | Request]:
        source = self._source(response)
        parsed = parse_search_page(response.body)
        if parsed.error:
            # Fails the run, so the Algolia window is not moved past items never seen.
            yield self.unusable(source, response, parsed.error)
            return
        self.fetched(source)
        for hit in parsed.hits:
            yield from self._emit(source, parse_hit(hit), response.url)
        limit = source.limit or DEFAULT_LIMIT
        # Without a usable page count, a full page may have a next one.
        more = (page + 1 < parsed.nb_pages if parsed.nb_pages is not None
                else len(parsed.hits) >= limit)
        if not parsed.hits or not more:
            return
        max_pages = source.max_pages or DEFAULT_MAX_PAGES
        if page + 1 < max_pages:
            yield self._search(source, page + 1, since)
            return
        # The window moves on after this run: say what it leaves behind.
        left = max(parsed.nb_hits - (page + 1) * limit, 0)
        self.count(source, "unfetched", left)
        logger.warning("Source %s: %s more hits after page %d not fetched (max_pages = %d); "
                       "raise max_pages or limit, or crawl more often", source.name,
                       left or "some", page + 1, max_pages, extra=self.log_extra)

    # -- shared --------------------------------------------------------------------------

    def _emit(self, source: Source, parsed: ParsedItem,
              url: str) -> Iterator[Signal | Rejection]:
        if parsed.missing:
            self._missing(source, parsed.missing, url)
        elif parsed.reject:
            yield self.reject(source, parsed.reject.reason, field=parsed.reject.field,
                              url=url, raw=parsed.reject.raw)
        elif parsed.fields is not None:
            self.count(source, "entries")
            yield self.signal(source, **parsed.fields)

    def _missing(self, source: Source, why: str, url: str) -> None:
        self.count(source, "missing")
        self.count(source, f"missing_{why}")
        logger.debug("Source %s: %s is %s", source.name, url, why)


    def _source(self, response: Response) -> Source:
        name = response.meta[SOURCE_META]
        return next(s for s in self.sources if s.name == name)
