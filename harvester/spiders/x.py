"""XSpider: X API v2 recent search, one query per source, resumed from the newest tweet of
the last successful run."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from scrapy import Request
from scrapy.http import Response

from harvester.config import get_credentials
from harvester.items import Rejection, Signal
from harvester.parsers.x import (
    SearchPage,
    is_tweet_id,
    parse_search,
    problem_message,
    snowflake_time,
)
from harvester.sources import Source
from harvester.spiders.base import SourceSpider

logger = logging.getLogger(__name__)

API_BASE = "https://api.x.com/2"
SEARCH_PATH = "/tweets/search/recent"
TWEET_FIELDS = ("created_at,public_metrics,author_id,lang,entities,conversation_id,note_tweet,"
                "referenced_tweets")
# The reposted tweet and its author: a repost's own text is cut at 140 characters.
EXPANSIONS = "author_id,referenced_tweets.id,referenced_tweets.id.author_id"
# Recent search only reaches back 7 days and answers 400 to an older since_id; a margin
# keeps a since_id that expires while the request is under way from failing the run.
SINCE_ID_MAX_AGE = timedelta(days=7) - timedelta(minutes=30)
# Error statuses whose body says what is wrong; 429/503 are left to the politeness
# middleware and to Scrapy's retry, and reach the errback when retries run out.
EXPLAINED_STATUSES = [400, 401, 403, 404]


def clamp_page_size(limit: int | None) -> int:
    """``max_results`` as recent search accepts it: 10 to 100 (default 100)."""
    return max(10, min(100, limit or 100))


def search_url(api_base: str, query: str, max_results: int, since_id: str | None,
               next_token: str | None) -> str:
    params: dict[str, str | int] = {
        "query": query,
        "max_results": max_results,
        "tweet.fields": TWEET_FIELDS,
        "expansions": EXPANSIONS,
        "user.fields": "username,name",
    }
    if since_id:
        params["since_id"] = since_id
    if next_token:
        params["next_token"] = next_token
    return f"{api_base.rstrip('/')}{SEARCH_PATH}?{urlencode(params)}"


def newer_id(a: str | None, b: str | None) -> str | None:
    """The larger of two tweet ids (ids grow with time; compared as numbers)."""
    if not a or not b:
        return a or b
    if not is_tweet_id(b):
        return a
    if not is_tweet_id(a):
        return b
    return a if int(a) >= int(b) else b


class XSpider(SourceSpider):
    """``scrapy crawl x -a source=NAME``: ``GET {api_base}/tweets/search/recent`` with the
    source's ``query``, ``limit`` tweets a page (clamped to 10..100), ``next_token`` paging
    up to ``max_pages`` (default 1) and ``since_id`` from the last successful run.

    Needs ``X_BEARER_TOKEN``; without it every x source is skipped. Yields a
    :class:`Signal` per tweet and a :class:`Rejection` per unusable tweet or per partial
    error sent next to the data (reason ``api_partial_error``: it does not fail the run).
    An error document (400/401/403, or a 200 without data and meta) fails the source.

    Stats (per source): ``fetched``, ``entries``, ``partial_errors``, ``since_id_expired``.
    Cursor kept on success: ``{"since_id": newest tweet id seen}``.
    """

    name = "x"
    kind = "x"

    def skip_reason(self, source: Source) -> str | None:
        token = get_credentials().x_bearer_token
        if token is None or not token.get_secret_value().strip():
            return "X_BEARER_TOKEN is not set; export it to crawl X sources"
        return None

    async def start_source(self, source: Source) -> AsyncIterator[Request]:
        since_id = self._since_id(source)
        # Kept even when nothing new arrives, so that a quiet run does not lose the point.
        self.cursors[source.name] = {"since_id": since_id} if since_id else {}
        yield self._page(source, since_id, next_token=None, page=1)

    def _since_id(self, source: Source) -> str | None:
        since_id = self.source_state(source).cursor.get("since_id")
        if not isinstance(since_id, str) or not since_id:
            return None
        if not is_tweet_id(since_id):
            # Stored by an older version from a bad meta.newest_id: X would refuse it.
            logger.warning("Source %s: the stored since_id %r is not a tweet id; searching "
                           "the whole window", source.name, since_id[:40], extra=self.log_extra)
            self.count(source, "since_id_invalid")
            return None
        minted = snowflake_time(since_id)
        if minted is not None and datetime.now(UTC) - minted > SINCE_ID_MAX_AGE:
            # Older than the search window: the API would refuse it; start afresh (dedupe
            # recognises tweets stored before).
            logger.info("Source %s: since_id %s is older than the 7-day search window; "
                        "searching the whole window", source.name, since_id, extra=self.log_extra)
            self.count(source, "since_id_expired")
            return None
        return since_id

    def _page(self, source: Source, since_id: str | None, next_token: str | None,
              page: int) -> Request:
        token = get_credentials().x_bearer_token
        assert token is not None, "skip_reason keeps sources without a token from starting"
        assert source.query, "the sources file requires a query for x sources"
        url = search_url(source.api_base or API_BASE, source.query,
                         clamp_page_size(source.limit), since_id, next_token)
        return self.request(
            source, url, self.parse_page,
            headers={"Authorization": f"Bearer {token.get_secret_value()}"},
            meta={"handle_httpstatus_list": EXPLAINED_STATUSES},
            cb_kwargs={"source": source, "since_id": since_id, "page": page},
        )

    def parse_page(self, response: Response, source: Source, since_id: str | None,
                   page: int) -> Iterator[Signal | Rejection | Request]:
        if response.status != 200:
            self.fail(source, response.url, problem_message(response.status, response.body))
            return
        parsed = parse_search(response.body)
        if parsed.problem:
            if parsed.unusable:
                yield self.unusable(source, response, parsed.problem)
            else:
                self.fail(source, response.url, parsed.problem)
            return
        self.fetched(source)
        yield from self._items(source, response.url, parsed)
        cursor = self.cursors.setdefault(source.name, {})
        newest = newer_id(cursor.get("since_id"), parsed.newest_id)
        if newest:
            cursor["since_id"] = newest
        if parsed.next_token and not (parsed.tweets or parsed.rejects):
            # Each request uses up the rate limit: five pages were asked for one tweet.
            logger.warning("Source %s: X sent an empty page with a next_token; paging "
                           "stopped", source.name, extra=self.log_extra)
        elif (parsed.next_token and page < (source.max_pages or 1)
                and not self.repeats_page_token(source, parsed.next_token)):
            yield self._page(source, since_id, parsed.next_token, page + 1)

    def _items(self, source: Source, url: str,
               parsed: SearchPage) -> Iterator[Signal | Rejection]:
        if parsed.errors:
            self.count(source, "partial_errors", len(parsed.errors))
            logger.warning("Source %s: %d partial errors next to the data of %s",
                           source.name, len(parsed.errors), url, extra=self.log_extra)
        for error in parsed.errors:
            field = error.get("parameter")
            yield self.reject(source, "api_partial_error",
                              field=field if isinstance(field, str) else None,
                              url=url, raw=error)
        for reject in parsed.rejects:
            yield self.reject(source, reject.reason, field=reject.field, url=url,
                              raw=reject.raw)
        self.count(source, "entries", len(parsed.tweets))
        for fields in parsed.tweets:
            yield self.signal(source, **fields)
