"""SourceSpider: what every spider shares — choosing its sources, skipping the ones that must
not run, resume state from earlier runs, request bookkeeping and failure reporting."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from scrapy import Request, Spider
from scrapy.crawler import Crawler
from scrapy.exceptions import CloseSpider, IgnoreRequest
from scrapy.http import Response
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.python.failure import Failure

from harvester import stats as hstats
from harvester.config import get_config
from harvester.exceptions import NotSent, RateLimited
from harvester.failures import describe_failure, safe_proxy
from harvester.items import Rejection, Signal
from harvester.messages import printable, short_url
from harvester.middlewares.conditional import CONDITIONAL_META, SOURCE_META
from harvester.parsers.encoding import MAX_DECOMPRESSED, inflate_limit
from harvester.services.state import SourceState, fetch_states
from harvester.signals import validators_seen
from harvester.sourcefile import sources_path
from harvester.sources import Source, SourcesError, load_sources

logger = logging.getLogger(__name__)


#: Characters of a rejection's evidence (its raw item as JSON) kept: an X page whose
#: ``data`` was one object instead of a list stored the whole 5 MB of it, per page.
RAW_MAX_CHARS = 4_000


def bounded_raw(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw``, or when its JSON is longer than ``RAW_MAX_CHARS`` the start of that JSON
    and its length."""
    try:
        text = json.dumps(raw, ensure_ascii=False, default=str)
    except (TypeError, ValueError):  # keys that are no strings: stored as they come
        return raw
    if len(text) <= RAW_MAX_CHARS:
        return raw
    return {"head": text[:RAW_MAX_CHARS], "chars": len(text)}


def content_type(response: Response) -> str | None:
    """The response's ``Content-Type`` header as text (its charset decides how the parsers
    decode the body), or None without one."""
    value = response.headers.get(b"Content-Type")
    return value.decode("latin-1") if value else None


def is_robots_forbidden(failure: Failure) -> bool:
    """Scrapy's RobotsTxtMiddleware refused the request (ROBOTSTXT_OBEY)."""
    return bool(failure.check(IgnoreRequest)) and not failure.check(RateLimited) and (
        "robots.txt" in str(failure.value))


class SourceSpider(Spider):
    """Base of the per-kind spiders.

    ``scrapy crawl KIND -a source=NAME`` (or ``NAME,NAME``); without ``-a source`` every
    enabled source of the kind. Subclasses set ``name`` and ``kind`` and implement
    :meth:`start_source`; they build requests with :meth:`request` (which tags them with their
    source, for politeness budgets, conditional GET and per-source stats) and items with
    :meth:`signal` / :meth:`reject`.

    A source is skipped, with one line saying why, when its kind is switched off
    (``HARVEST_<KIND>_ENABLED=false``), when it was disabled after failing too often, or when
    :meth:`skip_reason` says so (missing credentials).
    """

    kind: ClassVar[str]

    def __init__(self, source: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requested = [s.strip() for s in source.split(",") if s.strip()] if source else []
        self.sources: list[Source] = []
        self.config_error: str | None = None
        if source is not None and not self.requested:
            # An unset variable in a cron line or a Scrapyd call must not widen a one-source
            # job to every source of the kind.
            self.config_error = (f"-a source={source!r} names no source; name one (or several, "
                                 f"comma-separated), or leave -a source out to crawl every "
                                 f"enabled {self.kind} source")
        self.states: dict[str, SourceState] = {}
        # Resume points to keep when a source's run succeeds (since_id, …).
        self.cursors: dict[str, dict[str, Any]] = {}
        #: Per source, the URLs that answered 304: what they listed is seen again (the
        #: store moves those items' last_seen on, or retention took them for gone).
        self.unchanged: dict[str, list[str]] = {}
        # Paging tokens followed in this run, per source (see repeats_page_token).
        self._page_tokens: dict[str, set[str]] = {}
        self.inflate_limit = MAX_DECOMPRESSED  # set from the crawl's settings (from_crawler)

    @property
    def log_extra(self) -> dict[str, Any]:
        """``extra`` of this spider's log records: names the spider, as Scrapy's own records
        do, so each crawler's ``log_count/*`` counts only its own (OwnLogCount)."""
        return {"spider": self}

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> SourceSpider:
        spider: SourceSpider = super().from_crawler(crawler, *args, **kwargs)
        spider.sources = spider._select(crawler)
        # How far a gzip body served without Content-Encoding may inflate in our parsers:
        # as far as Scrapy lets one with it.
        spider.inflate_limit = inflate_limit(crawler.settings.getint("DOWNLOAD_MAXSIZE"))
        return spider

    def _select(self, crawler: Crawler) -> list[Source]:
        if self.config_error:
            return []
        try:
            sources = load_sources(sources_path(crawler.settings))
            if not self.requested:
                return sources.enabled(self.kind)
            chosen = [sources.get(name) for name in self.requested]
        except SourcesError as exc:
            self.config_error = str(exc)
            return []
        wrong = [s for s in chosen if s.kind != self.kind]
        if wrong:
            self.config_error = (
                f"source {wrong[0].name!r} is a {wrong[0].kind} source; "
                f"crawl it with `scrapy crawl {wrong[0].kind}` or `harvest crawl`"
            )
            return []
        return chosen

    # -- what subclasses provide ---------------------------------------------------------

    def skip_reason(self, source: Source) -> str | None:
        """Why this source cannot run now (e.g. missing credentials), or None."""
        return None

    def start_source(self, source: Source) -> AsyncIterator[Request]:
        """The first requests of one source."""
        raise NotImplementedError

    # -- helpers for subclasses ----------------------------------------------------------

    def source_state(self, source: Source) -> SourceState:
        # Not `state`: Scrapy's SpiderState extension owns `spider.state` when JOBDIR is set
        # (Scrapyd's jobs_dir does that).
        return self.states.get(source.name) or SourceState()

    def since(self, source: Source) -> datetime | None:
        """The start of the source's last run that ran to its end with nothing failed (the
        cursor's ``since``, which only such a run writes; migration 0012 took it from
        ``crawl_runs`` for sources crawled before), or None: then everything is new."""
        value = self.source_state(source).cursor.get("since")
        try:
            return datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            return None

    def request(self, source: Source, url: str, callback: Callable[..., Any], *,
                conditional: bool = False, **kwargs: Any) -> Request:
        """A request of this source. ``conditional=True`` sends the ETag/Last-Modified kept
        from earlier runs; the callback then gets a 304 when nothing changed (count it with
        ``self.count(source, "not_modified")``)."""
        meta = {SOURCE_META: source.name, **kwargs.pop("meta", {})}
        if conditional:
            meta[CONDITIONAL_META] = True
            meta["handle_httpstatus_list"] = [*meta.get("handle_httpstatus_list", ()), 304]
        kwargs.setdefault("errback", self.on_error)
        kwargs.setdefault("dont_filter", True)
        return Request(url, callback=callback, meta=meta, **kwargs)

    def repeats_page_token(self, source: Source, token: str) -> bool:
        """Whether paging leads to a token this run has followed already (Reddit's
        ``after``, X's ``next_token``, a rendered page's next link): pages that alternate
        between two would be asked for until ``max_pages``, the same items every time.
        Counted (``paging_loop``) and logged; the caller stops paging."""
        seen = self._page_tokens.setdefault(source.name, set())
        if token not in seen:
            seen.add(token)
            return False
        self.count(source, "paging_loop")
        logger.warning("Source %s: paging came back to %r, followed already in this run; "
                       "paging stopped (pages would repeat)", source.name, token[:80],
                       extra=self.log_extra)
        return True

    def not_modified(self, source: Source | str, response: Response) -> bool:
        """Whether ``response`` is a 304, counted: "not modified" when the request sent a
        validator, else a failure of the source (a server that answers "unchanged" to a
        request that asked nothing of the kind would never be read)."""
        if response.status != 304:
            return False
        request = response.request
        if request is not None and (b"If-None-Match" in request.headers
                                    or b"If-Modified-Since" in request.headers):
            self.count(source, "not_modified")
            name = source if isinstance(source, str) else source.name
            self.unchanged.setdefault(name, []).append(response.url)
        else:
            self.fail(source, response.url, "HTTP 304 (not modified) to a request that sent "
                      "no ETag or date to compare with: the server is misconfigured")
        return True

    def fetched(self, source: Source | str) -> None:
        name = source if isinstance(source, str) else source.name
        hstats.inc(self.crawler.stats, name, "fetched")

    def count(self, source: Source | str, event: str, n: int = 1) -> None:
        name = source if isinstance(source, str) else source.name
        hstats.inc(self.crawler.stats, name, event, n)

    def signal(self, source: Source, **fields: Any) -> Signal:
        fields.setdefault("fetched_at", datetime.now(UTC))
        if "dropped" in fields:
            self.dropped(source, fields)
        return Signal(source=source.name, kind=self.kind, **fields)

    def dropped(self, source: Source | str, fields: dict[str, Any]) -> None:
        """Count (and log the first of) the fields a parser had to leave out of an item,
        ``fields["dropped"]`` (field → what was wrong), and take that key out."""
        name = source if isinstance(source, str) else source.name
        item = fields.get("url") or fields.get("external_id")
        hstats.drop_fields(self.crawler.stats, name, fields.pop("dropped"), item, self)

    def reject(self, source: Source, reason: str, *, field: str | None = None,
               url: str | None = None, raw: dict[str, Any] | None = None) -> Rejection:
        return Rejection(source=source.name, reason=reason, field=field, url=url,
                         raw=bounded_raw(raw or {}))

    def unusable(self, source: Source | str, response: Response, error: str, *,
                 failure: str | None = None) -> Rejection:
        """A response that is not what the source serves (an HTML page where a feed or an
        API answer was, an empty body): it fails the source's run, with ``failure`` (or
        ``error``) as its last error, and is kept as the rejection ``unusable_document``
        with the start of the body, as evidence."""
        name = source if isinstance(source, str) else source.name
        self.fail(name, response.url, failure or error)
        # The next run would get a 304, "not modified", and the source would pass for
        # healthy while it still serves this.
        self.forget_validators(name, response.url)
        return Rejection(source=name, reason="unusable_document", field="document",
                         url=response.url, raw={
                             "error": error,
                             "head": response.body[:1000].decode("utf-8", "replace")})

    def forget_validators(self, source: str, url: str) -> None:
        """Keep no ETag/Last-Modified of this response: the next run asks for the whole
        document again, not whether it changed."""
        self.crawler.signals.send_catch_log(signal=validators_seen, source=source, url=url,
                                            etag=None, last_modified=None)

    def fail(self, source: Source | str, url: str, message: str) -> None:
        """Count a failure of this source that is not a failed request (e.g. an API error
        document answered with 200)."""
        name = source if isinstance(source, str) else source.name
        # A server's error text, and a URL: one line, nothing a terminal would obey (they
        # reach the log, the summary, `harvest sources` and alerts).
        url, message = printable(url), printable(message)
        hstats.inc(self.crawler.stats, name, "errors")
        hstats.set_last_error(self.crawler.stats, name, f"{short_url(url)}: {message}")
        logger.error("Source %s: %s failed: %s", name, url, message, extra=self.log_extra)

    def on_error(self, failure: Failure) -> None:
        request = failure.request  # type: ignore[attr-defined]
        source = request.meta.get(SOURCE_META, "?")
        if failure.check(NotSent):  # the crawl is stopping: its finish reason says so
            logger.info("Source %s: %s not sent: the crawl is stopping", source, request.url,
                        extra=self.log_extra)
            return
        if is_robots_forbidden(failure):
            # The site asked us not to: counted and reported, not an error. A source left
            # with nothing fetched because of it still fails its run (see runner/runs).
            self.count(source, "robots_forbidden")
            why = str(failure.value).partition(": ")[2]  # the robots.txt answered 5xx
            if why:
                # A server failing, not the site's wish: an error of the run, which then
                # keeps no resume point (a sitemap source whose page host's robots.txt
                # answered 503 once never asked for those pages again).
                self.fail(source, request.url, f"forbidden by robots.txt ({why})")
                return
            hstats.set_last_error(self.crawler.stats, source,
                                  f"{short_url(request.url)}: forbidden by robots.txt")
            logger.info("Source %s: %s is forbidden by robots.txt; not fetched", source,
                        request.url, extra=self.log_extra)
            return
        # A redirected request is named by the URL the sources file has: "/nothere: 404
        # (fix it in the sources file)" named a URL that is not in it.
        hops = request.meta.get("redirect_urls")
        url = f"{hops[0]} (redirected to {request.url})" if hops else request.url
        said = describe_failure(failure, listed=self._listed(source, request))
        if (proxy := request.meta.get("proxy")) and not failure.check(HttpError, IgnoreRequest):
            # The proxy refused or timed out, not the source: it blamed the feed's server.
            said += (f" (through the proxy {safe_proxy(proxy)} of the environment's "
                     "http_proxy/https_proxy; no_proxy=HOST bypasses it)")
        self.fail(source, url, said)

    def _listed(self, name: str, request: Request) -> bool:
        """Whether the request is for (or was redirected from) a URL the sources file
        lists for the source; an API source's requests all follow from its entry."""
        urls = next((getattr(s, "urls", None) or [] for s in self.sources if s.name == name),
                    [])
        asked = (request.meta.get("redirect_urls") or [request.url])[0]
        return not urls or asked in urls

    # -- the crawl -----------------------------------------------------------------------

    async def start(self) -> AsyncIterator[Request]:
        if self.config_error:
            # Reported here, once the crawl (and its stats) exist; nothing is fetched.
            logger.error("%s", self.config_error, extra=self.log_extra)
            self.crawler.stats.set_value("harvest/config_error", self.config_error)
            raise CloseSpider("config_error")
        if self.sources:
            self.states = await fetch_states(self.source_names) or {}
        for source in self.sources:
            reason = self._skip(source)
            if reason:
                logger.warning("Source %s skipped: %s", source.name, reason,
                               extra=self.log_extra)
                disabled = (get_config().kind_enabled(source.kind)
                            and self.source_state(source).disabled)
                hstats.set_skipped(self.crawler.stats, source.name, reason, disabled=disabled)
                continue
            async for request in self.start_source(source):
                yield request

    def _skip(self, source: Source) -> str | None:
        if not get_config().kind_enabled(source.kind):
            return (f"{source.kind} sources are switched off "
                    f"(HARVEST_{source.kind.upper()}_ENABLED=false)")
        state = self.source_state(source)
        if state.disabled:
            return (f"disabled after {state.consecutive_failures} failed runs in a row; "
                    f"re-enable it with `harvest sources enable {source.name}`")
        return self.skip_reason(source)

    def parse(self, response: Response, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} sets a callback on every request")
