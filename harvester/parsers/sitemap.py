"""Sitemaps (XML ``urlset`` / ``sitemapindex``, plain text, gzip, news extension) → entries.

Pure: no Scrapy, no I/O. :func:`parse_sitemap` never raises; a document that cannot be
used comes back with ``error`` set (and whatever entries came before the damage), a URL
that cannot be used as an :class:`EntryReject`.

* gzip is recognised by its magic bytes, not by the name: ``.gz`` files are often served
  already inflated (or were never compressed), and plain names can hide gzip.
* Elements are matched by local name, so the standard namespace, Google's old one, a
  prefixed ``sit:urlset`` or no namespace at all read the same.
* The charset is decided as a feed's is (:func:`~harvester.parsers.encoding.decode_document`:
  BOM, HTTP header, XML declaration, detection when they lie), and XML is cleaned as a
  feed's is (:func:`~harvester.parsers.encoding.clean_xml_text`) before lxml reads it.
* Text sitemaps are one URL per line (a BOM is allowed).
* RSS/Atom feeds are valid sitemaps too (sitemaps.org, "Other formats"): their links are
  the URLs, their updated/published dates the ``lastmod``.
* Entities are not resolved and nothing is fetched by the XML parser (no XXE); the
  inflated size is capped (the crawl's ``DOWNLOAD_MAXSIZE``, see
  :func:`~harvester.parsers.encoding.inflate_limit`).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

from lxml import etree
from protego import Protego

from harvester.parsers.encoding import (
    MAX_DECOMPRESSED,
    BodyTooLarge,
    clean_xml_text,
    document_text,
    gunzip_checked,
    to_utf8_xml,
)
from harvester.parsers.feed import EntryReject, parse_feed
from harvester.parsers.html import inline_text

Kind = Literal["urlset", "sitemapindex", "text", "feed", "unknown"]

#: Raw values kept in a reject are cut to this length.
RAW_LIMIT = 500

_GZIP_MAGIC = b"\x1f\x8b"
_FEED_ROOTS = frozenset({"rss", "feed", "RDF", "channel"})
_HTTP_RE = re.compile(r"^https?://[^/\s]+", re.IGNORECASE)
# A URL with a scheme of its own ("http:", "ftp:", "javascript:"): not joined to the base.
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_DATE_ONLY_RE = re.compile(r"^\d{4}(?:-\d{2}(?:-\d{2})?)?$")
_ROOT_RE = re.compile(rb"<([A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)")
_PROLOG_RE = re.compile(rb"^(?:\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>\[]*(?:\[.*?\])?\s*>)*",
                        re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class SitemapEntry:
    """One ``<url>`` (a page) or ``<sitemap>`` (a child sitemap) and what it says."""

    loc: str
    lastmod: datetime | None = None
    #: The latest instant a lastmod without a time (``2024``, ``2024-05``, ``2024-05-01``)
    #: can mean: compared by it, not by its first instant; None for a full timestamp.
    lastmod_until: datetime | None = None
    news_title: str | None = None
    news_published: datetime | None = None
    news_keywords: tuple[str, ...] = ()
    news_language: str | None = None


@dataclass(slots=True)
class ParsedSitemap:
    """Everything :func:`parse_sitemap` learned from one document."""

    kind: Kind
    urls: list[SitemapEntry] = field(default_factory=list)
    sitemaps: list[SitemapEntry] = field(default_factory=list)
    rejects: list[EntryReject] = field(default_factory=list)
    error: str | None = None
    gzipped: bool = False
    #: Dates that were present but not a date, as (loc, field, text): the URL is kept
    #: without it (``lastmod``, ``news:publication_date``).
    bad_dates: list[tuple[str, str, str]] = field(default_factory=list)


def parse_sitemap(body: bytes, url: str = "", content_type: str | None = None, *,
                  max_size: int = MAX_DECOMPRESSED) -> ParsedSitemap:
    """Parse a sitemap document fetched from ``url`` (used to resolve relative locations)
    and served with the ``Content-Type`` header ``content_type`` (its charset counts, as
    for feeds); ``max_size``: how far a gzip body may inflate."""
    gzipped = body.startswith(_GZIP_MAGIC)
    try:
        data, cut_short = gunzip_checked(body, max_size)
    except BodyTooLarge as exc:
        return ParsedSitemap(kind="unknown", gzipped=gzipped, error=str(exc))
    if gzipped and not data:
        return ParsedSitemap(kind="unknown", gzipped=True, error="gzip stream is corrupt")
    # The charset is decided as a feed's is (BOM, HTTP header, XML declaration, detection):
    # lxml trusts the declaration alone, and lost a whole ISO-8859-1 sitemap that only its
    # header described, or every URL after the first windows-1252 byte of a "UTF-8" one.
    text = document_text(data, content_type, f"Sitemap {url}").text
    if not text:
        result = ParsedSitemap(kind="unknown", error="empty document")
    elif text.startswith("<"):
        result = _parse_xml(to_utf8_xml(clean_xml_text(text)), url)
    else:
        # A cut gzip stream ends mid-line: its last line is no whole URL.
        result = _parse_text(text.rpartition("\n")[0] if cut_short else text, url)
    if cut_short and not result.error:
        # The URLs before the cut are used; the source fails so that the rest is not
        # skipped unseen (a text sitemap stored the half URL the stream ended in).
        result.error = "gzip stream is cut short or corrupt"
    result.gzipped = gzipped
    return result


def robots_sitemaps(body: bytes, robots_url: str) -> list[str]:
    """The ``Sitemap:`` URLs of a robots.txt, absolute and without repeats."""
    return robots_sitemap_lines(body, robots_url)[0]


def robots_sitemap_lines(body: bytes, robots_url: str) -> tuple[list[str], list[str]]:
    """(the http(s) ``Sitemap:`` URLs of a robots.txt, absolute and without repeats; the
    other ones, such as ``ftp://…``, which are passed over)."""
    text = body.decode("utf-8-sig", errors="replace")
    found = dict.fromkeys(urljoin(robots_url, u.strip()) for u in Protego.parse(text).sitemaps)
    return ([u for u in found if _HTTP_RE.match(u)],
            [u for u in found if not _HTTP_RE.match(u)])


#: A date without a time is a local date of an unknown zone: it ends this long after its
#: end in UTC, in the westmost zone (UTC-12). A page of "2026-11-28" from California was
#: written at 04:00 UTC on the 29th.
_WESTMOST = timedelta(hours=12)
_LATEST = datetime.max.replace(tzinfo=UTC)


def parse_lastmod(value: str | None) -> tuple[datetime | None, datetime | None]:
    """A W3C datetime (``2024``, ``2024-05``, ``2024-05-01``, ``2024-05-01T10:00Z``…) →
    (its first instant in UTC, the latest instant it can mean when it has no time, else
    None); ``(None, None)`` if it is no date, or one past what a datetime holds in UTC
    (``9999-12-31T23:59:59-01:00``: it overflowed and failed the whole sitemap)."""
    text = (value or "").strip()
    if not text:
        return None, None
    if _DATE_ONLY_RE.match(text):
        parts = [int(p) for p in text.split("-")]
        try:
            year, month, day = [*parts, 1, 1][:3]
            start = datetime(year, month, day, tzinfo=UTC)
        except ValueError:
            return None, None
        return start, _period_end(start, len(parts))
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
        return (parsed.replace(tzinfo=UTC) if parsed.tzinfo is None
                else parsed.astimezone(UTC)), None
    except (ValueError, OverflowError):
        return None, None


def _period_end(start: datetime, parts: int) -> datetime:
    """The end of the year, month or day starting at ``start``, in the westmost zone."""
    try:
        if parts == 1:
            end = start.replace(year=start.year + 1)
        elif parts == 2:
            end = (start.replace(year=start.year + 1, month=1) if start.month == 12
                   else start.replace(month=start.month + 1))
        else:
            end = start + timedelta(days=1)
        return end + _WESTMOST
    except (ValueError, OverflowError):  # the year 9999
        return _LATEST


def newer_than(entry: SitemapEntry, since: datetime) -> bool:
    """Whether the entry changed after ``since``; a lastmod without a time counts as its
    whole year, month or day in any zone (a page changed today after our last run, or this
    month for ``2024-05``, must not be missed)."""
    if entry.lastmod is None:
        return True
    return (entry.lastmod_until or entry.lastmod) > since


# -- XML -------------------------------------------------------------------------------


def _local(tag: Any) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


def _root_name(data: bytes) -> str:
    head = data[:4096].lstrip(b"\xef\xbb\xbf")
    prolog = _PROLOG_RE.match(head)
    match = _ROOT_RE.match(head, prolog.end() if prolog else 0)
    return match.group(2).decode("ascii", "replace") if match else ""


def _parse_xml(data: bytes, url: str) -> ParsedSitemap:
    root = _root_name(data)
    if root in _FEED_ROOTS:
        return _parse_feed(data, url)
    if root not in ("urlset", "sitemapindex"):
        return ParsedSitemap(kind="unknown",
                             error=f"not a sitemap (root element <{root or '?'}>)")
    result = ParsedSitemap(kind="urlset" if root == "urlset" else "sitemapindex")
    # Both kinds of child are taken from either root: real urlsets carry the odd
    # <sitemap> (trafilatura's hreflang case), and nothing is gained by dropping it.
    targets = {"url": result.urls, "sitemap": result.sitemaps}
    events = etree.iterparse(
        io.BytesIO(data), events=("end",), resolve_entities=False, no_network=True,
        remove_comments=True, remove_pis=True, huge_tree=False,
    )
    try:
        for _, element in events:
            target = targets.get(_local(element.tag))
            if target is None or _local(element.getparent().tag) not in ("urlset",
                                                                          "sitemapindex"):
                continue
            entry = _entry(element, url, result)
            if entry is not None:
                target.append(entry)
            element.clear(keep_tail=False)
    except etree.XMLSyntaxError as exc:
        result.error = f"not well-formed XML ({exc.msg})"
    return result


def _entry(element: Any, base: str, result: ParsedSitemap) -> SitemapEntry | None:
    # Only direct children and the news block count: image:loc or video:title must not
    # be taken for the page's own loc or title.
    values: dict[str, str] = {}
    for child in element:
        name = _local(child.tag)
        if name == "news":
            for item in child.iter():
                key = "news_" + _local(item.tag)
                if item is not child and key not in values and (item.text or "").strip():
                    values[key] = item.text.strip()
        elif name in ("loc", "lastmod") and name not in values:
            # All its text: markup inside (<loc>…/<b>x</b>y</loc>) cut the URL short.
            values[name] = "".join(child.itertext()).strip()
    loc = values.get("loc") or (element.text or "").strip()
    if not loc:
        result.rejects.append(EntryReject("missing_loc", "loc", _raw(element)))
        return None
    if base and not _SCHEME_RE.match(loc):
        loc = urljoin(base, loc)  # relative: against the sitemap's address
    if not _web_address(loc):  # "http://" was joined into the sitemap's own address
        result.rejects.append(EntryReject("not_http_url", "loc", {"loc": loc[:RAW_LIMIT]}))
        return None
    lastmod, until = parse_lastmod(values.get("lastmod"))
    published = parse_lastmod(values.get("news_publication_date"))[0]
    for name, text, value in (("lastmod", values.get("lastmod"), lastmod),
                              ("news:publication_date", values.get("news_publication_date"),
                               published)):
        if text and value is None:
            result.bad_dates.append((loc, name, text))
    keywords = values.get("news_keywords", "")
    return SitemapEntry(
        loc=loc, lastmod=lastmod, lastmod_until=until,
        news_title=inline_text(values.get("news_title")),  # as feed titles: no <b>, &amp;
        news_published=published,
        news_keywords=tuple(k.strip() for k in keywords.split(",") if k.strip()),
        news_language=values.get("news_language"),
    )


def _web_address(loc: str) -> bool:
    """An http(s) URL with a host (not ``http://`` or ``http:/path``)."""
    if not _HTTP_RE.match(loc):
        return False
    try:
        return bool(urlsplit(loc).hostname)
    except ValueError:
        return False


def _raw(element: Any) -> dict[str, Any]:
    text = etree.tostring(element, encoding="unicode", with_tail=False)
    return {"element": text[:RAW_LIMIT]}


def _parse_feed(data: bytes, url: str) -> ParsedSitemap:
    feed = parse_feed(data, url or "https://sitemap.invalid/")
    result = ParsedSitemap(kind="feed", error=feed.error, rejects=list(feed.rejects))
    for item in feed.entries:
        link = item.get("url")
        if not link:
            continue
        when = item.get("updated_at") or item.get("published_at")
        result.urls.append(SitemapEntry(loc=link, lastmod=when, news_title=item.get("title"),
                                        news_published=item.get("published_at")))
    return result


# -- plain text --------------------------------------------------------------------------


def _parse_text(text: str, url: str) -> ParsedSitemap:
    result = ParsedSitemap(kind="text")
    for number, line in enumerate(text.splitlines(), start=1):
        loc = line.strip().lstrip("\ufeff")
        if not loc:
            continue
        if _HTTP_RE.match(loc) and not any(ch.isspace() for ch in loc):
            result.urls.append(SitemapEntry(loc=loc))
        else:
            result.rejects.append(
                EntryReject("not_http_url", "loc", {"line": number, "text": loc[:RAW_LIMIT]})
            )
    if not result.urls and result.rejects:
        result.error = "not a sitemap (no line is a URL)"
    return result

