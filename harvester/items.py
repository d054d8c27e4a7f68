"""Items: the contract between spiders and pipelines."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field
from datetime import datetime
from typing import Any


class TidyText(str):
    """Text a parser made tidy (``harvester.parsers.html``): single spaces, no blank
    lines, no space at either end of a line, no control character. The validate pipeline
    returns it as it is instead of checking it again, the costliest part of its work; any
    change to the text (a slice, a concatenation) gives back a plain ``str``, which is
    checked."""

    __slots__ = ()


@dataclass(slots=True, kw_only=True)
class Signal:
    """One piece of content seen at a source.

    Spiders fill what they extracted; ``validate`` normalises it, ``dedupe`` sets
    ``canonical_url``/``key``, ``score`` sets ``score``/``score_breakdown``.
    """

    source: str
    kind: str
    url: str | None = None
    external_id: str | None = None
    title: str | None = None
    text: str | None = None
    author: str | None = None
    published_at: datetime | None = None
    updated_at: datetime | None = None
    fetched_at: datetime | None = None
    tags: list[str] = _field(default_factory=list)
    language: str | None = None
    engagement: dict[str, Any] = _field(default_factory=dict)
    feed_url: str | None = None
    # What a post points at (a Reddit/HN/X post linking an article); ``url`` is the post.
    link_url: str | None = None
    canonical_url: str | None = None
    key: str | None = None
    simhash: int | None = None
    score: float | None = None
    score_breakdown: dict[str, Any] = _field(default_factory=dict)
    #: Only part of what the source gives could be read (pages: the article page failed).
    #: A row its source stored already then keeps its version: this is a sighting only.
    partial: bool = False


@dataclass(slots=True, kw_only=True)
class Rejection:
    """Input that could not become a Signal: kept with its reason, never dropped silently."""

    source: str
    reason: str
    field: str | None = None
    url: str | None = None
    raw: dict[str, Any] = _field(default_factory=dict)
