"""ValidatePipeline: required fields, URL shape, UTC dates, cleaned and capped text, no
lone surrogates (harvester/surrogates.py)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from scrapy.crawler import Crawler
from scrapy.settings import BaseSettings

from harvester import surrogates
from harvester.exceptions import InvalidSignal
from harvester.items import Signal, TidyText
from harvester.pipelines.numbers import number
from harvester.services.urls import UNSAFE, encode_whitespace, split_error
from harvester.stats import drop_fields

#: Longer than any server takes (8 KB is the common request-line limit): a URL or id this
#: long is a broken or hostile source (a 1 MB sitemap <loc> was stored as a signal's URL).
MAX_URL_LENGTH = 8192
MAX_ID_LENGTH = 1000
#: Dates before this are placeholders (``0001-01-01``, ``1970-01-01``), not when an item
#: was published: the web's oldest pages are from 1991.
EARLIEST_DATE = datetime(1990, 1, 1, tzinfo=UTC)
_HTTP_URL = re.compile(
    r"(?i)https?://[^/?#\s@:\x00-\x1f\x7f-\x9f]*[^/?#\s@:.\x00-\x1f\x7f-\x9f]"
    r"[^/?#\s\x00-\x1f\x7f-\x9f]*(?:[/?#]|$)")
_SPACE = re.compile(r"[ \t\r\f\v\u00a0]+")
_NEWLINES = re.compile(r"\n{3,}")
# Control characters PostgreSQL text cannot hold (NUL) or that only garble output (C1's
# 8-bit CSI is a terminal command), and the bidi overrides that show "lmth.exe" as
# "exe.html".
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202d\u202e]")


def _is_tidy(value: str) -> bool:
    """Whether :func:`clean_text`'s rewrite would return ``value`` as it is: every line
    printable (no control character, tab, no-break or other special space), no double
    space, no space at either end of a line, no run of 3 newlines, no newline at either
    end. The parsers' :class:`TidyText` does not come here (see :func:`clean_text`); this
    is for text a spider built itself, and it is a split plus C-speed scans (7.8 µs on a
    1.7 KB text, the character-class regex it replaces took 12)."""
    if "  " in value or value[:1] == "\n" or value[-1:] == "\n":
        return False
    after_empty = False
    for line in value.split("\n"):
        if not line:
            if after_empty:
                return False
            after_empty = True
        elif not line.isprintable() or line[0] == " " or line[-1] == " ":
            return False
        else:
            after_empty = False
    return True


#: A year of tolerance for dates ahead of the clock is more than any feed needs.
FUTURE_HOURS_MAX = 24 * 366


@dataclass(frozen=True, slots=True)
class ValidateConfig:
    max_title: int
    max_text: int
    future_tolerance: timedelta

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> ValidateConfig:
        return cls(
            max_title=number(settings, "HARVEST_VALIDATE_MAX_TITLE", 1000, low=1),
            max_text=number(settings, "HARVEST_VALIDATE_MAX_TEXT", 20000, low=1),
            future_tolerance=timedelta(hours=number(
                settings, "HARVEST_VALIDATE_FUTURE_HOURS", 24.0, float, low=0,
                high=FUTURE_HOURS_MAX)),
        )


def clean_line(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    if value.isprintable() and "  " not in value and value[:1] != " " and value[-1:] != " ":
        return nfc(value)[:limit] or None  # the common case: nothing to clean
    value = _SPACE.sub(" ", _CONTROL.sub("", value).replace("\n", " ")).strip()
    return nfc(surrogates.replace(value))[:limit] or None


def nfc(value: str) -> str:
    """``value`` in Unicode's composed form (NFC, the web's): "Café" written as "Cafe" and
    a combining accent did not match the keyword "café", nor dedupe with its other copy.
    ASCII text (most of it) costs one ``isascii`` (≈ 10 ns); other text ≈ 1 µs a KB."""
    if value.isascii() or unicodedata.is_normalized("NFC", value):
        return value
    return unicodedata.normalize("NFC", value)


#: Tags kept per item (the API takes at most 50): an item with 100,000 of them stored
#: them all, after a minute of CPU.
MAX_TAGS = 100


def clean_tags(tags: list[str]) -> list[str]:
    """Each tag cleaned as a line of at most 100 characters; empty ones and repeats
    dropped, the order kept, at most ``MAX_TAGS``. A loop, not ``dict.fromkeys`` over a
    generator: an item has two or three tags, and the comprehensions' set-up cost more
    than the work (3 → 1 µs); a list while it is short, a set past that (a list's ``in``
    made 100,000 tags take 47 s)."""
    kept: list[str] = []
    seen: set[str] | None = None
    for tag in tags:
        tag = clean_line(tag, 100)
        if not tag:
            continue
        if seen is None:
            if tag in kept:
                continue
            if len(kept) >= 8:
                seen = set(kept)
        elif tag in seen:
            continue
        else:
            seen.add(tag)
        kept.append(tag)
        if len(kept) >= MAX_TAGS:
            break
    return kept


def clean_text(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    # A parser's TidyText is what the rewrite would return (tests/test_validate.py).
    if type(value) is not TidyText and not _is_tidy(value):
        value = _rewrite(value)
    return nfc(value)[:limit] or None  # a plain str, also from a TidyText


def _rewrite(value: str) -> str:
    value = surrogates.replace(_CONTROL.sub("", value))
    lines = (_SPACE.sub(" ", line).strip() for line in value.split("\n"))
    return _NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def check_url(url: str) -> str | None:
    """Reason the URL is unusable, or None. The fast check is loose about the host (a
    bracket or a port that is not a number pass it): the dedupe step's canonical form
    rejects what does not parse (``unparsable_url``)."""
    if len(url) > MAX_URL_LENGTH:
        return "url_too_long"
    if _HTTP_URL.match(url):
        return None
    if UNSAFE.search(url):  # left in the host by encode_whitespace
        return "unparsable_url"
    try:
        parts = urlsplit(url)
    except ValueError:  # "Invalid IPv6 URL"
        return "unparsable_url"
    if parts.scheme.lower() not in ("http", "https"):
        return "not_http_url"
    return "url_without_host"


class ValidatePipeline:
    """Turns raw spider output into clean signals, or rejects it with a field and reason.

    Settings: ``HARVEST_VALIDATE_MAX_TITLE`` (1000), ``HARVEST_VALIDATE_MAX_TEXT`` (20000),
    ``HARVEST_VALIDATE_FUTURE_HOURS`` (24: a date further ahead is dropped, not the item).
    A date before 1990 is dropped too (``EARLIEST_DATE``).
    Stats: ``harvest/validate/future_date``, ``harvest/validate/early_date``,
    ``harvest/validate/out_of_range_date``, ``harvest/validate/truncated``.
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.config = ValidateConfig.from_settings(crawler.settings)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ValidatePipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, Signal):
            return item
        self._check(item)
        return item

    def _check(self, item: Signal) -> None:
        cfg = self.config
        # A lone surrogate (a broken character) cannot be encoded, so dedupe could not hash
        # the URL or id: U+FFFD instead (ASCII answers at once). Text fields are handled by
        # the cleaning below; the store replaces any left in the other fields.
        if item.url:
            item.url = surrogates.replace(item.url.strip())
            if UNSAFE.search(item.url):
                item.url = encode_whitespace(item.url)
            if reason := check_url(item.url):
                raise InvalidSignal("url", reason, item.url[:200])
        elif not item.external_id:
            raise InvalidSignal("url", "missing_url_and_id")
        if item.external_id and len(item.external_id) > MAX_ID_LENGTH:
            if not item.url:
                raise InvalidSignal("external_id", "id_too_long", item.external_id[:200])
            # The item has its address (up to MAX_URL_LENGTH): an id over 1,000
            # characters (a feed's guid-less item gets its link as id) is dropped, not
            # the item, which was lost as "id_too_long".
            self._drop(item, "external_id",
                       f"{len(item.external_id)} characters, over {MAX_ID_LENGTH}")
            item.external_id = None
        if item.external_id:
            # Before dedupe keys it: the store drops a NUL, so "a\0b" and "ab" were two
            # signals with one stored id.
            item.external_id = surrogates.replace(_CONTROL.sub("", item.external_id))
            if not item.external_id and not item.url:
                raise InvalidSignal("url", "missing_url_and_id")
        if item.link_url:
            # Only a pointer: a bad one is dropped from the item, the post itself is kept.
            item.link_url = surrogates.replace(item.link_url.strip())
            if UNSAFE.search(item.link_url):
                item.link_url = encode_whitespace(item.link_url)
            if reason := check_url(item.link_url) or split_error(item.link_url):
                self._drop(item, "link_url", f"{item.link_url[:200]!r} is not a usable "
                           f"link ({reason})")
                item.link_url = None
                self.crawler.stats.inc_value("harvest/validate/bad_link_url")
        item.title = clean_line(item.title, cfg.max_title)
        text = item.text
        item.text = clean_text(text, cfg.max_text)
        if text and item.text and len(text) > cfg.max_text:
            self.crawler.stats.inc_value("harvest/validate/truncated")
        if not item.title and not item.text:
            raise InvalidSignal("title", "empty_title_and_text")
        item.author = clean_line(item.author, 300)
        if item.tags:
            given = len(item.tags)
            item.tags = clean_tags(item.tags)
            if given > MAX_TAGS and len(item.tags) == MAX_TAGS:
                self._drop(item, "tags", f"{given} tags given, the first {MAX_TAGS} kept")
        now = datetime.now(UTC)
        item.fetched_at = _utc(item.fetched_at) or now
        item.published_at = self._date(item, "published_at", item.published_at, now)
        item.updated_at = self._date(item, "updated_at", item.updated_at, now)

    def _date(self, item: Signal, name: str, value: datetime | None,
              now: datetime) -> datetime | None:
        try:
            value = _utc(value)
        except OverflowError:
            # Its offset takes it past year 1 or 9999 (.NET's DateTime.MinValue written
            # with a local offset, "0001-01-01T00:00:00+02:00"): no such instant. The
            # date is dropped, the item kept.
            self._drop(item, name, f"{value} is outside the calendar once taken to UTC")
            self.crawler.stats.inc_value("harvest/validate/out_of_range_date")
            return None
        if value is not None and value < EARLIEST_DATE:
            # .NET's DateTime.MinValue, the Unix epoch, a two-digit year read as 19xx:
            # a placeholder, which would put the item outside every --since window.
            self._drop(item, name, f"{value.isoformat()} is before {EARLIEST_DATE.year}: "
                                   "a placeholder, not a date")
            self.crawler.stats.inc_value("harvest/validate/early_date")
            return None
        if value is not None and value > now + self.config.future_tolerance:
            # A clock-skewed or mistyped date must not pin an item to the top forever;
            # the item itself is still good.
            self._drop(item, name, f"{value.isoformat()} is in the future")
            self.crawler.stats.inc_value("harvest/validate/future_date")
            return None
        return value

    def _drop(self, item: Signal, name: str, why: str) -> None:
        drop_fields(self.crawler.stats, item.source, {name: why},
                    item.url or item.external_id, self.crawler.spider)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
