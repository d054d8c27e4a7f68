"""Article pages → title, author, publication date, body text.

A page usually says who wrote it and when in machine-readable form: JSON-LD
(``NewsArticle``, ``BlogPosting`` …), OpenGraph / ``article:*`` meta tags, ``<meta
name="author">``. Those are read first; trafilatura supplies the body text and fills what
the metadata leaves open. Which one wins for which field was chosen by measuring both on
the real-article corpus (docs/extraction.md).
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Any

import trafilatura
from lxml import etree
from lxml import html as lxml_html

from harvester import surrogates
from harvester.parsers.dates import is_relative, localized_rfc822, read_partial, reread
from harvester.parsers.encoding import decode_document, wide_encoding
from harvester.parsers.html import collapse_ws
from harvester.parsers.language import language_tag

logger = logging.getLogger(__name__)

#: Longer pages are cut before parsing: no article needs more, and lxml's cost grows with
#: the tree.
MAX_HTML_CHARS = 3_000_000

_META_CHARSET_RE = re.compile(
    rb"<meta[^>]{0,200}?charset\s*=\s*[\"']?\s*([A-Za-z0-9._:-]{1,40})", re.IGNORECASE
)
_BY_RE = re.compile(r"^\s*(?:by|von|par|por|di|door|av)\s+", re.IGNORECASE)
_ARTICLE_TYPES = frozenset({
    "article", "newsarticle", "blogposting", "reportagenewsarticle", "analysisnewsarticle",
    "opinionnewsarticle", "reviewnewsarticle", "backgroundnewsarticle", "techarticle",
    "scholarlyarticle", "socialmediaposting", "liveblogposting", "report", "posting",
})


@dataclass(frozen=True, slots=True)
class Article:
    """What an article page says about itself; every field may be missing."""

    title: str | None = None
    author: str | None = None
    #: UTC-aware.
    published_at: datetime | None = None
    text: str | None = None
    language: str | None = None
    site_name: str | None = None
    description: str | None = None
    #: Fields the page's metadata gives in a form that cannot be read: field → why.
    dropped: dict[str, str] = dataclass_field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Candidates:
    """Each field as each reader found it, before choosing; kept apart for measuring."""

    jsonld: dict[str, str]
    meta: dict[str, str]
    trafilatura: dict[str, str]


def extract_article(body: bytes, url: str, content_type: str | None = None) -> Article:
    """Extract an article from an HTML page's bytes; never raises on bad input.

    The charset comes from the ``Content-Type`` header, else the page's ``<meta charset>``,
    and is checked against the bytes (:func:`decode_document`): real pages declare the
    wrong one.
    """
    tree = parse_html(body, content_type)
    if tree is None:
        return Article()
    return choose(candidates(tree, url))


#: Content types whose bodies may be HTML (servers send pages as text/plain or XML too).
_HTML_TYPES = ("text/html", "application/xhtml+xml", "text/plain", "text/xml",
               "application/xml", "")
#: How binary files start: a PDF, images, archives.
_BINARY_MAGIC = (b"%PDF", b"\x89PNG", b"GIF8", b"\xff\xd8\xff", b"PK\x03\x04", b"\x1f\x8b",
                 b"RIFF")


def not_html(body: bytes, content_type: str | None) -> str | None:
    """What a page that should be HTML is instead (``application/pdf``, binary bytes), or
    None: an article extracted from a PDF's bytes had the raw file as its text."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in _HTML_TYPES:
        return f"{kind}, not an HTML page"
    start = body[:1024].lstrip()
    if start.startswith(_BINARY_MAGIC) or (b"\x00" in start and not wide_encoding(body)):
        return "binary data, not an HTML page"  # a UTF-16 page has NULs and is a page
    return None


def decode_html(body: bytes, content_type: str | None = None) -> str:
    """An HTML page's text: the header's charset, else the page's ``<meta charset>``,
    each checked against the bytes by :func:`decode_document` (which also sniffs BOMs
    and falls back to detection)."""
    if not (content_type and "charset" in content_type.lower()):
        match = _META_CHARSET_RE.search(body[:8192])
        if match:
            content_type = "text/html; charset=" + match.group(1).decode("ascii")
    return decode_document(body, content_type).text


def parse_html(body: bytes, content_type: str | None = None) -> lxml_html.HtmlElement | None:
    """Decode and parse an HTML page; None when there is nothing to parse."""
    if not body or not body.strip():
        return None
    text = decode_html(body, content_type)[:MAX_HTML_CHARS]
    try:
        return lxml_html.document_fromstring(text)
    except (etree.ParserError, ValueError) as exc:
        logger.debug("page did not parse as HTML: %s", exc)
        return None


def candidates(tree: lxml_html.HtmlElement, url: str) -> Candidates:
    """Every reader's view of the page."""
    return Candidates(jsonld=jsonld_fields(tree), meta=meta_fields(tree),
                      trafilatura=trafilatura_fields(tree, url))


def choose(found: Candidates) -> Article:
    """One value per field, in the order that measured best (docs/extraction.md)."""
    def first(field: str, *readers: dict[str, str]) -> str | None:
        for reader in readers:
            value = reader.get(field)
            if value:
                return value
        return None

    j, m, t = found.jsonld, found.meta, found.trafilatura
    published = (parse_date(j.get("published")) or parse_date(m.get("published"))
                 or parse_date(j.get("created")))
    dropped: dict[str, str] = {}
    given = j.get("published") or m.get("published") or j.get("created")
    if published is None and given:
        # The page's own date is unreadable ("soon-ish", "0000-00-00", "2024"): reported,
        # and not replaced by trafilatura's reading of the same tags (2024 → January 1st).
        dropped["published_at"] = f"{given[:80]!r} is not a date"
    elif published is None:
        published = parse_date(t.get("published"))
    site_names = {v for v in (m.get("site_name"), j.get("site_name")) if v}
    title = first("title", m, j) or first("page_title", m) or t.get("title")
    return Article(
        dropped=dropped,
        title=_without_site_name(title, site_names),
        author=first("author", j, m) or clean_byline(t.get("author"), published),
        published_at=published,
        text=t.get("text") or None,
        # A tag, from the first reader that has one: Content-Language "utf-8" was stored.
        language=next((tag for r in (m, j, t) if (tag := language_tag(r.get("language")))),
                      None),
        site_name=first("site_name", m, j, t),
        description=first("description", m, j, t),
    )


#: What separates a page's title from the site's name appended to it.
_SITE_SEPARATORS = (" - ", " | ", " \u2013 ", " \u2014 ", " \u00b7 ", " :: ", " \u00bb ", " / ")


def _without_site_name(title: str | None, site_names: set[str]) -> str | None:
    """``title`` without a trailing "- Site" / "| Site" that names the site (og:site_name,
    the JSON-LD publisher): "Obama admits … - BBC News" was stored as the headline (on
    about 25 of the 128 corpus pages)."""
    if not title or not site_names:
        return title
    folded = title.casefold()
    for name in site_names:
        for separator in _SITE_SEPARATORS:
            suffix = f"{separator}{name}".casefold()
            if folded.endswith(suffix) and len(title) > len(suffix) + 3:
                return title[:-len(suffix)].rstrip()
    return title


_POSTS_BY_RE = re.compile(r"^\s*(?:view all posts by|all posts by|posts by|posted by|"
                         r"written by)\s+", re.IGNORECASE)
_BYLINE_PARTS_RE = re.compile(r"\s*[;,|]\s*")
_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december")


def clean_byline(value: str | None, published: datetime | None) -> str | None:
    """trafilatura's author, without what it took from around the byline: a link's
    "View all posts by", the month of the date that follows ("Joshua Sokol May" of an
    article of May; "Nathan Willis March"); None for a date line ("Last Updated January
    7"): names have no digits."""
    if not value:
        return None
    value = _POSTS_BY_RE.sub("", value).strip()
    # "Jane Roe; March 3" (a byline "By Jane Roe, March 3, 2021"): the parts with a
    # digit are the date's; a value that is nothing else ("Last Updated January 7") goes.
    kept = [part for part in _BYLINE_PARTS_RE.split(value)
            if part and not any(char.isdigit() for char in part)]
    value = ("; " if ";" in value else ", ").join(kept)
    words = value.split()
    if published is not None and len(words) > 2 and (
            words[-1].casefold() == _MONTHS[published.month - 1]):
        value = " ".join(words[:-1])
    return value or None


# -- JSON-LD ---------------------------------------------------------------------------


def jsonld_fields(tree: lxml_html.HtmlElement) -> dict[str, str]:
    """Title, author, dates … of the first article-like JSON-LD object on the page."""
    for node in _jsonld_nodes(tree):
        types = node.get("@type")
        names = types if isinstance(types, list) else [types]
        if not any(isinstance(n, str) and n.lower() in _ARTICLE_TYPES for n in names):
            continue
        fields = {
            "title": _text(node.get("headline") or node.get("name")),
            "author": _names(node.get("author") or node.get("creator"), people_only=True),
            "published": _text(node.get("datePublished")),
            # Below the page's own publication date (telegraph: a day late): a record's
            # creation, not its publication.
            "created": _text(node.get("dateCreated")),
            "modified": _text(node.get("dateModified")),
            "language": _text(node.get("inLanguage")),
            "site_name": _names(node.get("publisher")),
            "description": _text(node.get("description")),
        }
        return {k: v for k, v in fields.items() if v}
    return {}


def _jsonld_nodes(tree: lxml_html.HtmlElement) -> Iterator[dict[str, Any]]:
    for script in tree.xpath('//script[contains(@type, "ld+json")]'):
        raw = (script.text or "").strip()
        if not raw:
            continue
        try:
            data = surrogates.json_loads(_unwrapped(raw), strict=False)
        except ValueError:
            logger.debug("unparsable JSON-LD block skipped")
            continue
        yield from _walk(data)


#: What pages wrap a JSON-LD block in for old HTML parsers: a comment, or a CDATA section
#: (also behind a JavaScript comment). A CDATA-wrapped block was skipped as unparsable
#: on 7 of the 128 corpus pages, and the page's datePublished with it.
_WRAPPERS = (("<!--", "-->"), ("//<![CDATA[", "//]]>"), ("/*<![CDATA[*/", "/*]]>*/"),
             ("<![CDATA[", "]]>"))


def _unwrapped(raw: str) -> str:
    for opening, closing in _WRAPPERS:
        if raw.startswith(opening) and raw.endswith(closing):
            return raw[len(opening):-len(closing)].strip()
    return raw


def _walk(data: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    if depth > 4:
        return
    if isinstance(data, list):
        for element in data:
            yield from _walk(element, depth + 1)
    elif isinstance(data, dict):
        yield data
        for key in ("@graph", "mainEntity", "mainEntityOfPage", "itemListElement"):
            if isinstance(data.get(key), (list, dict)):
                yield from _walk(data[key], depth + 1)


def _names(value: Any, people_only: bool = False) -> str | None:
    """A person/organisation value (string, object, or a list of them) as ``A, B``.

    With ``people_only``, ``Organization`` objects are left out: as an article's author
    they are the publisher's name, and a byline found elsewhere on the page is better.
    """
    items = value if isinstance(value, list) else [value]
    names: list[str] = []
    for item in items:
        if isinstance(item, dict):
            if people_only and "organization" in str(item.get("@type", "")).lower():
                continue
            name = _text(item.get("name"))
        else:
            name = _text(item)
        if name and _plausible_name(name) and name not in names:
            names.append(name)
    return ", ".join(names) or None


def _plausible_name(value: str) -> bool:
    """Not a profile URL, a handle or a numeric id (``105092``)."""
    return not (value.startswith(("http://", "https://", "@")) or value.isdigit())


def _text(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("@value") or value.get("name")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return None
    return collapse_ws(_unescape(str(value))) or None


def _unescape(value: str) -> str:
    """JSON-LD strings sometimes carry HTML entities (``&amp;``, ``&#8217;``)."""
    return html.unescape(value) if "&" in value else value


# -- <meta> and <title> ----------------------------------------------------------------

_META_KEYS: dict[str, tuple[str, ...]] = {
    "title": ("og:title", "twitter:title", "dc.title", "sailthru.title", "parsely-title"),
    "author": ("author", "article:author", "dc.creator", "sailthru.author", "parsely-author",
               "byl", "twitter:creator"),
    "published": ("article:published_time", "datepublished", "og:published_time",
                  "pubdate", "publishdate", "publish-date", "publication_date",
                  "sailthru.date", "parsely-pub-date", "dc.date.issued", "dc.date",
                  "time.published", "time.datepublished", "date", "dcterms.created"),
    "site_name": ("og:site_name", "application-name"),
    "description": ("og:description", "description", "twitter:description"),
    "language": ("og:locale", "content-language", "dc.language"),
}


def meta_fields(tree: lxml_html.HtmlElement) -> dict[str, str]:
    """Fields from ``<meta name|property|itemprop=… content=…>``, ``<title>``, ``lang``."""
    seen: dict[str, str] = {}
    for element in tree.iter("meta"):
        content = element.get("content")
        if not content or not content.strip():
            continue
        # Each of its names: <meta property="article:published" itemprop="datePublished">
        # was known only by the property no list names.
        for attribute in ("property", "name", "itemprop", "http-equiv"):
            key = (element.get(attribute) or "").strip().lower()
            if key and key not in seen:
                seen[key] = collapse_ws(content)
    for element in tree.iter("time"):
        # <time itemprop="datePublished" datetime="2017-01-18T23:00:00-0800">, and
        # WordPress's <time class="entry-date published" datetime=…>: the instant, where
        # trafilatura gives only the day (stored as midnight UTC: 31 hours early on cnet).
        value = element.get("datetime") or element.get("content")
        if not value or not value.strip() or _in_a_comment(element):
            continue
        names = set()
        if (element.get("itemprop") or "").strip().lower() == "datepublished":
            names.add("time.datepublished")
        if {"entry-date", "published"} <= set((element.get("class") or "").split()):
            names.add("time.published")  # not any "published": comments carry one too
        for key in names:
            seen.setdefault(key, collapse_ws(value))
    fields: dict[str, str] = {}
    for field, keys in _META_KEYS.items():
        for key in keys:
            value = seen.get(key)
            if field == "author" and value:
                value = _author_text(value)
            if value:
                fields[field] = value
                break
    title = tree.findtext(".//title")
    if title and title.strip():
        fields["page_title"] = collapse_ws(title)
    lang = tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang")
    if lang and lang.strip():
        fields["language"] = lang.strip()
    return fields


def _in_a_comment(element: lxml_html.HtmlElement) -> bool:
    """Whether ``element`` is part of a reader's comment (schema.org Comment microdata
    marks its date ``itemprop="datePublished"`` too: it became the article's)."""
    for ancestor in element.iterancestors():
        classes = (ancestor.get("class") or "").lower().split()
        if (any(c in ("comment", "comments") or c.startswith("comment-") for c in classes)
                or (ancestor.get("id") or "").lower().startswith(("comment", "div-comment"))
                or "schema.org/comment" in (ancestor.get("itemtype") or "").lower()):
            return True  # not "comments-open" on <body>: a theme's switch, not a comment
    return False


def _author_text(value: str) -> str | None:
    """An author meta value, or None when it is a profile URL or a handle."""
    if not _plausible_name(value):
        return None
    return _BY_RE.sub("", value).strip() or None


# -- trafilatura -----------------------------------------------------------------------


def trafilatura_fields(tree: lxml_html.HtmlElement, url: str) -> dict[str, str]:
    """trafilatura's body text and metadata (it prunes the tree, so it gets a copy)."""
    try:
        doc = trafilatura.bare_extraction(
            deepcopy(tree), url=url, with_metadata=True, include_comments=False,
        )
    except Exception:  # a bug in a third-party parser must not lose the page
        logger.warning("trafilatura failed on %s", url, exc_info=True)
        return {}
    if doc is None:
        return {}
    date = doc.date
    if isinstance(date, str) and date.endswith("-01-01") and not _new_year_shown(tree, date):
        # January 1st is what trafilatura makes of a year found alone: a CSS class
        # ("mjx-c2026": 2026-01-01), a copyright line ("©1998–2015": 1998-01-01). Kept
        # when the page shows that very day ("January 1, 2025").
        date = None
    fields = {"title": doc.title, "author": doc.author, "published": date,
              "text": doc.text, "language": doc.language, "site_name": doc.sitename,
              "description": doc.description}
    return {k: v for k, v in fields.items() if isinstance(v, str) and v.strip()}


def _new_year_shown(tree: lxml_html.HtmlElement, date: str) -> bool:
    """Whether the page's text shows January 1st of ``date``'s year (``2025-01-01``,
    ``01.01.2025``, ``January 1, 2025``, ``1 Jan 2025``, ``1. Januar 2025``, ``1er janvier
    2025``, ``1 de enero de 2025``)."""
    year = re.escape(date[:4])
    shown = re.compile(
        rf"{year}-01-01|\b0?1[./]0?1[./]{year}|"
        rf"\b(?:jan|janv|ene|gen)[a-zé]*\.?\s+0?1(?:st)?\b,?\s+{year}|"
        rf"\b0?1(?:\.|st|er)?\s+(?:de\s+)?(?:jan|janv|ene|gen)[a-zé]*\.?,?\s+(?:de\s+)?{year}",
        re.IGNORECASE)
    return shown.search(tree.text_content()) is not None


# -- dates -----------------------------------------------------------------------------


def parse_date(value: str | None) -> datetime | None:
    """A date or timestamp string → UTC-aware datetime; a date without zone is taken as UTC.

    Epoch seconds (and milliseconds) are accepted; years outside 1990–2100 are treated as
    parse errors (``0001-01-01`` placeholders, two-digit-year accidents). A text without a
    number or relative to today is no date; RFC 822 in six more languages, dotted day-first
    dates and common zone abbreviations are read (:mod:`harvester.parsers.dates`). What a
    text leaves out is not taken from today (``dates.read_partial``).
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    if is_relative(text):
        return None  # "Tue", "March", "yesterday": dateutil would complete them from today
    parsed = reread(text)  # "01.05.2024" day first, "… 10:00 CEST"
    if parsed is None:
        try:
            if text.isdigit() and len(text) in (10, 13):
                stamp = int(text) / (1000 if len(text) == 13 else 1)
                parsed = datetime.fromtimestamp(stamp, UTC)
            else:
                parsed = read_partial(text) or localized_rfc822(text)  # "Seg, 24 Set 2018"
        except (ValueError, OverflowError, OSError):
            parsed = None
    if parsed is None:
        return None
    if not 1990 <= parsed.year <= 2100:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
