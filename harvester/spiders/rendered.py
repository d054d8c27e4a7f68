"""RenderedSpider: pages that build their content in JavaScript, read after Chromium ran them.

Scrapy downloads through scrapy-playwright (Debian's Chromium) for this spider only; every
other spider in the same process keeps Scrapy's plain HTTP handler and never starts a browser.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, cast
from urllib.parse import urljoin

from parsel import Selector
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    PlaywrightContextManager,
)
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Request as PlaywrightRequest
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.exceptions import NotSupported
from scrapy.http import Response
from scrapy.settings import BaseSettings
from scrapy_playwright.handler import Config as PlaywrightConfig
from scrapy_playwright.headers import use_scrapy_headers
from twisted.python.failure import Failure
from w3lib.html import get_base_url

from harvester.failures import describe_failure
from harvester.items import Rejection, Signal
from harvester.messages import first_line
from harvester.middlewares.conditional import SOURCE_META
from harvester.middlewares.polite import stopping
from harvester.parsers.article import parse_date as parse_article_date
from harvester.parsers.selectors import first, is_xpath, joined, select, values
from harvester.pipelines import numbers
from harvester.services.urls import in_page_anchor, item_link, web_link
from harvester.sources import Source
from harvester.spiders.base import SourceSpider

logger = logging.getLogger(__name__)

HANDLER = "scrapy_playwright.handler.ScrapyPlaywrightDownloadHandler"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# Resources a listing never needs to render its rows: not fetched, for the site's sake and ours.
SKIPPED_RESOURCES = frozenset({"image", "media", "font"})
# Field name in the source entry → Signal attribute; any other field goes to ``engagement``.
FIELD_MAP = {"url": "url", "id": "external_id", "title": "title", "text": "text",
             "author": "author", "published": "published_at", "updated": "updated_at",
             "tags": "tags", "link": "url", "language": "language"}
_DAY_FIRST = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$")
_NUMBER = re.compile(r"^[+-]?(?:[1-9]\d{0,2}(?:,\d{3})+|[1-9]\d*|0)(?:\.\d+)?$")

# A cheap digest of the matched items, computed in the page: pagination by click waits until
# it changes. Takes [selector, is_xpath].
_FINGERPRINT_JS = """([sel, isXpath]) => {
  let nodes = [];
  if (isXpath) {
    const r = document.evaluate(sel, document, null, XPathResult.ORDERED_NODE_SNAPSHOT_TYPE);
    for (let i = 0; i < r.snapshotLength; i++) nodes.push(r.snapshotItem(i));
  } else {
    nodes = Array.from(document.querySelectorAll(sel));
  }
  let h = 0;
  for (const n of nodes) {
    const s = n.outerHTML || n.textContent || "";
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0;
  }
  return nodes.length ? nodes.length + ":" + h : "";
}"""
_CHANGED_JS = ("([sel, isXpath, before]) => { const fp = (" + _FINGERPRINT_JS + ")([sel, isXpath]);"
               " return fp !== '' && fp !== before; }")
_DISABLED_JS = ("el => el.disabled === true || el.getAttribute('aria-disabled') === 'true'"
                " || el.classList.contains('disabled')")


@dataclass(frozen=True, slots=True)
class RenderedConfig:
    """``HARVEST_CHROMIUM_PATH`` (/usr/bin/chromium), ``HARVEST_RENDERED_WAIT_SECONDS`` (20:
    how long ``wait_for`` and a click's new items may take)."""

    chromium_path: str
    wait_seconds: float
    remote_browser: bool

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> RenderedConfig:
        return cls(
            chromium_path=settings.get("HARVEST_CHROMIUM_PATH") or DEFAULT_CHROMIUM,
            # 0 is no timeout at all to Playwright (a page that never shows wait_for hung
            # the crawl), a negative or huge one 1 ms, NaN a JSON error.
            wait_seconds=numbers.number(settings, "HARVEST_RENDERED_WAIT_SECONDS", 20.0, float,
                                        above=0, high=3600),
            remote_browser=bool(settings.get("PLAYWRIGHT_CDP_URL")
                                or settings.get("PLAYWRIGHT_CONNECT_URL")),
        )

    @property
    def wait_ms(self) -> float:
        return self.wait_seconds * 1000


class RenderedSpider(SourceSpider):
    """``scrapy crawl rendered -a source=NAME``: each start URL is opened in Chromium, read
    once ``wait_for`` matches, and every ``item_selector`` match becomes a Signal; pages
    follow by URL (``next_page``: a link selector or a ``{page}`` template) or by clicking
    (``next_click``), up to ``max_pages`` (1).

    Settings: ``HARVEST_CHROMIUM_PATH``, ``HARVEST_RENDERED_WAIT_SECONDS`` (see
    :class:`RenderedConfig`); ``PLAYWRIGHT_*`` as scrapy-playwright documents them.
    Stats (per source): ``fetched`` per rendered page, ``entries``, ``missing`` (a field
    selector matched nothing), ``empty_pages``, ``dropped_fields`` (a date that could not
    be read); ``playwright/*``.
    """

    name = "rendered"
    kind = "rendered"
    custom_settings: ClassVar[dict[str, Any]] = {
        "DOWNLOAD_HANDLERS": {"http": HANDLER, "https": HANDLER},
        "PLAYWRIGHT_BROWSER_TYPE": "chromium",
        # Few pages at once: each one is a renderer process holding tens of MB.
        "PLAYWRIGHT_MAX_PAGES_PER_CONTEXT": 4,
        "PLAYWRIGHT_DEFAULT_NAVIGATION_TIMEOUT": 30_000,
        "PLAYWRIGHT_PROCESS_REQUEST_HEADERS": "harvester.spiders.rendered.browser_headers",
        "PLAYWRIGHT_ABORT_REQUEST": "harvester.spiders.rendered.skip_resource",
        "PLAYWRIGHT_BROWSER_PROVIDER": "harvester.spiders.rendered.SharedBrowserProvider",
    }
    config: RenderedConfig
    by_name: dict[str, Source]
    # When the source last asked the site for something (navigation or click).
    last_action: dict[str, float]

    @classmethod
    def update_settings(cls, settings: BaseSettings) -> None:
        super().update_settings(settings)
        path = settings.get("HARVEST_CHROMIUM_PATH") or DEFAULT_CHROMIUM
        # --disable-dev-shm-usage: containers give /dev/shm 64 MB, too little for Chromium.
        settings.set("PLAYWRIGHT_LAUNCH_OPTIONS", {
            "executable_path": path, "headless": True,
            "args": ["--no-sandbox", "--disable-dev-shm-usage"],
        }, priority="spider")

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> RenderedSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        assert isinstance(spider, RenderedSpider)
        spider.config = RenderedConfig.from_settings(crawler.settings)
        spider.by_name = {s.name: s for s in spider.sources}
        spider.last_action = {}
        return spider

    # -- requests ------------------------------------------------------------------------

    async def start_source(self, source: Source) -> AsyncIterator[Request]:
        problem = self._problem(source)
        if problem:
            self.fail(source, source.urls[0], problem)
            return
        for url in source.urls:
            yield self._page_request(source, url, 1)

    def _problem(self, source: Source) -> str | None:
        """Why this source cannot be crawled as configured, in one sentence."""
        fields = source.fields or {}
        if not {"url", "link", "id"} & fields.keys():
            return "fields needs a 'url' or an 'id' selector, or no item could be told apart"
        if source.next_page and source.next_click:
            return "set next_page (pagination by URL) or next_click (by clicking), not both"
        if not self.config.remote_browser and not os.access(self.config.chromium_path, os.X_OK):
            return (f"Chromium is not installed at {self.config.chromium_path}; install it "
                    "with `sudo apt-get install -y chromium` or set HARVEST_CHROMIUM_PATH")
        return None

    def _page_request(self, source: Source, url: str, page_no: int) -> Request:
        # The page stays open for the callback (wait_for, clicks) and is closed there or in
        # the errback, always: a page left open keeps its renderer process alive.
        return self.request(
            source, url, self.parse_page, errback=self.on_render_error,
            cb_kwargs={"page_no": page_no},
            meta={"playwright": True, "playwright_include_page": True,
                  "playwright_context": f"source-{source.name}",
                  "harvest_conditional": False},
        )

    # -- rendered pages ------------------------------------------------------------------

    async def parse_page(self, response: Response,
                         page_no: int = 1) -> AsyncIterator[Signal | Rejection | Request]:
        source = self.by_name[response.meta[SOURCE_META]]
        page: Page = response.meta["playwright_page"]
        self.last_action[source.name] = max(self.last_action.get(source.name, 0.0),
                                            time.monotonic())
        next_url = None
        try:
            html = await self._rendered(source, page, response.url)
            if html is None:
                return
            found = 0
            for item in self._read(source, html, page.url, first=page_no == 1):
                found += 1
                yield item
            if source.next_click:
                async for item in self._click_through(source, page, page_no):
                    yield item
            elif found:
                if page_no == 1:
                    self.repeats_page_token(source, response.url)  # where paging started
                next_url = self._next_url(source, html, page.url, response.url, page_no)
        finally:
            await _close(page)
        if next_url and not self.repeats_page_token(source, next_url):
            yield self._page_request(source, next_url, page_no + 1)

    async def _rendered(self, source: Source, page: Page, url: str) -> str | None:
        """The page's HTML once ``wait_for`` matches, or None (failure counted)."""
        try:
            await page.wait_for_selector(_pw(source.wait_for or ""), state="attached",
                                         timeout=self.config.wait_ms)
            html = await page.content()
        except PlaywrightTimeoutError:
            self.fail(source, url, f"the page did not show wait_for {source.wait_for!r} "
                                   f"within {self.config.wait_seconds:g} s")
            return None
        except PlaywrightError as exc:
            self.fail(source, url, f"the browser could not read the page ({first_line(exc)})")
            return None
        self.fetched(source)
        return html

    def _read(self, source: Source, html: str, url: str,
              first: bool = False) -> Iterator[Signal | Rejection]:
        rows = select(Selector(text=html), source.item_selector or "")
        if not rows and first:
            # A redesign that silently yields nothing is what an operator must hear about.
            self.count(source, "empty_pages")
            self.fail(source, url, f"no item matched item_selector {source.item_selector!r} "
                                   "on the rendered page")
        elif not rows:  # past the last page of a {page} template: the normal end
            logger.info("Source %s: no more items at %s", source.name, url, extra=self.log_extra)
        self.count(source, "entries", len(rows))
        fetched_at = datetime.now(UTC)
        base = get_base_url(html, url)  # a <base href>, as a browser resolves the links
        for row in rows:
            values, missing = extract_row(row, source.fields or {}, base, url)
            self.count(source, "missing", len(missing))
            yield self._item(source, values, row, url, fetched_at)

    def _item(self, source: Source, values: dict[str, Any], row: Selector, url: str,
              fetched_at: datetime) -> Signal | Rejection:
        dropped = values.pop("dropped", None)
        if not (values.get("url") or values.get("link") or values.get("id")):
            raw = {**_jsonable(values), "html": row.get()[:2000]}
            if dropped:
                raw["why"] = dropped["url"]
            return self.reject(source, "missing_url_and_id", field="url", url=url, raw=raw)
        fields: dict[str, Any] = {"engagement": {}}
        if dropped:  # kept by its id, without the link
            fields["dropped"] = dict(dropped)
        for name, value in values.items():
            target = FIELD_MAP.get(name)
            if name == "link" and "url" in values:
                continue  # an alias: url wins
            if target in ("published_at", "updated_at"):
                text, value = value, parse_date(value)
                if value is None:
                    fields.setdefault("dropped", {})[target] = f"{text[:80]!r} is not a date"
            if target is None:
                fields["engagement"][name] = value
            else:
                fields[target] = value
        if anchor := in_page_anchor(fields.get("url"), url):
            fields["canonical_url"] = anchor  # as a pages listing's: see urls.in_page_anchor
        # feed_url: the rendered page it was read from, as a pages listing's (was NULL).
        return self.signal(source, fetched_at=fetched_at, feed_url=url, **fields)

    def _next_url(self, source: Source, html: str, page_url: str, request_url: str,
                  page_no: int) -> str | None:
        limit = source.max_pages or 1
        if not source.next_page or page_no >= limit:
            return None
        if "{page}" in source.next_page:
            return urljoin(request_url, source.next_page.replace("{page}", str(page_no + 1)))
        found = first(Selector(text=html), source.next_page, link=True)
        # javascript:load(2) is no page to ask for (Request raised on it, every run).
        href = web_link(get_base_url(html, page_url), found) if found else None
        return href if href and href not in (page_url, request_url) else None

    # -- pagination by clicking ------------------------------------------------------------

    async def _click_through(self, source: Source, page: Page,
                             page_no: int) -> AsyncIterator[Signal | Rejection]:
        """Click ``next_click`` until it is gone or disabled, or ``max_pages`` is reached."""
        item_sel = source.item_selector or ""
        xpath = is_xpath(item_sel)
        for number in range(page_no + 1, (source.max_pages or 1) + 1):
            button = page.locator(_pw(source.next_click or "")).first
            try:
                if not await button.count() or await button.evaluate(_DISABLED_JS):
                    logger.info("Source %s: last page reached (%d)", source.name, number - 1,
                                extra=self.log_extra)
                    return
                before = await page.evaluate(_FINGERPRINT_JS, [item_sel, xpath])
                # A crawl told to stop (SIGTERM, Ctrl-C, Scrapyd's cancel) clicked on to
                # max_pages, sleeping out each paced wait: 88 s after a SIGTERM.
                if not await self._pace(source) or stopping(self.crawler):
                    logger.info("Source %s: the crawl is stopping; no click past page %d",
                                source.name, number - 1, extra=self.log_extra)
                    return
                await button.click(timeout=self.config.wait_ms)
                await page.wait_for_function(_CHANGED_JS, arg=[item_sel, xpath, before],
                                             timeout=self.config.wait_ms, polling=100)
                await self._settle(page, item_sel, xpath)
                # Counted from the answer, not the click: the request left at some point
                # in between, and the budget must hold at the server's end.
                self.last_action[source.name] = max(self.last_action.get(source.name, 0.0),
                                                    time.monotonic())
                html = await page.content()
            except PlaywrightTimeoutError:
                self.fail(source, page.url, f"clicking {source.next_click!r} did not bring new "
                          f"items within {self.config.wait_seconds:g} s (page {number})")
                return
            except PlaywrightError as exc:
                self.fail(source, page.url, f"clicking {source.next_click!r} failed on page "
                          f"{number} ({first_line(exc)})")
                return
            self.fetched(source)
            for item in self._read(source, html, page.url):
                yield item

    async def _settle(self, page: Page, item_sel: str, xpath: bool) -> None:
        """Wait until the items stop changing (a table filled row by row), briefly."""
        deadline = time.monotonic() + self.config.wait_seconds
        last = await page.evaluate(_FINGERPRINT_JS, [item_sel, xpath])
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            now = await page.evaluate(_FINGERPRINT_JS, [item_sel, xpath])
            if now == last:
                return
            last = now

    async def _pace(self, source: Source) -> bool:
        """Clicks fetch from the site behind Scrapy's back: keep them within the source's
        ``requests_per_minute`` too (slots are reserved, so concurrent pages queue up).
        False when the crawl began to stop during the wait."""
        if not source.requests_per_minute:
            return True
        now = time.monotonic()
        due = max(now, self.last_action.get(source.name, 0.0)
                  + 60.0 / source.requests_per_minute)
        self.last_action[source.name] = due
        while (left := due - time.monotonic()) > 0:
            if stopping(self.crawler):
                return False
            await asyncio.sleep(min(left, 0.25))
        return True


    # -- errors --------------------------------------------------------------------------

    async def on_render_error(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        page = request.meta.get("playwright_page")
        if isinstance(page, Page):
            await _close(page)
        exc = failure.value
        if isinstance(exc, PlaywrightTimeoutError):
            message = "the page did not load in time"
        elif isinstance(exc, PlaywrightError):
            message = f"the browser could not load the page ({first_line(exc)})"
        else:
            message = describe_failure(failure)
        self.fail(request.meta.get(SOURCE_META, "?"), request.url, message)


# -- browser hooks (named in custom_settings) ------------------------------------------------


class SharedBrowserProvider:
    """One Playwright driver and one Chromium for the whole process (scrapy-playwright's
    ``PLAYWRIGHT_BROWSER_PROVIDER``). Without it every download handler starts its own: two
    per crawler (http and https) and one crawler per source under ``harvest crawl``. Each
    handler still opens its own browser contexts, so sources share no cookies or storage;
    the browser closes when its last handler does."""

    _lock: ClassVar[asyncio.Lock | None] = None
    _users: ClassVar[int] = 0
    _playwright: ClassVar[Playwright | None] = None
    _manager: ClassVar[PlaywrightContextManager | None] = None
    _browser: ClassVar[Browser | None] = None

    def __init__(self, config: PlaywrightConfig) -> None:
        self.config = config
        self.started = False

    @classmethod
    def _guard(cls) -> asyncio.Lock:
        if cls._lock is None:
            cls._lock = asyncio.Lock()
        return cls._lock

    async def start(self) -> None:
        async with self._guard():
            cls = type(self)
            if cls._playwright is None:
                cls._manager = PlaywrightContextManager()
                cls._playwright = await cls._manager.start()
            cls._users += 1
            self.started = True

    async def launch_browser(self) -> Browser:
        async with self._guard():
            cls = type(self)
            assert cls._playwright is not None, "start() comes first"
            if cls._browser is None or not cls._browser.is_connected():
                cls._browser = await self._launch(cls._playwright)
            return cast(Browser, _BrowserLease(cls._browser))

    async def _launch(self, playwright: Playwright) -> Browser:
        browser_type = getattr(playwright, self.config.browser_type_name)
        cfg = self.config
        if cfg.cdp_url:
            return cast(Browser, await browser_type.connect_over_cdp(cfg.cdp_url,
                                                                     **cfg.cdp_kwargs))
        if cfg.connect_url:
            return cast(Browser, await browser_type.connect(cfg.connect_url,
                                                            **cfg.connect_kwargs))
        logger.info("Launching the shared %s browser", browser_type.name)
        return cast(Browser, await browser_type.launch(**cfg.launch_options))

    async def launch_persistent_context(self, context_kwargs: dict[str, Any]) -> BrowserContext:
        raise NotSupported("persistent contexts are not used by rendered sources")

    async def close(self) -> None:
        if not self.started:
            return
        self.started = False
        async with self._guard():
            cls = type(self)
            cls._users -= 1
            if cls._users:
                return
            browser, manager = cls._browser, cls._manager
            cls._browser = cls._playwright = cls._manager = None
            if browser is not None and browser.is_connected():
                await browser.close()
            if manager is not None:
                await manager.__aexit__(None, None, None)


class _BrowserLease:
    """The shared browser as one handler sees it: closing it only ends that handler's use
    (the provider closes the browser itself)."""

    def __init__(self, browser: Browser) -> None:
        self._browser = browser

    def __getattr__(self, name: str) -> Any:
        return getattr(self._browser, name)

    async def close(self, **kwargs: Any) -> None:
        return None


async def browser_headers(*, browser_type_name: str, playwright_request: PlaywrightRequest,
                          scrapy_request_data: dict[str, Any]) -> dict[str, str]:
    """Scrapy's headers minus conditional ones: an unchanged HTML shell says nothing about
    the data its scripts fetch, and a 304 would leave the browser an empty page."""
    headers = await use_scrapy_headers(browser_type_name=browser_type_name,
                                       playwright_request=playwright_request,
                                       scrapy_request_data=scrapy_request_data)
    return {k: v for k, v in headers.items()
            if k.lower() not in ("if-none-match", "if-modified-since")}


def skip_resource(request: PlaywrightRequest) -> bool:
    return request.resource_type in SKIPPED_RESOURCES


# -- extraction (pure) -----------------------------------------------------------------------


def _pw(expr: str) -> str:
    """The selector in Playwright's syntax."""
    return f"xpath={expr.strip()}" if is_xpath(expr) else expr


def extract_row(row: Selector, fields: dict[str, str], base: str,
                page_url: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The row's field values and the names of the fields whose selector found nothing.
    Links resolve against ``base`` (the page's ``<base href>``, else its address); one
    that is no address of an item of its own (``javascript:``, ``href="#"``, one that does
    not parse) is left out, and why is under ``"dropped"``."""
    values_: dict[str, Any] = {}
    missing: list[str] = []
    for name, expr in fields.items():
        value: Any
        if name == "tags":
            value = values(row, expr)
        elif name in ("url", "link"):
            found = first(row, expr, link=True)
            value, why = item_link(base, found, page_url or base) if found else (None, None)
            if why:
                values_.setdefault("dropped", {})["url"] = why
                continue
        else:
            value = joined(row, expr, "\n" if name == "text" else " ")
        if value:
            values_[name] = value if name in FIELD_MAP else _number(value)
        else:
            missing.append(name)
    return values_, missing


def _number(value: str) -> Any:
    """``"1,234"`` → 1234 for engagement counts; anything else (codes like ``0217``) as is."""
    if _NUMBER.match(value):
        plain = value.replace(",", "")
        return float(plain) if "." in plain else int(plain)
    return value


def parse_date(value: str) -> datetime | None:
    """Numeric dates are day-first (``15/03/2024``, as registries outside the US write
    them); anything else as the article extractor reads dates (ISO 8601, RFC 822, words)."""
    match = _DAY_FIRST.match(value.strip())
    if match:
        day, month, year = (int(g) for g in match.groups())
        try:
            return datetime(year, month, day, tzinfo=UTC)
        except ValueError:
            return None
    return parse_article_date(value)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}


async def _close(page: Page) -> None:
    """Close a page; one whose browser already went away is closed enough."""
    if not page.is_closed():
        with suppress(PlaywrightError):
            await page.close()
