"""Hacker News API documents → signal fields, rejections or "missing" verdicts.

Pure: no Scrapy, no I/O. Two APIs:

* Firebase (``/v0``): a story list (``topstories.json`` …) is a JSON array of item ids;
  ``item/ID.json`` is one item, ``null`` when the id does not exist, ``{"deleted": true}``
  or ``{"dead": true}`` when it was removed or flagged.
* Algolia (``/api/v1/search_by_date``): a page ``{"hits": [...], "page", "nbPages",
  "nbHits"}`` of hits with ``objectID``, ``title``/``story_title``, ``url``, ``author``,
  ``created_at_i``, ``points``, ``num_comments``, ``story_text``/``comment_text``.

HN ``text`` fields are HTML (``<p>`` between paragraphs, ``<i>``, ``<a>``, ``<pre>``);
titles and user names are plain text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from harvester import surrogates
from harvester.parsers import counts
from harvester.parsers.dates import reported
from harvester.parsers.html import collapse_ws, html_to_text

ITEM_PAGE = "https://news.ycombinator.com/item?id={id}"
FIREBASE_BASE = "https://hacker-news.firebaseio.com/v0"
ALGOLIA_BASE = "https://hn.algolia.com/api/v1"
#: ``feed`` option → Firebase list.
FEED_LISTS = {"top": "topstories", "new": "newstories", "best": "beststories"}
#: Item types that are posts in their own right; a story list holds only these.
POST_TYPES = frozenset({"story", "job", "poll"})
#: Types that only exist inside a post (a reply, a poll's option).
PART_TYPES = frozenset({"comment", "pollopt"})
#: Algolia ``_tags`` worth keeping next to the type (the rest are author_/story_ ids).
KEPT_TAGS = ("ask_hn", "show_hn", "launch_hn", "front_page")
#: Raw strings kept in a rejection: enough to judge the input, not a copy of it.
RAW_LIMIT = 500


@dataclass(frozen=True, slots=True)
class ItemReject:
    """Input that cannot become a signal, with what an operator needs to judge it."""

    reason: str
    field: str | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ParsedItem:
    """Exactly one of: signal ``fields``, a ``reject``, or why the item is ``missing``
    (``null``, ``deleted``, ``dead``)."""

    fields: dict[str, Any] | None = None
    reject: ItemReject | None = None
    missing: str | None = None


@dataclass(frozen=True, slots=True)
class SearchPage:
    """One Algolia result page, or the reason it cannot be used (``error``)."""

    hits: list[Any] = field(default_factory=list)
    page: int = 0
    #: None when the answer gives no usable count: paging then goes on while pages are full.
    nb_pages: int | None = 0
    nb_hits: int = 0
    error: str | None = None


def item_page(item_id: int | str) -> str:
    """The discussion page of an item on news.ycombinator.com."""
    return ITEM_PAGE.format(id=item_id)


def load_json(body: bytes) -> tuple[Any, str | None]:
    """(document, None), or (None, one-line reason) when the body is not JSON."""
    try:
        return surrogates.json_loads(body), None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
        return None, f"not JSON ({str(exc).splitlines()[0][:200]})"


def head(body: bytes) -> str:
    """The start of a response body, for a rejection's ``raw``."""
    return body[:RAW_LIMIT].decode("utf-8", "replace")


def parse_id_list(body: bytes) -> tuple[list[int], list[Any], str | None]:
    """A Firebase story list → (item ids in order without repeats, entries that are not
    ids, error). ``error`` is set when the document is not a JSON array."""
    data, error = load_json(body)
    if error:
        return [], [], error
    if not isinstance(data, list):
        return [], [], f"expected a JSON array of item ids, got {type(data).__name__}"
    ids: dict[int, None] = {}
    bad: list[Any] = []
    for entry in data:
        if isinstance(entry, int) and not isinstance(entry, bool) and entry > 0:
            ids[entry] = None
        else:
            bad.append(entry)
    return list(ids), bad, None


def parse_item(data: Any) -> ParsedItem:
    """A Firebase item (decoded JSON) → signal fields, a rejection or a missing verdict."""
    if data is None:
        return ParsedItem(missing="null")
    if not isinstance(data, dict):
        return ParsedItem(reject=ItemReject("not_an_item", "item", _raw_value(data)))
    if data.get("deleted"):
        return ParsedItem(missing="deleted")
    if data.get("dead"):
        return ParsedItem(missing="dead")
    item_id = data.get("id")
    if isinstance(item_id, str) and item_id.strip().isdecimal() and item_id.isascii():
        item_id = int(item_id)  # the number as text: the same item
    if not _is_id(item_id):
        reason = "missing_id" if item_id is None else "invalid_id"
        return ParsedItem(reject=ItemReject(reason, "external_id", _trim(data)))
    kind = data.get("type")
    if not isinstance(kind, str):  # a list or an object would not even hash
        return ParsedItem(reject=ItemReject("unknown_type", "type", _trim(data)))
    if kind not in POST_TYPES:
        reason = "not_a_post" if kind in PART_TYPES else "unknown_type"
        return ParsedItem(reject=ItemReject(reason, "type", _trim(data)))
    dropped: dict[str, str] = {}
    fields = {
        "url": item_page(item_id),
        "external_id": str(item_id),
        "link_url": _text(data.get("url")),
        "title": _line(data.get("title")),
        "text": html_to_text(_text(data.get("text"))),
        "author": _user(data.get("by"), dropped),
        "published_at": reported(_epoch, data.get("time"), "published_at", dropped),
        "tags": [kind],
    }
    return ParsedItem(fields=_with_counts(fields, dropped, score=data.get("score"),
                                          comments=data.get("descendants")))


def parse_search_page(body: bytes) -> SearchPage:
    """An Algolia ``search``/``search_by_date`` answer → its hits and paging, or an error
    (not JSON, an error document such as ``{"message": ..., "status": 400}``)."""
    data, error = load_json(body)
    if error:
        return SearchPage(error=error)
    if not isinstance(data, dict) or not isinstance(data.get("hits"), list):
        message = data.get("message") if isinstance(data, dict) else None
        detail = f": {str(message)[:200]}" if message else ""
        return SearchPage(error=f"the answer has no list of hits{detail}")
    return SearchPage(
        hits=data["hits"],
        page=_count(data.get("page")) or 0,
        nb_pages=_count(data.get("nbPages")),
        nb_hits=_count(data.get("nbHits")) or 0,
    )


def _count(value: Any) -> int | None:
    """A paging number, also as a decimal string (a proxy in front of the API that
    quoted it stopped the paging after page 0, saying nothing)."""
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdecimal():
        return int(value)
    return _int(value)


def parse_hit(hit: Any) -> ParsedItem:
    """An Algolia hit → signal fields or a rejection. A comment hit (``tags=comment``) is
    kept: it was asked for; its title is the story's and it points at the story's link."""
    if not isinstance(hit, dict):
        return ParsedItem(reject=ItemReject("not_an_item", "hit", _raw_value(hit)))
    object_id = str(hit.get("objectID") or "").strip()
    if not (object_id.isascii() and object_id.isdecimal()):  # not "²" or "١٠٧"
        return ParsedItem(reject=ItemReject("missing_id", "external_id", _trim(hit)))
    raw_tags = hit.get("_tags")
    tags = [t for t in raw_tags if isinstance(t, str)] if isinstance(raw_tags, list) else []
    kind = next((t for t in tags if t in POST_TYPES | PART_TYPES), None)
    kind = kind or ("comment" if hit.get("comment_text") else "story")
    text = hit.get("comment_text") if kind == "comment" else hit.get("story_text")
    dropped: dict[str, str] = {}
    published = _epoch(hit.get("created_at_i")) or reported(
        _iso, hit.get("created_at"), "published_at", dropped)
    fields = {
        "url": item_page(object_id),
        "external_id": object_id,
        "link_url": _text(hit.get("url")) or _text(hit.get("story_url")),
        "title": _line(hit.get("title")) or _line(hit.get("story_title")),
        "text": html_to_text(_text(text)),
        "author": _user(hit.get("author"), dropped),
        "published_at": published,
        "updated_at": reported(_iso, hit.get("updated_at"), "updated_at", dropped),
        "tags": [kind, *(t for t in KEPT_TAGS if t in tags)],
    }
    return ParsedItem(fields=_with_counts(fields, dropped, score=hit.get("points"),
                                          comments=hit.get("num_comments")))


# -- field helpers ---------------------------------------------------------------------


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _line(value: Any) -> str | None:
    """Titles and user names: plain text in the API, so only whitespace is tidied (an
    ``&`` or ``<`` in a title is content, not markup)."""
    return collapse_ws(value) or None if isinstance(value, str) else None


def _user(value: Any, dropped: dict[str, str]) -> str | None:
    """A user name; a number is read as its digits, as X's are (HN names may be all
    digits), anything else that is there goes into ``dropped`` as ``author``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is not None and not isinstance(value, str):
        dropped["author"] = f"{json.dumps(value, default=str)[:80]} is not a user name"
        return None
    return _line(value)


def _epoch(value: Any) -> datetime | None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _with_counts(fields: dict[str, Any], dropped: dict[str, str],
                 **given: Any) -> dict[str, Any]:
    """``fields`` with the counts the API gave as ``engagement`` (a job has no comments, a
    comment hit no points), and any it gave in a form that is not a count, like the dates
    already in ``dropped``, as ``dropped``."""
    fields["engagement"] = counts.engagement(given, dropped)
    if dropped:
        fields["dropped"] = dropped
    return fields


def _trim(data: dict[str, Any]) -> dict[str, Any]:
    """A copy fit for ``rejects.raw``: long strings cut, id lists dropped."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("kids", "parts", "_highlightResult", "children"):
            continue
        out[key] = value[:RAW_LIMIT] if isinstance(value, str) else value
    return out


def _raw_value(value: Any) -> dict[str, Any]:
    return {"value": json.dumps(value)[:RAW_LIMIT]}
