"""Reddit listing documents (``Listing`` of ``t3`` posts) → plain signal field dicts.

Pure: no Scrapy, no I/O. :func:`parse_listing` never raises: a document that cannot be
used comes back with ``error`` set (``unusable`` tells a broken document from an API error
document such as ``{"error": 403, "reason": "private"}``), a child that cannot be used as a
:class:`PostReject`.

Shape (https://www.reddit.com/dev/api, "listings")::

    {"kind": "Listing", "data": {"after": "t3_…" | null, "before": …, "dist": N,
     "children": [{"kind": "t3", "data": {"name": "t3_…", "title": …, …}}, …]}}
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from harvester import surrogates
from harvester.parsers import counts

#: Posts link to their page on the real site, whatever host the API was read from.
SITE = "https://www.reddit.com"

#: Raw strings kept in a reject are cut to this length.
RAW_LIMIT = 500

_FULLNAME = re.compile(r"^t3_[0-9a-z]+$")
# A site-relative path on reddit.com: one slash, then no whitespace or control character.
_PERMALINK = re.compile(r"/[^/\s\x00-\x1f\x7f][^\s\x00-\x1f\x7f]*")
# removed_by_category values meaning the author took the post down; any other value
# (moderator, reddit, automod_filtered, copyright_takedown, …) is a removal.
_BY_AUTHOR = frozenset({"deleted", "author"})
_REMOVED_TEXT = "[removed]"
_DELETED_TEXT = "[deleted]"
# Reasons Reddit gives for refusing a subreddit, as an operator would say them.
_REASONS = {
    "private": "the subreddit is private",
    "banned": "the subreddit is banned",
    "quarantined": "the subreddit is quarantined (only opted-in accounts can read it)",
    "gated": "the subreddit is gated (only opted-in accounts can read it)",
}
# Fields kept in a reject so an operator can find the post again.
_RAW_FIELDS = ("name", "subreddit", "permalink", "title", "author",
               "removed_by_category", "created_utc")


@dataclass(slots=True)
class PostReject:
    """A listing child that cannot become a signal, with what an operator needs to judge it."""

    reason: str
    field: str | None
    raw: dict[str, Any]


@dataclass(slots=True)
class ParsedListing:
    """Everything :func:`parse_listing` learned from one listing page."""

    posts: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[PostReject] = field(default_factory=list)
    after: str | None = None
    error: str | None = None
    #: True when the document itself is broken (not JSON, not a Listing), False for an
    #: API error document: the first is kept as a rejection, both are failures.
    unusable: bool = False

    @property
    def oldest(self) -> datetime | None:
        dates = [p["published_at"] for p in self.posts]
        return min(dates) if dates else None


def parse_listing(body: bytes) -> ParsedListing:
    """One listing page → posts (Signal fields), rejects, the ``after`` cursor or an error."""
    try:
        doc = surrogates.json_loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return ParsedListing(error=f"not JSON ({exc})", unusable=True)
    if isinstance(doc, dict) and "error" in doc and "data" not in doc:
        return ParsedListing(error=describe_error(doc))
    data = doc.get("data") if isinstance(doc, dict) and doc.get("kind") == "Listing" else None
    if not isinstance(data, dict) or not isinstance(data.get("children"), list):
        return ParsedListing(error=f"not a Reddit Listing ({_shape(doc)})", unusable=True)
    parsed = ParsedListing(after=_after(data.get("after")))
    for child in data["children"]:
        post = parse_child(child)
        if isinstance(post, PostReject):
            parsed.rejects.append(post)
        else:
            parsed.posts.append(post)
    return parsed


def parse_child(child: Any) -> dict[str, Any] | PostReject:
    """One ``{"kind": "t3", "data": {…}}`` child → Signal fields, or why it is unusable."""
    if not isinstance(child, dict) or not isinstance(child.get("data"), dict):
        return PostReject("not_a_post", "kind", {"child": _cut(repr(child))})
    data: dict[str, Any] = child["data"]
    raw = _raw(child.get("kind"), data)
    if child.get("kind") != "t3":
        # Comments (t1), subreddits (t5: what a redirected unknown subreddit lists) …
        return PostReject("not_a_post", "kind", raw)
    if reason := _gone(data):
        return PostReject(reason, "removed_by_category", raw)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        return PostReject("missing_field", "name", raw)
    if not _FULLNAME.match(name):
        return PostReject("invalid_field", "name", raw)
    for key in ("permalink", "title"):
        value = data.get(key)
        if not isinstance(value, str) or not value.strip():
            return PostReject("missing_field", key, raw)
    if not _PERMALINK.fullmatch(data["permalink"]):  # not "//evil.example/x", no NUL
        return PostReject("invalid_field", "permalink", raw)
    if "created_utc" not in data or data["created_utc"] is None:
        return PostReject("missing_field", "created_utc", raw)
    published = _epoch(data["created_utc"])
    if published is None:
        return PostReject("invalid_field", "created_utc", raw)
    return _fields(data, name, published)


def _fields(data: dict[str, Any], name: str, published: datetime) -> dict[str, Any]:
    url = SITE + data["permalink"]
    dropped: dict[str, str] = {}
    fields = {
        "external_id": name,
        "url": url,
        "link_url": _link(data, url),
        "title": data["title"],
        "text": _str(data.get("selftext")),
        "author": _author(data.get("author")),
        "published_at": published,
        "updated_at": _epoch(data.get("edited")),
        "tags": _tags(data),
        "engagement": counts.engagement(
            {k: data.get(k) for k in ("score", "num_comments", "upvote_ratio")}, dropped,
            fractions=True),
    }
    if dropped:
        fields["dropped"] = dropped
    return fields


def describe_error(doc: dict[str, Any]) -> str:
    """An API error document as a short phrase: ``the subreddit is private (Forbidden)``."""
    reason = doc.get("reason")
    message = doc.get("message") or (f"error {doc['error']}" if doc.get("error") else None)
    explained = _REASONS.get(reason) if isinstance(reason, str) else None
    if explained:
        return f"{explained} ({message})" if message else explained
    parts = [str(p) for p in (message, reason, doc.get("explanation")) if p]
    return ": ".join(parts) or "an error document without details"


def _gone(data: dict[str, Any]) -> str | None:
    """``deleted_post`` / ``removed_post`` when the post's content is no longer there."""
    category = data.get("removed_by_category")
    if category is not None and not isinstance(category, str):
        category = str(category)  # a list or an object would not hash; still "removed"
    text = data.get("selftext")
    if category in _BY_AUTHOR or text == _DELETED_TEXT:
        return "deleted_post"
    if category or text == _REMOVED_TEXT:
        return "removed_post"
    return None


def _link(data: dict[str, Any], post_url: str) -> str | None:
    """What a link post points at; None for self posts. Crossposts carry a relative
    permalink of the original post, resolved against the site."""
    target = data.get("url")
    if data.get("is_self") or not isinstance(target, str) or not target.strip():
        return None
    target = urljoin(SITE + "/", target.strip())
    return None if target.rstrip("/") == post_url.rstrip("/") else target


def _author(value: Any) -> str | None:
    # "[deleted]": the account is gone but the post stays; it has no author any more.
    return value if isinstance(value, str) and value and value != _DELETED_TEXT else None


def _tags(data: dict[str, Any]) -> list[str]:
    tags = [t for t in (_str(data.get("subreddit")), _str(data.get("link_flair_text"))) if t]
    if data.get("over_18") is True:
        tags.append("nsfw")
    return tags




def _epoch(value: Any) -> datetime | None:
    """Reddit's epoch seconds (a float; ``edited`` is ``false`` when never edited)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _after(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _cut(value: str) -> str:
    return value if len(value) <= RAW_LIMIT else value[:RAW_LIMIT] + "…"


def _raw(kind: Any, data: dict[str, Any]) -> dict[str, Any]:
    raw: dict[str, Any] = {"kind": kind if isinstance(kind, str) else _cut(repr(kind))}
    for key in _RAW_FIELDS:
        value = data.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            raw[key] = _cut(value)
        else:
            raw[key] = value if isinstance(value, (int, float, bool)) else _cut(repr(value))
    return raw


def _shape(doc: Any) -> str:
    if isinstance(doc, dict):
        kind = doc.get("kind")
        if kind == "Listing":
            # The kind is right; what is wrong is the shape of its data.
            data = doc.get("data")
            if not isinstance(data, dict):
                return f"kind 'Listing', but its data is {_json_type(data)}"
            return (f"kind 'Listing', but its data.children is "
                    f"{_json_type(data.get('children'))}, not an array")
        return f"kind {kind!r}" if kind else "an object without kind"
    return _json_type(doc)


def _json_type(value: Any) -> str:
    """What JSON calls the value's type, with its article."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    names = {dict: "an object", list: "an array", str: "a string"}
    return names.get(type(value), "a number")
