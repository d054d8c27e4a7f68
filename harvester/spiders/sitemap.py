"""SitemapSpider: pages listed in sitemaps (XML, text, gzip, news), found directly, through
sitemap indexes or through robots.txt ``Sitemap:`` lines; only what changed since the last
successful run is followed."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from scrapy import Request
from scrapy.http import Response

from harvester.items import Rejection, Signal
from harvester.middlewares.conditional import SOURCE_META
from harvester.parsers.article import extract_article, not_html
from harvester.parsers.sitemap import (
    ParsedSitemap,
    SitemapEntry,
    newer_than,
    parse_sitemap,
    robots_sitemap_lines,
)
from harvester.sources import Source
from harvester.spiders.base import SourceSpider

logger = logging.getLogger(__name__)

#: Sitemap documents followed from a configured URL: robots.txt → index → index → sitemap.
MAX_DEPTH = 4
#: Fingerprints of lastmod-less URLs kept in the cursor, per source (12 characters each).
MAX_SEEN = 20_000
#: The sitemap protocol's limit of URLs per sitemap (sitemaps.org).
PROTOCOL_MAX_URLS = 50_000
_FP_LEN = 12
_DEPTH = "sitemap_depth"
_ENTRY = "sitemap_entry"
_LISTED_IN = "sitemap_url"
_SLUG_SPLIT = re.compile(r"[-_+.]+")


def fingerprint(url: str) -> str:
    """A short, stable stand-in for a URL in the resume cursor."""
    return hashlib.blake2b(url.encode("utf-8"), digest_size=_FP_LEN // 2).hexdigest()


def slug_title(url: str) -> str | None:
    """``/news/2024/big-storm-hits-coast.html`` → ``big storm hits coast``; None when the
    last path segment says nothing (empty or only digits). The query's values follow:
    ``/article.php?id=7`` → ``article 7`` (every ``?id=`` page was titled "article", and
    with no text to tell them apart they became one story)."""
    parts = urlsplit(url)
    segment = unquote(parts.path.rstrip("/").rpartition("/")[2])
    stem = segment.rsplit(".", 1)[0] if "." in segment else segment
    words = " ".join(w for w in _SLUG_SPLIT.split(stem) if w)
    if not words or words.replace(" ", "").isdigit():
        return None
    values = [unquote(v) for _, _, v in (p.partition("=") for p in parts.query.split("&")) if v]
    return " ".join([words, *values]) if values else words


@dataclass(slots=True)
class _Run:
    """One source's progress through its sitemaps in this crawl."""

    since: datetime | None
    pattern: re.Pattern[str] | None
    follow: bool
    limit: int | None
    #: Fingerprints of lastmod-less URLs handled by earlier runs.
    known: set[str]
    #: Sitemap URL → concatenated fingerprints; the cursor saved when the run succeeds.
    seen: dict[str, str]
    visited: set[str] = field(default_factory=set)
    taken: set[str] = field(default_factory=set)


class SitemapSpider(SourceSpider):
    """``scrapy crawl sitemap -a source=NAME``; without it, every enabled sitemap source.

    Source options: ``urls`` (sitemaps, sitemap indexes or robots.txt files), ``url_pattern``,
    ``follow`` (default true), ``limit`` (page URLs per run). A page is taken when its
    ``lastmod`` is newer than the last successful run, or, without ``lastmod``, when no
    earlier run took it (docs/kinds/sitemap.md). Stats per source (``harvest/source/NAME/…``):
    ``entries`` (pages taken), ``unchanged``, ``filtered``, ``over_limit``, ``missing``,
    ``robots_forbidden``, ``too_deep``; a ``lastmod`` that is no date is a dropped field
    (``dropped_field/lastmod``).
    """

    name = "sitemap"
    kind = "sitemap"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runs: dict[str, _Run] = {}

    async def start_source(self, source: Source) -> AsyncIterator[Request]:
        state = self.source_state(source)
        stored = state.cursor.get("seen")
        seen = ({k: v for k, v in stored.items() if isinstance(v, str)}
                if isinstance(stored, dict) else {})
        # The reference point: the start of the last run in which nothing failed. The last
        # success moved on after a partly failed run too, and a page or child sitemap that
        # failed then (dated before the next run) was never fetched again.
        self.runs[source.name] = _Run(
            since=self.since(source),
            pattern=re.compile(source.url_pattern) if source.url_pattern else None,
            follow=source.follow is not False,
            limit=source.limit,
            known={v[i:i + _FP_LEN] for v in seen.values() for i in range(0, len(v), _FP_LEN)},
            seen=seen,
        )
        self.cursors[source.name] = {"seen": seen}
        for url in source.urls:
            request = self._sitemap_request(source, url, depth=0)
            if request is not None:
                yield request

    # -- sitemap documents ---------------------------------------------------------------

    def _sitemap_request(self, source: Source, url: str, depth: int) -> Request | None:
        run = self.runs[source.name]
        if url in run.visited:
            return None  # an index listing itself, or two indexes sharing a child
        run.visited.add(url)
        # Not conditional: an unchanged robots.txt or index still lists sitemaps that may
        # have changed, and validators outlive failed runs (docs/kinds/sitemap.md).
        return self.request(source, url, self.parse_document,
                            meta={_DEPTH: depth})

    def parse_document(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        source: Source = self._source(response.meta[SOURCE_META])
        self.fetched(source)
        depth = response.meta[_DEPTH]
        if urlsplit(response.url).path == "/robots.txt":
            yield from self._robots(source, response, depth)
            return
        parsed = parse_sitemap(response.body, response.url)
        if parsed.error:
            yield self._unusable(source, response, parsed.error)
        for reject in parsed.rejects:
            yield self.reject(source, reject.reason, field=reject.field, url=response.url,
                              raw=reject.raw)
        for loc, name, text in parsed.bad_dates:
            self.dropped(source, {"url": loc, "dropped": {name: f"{text[:80]!r} is not a date"}})
        yield from self._children(source, parsed, response.url, depth)
        yield from self._pages(source, parsed, response.url)

    def _robots(self, source: Source, response: Response, depth: int) -> Iterator[Any]:
        urls, others = robots_sitemap_lines(response.body, response.url)
        for other in others:  # ftp://…: passed over without a word before
            yield self.reject(source, "not_http_url", field="loc", url=response.url,
                              raw={"loc": other[:500]})
        if not urls:
            yield self._unusable(source, response, "robots.txt lists no Sitemap: URLs")
        for url in urls:
            request = self._sitemap_request(source, url, depth + 1)
            if request is not None:
                yield request

    def _children(self, source: Source, parsed: ParsedSitemap, url: str,
                  depth: int) -> Iterator[Any]:
        run = self.runs[source.name]
        for child in parsed.sitemaps:
            if child.loc in run.visited:
                continue  # read already (a back-link is a cycle, not a level too deep)
            if depth + 1 > MAX_DEPTH:
                self.count(source, "too_deep")
                yield self.reject(source, "sitemap_too_deep", field="loc", url=url,
                                  raw={"loc": child.loc, "max_depth": MAX_DEPTH})
            elif run.since is not None and child.lastmod and not newer_than(child, run.since):
                self.count(source, "unchanged")
            elif (request := self._sitemap_request(source, child.loc, depth + 1)) is not None:
                yield request

    def _unusable(self, source: Source, response: Response, error: str) -> Rejection:
        return self.unusable(source, response, error, failure=f"not a usable sitemap: {error}")

    # -- choosing pages ------------------------------------------------------------------

    def _pages(self, source: Source, parsed: ParsedSitemap, url: str) -> Iterator[Any]:
        run = self.runs[source.name]
        if len(parsed.urls) > PROTOCOL_MAX_URLS:
            # Read whole (nothing is lost), but the publisher should split it: said once.
            self.count(source, "oversized_sitemaps")
            logger.warning("Source %s: %s lists %d URLs, more than the sitemap protocol's "
                           "%d; all are read", source.name, url, len(parsed.urls),
                           PROTOCOL_MAX_URLS, extra=self.log_extra)
        chosen, keep = self._choose(source, run, parsed.urls)
        room = len(chosen) if run.limit is None else max(0, run.limit - len(run.taken))
        self.count(source, "over_limit", len(chosen) - min(room, len(chosen)))
        for entry in chosen[:room]:
            run.taken.add(entry.loc)
            if entry.lastmod is None:
                keep.append(fingerprint(entry.loc))
            yield self._take(source, run, entry, url)
        self._remember(run, url, keep)

    def _choose(self, source: Source, run: _Run,
                entries: list[SitemapEntry]) -> tuple[list[SitemapEntry], list[str]]:
        """Entries to take, newest first (lastmod-less last, in document order), and the
        fingerprints of lastmod-less entries earlier runs already took."""
        dated: list[SitemapEntry] = []
        undated: list[SitemapEntry] = []
        keep: list[str] = []
        chosen: set[str] = set()
        for entry in entries:
            if run.pattern is not None and not run.pattern.search(entry.loc):
                self.count(source, "filtered")
            elif entry.loc in run.taken or entry.loc in chosen:
                # Listed twice in this crawl, or in this sitemap (it was fetched twice and
                # used up `limit` twice): taken once.
                continue
            elif entry.lastmod is None:
                fp = fingerprint(entry.loc)
                if fp in run.known:
                    keep.append(fp)
                    self.count(source, "unchanged")
                else:
                    undated.append(entry)
                    chosen.add(entry.loc)
            elif run.since is None or newer_than(entry, run.since):
                dated.append(entry)
                chosen.add(entry.loc)
            else:
                self.count(source, "unchanged")
        dated.sort(key=lambda e: e.lastmod or datetime.min, reverse=True)
        return dated + undated, keep

    def _remember(self, run: _Run, url: str, fingerprints: list[str]) -> None:
        run.seen.pop(url, None)
        # One sitemap of 60,000 undated URLs kept them all (a 720 KB cursor): the cap holds
        # for it too; URLs past it are taken again next run (re-seen, not lost).
        run.seen[url] = "".join(list(dict.fromkeys(fingerprints))[:MAX_SEEN])
        total = sum(len(v) for v in run.seen.values()) // _FP_LEN
        for old in list(run.seen):
            if total <= MAX_SEEN or old == url:
                break
            total -= len(run.seen.pop(old)) // _FP_LEN

    def _take(self, source: Source, run: _Run, entry: SitemapEntry,
              listed_in: str) -> Request | Signal:
        self.count(source, "entries")
        if not run.follow:
            return self._signal(source, entry, listed_in)
        return self.request(source, entry.loc, self.parse_page,
                            meta={_ENTRY: entry, _LISTED_IN: listed_in,
                                  "handle_httpstatus_list": [404, 410]})

    # -- pages ---------------------------------------------------------------------------

    def parse_page(self, response: Response, **kwargs: Any) -> Iterator[Signal | Rejection]:
        source = self._source(response.meta[SOURCE_META])
        entry: SitemapEntry = response.meta[_ENTRY]
        if response.status in (404, 410):
            # Sitemaps lag behind deletions: a gone page is counted and kept, not a failure.
            self.count(source, "missing")
            yield self.reject(source, "page_gone", field="url", url=entry.loc,
                              raw={"status": response.status,
                                   "sitemap": response.meta[_LISTED_IN]})
            return
        self.fetched(source)
        header = response.headers.get(b"Content-Type")
        content_type = header.decode("latin-1") if header else None
        if instead := not_html(response.body, content_type):
            # A PDF or an image listed in the sitemap: its bytes are no article text.
            self.count(source, "page_not_html")
            logger.warning("Source %s: %s is %s; keeping the sitemap's fields", source.name,
                           response.url, instead, extra=self.log_extra)
            yield self._signal(source, entry, response.meta[_LISTED_IN])
            return
        article = extract_article(response.body, response.url, content_type)
        yield self._signal(source, entry, response.meta[_LISTED_IN], title=article.title,
                           text=article.text, author=article.author,
                           published_at=article.published_at, language=article.language,
                           dropped=article.dropped)

    def _signal(self, source: Source, entry: SitemapEntry, listed_in: str,
                **found: Any) -> Signal:
        # The page's unreadable date is reported unless the sitemap dates the page.
        dated = entry.news_published or entry.lastmod
        return self.signal(
            source, url=entry.loc, feed_url=listed_in,
            title=found.get("title") or entry.news_title or slug_title(entry.loc),
            text=found.get("text"), author=found.get("author"),
            published_at=found.get("published_at") or entry.news_published or entry.lastmod,
            updated_at=entry.lastmod, tags=list(entry.news_keywords),
            language=found.get("language") or entry.news_language,
            dropped={} if dated else found.get("dropped") or {},
        )

    def _source(self, name: str) -> Source:
        return next(s for s in self.sources if s.name == name)
