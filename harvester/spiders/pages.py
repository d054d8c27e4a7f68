"""PagesSpider: HTML listing pages read with the selectors of the source entry, optionally
following each item to its article page."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from parsel import Selector
from scrapy import Request
from scrapy.http import Response
from twisted.python.failure import Failure
from w3lib.html import get_base_url

from harvester.exceptions import RateLimited
from harvester.failures import describe_failure
from harvester.items import Rejection, Signal
from harvester.middlewares.conditional import CONDITIONAL_META
from harvester.parsers import selectors
from harvester.parsers.article import (
    Article,
    decode_html,
    extract_article,
    not_html,
    parse_date,
)
from harvester.services.urls import in_page_anchor, item_link, web_link
from harvester.sources import Source
from harvester.spiders.base import SourceSpider, content_type

logger = logging.getLogger(__name__)


def _not_html(response: Response, text: str) -> str | None:
    """What the listing page is instead of HTML (empty, JSON, …), or None when it may be
    HTML: then a selector matching nothing is a layout change."""
    if not text.strip():
        return "is empty"
    head = text.lstrip()[:1]
    header = content_type(response) or ""
    if head in "{[" and "html" not in header:
        return f"is JSON, not HTML ({header or 'no content type'})"
    if instead := not_html(response.body, header):
        return f"is {instead}"
    return None


class PagesSpider(SourceSpider):
    """``scrapy crawl pages -a source=NAME``: one item per node matched by
    ``item_selector`` on each listing page, ``next_page`` followed up to ``max_pages``
    (default 1), and with ``follow = true`` each item's page fetched to fill the fields the
    listing lacks (:func:`extract_article`).

    Stats (per source): ``fetched``, ``entries``, ``not_modified``, ``errors`` (listing
    requests that failed, listing pages matching no item, an unusable configuration, article
    requests refused by a rate limit longer than ``HARVEST_RETRY_AFTER_MAX``), ``missing``
    and ``article_failed`` (article pages that could not be fetched; the item is kept with
    what the listing had), ``empty_listing``.
    """

    name = "pages"
    kind = "pages"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rate_limited: set[str] = set()  # sources whose article host said "stay away"

    async def start_source(self, source: Source) -> AsyncIterator[Request]:
        for url in source.urls:
            yield self._listing(source, url, page=1, seen={url})

    def _listing(self, source: Source, url: str, page: int, seen: set[str]) -> Request:
        return self.request(
            source, url, self.parse_listing,
            cb_kwargs={"source": source, "page": page, "seen": seen},
            meta={CONDITIONAL_META: page == 1, "handle_httpstatus_list": [304]},
        )

    def parse_listing(self, response: Response, source: Source, page: int,
                      seen: set[str]) -> Iterator[Signal | Rejection | Request]:
        if self.not_modified(source, response):
            return
        text = decode_html(response.body, content_type(response))
        if not_html := _not_html(response, text):
            # Not a layout change: the server sent something else.
            yield self.unusable(source, response, f"the listing page {not_html}")
            return
        self.fetched(source)
        document = Selector(text=text, type="html")
        base = get_base_url(text, response.url)
        nodes = selectors.select(document, source.item_selector or "")
        if not nodes:
            self.count(source, "empty_listing")
            self.fail(source, response.url,
                      f"item_selector {source.item_selector!r} matched nothing; "
                      "the page may have changed its layout")
        else:
            self.count(source, "entries", len(nodes))
        for index, node in enumerate(nodes):
            yield from self._item(source, response.url, base, index, node)
        yield from self._next(source, document, base, page, seen)

    def _item(self, source: Source, listing_url: str, base: str, index: int,
              node: Selector) -> Iterator[Signal | Rejection | Request]:
        listing = listing_fields(source.fields or {}, node, base, listing_url)
        if not listing.get("url"):
            # Stored by its address, a card without one is a rejection with its HTML (it
            # went on as a signal that validate refused, said to be "kept without url").
            raw = {"index": index, "html": node.get()[:2000]}
            if why := listing.get("dropped", {}).get("url"):
                raw["why"] = why
            reason = ("missing_url_and_title" if not listing.get("title")
                      else "unusable_url" if why else "missing_url")
            yield self.reject(source, reason, field="url", url=listing_url, raw=raw)
            return
        listing["feed_url"] = listing_url
        if anchor := in_page_anchor(listing.get("url"), listing_url):
            # An entry of this very page (a changelog's "#v2.1"): the anchor is its
            # identity, and there is no other page to follow.
            listing["canonical_url"] = anchor
        elif source.follow and listing.get("url"):
            yield self.request(source, listing["url"], self.parse_article,
                               errback=self.on_article_error,
                               cb_kwargs={"source": source, "listing": listing})
            return
        yield self.signal(source, **listing)

    def _next(self, source: Source, document: Selector, base: str, page: int,
              seen: set[str]) -> Iterator[Request]:
        if not source.next_page or page >= (source.max_pages or 1):
            return
        target = selectors.first(document, source.next_page, link=True)
        if not target:
            return
        url = web_link(base, target)
        if url is None or url in seen:
            return
        seen.add(url)
        yield self._listing(source, url, page + 1, seen)

    def parse_article(self, response: Response, source: Source,
                      listing: dict[str, Any]) -> Iterator[Signal]:
        self.fetched(source)
        header = content_type(response)
        if instead := not_html(response.body, header):
            # A link to a PDF or an image: its bytes are no article text.
            self.count(source, "article_not_html")
            logger.warning("Source %s: article %s is %s; keeping the listing's fields",
                           source.name, response.url, instead, extra=self.log_extra)
            yield self.signal(source, **listing)
            return
        article = extract_article(response.body, response.url, header)
        yield self.signal(source, **merge(listing, article))

    def on_article_error(self, failure: Failure) -> Iterator[Signal]:
        # The listing answered, so one unreadable article is a gap in one item, kept with
        # what the listing said (partial: a row stored already keeps its article text) and
        # counted. A host asking us to stay away longer than we wait fails the source, as
        # it does every other kind: the rest of its articles are not sent this run.
        request = failure.request  # type: ignore[attr-defined]
        source: Source = request.cb_kwargs["source"]
        self.count(source, "missing")
        self.count(source, "article_failed")
        # The listing keeps no ETag/Last-Modified this run: its next answer was a 304, and
        # the articles that failed were never asked for again.
        for url in source.urls:
            self.forget_validators(source.name, url)
        if failure.check(RateLimited):
            # Once a source: the articles after it fail on the same closed gate, and each
            # was an error of its own (50 links, 50 errors for one 429).
            if source.name not in self._rate_limited:
                self._rate_limited.add(source.name)
                self.fail(source, request.url, describe_failure(failure))
        else:
            logger.warning("Source %s: article %s could not be fetched (%s); keeping the "
                           "listing's fields", source.name, request.url,
                           describe_failure(failure), extra=self.log_extra)
        yield self.signal(source, **request.cb_kwargs["listing"], partial=True)


def listing_fields(fields: dict[str, str], node: Selector, base: str,
                   page_url: str) -> dict[str, Any]:
    """Signal fields from one listing item node (only those that were found)."""
    found: dict[str, Any] = {}
    url_selector = fields.get("url") or fields.get("link")
    if url_selector and (target := selectors.first(node, url_selector, link=True)):
        found["url"], why = item_link(base, target, page_url)
        if why:
            found["dropped"] = {"url": why}
    if "title" in fields:
        found["title"] = selectors.joined(node, fields["title"])
    if "text" in fields:
        found["text"] = selectors.joined(node, fields["text"], "\n")
    if "author" in fields:
        found["author"] = ", ".join(dict.fromkeys(selectors.values(node, fields["author"])))
    if "published" in fields:
        text = selectors.first(node, fields["published"])
        found["published_at"] = parse_date(text)
        if text and text.strip() and found["published_at"] is None:
            found.setdefault("dropped", {})["published_at"] = (
                f"{text.strip()[:80]!r} is not a date")
    if "tags" in fields:
        found["tags"] = list(dict.fromkeys(selectors.values(node, fields["tags"])))
    return {k: v for k, v in found.items() if v}


def merge(listing: dict[str, Any], article: Article) -> dict[str, Any]:
    """The listing's fields, with what it lacks filled from the article page."""
    filled = dict(listing)
    for name, value in (("title", article.title), ("author", article.author),
                        ("published_at", article.published_at), ("text", article.text),
                        ("language", article.language)):
        if value and not filled.get(name):
            filled[name] = value
    # A date the listing garbled but the article page gives is not lost; one neither gives
    # in a readable form is reported (the listing's reason first).
    reasons = {**article.dropped, **filled.get("dropped", {})}
    dropped = {k: why for k, why in reasons.items() if not filled.get(k)}
    filled.pop("dropped", None)
    if dropped:
        filled["dropped"] = dropped
    return filled
