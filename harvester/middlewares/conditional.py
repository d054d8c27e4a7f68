"""ConditionalGetMiddleware: ask for a feed only if it changed since the last run."""

from __future__ import annotations

import asyncio
import logging

import psycopg
from scrapy.crawler import Crawler
from scrapy.exceptions import NotConfigured
from scrapy.http import Request, Response
from scrapy.settings import BaseSettings

from harvester.config import get_config
from harvester.messages import first_line
from harvester.pipelines.numbers import switch
from harvester.services import database
from harvester.services.store import load_validators
from harvester.signals import validators_seen

logger = logging.getLogger(__name__)

SOURCE_META = "harvest_source"
# Set by spiders whose callback understands a 304 (SourceSpider.request(conditional=True)).
CONDITIONAL_META = "harvest_conditional"


def enabled(settings: BaseSettings) -> bool:
    return switch(settings, "HARVEST_CONDITIONAL_ENABLED", True)


class ConditionalGetMiddleware:
    """Sends ``If-None-Match``/``If-Modified-Since`` from the validators kept per source in
    ``sources_state``; a 304 then means "nothing new", not an error.

    Only requests carrying ``meta["harvest_source"]`` and ``meta["harvest_conditional"]`` are
    touched (an API request whose callback does not expect a 304 is not). Validators are
    loaded once, on the first such request; new ones are announced with the
    ``validators_seen`` signal and saved by the store step with the run.
    Settings: ``HARVEST_CONDITIONAL_ENABLED`` (True). Stats: ``harvest/conditional/sent``.
    """

    def __init__(self, crawler: Crawler) -> None:
        if not enabled(crawler.settings):
            raise NotConfigured
        self.crawler = crawler
        self._validators: dict[str, dict[str, str]] | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ConditionalGetMiddleware:
        return cls(crawler)

    async def process_request(self, request: Request) -> None:
        source = request.meta.get(SOURCE_META)
        if source is None or not request.meta.get(CONDITIONAL_META):
            return None
        validators = await self._load()
        known = validators.get(request.url)
        if known:
            if etag := known.get("etag"):
                request.headers.setdefault(b"If-None-Match", etag)
            if modified := known.get("last_modified"):
                request.headers.setdefault(b"If-Modified-Since", modified)
            self.crawler.stats.inc_value("harvest/conditional/sent")
        return None

    def process_response(self, request: Request, response: Response) -> Response:
        source = request.meta.get(SOURCE_META)
        if source is not None and response.status == 200 and request.meta.get(CONDITIONAL_META):
            etag = response.headers.get(b"ETag")
            modified = response.headers.get(b"Last-Modified")
            if etag or modified:
                self.crawler.signals.send_catch_log(
                    signal=validators_seen,
                    source=source,
                    url=request.url,
                    etag=etag.decode("latin-1") if etag else None,
                    last_modified=modified.decode("latin-1") if modified else None,
                )
        return response

    async def _load(self) -> dict[str, dict[str, str]]:
        if self._validators is not None:
            return self._validators
        async with self._lock:
            if self._validators is None:
                self._validators = await self._query()
        return self._validators

    async def _query(self) -> dict[str, dict[str, str]]:
        spider = self.crawler.spider
        names: list[str] = list(getattr(spider, "source_names", []))
        try:
            url = await asyncio.to_thread(database.resolve_url, get_config())
            async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
                return await load_validators(conn, names)
        except (database.DatabaseUnavailable, psycopg.Error) as exc:
            # Without validators every feed is fetched in full: slower, nothing lost.
            logger.warning("No cache validators loaded (%s); fetching every feed in full",
                           first_line(exc))
            return {}
