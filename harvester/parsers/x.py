"""X API v2 search responses (``tweets/search/recent``; ``tweets/search/all`` has the same
shape): pure functions from a response body to Signal field dicts, the partial errors sent
next to the data, the paging meta, or one sentence saying why the body is an error document.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from harvester import surrogates
from harvester.parsers import counts
from harvester.parsers.dates import reported
from harvester.parsers.language import is_no_language, language_tag

#: Longest title cut from a tweet's first line (the whole tweet stays in ``text``).
TITLE_MAX = 120
#: Tweet ids are snowflakes: milliseconds since this epoch, shifted left by 22 bits.
SNOWFLAKE_EPOCH_MS = 1288834974657
# An X username (handle): what may stand in a tweet's URL.
_USERNAME = re.compile(r"[A-Za-z0-9_]{1,15}")
# Tweet ids are unsigned 64-bit snowflakes, written in decimal.
_MAX_ID = 2**64 - 1
_SPACE = re.compile(r"\s+")
# v2 text is HTML-escaped for exactly these three characters (& last, so "&amp;lt;" stays).
_ESCAPES = (("&lt;", "<"), ("&gt;", ">"), ("&amp;", "&"))
_MEDIA_HOSTS = ("pic.twitter.com/", "pic.x.com/")


@dataclass(frozen=True, slots=True)
class TweetReject:
    """A tweet in ``data`` that cannot become a Signal."""

    reason: str
    field: str | None
    raw: dict[str, Any]


@dataclass(slots=True)
class SearchPage:
    """One parsed search response. ``problem`` is set (and nothing else is) when the body is
    an error document or not a search response at all."""

    tweets: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[TweetReject] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    newest_id: str | None = None
    next_token: str | None = None
    result_count: int | None = None
    problem: str | None = None
    #: The body is not an X answer at all (not JSON, not an object): kept as a rejection
    #: with its first bytes, as evidence, besides failing the source.
    unusable: bool = False


def parse_search(body: bytes) -> SearchPage:
    """Parse a search response body answered with HTTP 200."""
    try:
        doc = surrogates.json_loads(body)
    except (ValueError, UnicodeDecodeError):
        return SearchPage(problem="X answered with a body that is not JSON", unusable=True)
    if not isinstance(doc, dict):
        return SearchPage(problem="X answered with JSON that is not an object",
                          unusable=True)
    data, meta = doc.get("data"), doc.get("meta")
    # An entry that is not an object is still an error X reported: kept, as its text.
    errors = [e if isinstance(e, dict) else {"detail": e} for e in _list(doc.get("errors"))]
    if data is None and not isinstance(meta, dict):
        # No data and no meta: an error document (or something else entirely).
        detail = _detail(doc) or "neither data nor meta in the response"
        return SearchPage(problem=f"X answered without results: {detail}")
    page = SearchPage(errors=errors)
    if isinstance(meta, dict):
        newest = _str(meta.get("newest_id"))
        if newest is not None and (not is_tweet_id(newest) or _from_the_future(newest)):
            # Kept as the next run's since_id it failed every run after (or was sent to X).
            page.rejects.append(TweetReject("invalid_newest_id", "meta.newest_id",
                                            {"newest_id": newest[:200]}))
        else:
            page.newest_id = newest
        page.next_token = _str(meta.get("next_token"))
        count = meta.get("result_count")
        page.result_count = count if isinstance(count, int) else None
    if data is None:
        return page  # zero results: meta.result_count = 0 and no data key
    if not isinstance(data, list):
        page.rejects.append(TweetReject("data_not_a_list", "data", {"data": data}))
        return page
    users = _users(doc.get("includes"))
    referenced = _referenced(doc.get("includes"))
    for tweet in data:
        if not isinstance(tweet, dict):
            page.rejects.append(TweetReject("tweet_not_an_object", "data", {"tweet": tweet}))
        elif not _str(tweet.get("id")):
            page.rejects.append(TweetReject("missing_id", "id", tweet))
        elif not is_tweet_id(str(tweet["id"])):
            page.rejects.append(TweetReject("invalid_id", "id", tweet))
        else:
            page.tweets.append(tweet_fields(tweet, users, referenced))
    return page


def tweet_fields(tweet: dict[str, Any], users: dict[str, Any],
                 referenced: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Signal fields of one tweet; ``users`` maps author ids to usernames and ``referenced``
    tweet ids to the tweets they name (expansions)."""
    tweet_id = str(tweet["id"])
    original = _retweeted(tweet, referenced or {})
    if original is not None:
        # A repost's own text is "RT @user: " and the post cut at 140 characters ("…"),
        # its hashtags those of the cut: the whole post, and all its tags, are the
        # reposted tweet's (198 of the corpus's 278 reposts were cut).
        name = users.get(str(original.get("author_id")))
        name = name if isinstance(name, str) and _USERNAME.fullmatch(name) else None
        whole = _full_text(original)
        if whole:
            tweet = {**tweet, "text": f"RT @{name}: {whole}" if name else whole,
                     "note_tweet": None, "entities": original.get("entities")}
    username = users.get(str(tweet.get("author_id")))
    dropped: dict[str, str] = {}
    if username is not None and not (isinstance(username, str)
                                     and _USERNAME.fullmatch(username)):
        # "a b?c#d" put a query and a fragment in the URL, and lost the id from the key.
        said = username if isinstance(username, str) else json.dumps(username, default=str)
        dropped["author"] = f"{said[:80]!r} is not an X username"
        username = None
    text = unescape(_full_text(tweet) or "") or None
    entities = tweet.get("entities") if isinstance(tweet.get("entities"), dict) else {}
    fields = {
        "external_id": tweet_id,
        "url": (f"https://x.com/{username}/status/{tweet_id}" if username
                else f"https://x.com/i/web/status/{tweet_id}"),
        "title": title_of(text),
        "text": text,
        "author": username,
        "published_at": reported(parse_time, tweet.get("created_at"), "published_at",
                                 dropped),
        "language": _language(tweet.get("lang"), dropped),
        "tags": _hashtags(entities),
        "engagement": _metrics(tweet.get("public_metrics"), dropped),
        "link_url": first_link(entities),
    }
    if dropped:
        fields["dropped"] = dropped
    return fields


def unescape(text: str) -> str:
    for escaped, char in _ESCAPES:
        text = text.replace(escaped, char)
    return text


def title_of(text: str | None) -> str | None:
    """The first non-empty line, whitespace collapsed, cut at a word boundary with "…"."""
    if not text:
        return None
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = _SPACE.sub(" ", line).strip()
    if len(line) <= TITLE_MAX:
        return line or None
    cut = line[: TITLE_MAX - 1]
    space = cut.rfind(" ")
    if space > TITLE_MAX // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def parse_time(value: Any) -> datetime | None:
    """``created_at`` (ISO 8601, ``2021-09-22T16:37:29.000Z``) as aware UTC, or None."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def language(value: Any) -> str | None:
    """A tweet's ``lang`` as a BCP 47 tag; None for none (``und``) or no tag at all."""
    return language_tag(value)


def _language(value: Any, dropped: dict[str, str]) -> str | None:
    """``language(value)``; a ``lang`` that is no tag at all (5,000 ``x``) is reported."""
    tag = language(value)
    if tag is None and value not in (None, "") and not is_no_language(value):
        shown = value[:80] if isinstance(value, str) else value
        dropped["language"] = f"{shown!r} is not a language tag"
    return tag


def is_tweet_id(value: str) -> bool:
    """Whether ``value`` can be a tweet id: an unsigned 64-bit number in ASCII decimal."""
    # The length first: int() refuses strings of over 4,300 digits with a ValueError.
    return (len(value) <= 20 and value.isascii() and value.isdecimal()
            and int(value) <= _MAX_ID)


def first_link(entities: dict[str, Any]) -> str | None:
    """What the tweet points at: the first URL entity that is not the tweet's own media
    (photos and videos appear as ``pic.x.com`` links to the tweet itself)."""
    for entity in _list(entities.get("urls")):
        if not isinstance(entity, dict) or entity.get("media_key"):
            continue
        if str(entity.get("display_url", "")).startswith(_MEDIA_HOSTS):
            continue
        link = _str(entity.get("unwound_url")) or _str(entity.get("expanded_url"))
        if link:
            return link
    return None


def _from_the_future(tweet_id: str) -> bool:
    """An id minted more than a day from now (18446744073709551615 is of the year 2150):
    kept as since_id it would be sent on every later run, and nothing is newer."""
    minted = snowflake_time(tweet_id)
    return minted is not None and minted > datetime.now(UTC) + timedelta(days=1)


def snowflake_time(tweet_id: str) -> datetime | None:
    """When a tweet id was minted; None for ids that are not snowflakes."""
    if not is_tweet_id(tweet_id):
        return None
    ms = (int(tweet_id) >> 22) + SNOWFLAKE_EPOCH_MS
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):  # past what a datetime holds
        return None


def problem_message(status: int, body: bytes) -> str:
    """One sentence for an X error response (problem JSON or legacy ``errors`` list)."""
    if status == 401:
        return "X rejected the bearer token (401): check X_BEARER_TOKEN"
    try:
        doc = surrogates.json_loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    detail = _detail(doc) if isinstance(doc, dict) else None
    what = {400: "X rejected the request", 403: "X refused access",
            404: "X does not know this endpoint"}.get(status, "X answered")
    return f"{what} (HTTP {status})" + (f": {detail}" if detail else "")


def _detail(doc: dict[str, Any]) -> str | None:
    """The most specific human text in an error document, on one line."""
    errors = [e for e in _list(doc.get("errors")) if isinstance(e, dict)]
    candidates = [doc.get("detail"), doc.get("title")]
    if errors:
        candidates = [errors[0].get("message"), errors[0].get("detail"), *candidates,
                      errors[0].get("title")]
    for text in candidates:
        if isinstance(text, str) and text.strip():
            return _SPACE.sub(" ", text).strip()[:300]
    return None


def _full_text(tweet: dict[str, Any]) -> str | None:
    """Long posts (> 280 characters) come truncated in "text" and whole in note_tweet."""
    note = tweet.get("note_tweet")
    return _str(note.get("text") if isinstance(note, dict) else None) or _str(tweet.get("text"))


def _referenced(includes: Any) -> dict[str, dict[str, Any]]:
    """The tweets of ``includes.tweets`` by id (the ``referenced_tweets.id`` expansion)."""
    if not isinstance(includes, dict):
        return {}
    return {str(t["id"]): t for t in _list(includes.get("tweets"))
            if isinstance(t, dict) and t.get("id")}


def _retweeted(tweet: dict[str, Any], referenced: dict[str, dict[str, Any]]
               ) -> dict[str, Any] | None:
    """The tweet ``tweet`` reposts, when it is a repost and the page includes it."""
    for ref in _list(tweet.get("referenced_tweets")):
        if isinstance(ref, dict) and ref.get("type") == "retweeted":
            return referenced.get(str(ref.get("id")))
    return None


def _users(includes: Any) -> dict[str, Any]:
    if not isinstance(includes, dict):
        return {}
    return {str(u["id"]): name for u in _list(includes.get("users"))
            if isinstance(u, dict) and u.get("id")
            and (name := _username(u.get("username"))) is not None}


def _username(value: Any) -> Any:
    """The text form (a number there reached validate as an int); any other value as it is,
    for tweet_fields to report as a dropped author (an object was left out without a word)."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return _str(value)
    return value


def _hashtags(entities: dict[str, Any]) -> list[str]:
    # The tag as text: a number there passed the test and reached validate as an int.
    return [tag for h in _list(entities.get("hashtags"))
            if isinstance(h, dict) and (tag := _str(h.get("tag")))]


#: The counts X documents in ``public_metrics``. Any other key is passed over and reported
#: under one field: each became a field name (a `fields dropped` label of /metrics), and a
#: mirror or proxy sending random keys made series without bound.
METRICS = frozenset({"retweet_count", "reply_count", "like_count", "quote_count",
                     "bookmark_count", "impression_count"})


def _metrics(value: Any, dropped: dict[str, str]) -> dict[str, int | float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        dropped["engagement"] = f"public_metrics is {type(value).__name__}, not an object"
        return {}
    others = sorted(str(k) for k in value if k not in METRICS)
    if others:
        named = ", ".join(k[:40] for k in others[:5]) + (" …" if len(others) > 5 else "")
        dropped["engagement.other"] = f"{len(others)} counts X does not document: {named}"
    return counts.engagement({k: v for k, v in value.items() if k in METRICS}, dropped)


def _str(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value.strip() else None


def _list(value: Any) -> list[Any]:
    """A JSON array, or nothing: a number or an object where X sends an array (a broken
    or changed API) must not raise and cost the whole page."""
    return value if isinstance(value, list) else []
