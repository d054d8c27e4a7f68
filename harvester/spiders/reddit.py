"""RedditSpider: subreddit listings and search, over the public JSON API or OAuth."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from scrapy import Request
from scrapy.crawler import Crawler
from scrapy.http import Response
from scrapy.settings import BaseSettings

from harvester import __version__, surrogates
from harvester.config import get_credentials
from harvester.items import Rejection, Signal
from harvester.parsers.reddit import ParsedListing, describe_error, parse_listing
from harvester.sources import Source
from harvester.spiders.base import SourceSpider

logger = logging.getLogger(__name__)

PUBLIC_BASE = "https://www.reddit.com"
OAUTH_BASE = "https://oauth.reddit.com"
TOKEN_PATH = "/api/v1/access_token"
MAX_LIMIT = 100  # Reddit never returns more than 100 children per page
# `new` listings stop paging once a page reaches posts this much older than the last
# successful run: later pages hold only posts an earlier run already stored.
CAUGHT_UP_MARGIN = timedelta(hours=1)
# Statuses whose Reddit error document says more than "HTTP 403" (private, banned …).
_EXPLAINED = [304, 400, 401, 403, 404]
_USERNAME = re.compile(r"^[A-Za-z0-9_-]{3,20}$")


@dataclass(frozen=True, slots=True)
class RedditConfig:
    """The User-Agent Reddit asks API clients for: ``<platform>:<app id>:<version>
    (by /u/<username>)``, the username from ``HARVEST_REDDIT_USERNAME``."""

    user_agent: str
    username: str | None

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> RedditConfig:
        raw = (settings.get("HARVEST_REDDIT_USERNAME") or "").strip()
        username = raw.removeprefix("/").removeprefix("u/") or None
        if username is not None and not _USERNAME.match(username):
            raise ValueError(
                f"HARVEST_REDDIT_USERNAME {raw!r} is not a Reddit username "
                "(3-20 letters, digits, '_' or '-')"
            )
        agent = f"python:harvester:{__version__}"
        return cls(f"{agent} (by /u/{username})" if username else agent, username)


class RedditSpider(SourceSpider):
    """``scrapy crawl reddit -a source=NAME``: one subreddit listing (hot, new, top, rising)
    or a search per source, ``after``-paged up to ``max_pages``.

    Public JSON (``raw_json=1``) unless ``REDDIT_CLIENT_ID``/``REDDIT_CLIENT_SECRET`` are
    set; then an OAuth client-credentials token is fetched per source and listings are read
    from ``https://oauth.reddit.com`` (or ``api_base``) with it. Settings:
    ``HARVEST_REDDIT_USERNAME`` (the ``by /u/…`` part of the User-Agent). Stats: the
    per-source ``harvest/source/<name>/…`` counters (fetched, entries, errors, not_modified).
    """

    name = "reddit"
    kind = "reddit"

    def __init__(self, source: str | None = None, **kwargs: Any) -> None:
        super().__init__(source, **kwargs)
        self.config = RedditConfig(f"python:harvester:{__version__}", None)
        self._tokens: dict[str, str] = {}
        self._bad_setting: str | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> RedditSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        assert isinstance(spider, RedditSpider)
        try:
            spider.config = RedditConfig.from_settings(crawler.settings)
        except ValueError as exc:
            # Reported per source, like missing credentials, in the crawl summary.
            spider._bad_setting = str(exc)
        return spider

    def skip_reason(self, source: Source) -> str | None:
        if self._bad_setting:
            return self._bad_setting
        creds = get_credentials()
        if bool(creds.reddit_client_id) == bool(creds.reddit_client_secret):
            return None
        have, lack = "REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET"
        if not creds.reddit_client_id:
            have, lack = lack, have
        return (f"{have} is set but {lack} is not; set both for OAuth, "
                "or neither for the public JSON API")

    async def start_source(self, source: Source) -> AsyncIterator[Request]:
        if self.config.username is None:
            logger.warning("HARVEST_REDDIT_USERNAME is not set: Reddit asks for a contact "
                           "username in the User-Agent (%s)", self.config.user_agent,
                           extra=self.log_extra)
        if source.time_filter and _listing(source) not in ("top", "search"):
            logger.warning("Source %s: time_filter applies only to top and search listings; "
                           "ignored for %s", source.name, _listing(source), extra=self.log_extra)
        if _oauth():
            yield self._token_request(source)
        else:
            yield self._page_request(source, page=1)

    # -- OAuth ---------------------------------------------------------------------------

    def _token_request(self, source: Source) -> Request:
        creds = get_credentials()
        assert creds.reddit_client_id and creds.reddit_client_secret
        pair = (f"{creds.reddit_client_id.get_secret_value()}:"
                f"{creds.reddit_client_secret.get_secret_value()}")
        return self.request(
            source, (source.auth_base or PUBLIC_BASE) + TOKEN_PATH, self.parse_token,
            method="POST", body=urlencode({"grant_type": "client_credentials"}),
            headers={"User-Agent": self.config.user_agent,
                     "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
                     "Content-Type": "application/x-www-form-urlencoded"},
            cb_kwargs={"source": source}, meta={"handle_httpstatus_list": [400, 401, 403]},
        )

    def parse_token(self, response: Response, source: Source) -> Iterator[Request]:
        url = response.url
        if response.status in (401, 403):
            self.fail(source, url, f"Reddit refused the client credentials (HTTP "
                                   f"{response.status}); check REDDIT_CLIENT_ID and "
                                   "REDDIT_CLIENT_SECRET")
            return
        try:
            doc = surrogates.json_loads(response.body)
        except (ValueError, UnicodeDecodeError):
            doc = None
        token = doc.get("access_token") if isinstance(doc, dict) else None
        if response.status != 200 or not isinstance(token, str) or not token:
            why = doc.get("error") if isinstance(doc, dict) else None
            self.fail(source, url, f"no access token in Reddit's answer (HTTP "
                                   f"{response.status}, {why or 'not a token document'})")
            return
        self._tokens[source.name] = token
        yield self._page_request(source, page=1)

    # -- listings ------------------------------------------------------------------------

    def _page_request(self, source: Source, page: int, after: str | None = None,
                      count: int = 0) -> Request:
        headers = {"User-Agent": self.config.user_agent, "Accept": "application/json"}
        token = self._tokens.get(source.name)
        if token:
            headers["Authorization"] = f"bearer {token}"
        return self.request(
            source, listing_url(source, oauth=token is not None, after=after, count=count),
            self.parse_page, headers=headers,
            cb_kwargs={"source": source, "page": page, "after": after, "count": count},
            meta={"handle_httpstatus_list": _EXPLAINED},
        )

    def parse_page(self, response: Response, source: Source, page: int, after: str | None,
                   count: int) -> Iterator[Signal | Rejection | Request]:
        if self.not_modified(source, response):
            return
        if response.status != 200:
            self.fail(source, response.url, f"HTTP {response.status}: {_http_detail(response)}")
            return
        if _redirected_to_search(response):
            self.fail(source, response.url, f"r/{source.subreddit} does not exist (Reddit "
                                            "answered with a subreddit search)")
            return
        parsed = parse_listing(response.body)
        if parsed.error:
            yield from self._unusable(source, response, parsed.error, parsed.unusable)
            return
        self.fetched(source)
        for reject in parsed.rejects:
            yield self.reject(source, reject.reason, field=reject.field, url=response.url,
                              raw=reject.raw)
        self.count(source, "entries", len(parsed.posts))
        for post in parsed.posts:
            yield self.signal(source, **post)
        seen = count + len(parsed.posts) + len(parsed.rejects)
        if self._wants_next(source, parsed, page):
            yield self._page_request(source, page + 1, parsed.after, seen)

    def _unusable(self, source: Source, response: Response, error: str,
                  broken: bool) -> Iterator[Rejection]:
        if broken:
            yield self.unusable(source, response, error)
        else:
            self.fail(source, response.url, f"API error: {error}")

    def _wants_next(self, source: Source, parsed: ParsedListing, page: int) -> bool:
        if not parsed.after or page >= (source.max_pages or 1):
            return False
        if not (parsed.posts or parsed.rejects):
            logger.warning("Source %s: Reddit sent an empty page with the cursor %s; "
                           "paging stopped", source.name, parsed.after, extra=self.log_extra)
            return False
        if self.repeats_page_token(source, parsed.after):
            return False
        last = self.since(source)  # a partly failed run's missed pages come again
        oldest = parsed.oldest
        if _newest_first(source) and last and oldest and oldest < last - CAUGHT_UP_MARGIN:
            logger.info("Source %s: page %d reaches posts older than the last run; "
                        "paging stopped", source.name, page, extra=self.log_extra)
            return False
        return True


def listing_url(source: Source, *, oauth: bool, after: str | None = None,
                count: int = 0) -> str:
    """The listing (or search) URL of one page of a source."""
    listing = _listing(source)
    base = source.api_base or (OAUTH_BASE if oauth else PUBLIC_BASE)
    params = {"raw_json": "1", "limit": str(min(source.limit or MAX_LIMIT, MAX_LIMIT))}
    if listing == "search":
        assert source.query is not None  # Source guarantees it for a search
        path = f"/r/{source.subreddit}/search" if source.subreddit else "/search"
        params.update({"q": source.query, "sort": "new"})
        if source.subreddit:
            params["restrict_sr"] = "1"
    else:
        path = f"/r/{source.subreddit}/{listing}"
    if source.time_filter and listing in ("top", "search"):
        params["t"] = source.time_filter
    if after:
        params.update({"after": after, "count": str(count)})
    # The OAuth host serves JSON on the bare paths; the public site needs ".json".
    return f"{base}{path}{'' if oauth else '.json'}?{urlencode(params)}"


def _listing(source: Source) -> str:
    return source.listing or "hot"


def _newest_first(source: Source) -> bool:
    return _listing(source) in ("new", "search")


def _oauth() -> bool:
    creds = get_credentials()
    return bool(creds.reddit_client_id and creds.reddit_client_secret)


def _redirected_to_search(response: Response) -> bool:
    # An unknown subreddit's listing redirects to a search for subreddits of that name.
    return bool(response.meta.get("redirect_urls")) and urlsplit(
        response.url).path.startswith("/subreddits/search")


def _http_detail(response: Response) -> str:
    try:
        doc = surrogates.json_loads(response.body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if isinstance(doc, dict):
        return describe_error(doc)
    return "no error document"
