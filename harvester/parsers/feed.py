"""Feed documents (RSS 0.9x/1.0/2.0, RDF, Atom 0.3/1.0, JSON Feed) → plain entry dicts.

Pure: no Scrapy, no I/O. :func:`parse_feed` never raises; a document that cannot be
used comes back with ``error`` set, an entry that cannot be used as an
:class:`EntryReject`.

Pipeline: gunzip if still compressed → decide the charset ourselves (see
:mod:`harvester.parsers.encoding`) → hand UTF-8 with a matching declaration to
fastfeedparser (about 17x faster than feedparser on the shared corpus, see
``docs/parsers.md``) → fall back to feedparser when fastfeedparser fails, finds fewer
entries than the document has items, or ignores an ``xml:base`` that matters → as a
last resort re-serialise with lxml's recovering parser and try again.
"""

from __future__ import annotations

import bisect
import html
import json
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

import fastfeedparser
import fastfeedparser.main
import feedparser
from lxml import etree
from lxml import html as lxml_html

from harvester import surrogates
from harvester.messages import first_line
from harvester.parsers.dates import (
    is_relative,
    localized_rfc822,
    read_partial,
    reread,
    unknown_zone,
    zero_century,
)
from harvester.parsers.encoding import (
    MAX_DECOMPRESSED,
    BodyTooLarge,
    clean_xml_text,
    document_text,
    gunzip_if_needed,
    to_utf8_xml,
)
from harvester.parsers.html import collapse_ws, html_to_text, inline_text, plain_text
from harvester.parsers.jsonfeed import DROPPED, read_json_feed

logger = logging.getLogger(__name__)

FASTFEEDPARSER = "fastfeedparser"
FEEDPARSER = "feedparser"
JSONFEED = "jsonfeed"

#: Raw strings kept in a reject are cut to this length: enough for an operator to see
#: what the entry was, not a copy of the article.
RAW_LIMIT = 500
#: The item's own markup, kept on a raw entry of a broken document that has no string
#: field to show (see ``_unread_entries``); a reject's raw calls it ``xml``.
RAW_XML = "harvester_raw_xml"

_ITEM_TAG_RE = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?(?:item|entry)[\s>/]")
# The start tag of an item or entry with content (parsers rightly skip ``<item />``).
_OPEN_ITEM_RE = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?(?:item|entry)(?:\s[^<>]*)?(?<!/)>")
# A title or summary with an element inside (unescaped HTML in RSS, Atom's type="xhtml"):
# fastfeedparser keeps only the text before it ("Intro:" of "Intro: <em>Python</em> 3.13").
_MARKUP_INSIDE_RE = re.compile(r"<(?:title|description|summary)(?:\s[^<>]*)?>[^<]*<(?![/!])")
# Written so that nothing backtracks far; and only an author of at most _MAX_AUTHOR
# characters is tried (80 KB of "a@b ( x x x …" took 9.6 s an entry).
_EMAIL_AND_NAME_RE = re.compile(r"\s*[^\s@()]+@[^\s@()]+\s+\(([^()]+)\)\s*\Z")
_NAME_AND_EMAIL_RE = re.compile(r"\s*([^()]+?)\s+\([^\s@()]+@[^\s@()]+\)\s*\Z")
_MAX_AUTHOR = 300
_RSS_AUTHOR_NAME_RE = re.compile(r"<author>\s*<name>")
_HTML_HEAD_RE = re.compile(
    r"^\s*(?:<\?[^>]*>\s*|<!--.*?-->\s*)*(?:<!doctype\s+html|<html[\s>])",
    re.IGNORECASE | re.DOTALL,
)
_FIRST_ELEMENT_RE = re.compile(r"<([A-Za-z][\w:.-]*)")
_HTML_ROOTS = frozenset({"html", "head", "body"})
_HTTP_RE = re.compile(r"^https?://", re.IGNORECASE)
_WEB = ("https://", "http://")  # the common case of _HTTP_RE, 2x faster
_YEAR_ONLY_RE = re.compile(r"\s*\d{4}\s*")
# A date element of an entry (or of the channel: only a hint that dates are there).
_ENTRY_DATE_RE = re.compile(
    r"<(?:[A-Za-z_][\w.-]*:)?(?:pubDate|published|updated|issued|modified|created|date)[\s>]")


@dataclass(slots=True)
class EntryReject:
    """An entry that cannot become a signal, with what an operator needs to judge it."""

    reason: str
    field: str | None
    raw: dict[str, Any]


@dataclass(slots=True)
class ParsedFeed:
    """Everything :func:`parse_feed` learned from one document."""

    entries: list[dict[str, Any]]
    rejects: list[EntryReject]
    error: str | None
    parser: str
    encoding: str | None
    feed_title: str | None

    @property
    def truncated(self) -> bool:
        """Whether the document was cut short: the entries after the cut are missing."""
        return any(r.reason in ("truncated_document", "truncated_entry") for r in self.rejects)


@dataclass(slots=True)
class _Attempt:
    """One parser's raw output, before normalisation."""

    parser: str
    entries: list[Mapping[str, Any]] = field(default_factory=list)
    feed: Mapping[str, Any] = field(default_factory=dict)
    failure: str | None = None
    is_feed: bool = False
    cut_entries: list[Mapping[str, Any]] = field(default_factory=list)
    rejects: list[EntryReject] = field(default_factory=list)
    #: fastfeedparser read some date with a lenient parser (see ``_lenient_date_calls``).
    lenient_dates: bool = False
    #: item/entry start tags in the document (an upper bound of its entries)
    item_tags: int = 0
    #: the feed's author, which its entries without one have (Atom, JSON Feed)
    feed_author: str | None = None


def parse_feed(body: bytes, url: str, content_type: str | None = None, *,
               max_size: int = MAX_DECOMPRESSED) -> ParsedFeed:
    """Parse a feed document fetched from ``url``; never raises. ``max_size``: how far a
    gzip body may inflate."""
    try:
        return _parse(body, url, content_type, max_size)
    except Exception as exc:  # one bad document must not stop a crawl
        logger.warning("Feed %s: parser crashed: %s", url, exc, exc_info=True)
        return _failed(f"parser failure: {type(exc).__name__}: {exc}", None)


def _failed(error: str, encoding: str | None) -> ParsedFeed:
    return ParsedFeed([], [], error, FASTFEEDPARSER, encoding, None)


def _parse(body: bytes, url: str, content_type: str | None, max_size: int) -> ParsedFeed:
    if not body or not body.strip():
        return _failed("empty document: the response body has no content", None)
    was_gzip = body.startswith(b"\x1f\x8b")
    try:
        body = gunzip_if_needed(body, max_size)
    except BodyTooLarge as exc:
        return _failed(str(exc), None)
    if was_gzip and not body.strip():
        return _failed("corrupt gzip body: nothing could be decompressed", None)
    decoded = document_text(body, content_type, f"Feed {url}")
    text = decoded.text
    if not text:
        return _failed("empty document: the response body has no content", decoded.encoding)
    if text[0] in "{[":
        attempt, problem = _parse_json_feed(text)
        if problem:
            return _failed(f"not a feed: {problem}", decoded.encoding)
    else:
        cleaned = clean_xml_text(text)
        attempt = _parse_xml(cleaned)
        if not attempt.entries and not attempt.is_feed:
            return _failed(_not_a_feed_reason(text, attempt, url), decoded.encoding)
        _drop_truncated_tail(attempt, text)
        attempt.rejects.extend(_unread_entries(attempt, cleaned))
        if _first_element(cleaned) == "feed":
            # Atom (RFC 4287 4.2.1): an entry without an author has the feed's; neither
            # parser gives it to them (45 entries of 11 corpus files had none).
            attempt.feed_author = _author(attempt.feed)
        if not attempt.cut_entries and _unfinished(text):
            attempt.rejects.append(EntryReject("truncated_document", None, {
                "entries_read": str(len(attempt.entries)), "end": text[-RAW_LIMIT:]}))
    return _build(attempt, url, decoded.encoding)


def _unread_entries(attempt: _Attempt, text: str) -> list[EntryReject]:
    """A rejection for each item or entry of the document that no parser handed back.

    A broken element in the middle of a feed (a comment or CDATA section never closed, an
    unclosed tag) makes the parsers read the rest of the document as its content: a feed
    of 10 items gave 5 entries and a good run, and the other 5 were lost without a word.
    Looked for only when the document has more item/entry start tags than entries were
    read; a well-formed document's elements are then counted exactly, a broken one's
    start tags outside comments and CDATA. The entries read are matched to the items in
    document order (by link, id or title); an item none of them matches is the rejection's
    raw text, cut to ``RAW_LIMIT``.
    """
    read = attempt.entries + attempt.cut_entries
    if attempt.item_tags <= len(read):
        return []
    hidden = _hidden_spans(text)
    # A start tag is hidden when an odd number of hidden-span ends lie before it.
    starts = [m.start() for m in _OPEN_ITEM_RE.finditer(text)
              if bisect.bisect_right(hidden, m.start()) % 2 == 0]
    exact = _entries_in_well_formed(text)
    missing = (len(starts) if exact is None else exact) - len(read)
    if missing <= 0:
        return []
    unread: list[str] = []
    pending = iter(read)
    current = next(pending, None)
    for start, end in zip(starts, [*starts[1:], len(text)], strict=True):
        piece = text[start:end]
        if current is None:
            unread.append(piece)
            continue
        values = [v for key in ("link", "id", "title") if (v := _str(current.get(key)))]
        if not values:
            # Read from this item with nothing to know it by: its rejection shows the item.
            current[RAW_XML] = piece[:RAW_LIMIT]  # type: ignore[index]
        elif not any(v in html.unescape(piece) for v in values):
            unread.append(piece)
            continue
        current = next(pending, None)
    found = [EntryReject("unreadable_entry", None, {"entry": piece[:RAW_LIMIT]})
             for piece in unread[-missing:]]
    counts = {"entries_in_document": str(len(read) + missing), "entries_read": str(len(read))}
    return found + [EntryReject("unreadable_entry", None, counts)] * (missing - len(found))


def _hidden_spans(text: str) -> list[int]:
    """Start and end of each comment and CDATA section that is closed, flat and in order.
    One never closed hides nothing: it is the breakage, and the items after it are what
    the parsers lost. One pass: a lazy regex read to the end of the document for every
    unclosed section (20,000 of them in 480 KB: 31 s); here, once a closer is known to be
    missing from some point on, the openers of its kind after it are passed over."""
    kinds = {"<![CDATA[": "]]>", "<!--": "-->"}
    unclosed_from = {opener: len(text) + 1 for opener in kinds}
    spans: list[int] = []
    at = 0
    while True:
        found = [(i, opener) for opener in kinds
                 if 0 <= (i := text.find(opener, at)) < unclosed_from[opener]]
        if not found:
            return spans
        start, opener = min(found)
        end = text.find(kinds[opener], start + len(opener))
        if end < 0:
            unclosed_from[opener] = start  # and no later one of its kind is closed
            at = start + len(opener)
            continue
        at = end + len(kinds[opener])
        spans += [start, at]


def _entries_in_well_formed(text: str) -> int | None:
    """The item/entry elements with content of a well-formed document; None when it is
    not well-formed."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    try:
        root = etree.fromstring(to_utf8_xml(text), parser)
    except (etree.XMLSyntaxError, ValueError):
        return None
    return sum(1 for element in root.iter("{*}item", "{*}entry")
               if len(element) or (element.text or "").strip())


def _unfinished(text: str) -> bool:
    """Whether the document stops before its root element's end tag: a body cut short
    (a truncated gzip decompresses to the bytes before the cut without an error). The
    entries before the cut are kept; those after it are lost, which the caller reports."""
    root = _first_element(text)
    if root is None:
        return False
    end = _without_trailing_misc(text)[-len(root) - 16:]
    return not re.search(rf"</{re.escape(root)}\s*>\Z", end, re.IGNORECASE)


def _without_trailing_misc(text: str) -> str:
    """``text`` without the whitespace, comments and processing instructions after its
    last element (``<!-- cached in 0.2 s -->``)."""
    while True:
        text = text.rstrip()
        for close, opening in (("-->", "<!--"), ("?>", "<?")):
            if text.endswith(close) and (start := text.rfind(opening)) >= 0:
                text = text[:start]
                break
        else:
            return text


def _parse_json_feed(text: str) -> tuple[_Attempt, str | None]:
    """A JSON Feed's entries (:mod:`harvester.parsers.jsonfeed`), and why a JSON document
    is not a JSON Feed (None when it is). An item that is not an object is a reject of its
    own; a field of the wrong type is a dropped field of its item."""
    try:
        data = surrogates.json_loads(text)
    except ValueError as exc:
        return _Attempt(JSONFEED), f"invalid JSON ({exc})"
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        return _Attempt(JSONFEED), "JSON without a JSON Feed items list"
    feed = read_json_feed(data)
    return _Attempt(
        JSONFEED, entries=feed.entries, feed={"title": feed.title, "link": feed.link},
        feed_author=feed.author,
        is_feed=True, rejects=[EntryReject("malformed_entry", None, {"item": _short_json(item)})
                               for item in feed.malformed]), None


def _short_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:RAW_LIMIT]


def _drop_truncated_tail(attempt: _Attempt, text: str) -> None:
    """Move a last entry whose link or id was cut off by truncation to ``cut_entries``.

    Recovering parsers hand back the half-written last item of a truncated document. If
    the cut fell in its text the entry is still worth having; if it fell in its link or
    id (the document ends with that value) the value is wrong and the entry a reject.
    """
    if not attempt.entries:
        return
    opened = max(text.rfind("<item"), text.rfind("<entry"))
    closed = max(text.rfind("</item>"), text.rfind("</entry>"))
    if opened <= closed:
        return
    last = attempt.entries[-1]
    end = text.rstrip()
    if any(
        isinstance(value, str) and value.strip() and end.endswith(value.strip())
        for value in (last.get("link"), last.get("id"))
    ):
        attempt.cut_entries.append(attempt.entries.pop())


def _parse_xml(text: str) -> _Attempt:
    """Best attempt over fastfeedparser, feedparser and a recovered re-serialisation."""
    tags = len(_ITEM_TAG_RE.findall(text))
    attempt = _best_attempt(text, tags)
    attempt.item_tags = tags
    return attempt


def _best_attempt(text: str, tags: int) -> _Attempt:
    data = to_utf8_xml(text)
    fast = _run_fastfeedparser(data)
    if not _needs_fallback(fast, text, tags):
        if _dates_to_check(fast, text) or _guids_to_check(fast, text):
            _check_entries(fast, _run_feedparser(data))
        return fast
    slow = _run_feedparser(data)
    best = _better(fast, slow, prefer_slow="xml:base" in text)
    if best is fast:
        _check_entries(fast, slow, text_too=_text_elsewhere(fast, text),
                       markup_inside=_markup_inside(text),
                       authors_too=_authors_elsewhere(fast, text))
    if best.entries or (fast.failure is None and slow.failure is None):
        # Entries found, or a well-formed feed that simply has none: nothing to recover.
        return best
    recovered = _recover(data)
    if recovered is None:
        return best
    for runner in (_run_fastfeedparser, _run_feedparser):
        again = runner(recovered)
        if again.entries:
            return again
    return best


def _dates_to_check(fast: _Attempt, text: str) -> bool:
    """Whether fastfeedparser's dates need feedparser's raw strings to be checked: an
    entry is undated though the document has date elements (a date fastfeedparser could
    not read, left out without a trace), some date was read by a lenient parser, or the
    document's ``<pubDate>`` layout is one it misreads (``_misread_pubdates``)."""
    if fast.lenient_dates:
        return True
    first = _ENTRY_DATE_RE.search(text)
    if first is None:
        return False
    return any(not e.get("published") for e in fast.entries) or (
        text.startswith("<pubDate", first.start()) and _misread_pubdates(text, first.start()))


def _misread_pubdates(text: str, start: int) -> bool:
    """Whether the first or the last ``<pubDate>`` (the first at ``start``) has a layout
    fastfeedparser hands to email.utils, which reads it wrong without a word: a zone
    abbreviation RFC 822 lacks in a short layout (``10 Jun 2003 04:00 CEST``, taken for
    UTC), an offset written ``+02:00``, ``GMT+2`` (UTC) or ``+02`` (two minutes), a
    dotted date, a year written ``0001`` (2001), or a zone no reader knows (``IST``,
    guessed: ``dates.unknown_zone``). A document's dates come from one
    generator and share one layout, so two are looked at: finding every one would cost
    ≈ 1 % of parsing (100 µs a 225 KB feed)."""
    for end in {text.find("</pubDate>", start), text.rfind("</pubDate>")} - {-1}:
        value = text[text.rfind(">", max(0, end - 80), end) + 1:end].strip()
        if value and (reread(value) is not None or zero_century(value)
                      or unknown_zone(value)):
            return True
    return False


def _lenient_date_calls() -> int:
    """How many dates fastfeedparser has handed to its lenient parsers so far.

    Its own paths read RFC 822 and ISO 8601 strictly; what they cannot read goes to
    dateutil and then dateparser, which read ``yesterday`` or ``2 hours ago`` as a time
    near the crawl, and take a ``<guid>`` of ``7`` for the 7th of this month when an item
    has no date. Both are cached functions of fastfeedparser 0.6 (pinned), so the calls
    can be counted; -1 when the names are gone, which makes every document checked.
    Its reading of each date string is cached as well, so the count is taken after
    ``_forget_date_readings``.
    """
    total = 0
    for name in ("_slow_dateutil_parse", "_slow_dateparser"):
        info = getattr(getattr(fastfeedparser.main, name, None), "cache_info", None)
        if info is None:
            return -1
        stats = info()
        total += stats.hits + stats.misses
    return total


def _forget_date_readings() -> None:
    """Empty fastfeedparser's cache of date readings: a string read before would not reach
    the lenient parsers again and go unnoticed (and ``yesterday`` would keep the reading
    of the first time it was seen). A few µs a document; dates rarely repeat across feeds."""
    clear = getattr(getattr(fastfeedparser.main, "_parse_date", None), "cache_clear", None)
    if clear is not None:
        clear()


def _guids_to_check(fast: _Attempt, text: str) -> bool:
    """Whether an entry's link may be a guid the feed says is no permalink: fastfeedparser
    makes an RSS item's guid its link when it has no ``<link>``, whatever ``isPermaLink``
    says. The entries are looked at first: the document is searched (≈ 80 µs a 225 KB
    feed without the attribute) only when some link is its id."""
    return any(e.get("link") and e.get("link") == e.get("id") for e in fast.entries) and (
        "isPermaLink" in text)


def _check_entries(fast: _Attempt, slow: _Attempt, *, text_too: bool = False,
                   markup_inside: bool = False, authors_too: bool = False) -> None:
    """Correct fastfeedparser's entries by what feedparser found in the same document.

    Dates: a date fastfeedparser left out or read from a relative phrase gets
    feedparser's raw string instead, which ``_date`` reads or reports as dropped; one that
    has no date element behind it (taken from the guid) is removed. Only the string is
    taken, not feedparser's reading of it (it rolls ``2024-13-45`` over into 2025).
    Links: a guid marked ``isPermaLink="false"`` that fastfeedparser took for the link of
    an item without one is no link (feedparser's ``guidislink``).
    Text (``text_too``, see ``_text_elsewhere``): feedparser's content, or its summary for
    an entry with none, where fastfeedparser found none. Titles and text with markup
    inside (``markup_inside``, see ``_markup_inside``): feedparser's, which are whole.
    Authors (``authors_too``, see ``_authors_elsewhere``): feedparser's, where
    fastfeedparser found none.
    Entries are matched by position and confirmed by link or id; one that does not match
    is left as it is.
    """
    if len(slow.entries) != len(fast.entries):
        return
    for ours, theirs in zip(fast.entries, slow.entries, strict=True):
        if _same(ours, theirs, "link") or _same(ours, theirs, "id"):
            # Plain lookups: not feedparser's updated → published fallback.
            _correct_dates(ours, {key: _str(dict.get(theirs, key))
                                  for key in ("published", "updated")})
            if dict.get(theirs, "guidislink") is False and not _str(dict.get(theirs, "link")):
                ours["link"], ours["guidislink"] = None, False
            if text_too or markup_inside:
                _borrow_text(ours, theirs, whole=markup_inside)
            if authors_too and not ours.get("author"):
                ours["author"] = _author(theirs)


def _borrow_text(ours: dict[str, Any], theirs: Mapping[str, Any], *, whole: bool) -> None:
    """feedparser's text where fastfeedparser has none; with ``whole``, its title and text
    in place of fastfeedparser's (cut at the first element inside them)."""
    title = _str(dict.get(theirs, "title"))
    if whole and title:
        ours["title"] = title
    content = dict.get(theirs, "content")
    if content and (whole or not ours.get("content")):
        ours["content"] = [dict(part) for part in content if isinstance(part, Mapping)]
    elif whole:
        ours.pop("content", None)  # fastfeedparser's copy of the cut description
    summary = _str(dict.get(theirs, "summary"))
    if summary and (whole or not (ours.get("content") or ours.get("summary")
                                  or ours.get("description"))):
        ours["summary"] = summary
        ours["summary_detail"] = dict.get(theirs, "summary_detail")
        ours.pop("description", None)


def _correct_dates(ours: dict[str, Any], raw: dict[str, str | None]) -> None:
    """Put the document's date strings ``raw`` in place of fastfeedparser's readings that
    are relative, misread (``dates.reread``) or missing (those of an undated entry); drop
    a published date with no date string behind it. A string that is neither RFC 822 nor
    ISO 8601 was read by dateutil, which fills what it leaves out from today:
    ``_parse_date_string`` reads it again."""
    fill = not ours.get("published")
    if raw["published"] is None and ours.get("published") and (
            raw["updated"] is None or is_relative(raw["updated"])):
        del ours["published"]  # from the guid, or a copy of a relative updated
    for key, value in raw.items():
        if value is None:
            continue
        if not ours.get(key):
            take = fill or is_relative(value) or reread(value) is not None
        else:  # fastfeedparser's reading of "Dec 28", "10:30" or "May 5, 2024" is redone
            take = (is_relative(value) or _strict_date(value) is None
                    or reread(value) is not None)
        if take:
            ours[key] = value


def _same(ours: Mapping[str, Any], theirs: Mapping[str, Any], key: str) -> bool:
    value = _str(ours.get(key))
    return value is not None and value == _str(dict.get(theirs, key))


def _needs_fallback(fast: _Attempt, text: str, tags: int) -> bool:
    """Whether feedparser should get a go after fastfeedparser.

    Yes when fastfeedparser failed, found no entries or fewer than the document has
    item/entry tags (it dropped some on malformed markup), returned an entry without link
    and id (it loses ``<link>`` when an item also carries an ``atom:link``), when a title
    or summary has an element inside (``_markup_inside``), when the text or the authors
    are where it does not look (``_text_elsewhere``, ``_authors_elsewhere``), or when the
    document uses
    ``xml:base`` and some link is relative: fastfeedparser ignores ``xml:base``,
    feedparser resolves it.
    """
    if fast.failure is not None or not fast.entries:
        return True
    if _usable(fast) < len(fast.entries):
        return True
    if len(fast.entries) < tags:
        return True
    if _markup_inside(text) or _text_elsewhere(fast, text) or _authors_elsewhere(fast, text):
        return True
    return "xml:base" in text and any(
        _is_relative(str(e["link"])) for e in fast.entries if e.get("link"))


def _text_elsewhere(fast: _Attempt, text: str) -> bool:
    """Whether the entries' text is where fastfeedparser does not look (feedparser does):
    ``content:encoded`` in RSS 1.0 (it took the teaser ``<description>``, 267 characters
    of a 2,635-character post), and for entries it found no text for, YouTube's
    ``media:description`` or RSS 1.0's ``dc:description``."""
    # The cheap tests first: each substring search reads the whole document.
    if (_first_element(text) or "").lower().endswith("rdf") and "content:encoded" in text:
        return True
    return any(not (e.get("content") or e.get("summary") or e.get("description"))
               for e in fast.entries) and ("media:description" in text
                                           or "dc:description" in text)


def _authors_elsewhere(fast: _Attempt, text: str) -> bool:
    """Whether some entry's author is an RSS ``<author><name>…</name></author>`` (Hugo's
    templates write Atom's form into RSS), which fastfeedparser does not read (all 10
    entries of a corpus feed had no author)."""
    # A document's items share one template: its first item says (reading all of a 225 KB
    # feed for the tag cost ≈ 80 µs, 1 % of parsing it).
    first_item = text[:text.find("</item>") + 1]
    return (any(not e.get("author") for e in fast.entries)
            and (_first_element(text) or "").lower() != "feed"
            and _RSS_AUTHOR_NAME_RE.search(first_item) is not None)


def _markup_inside(text: str) -> bool:
    """Whether some title or summary has an element inside it, which fastfeedparser cuts
    at (feedparser reads it whole)."""
    return _MARKUP_INSIDE_RE.search(text) is not None


def _is_relative(link: str) -> bool:
    try:
        return not urlsplit(link).scheme
    except ValueError:  # an invalid IPv6 netloc: not a relative link either
        return False


def _usable(attempt: _Attempt) -> int:
    """Entries with something to identify them by (a link, any link, or an id)."""
    return sum(
        1 for e in attempt.entries
        if e.get("link") or _alternate_link(e.get("links")) or e.get("id")
    )


def _better(fast: _Attempt, slow: _Attempt, *, prefer_slow: bool) -> _Attempt:
    """More usable entries wins; on a tie fastfeedparser, unless xml:base makes feedparser
    right (it resolves relative links against it)."""
    fast_n, slow_n = _usable(fast), _usable(slow)
    if slow_n > fast_n or (prefer_slow and slow_n and slow_n == fast_n):
        return slow
    if fast.entries or fast.is_feed:
        return fast
    return slow


def _run_fastfeedparser(data: bytes) -> _Attempt:
    """fastfeedparser on bytes (never str: a str that looks like a URL would be fetched)."""
    _forget_date_readings()
    before = _lenient_date_calls()
    try:
        result = fastfeedparser.parse(data, include_media=False, include_enclosures=False)
    except Exception as exc:  # any parser failure means "try the next one"
        logger.debug("fastfeedparser failed: %s", exc)
        return _Attempt(FASTFEEDPARSER, failure=str(exc) or type(exc).__name__)
    return _Attempt(
        FASTFEEDPARSER,
        entries=list(result.get("entries") or []),
        feed=result.get("feed") or {},
        is_feed=True,
        lenient_dates=before < 0 or _lenient_date_calls() != before,
    )


def _run_feedparser(data: bytes) -> _Attempt:
    """feedparser in bozo mode; sanitising HTML is skipped: we reduce it to text anyway."""
    try:
        with warnings.catch_warnings():
            # feedparser warns about its own updated/published fallback on every access.
            warnings.simplefilter("ignore", DeprecationWarning)
            result = feedparser.parse(
                data,
                response_headers={"content-type": "application/xml; charset=utf-8"},
                sanitize_html=False,
                resolve_relative_uris=False,
            )
    except Exception as exc:  # any parser failure means "try the next one"
        logger.debug("feedparser failed: %s", exc)
        return _Attempt(FEEDPARSER, failure=str(exc) or type(exc).__name__)
    failure = None
    if result.get("bozo"):
        failure = str(result.get("bozo_exception") or "malformed document")
    return _Attempt(
        FEEDPARSER,
        entries=list(result.get("entries") or []),
        feed=result.get("feed") or {},
        failure=failure,
        is_feed=bool(result.get("version")),
    )


def _recover(data: bytes) -> bytes | None:
    """Re-serialise what lxml's recovering parser makes of a broken document."""
    parser = etree.XMLParser(recover=True, resolve_entities=False, no_network=True)
    try:
        root = etree.fromstring(data, parser)
    except (etree.XMLSyntaxError, ValueError):
        return None
    if root is None:
        return None
    return etree.tostring(root, encoding="utf-8", xml_declaration=True)


def _not_a_feed_reason(text: str, attempt: _Attempt, url: str) -> str:
    """One sentence saying why the document gave nothing (for an HTML page, which feeds it
    advertises: a site's address in the sources file instead of its feed's is a common
    slip)."""
    if _HTML_HEAD_RE.match(text[:4096]) or _first_element(text) in _HTML_ROOTS:
        feeds = advertised_feeds(text, url)
        if not feeds:
            return "not a feed: the document is HTML"
        named = (f"the feed {feeds[0]}; put that URL" if len(feeds) == 1 else
                 f"the feeds {', '.join(feeds)}; put one of them")
        return f"not a feed: the document is an HTML page that links to {named} in the sources file"
    if not text.startswith("<"):
        return "not a feed: the document is not XML or JSON"
    detail = f" ({attempt.failure})" if attempt.failure else ""
    return f"not a feed: no RSS, Atom or RDF structure found{detail}"


#: Feed types a page advertises with <link rel="alternate" type="…" href="…">.
_FEED_TYPES = frozenset(("application/rss+xml", "application/atom+xml", "application/rdf+xml",
                         "application/feed+json"))


def advertised_feeds(html: str, url: str) -> list[str]:
    """The feeds an HTML page links to in its ``<link rel="alternate">`` elements (feed
    autodiscovery), absolute, in page order, at most five."""
    try:
        root = lxml_html.document_fromstring(html[:200_000])
    except (etree.ParserError, ValueError):
        return []
    found: dict[str, None] = {}
    for link in root.iter("link"):
        rel = (link.get("rel") or "").lower().split()
        kind = (link.get("type") or "").lower().split(";")[0].strip()
        href = (link.get("href") or "").strip()
        if "alternate" in rel and kind in _FEED_TYPES and href:
            found.setdefault(urljoin(url, href), None)
    return list(found)[:5]


def _first_element(text: str) -> str | None:
    """Name of the first element (skipping declarations, PIs and comments), lower-cased."""
    head = re.sub(r"<!--.*?-->|<[?!][^>]*>", "", text[:4096], flags=re.DOTALL)
    match = _FIRST_ELEMENT_RE.search(head)
    return match.group(1).lower() if match else None


# --- normalisation ----------------------------------------------------------------------


def _build(attempt: _Attempt, url: str, encoding: str) -> ParsedFeed:
    """Normalise a parser's raw entries into entry dicts and rejects."""
    base = _base(url, attempt.feed.get("link"))
    entries: list[dict[str, Any]] = []
    rejects: list[EntryReject] = []
    feed_author = inline_text(attempt.feed_author)
    for raw in attempt.entries:
        try:
            entry = _entry(raw, base)
        except Exception:  # one odd field must not lose the entry, nor the others
            entry = _salvage(raw, base)
            if entry is None:
                logger.debug("Feed %s: entry without a usable link or id", url, exc_info=True)
                rejects.append(EntryReject("unparseable_entry", "link", _raw_strings(raw)))
                continue
        if entry["url"] is None and entry["external_id"] is None:
            rejects.append(EntryReject("missing_link_and_id", "link", _raw_strings(raw)))
            continue
        if entry["author"] is None:
            entry["author"] = feed_author
        entries.append(entry)
    rejects.extend(
        EntryReject("truncated_entry", None, _raw_strings(raw)) for raw in attempt.cut_entries
    )
    rejects.extend(attempt.rejects)
    return ParsedFeed(
        entries=entries,
        rejects=rejects,
        error=None,
        parser=attempt.parser,
        encoding=encoding,
        feed_title=inline_text(_str(attempt.feed.get("title"))),
    )


def _base(url: str, feed_link: Any) -> str:
    """What relative entry links resolve against: the feed's own link, resolved against
    the feed's URL; the URL itself when the link is missing or does not parse (a channel
    link of ``http://[::1`` failed the whole document before)."""
    if not isinstance(feed_link, str) or not feed_link.strip():
        return url
    try:
        return urljoin(url, feed_link.strip())
    except ValueError:
        return url


def _entry(raw: Mapping[str, Any], base: str) -> dict[str, Any]:
    """One raw fastfeedparser/feedparser entry → the harvester's entry dict."""
    url, entry_id, unusable = _identity(raw, base)
    entry = {"external_id": entry_id, "url": url}
    for name, read in _FIELDS:
        entry[name] = read(raw)
    return _reported(raw, entry, unusable, {})


def _identity(raw: Mapping[str, Any],
              base: str) -> tuple[str | None, str | None, str | None]:
    """(url, external_id, a link that is no web address and was passed over) of a raw
    entry."""
    link = _str(raw.get("link")) or _alternate_link(raw.get("links"))
    entry_id = _str(raw.get("id"))
    url = _absolute(link, base)
    unusable = None
    if url is not None and not url.startswith(_WEB) and not _HTTP_RE.match(url):
        unusable, url = url, None  # javascript:void(0), mailto:
    if url is None and entry_id and _HTTP_RE.match(entry_id) and raw.get("guidislink", True):
        # An http(s) guid/id is the permalink unless the feed says otherwise
        # (RSS isPermaLink="false" → feedparser's guidislink False).
        url = entry_id
    if entry_id is not None and entry_id == link:
        # fastfeedparser fills a missing id with the raw link; never store a relative one.
        entry_id = url
    if unusable is not None and url is None and entry_id is None:
        url = unusable  # nothing else to know the entry by: validate rejects it
    return url, entry_id, None if url is not None else unusable


def _reported(raw: Mapping[str, Any], entry: dict[str, Any], unusable: str | None,
              dropped: dict[str, str]) -> dict[str, Any]:
    """``entry`` with what could not be used reported in its ``dropped``: ``dropped``
    (fields that failed), a date the document gave that no reader read, a link that is no
    web address (the entry is kept by its id), a JSON Feed field of the wrong type."""
    if entry["published_at"] is None or entry["updated_at"] is None:
        _unread_dates(raw, entry)
    if unusable is not None:
        dropped["url"] = f"{unusable[:80]!r} is not a web address"
    dropped.update(raw.get(DROPPED) or {})
    if dropped:
        entry.setdefault("dropped", {}).update(dropped)
    return entry


#: The entry's fields after its identity, each read from the raw entry on its own.
_FIELDS: tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...] = (
    ("title", lambda raw: inline_text(_str(raw.get("title")))),
    ("text", lambda raw: _text(raw)),  # a lambda: _text is defined below
    ("author", lambda raw: inline_text(_author(raw))),
    ("published_at", lambda raw: _date(raw, "published")),
    ("updated_at", lambda raw: _date(raw, "updated")),
    ("tags", lambda raw: _tags(raw.get("tags"))),
)


def _salvage(raw: Mapping[str, Any], base: str) -> dict[str, Any] | None:
    """``_entry`` for an entry it failed on: a field that cannot be read is left out and
    reported in ``dropped``, the entry kept; None when its link and id cannot be read."""
    try:
        url, entry_id, unusable = _identity(raw, base)
    except Exception:
        return None
    entry: dict[str, Any] = {"external_id": entry_id, "url": url}
    dropped: dict[str, str] = {}
    for name, read in _FIELDS:
        try:
            entry[name] = read(raw)
        except Exception as exc:
            entry[name] = [] if name == "tags" else None
            dropped[name] = f"could not be read ({type(exc).__name__}: {first_line(exc)})"
    return _reported(raw, entry, unusable, dropped)


def _unread_dates(raw: Mapping[str, Any], entry: dict[str, Any]) -> None:
    """Report a date the feed gave that no parser could read: the entry is kept without
    it, and ``dropped`` says which and what it was."""
    lookup = dict.get if isinstance(raw, dict) else type(raw).get
    for key in ("published", "updated"):
        value = lookup(raw, key)
        if entry[f"{key}_at"] is None and isinstance(value, str) and value.strip():
            shown = value.strip()[:80]
            entry.setdefault("dropped", {})[f"{key}_at"] = f"{shown!r} is not a date"


def _str(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _alternate_link(links: Any) -> str | None:
    """The first alternate (or rel-less) link of an entry's link list."""
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, Mapping) and link.get("rel") in (None, "alternate"):
            href = _str(link.get("href"))
            if href:
                return href
    return None


def _absolute(link: str | None, base: str) -> str | None:
    if link is None:
        return None
    link = collapse_ws(link)
    if not link:
        return None
    try:
        return urljoin(base, link)
    except ValueError:  # e.g. an invalid IPv6 netloc: keep what the feed said
        return link


def _author(raw: Mapping[str, Any]) -> str | None:
    """The author's name: feedparser's ``author`` adds the e-mail address to it ("Mark
    Pilgrim (f8dy@example.com)"), and RSS writes ``email (Name)``: the name is taken."""
    detail = raw.get("author_detail")
    detail = detail if isinstance(detail, Mapping) else {}
    # Not feedparser's author_detail.name first: it split "jonas@insanity.industries
    # (Jonas Große Sundrup)" into the name "stries (Jonas Große Sundrup".
    author = _str(raw.get("author")) or _str(detail.get("name")) or _str(detail.get("email"))
    if author and len(author) <= _MAX_AUTHOR and (
            named := _EMAIL_AND_NAME_RE.match(author) or _NAME_AND_EMAIL_RE.match(author)):
        return named.group(1).strip()
    return author


def _text(raw: Mapping[str, Any]) -> str | None:
    """Content when the feed has it (the fuller text), else summary/description."""
    for part in raw.get("content") or []:
        if isinstance(part, Mapping):
            text = _as_text(_str(part.get("value")), part.get("type"))
            if text:
                return text
    summary = _str(raw.get("summary")) or _str(raw.get("description"))
    detail = raw.get("summary_detail")
    kind = detail.get("type") if isinstance(detail, Mapping) else None
    return _as_text(summary, kind)


def _as_text(value: str | None, kind: Any) -> str | None:
    """HTML (the default in feeds) to text; declared plain text only has whitespace tidied."""
    if value is None:
        return None
    if kind in ("text", "text/plain"):
        return plain_text(value)
    return html_to_text(value)


def _tags(raw_tags: Any) -> list[str]:
    """Category terms (or labels), stripped, deduplicated in document order."""
    seen: dict[str, None] = {}
    for tag in raw_tags if isinstance(raw_tags, list) else []:
        value = (tag.get("term") or tag.get("label")) if isinstance(tag, Mapping) else tag
        text = inline_text(value) if isinstance(value, str) else None
        if text:
            seen.setdefault(text, None)
    return list(seen)


def _date(raw: Mapping[str, Any], key: str) -> datetime | None:
    """A timezone-aware UTC datetime from whichever form the parser gave; naive means UTC."""
    # Plain dict lookups: feedparser's dict answers "updated" with the published date
    # when there is none, and that must not become updated_at.
    lookup = dict.get if isinstance(raw, dict) else type(raw).get
    parsed = lookup(raw, f"{key}_parsed")
    value = lookup(raw, key)
    if isinstance(parsed, time.struct_time) and not _no_date_text(value):  # feedparser's
        if isinstance(value, str) and (misread := reread(value.strip())) is not None:
            return _utc(misread)  # it takes CET or UTC+02:00 for UTC
        try:
            return datetime(*parsed[:6], tzinfo=UTC)
        except ValueError:
            pass
    if isinstance(value, datetime):
        return _utc(value)
    return _parse_date_string(value) if isinstance(value, str) else None


def _no_date_text(value: Any) -> bool:
    """feedparser reads a time alone (``10:30``) as today's and a year alone (``2024``,
    W3C-DTF) as its January 1st: neither reading is kept, as our readers give neither."""
    return isinstance(value, str) and (is_relative(value) or _YEAR_ONLY_RE.fullmatch(value)
                                       is not None)


def _parse_date_string(value: str) -> datetime | None:
    """Our reading of a date string: strictly (``_strict_date``), else by dateutil without
    completing it from today (``dates.read_partial``); a relative phrase is no date."""
    strict = _strict_date(value)
    if strict is not None or is_relative(value):
        return strict
    partial = read_partial(value)
    try:
        return _utc(partial) if partial is not None else None
    except OverflowError:  # year 1 with a positive offset: no such instant
        return None


def _strict_date(value: str) -> datetime | None:
    """RFC 3339 / ISO 8601, RFC 822, and the forms of ``dates.reread`` and
    ``dates.localized_rfc822``; None for anything else."""
    value = value.strip()
    if not value or unknown_zone(value):
        return None
    if (misread := reread(value)) is not None:
        return _utc(misread)
    parsers: Iterable[Callable[[str], datetime]] = (
        lambda v: datetime.fromisoformat(v.replace("Z", "+00:00")),
        _rfc822,
    )
    for parse in parsers:
        try:
            return _utc(parse(value))
        except (ValueError, TypeError, IndexError, OverflowError):
            continue
    localized = localized_rfc822(value)
    return _utc(localized) if localized is not None else None


def _rfc822(value: str) -> datetime:
    """``parsedate_to_datetime``, except that a year written ``0001`` is not read as 2001
    (its two-digit-year rule): .NET writes its DateTime.MinValue that way."""
    if zero_century(value):
        raise ValueError(f"year of {value!r} before 100")
    return parsedate_to_datetime(value)


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _raw_strings(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The entry's string fields, cut short: JSON-serialisable, for the operator."""
    out: dict[str, Any] = {}
    for key in ("id", "title", "link", "published", "updated", "author", "summary", "description"):
        value = raw.get(key)
        if isinstance(value, str) and value.strip():
            out[key] = value.strip()[:RAW_LIMIT]
    if isinstance(dropped := raw.get(DROPPED), Mapping) and dropped:
        # What came in a form that cannot be used: without it, a JSON Feed item of the
        # wrong types ({"url": ["…"], "id": {…}}) was a rejection whose raw input was {}.
        out["dropped"] = {str(k): str(v)[:RAW_LIMIT] for k, v in dropped.items()}
    if not out and isinstance(xml := raw.get(RAW_XML), str):
        out["xml"] = xml
    return out
