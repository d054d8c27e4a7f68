"""JSON Feed (1.0 and 1.1) items → the raw entry dicts the feed normaliser reads.

The document is decoded by :mod:`json`; what is left is a mapping of a dozen keys, done
here so that each field of each item is judged on its own. fastfeedparser, which read
JSON Feeds before, failed a whole document on one odd value (a number as
``date_published``, a string as ``authors``) and read titles as HTML. Here:

- an item that is not an object is a reject (``malformed_entry``);
- a field of the wrong type is left out and reported in ``_dropped`` (field → why), the
  item kept; a number as ``id`` or ``title`` is taken as text (publishers write them);
- ``title``, ``summary``, names and tags are plain text, as the spec says: ``<b>`` and
  ``&amp;`` are kept as written (handed over escaped where the normaliser reads HTML);
- ``authors`` (1.1) or ``author`` (1.0): the first name; a plain string is taken as one;
  an item without one has the feed's (the spec's rule);
- ``tags``: the strings of the list; a single string is one tag.

The raw dict has the keys fastfeedparser gave: ``id``, ``link``, ``title``, ``content``,
``description`` (+ ``summary_detail``), ``published``, ``updated``, ``author``, ``tags``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: The key under which a raw entry carries the fields left out, and why.
DROPPED = "_dropped"


@dataclass(slots=True)
class JsonFeed:
    """A JSON Feed's title and home page, its items as raw entries, and the items that
    are not objects (as they were)."""

    title: str | None
    link: str | None
    entries: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[Any] = field(default_factory=list)
    #: the feed's own author(s): the spec gives them to items that name none
    author: str | None = None


def read_json_feed(data: Mapping[str, Any]) -> JsonFeed:
    """``data``: a decoded JSON document with an ``items`` list."""
    feed = JsonFeed(title=_text(data.get("title")), link=_text(data.get("home_page_url")),
                    author=_author(data, {}))
    for item in data["items"]:
        if isinstance(item, Mapping):
            feed.entries.append(_entry(item))
        else:
            feed.malformed.append(item)
    return feed


def _entry(item: Mapping[str, Any]) -> dict[str, Any]:
    dropped: dict[str, str] = {}
    raw: dict[str, Any] = {
        "id": _scalar(item, "id", "external_id", dropped),
        "link": _string(item, "url", "url", dropped),
        "title": _escaped(_scalar(item, "title", "title", dropped)),
        "author": _author(item, dropped),
        "tags": _tags(item, dropped),
    }
    content = [{"type": kind, "value": value}
               for key, kind in (("content_html", "text/html"), ("content_text", "text/plain"))
               if (value := _string(item, key, "text", dropped))]
    if content:
        raw["content"] = content
    summary = _string(item, "summary", "text", dropped)
    if summary:
        raw["description"] = summary
        raw["summary_detail"] = {"type": "text/plain"}
    for key, name, target in (("published", "date_published", "published_at"),
                              ("updated", "date_modified", "updated_at")):
        value = item.get(name)
        if isinstance(value, str):
            raw[key] = value  # read, or reported as not a date, by the normaliser
        elif value is not None:
            dropped[target] = f"{_shown(value)} is not a date"
    if dropped:
        raw[DROPPED] = dropped
    return raw


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _string(item: Mapping[str, Any], key: str, target: str,
            dropped: dict[str, str]) -> str | None:
    value = item.get(key)
    if value is None or isinstance(value, str):
        return _text(value)
    dropped[target] = f"{key} {_shown(value)} is not text"
    return None


def _scalar(item: Mapping[str, Any], key: str, target: str,
            dropped: dict[str, str]) -> str | None:
    """Text, or a number taken as text (``"id": 1234``)."""
    value = item.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return _string(item, key, target, dropped)


def _escaped(text: str | None) -> str | None:
    """Plain text in the form the normaliser reads titles, names and tags in (HTML): ``&``
    and ``<`` are then read back as themselves."""
    return html.escape(text, quote=False) if text else text


def _author(item: Mapping[str, Any], dropped: dict[str, str]) -> str | None:
    authors = item.get("authors")
    candidates = authors if isinstance(authors, list) else [authors]
    candidates = [*candidates, item.get("author")]
    for candidate in candidates:
        if isinstance(candidate, Mapping):
            name = _text(candidate.get("name"))
            if name:
                return _escaped(name)
        elif isinstance(candidate, str) and candidate.strip():
            return _escaped(candidate.strip())
    shown = [c for c in candidates if c is not None and not isinstance(c, Mapping | str)]
    if shown:
        dropped["author"] = f"authors {_shown(shown[0])} is not a name"
    return None


def _tags(item: Mapping[str, Any], dropped: dict[str, str]) -> list[str]:
    tags = item.get("tags")
    if tags is None:
        return []
    if isinstance(tags, str):
        return [_escaped(tags)]
    if not isinstance(tags, list):
        dropped["tags"] = f"tags {_shown(tags)} is not a list"
        return []
    kept = [_escaped(tag) for tag in tags if isinstance(tag, str)]
    if len(kept) < len(tags):
        left = [tag for tag in tags if not isinstance(tag, str)]
        dropped["tags"] = f"{len(left)} tag(s) that are not text left out: {_shown(left)}"
    return kept


def _shown(value: Any) -> str:
    """A value as JSON would show it, cut at 80 characters."""
    return json.dumps(value, ensure_ascii=False, default=str)[:80]
