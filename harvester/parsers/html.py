"""Cheap HTML → plain text for feed titles and summaries.

Runs for every entry of every feed, so it avoids work where it can: text without
markup only has its whitespace tidied, and markup goes through lxml's C parser once,
with paragraph breaks kept as newlines and script/style dropped.
"""

from __future__ import annotations

import html
import logging
import re

from lxml import etree

from harvester import surrogates
from harvester.items import TidyText

logger = logging.getLogger(__name__)

#: Elements after which a reader expects a line break.
BLOCK_TAGS: tuple[str, ...] = (
    "p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "tr", "table", "blockquote",
    "pre", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "section", "article", "header",
    "footer", "aside", "figure", "figcaption", "address", "nav", "main", "details",
    "summary",
)
_DROP_TAGS: tuple[str, ...] = ("script", "style", "noscript", "template", "iframe", "object")

_TAG_RE = re.compile(r"</?[A-Za-z][^<>]{0,1000}>")
#: Inline HTML that turns up in titles. Only these are stripped from one-line text: a
#: plain-text title may legitimately say ``Version 1.9 <beta>``.
_INLINE_TAG_RE = re.compile(
    r"</?(?:a|abbr|b|big|br|cite|code|del|dfn|em|font|i|img|ins|kbd|mark|p|q|s|samp|small"
    r"|span|strike|strong|sub|sup|time|tt|u|var|wbr|div)\b[^<>]{0,1000}>",
    re.IGNORECASE,
)
_WS_RE = re.compile(r"\s+")
_MARKUP_HINT_RE = re.compile(r"<[A-Za-z/!]")
# The control characters validate's rewrite drops, but \t \n \v \f \r, which str.split()
# takes for whitespace. In UTF-8 each is one byte, and no byte of a multi-byte character
# is below 0x80: a byte-level test is exact.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_CONTROL_BYTES = bytes(range(0x00, 0x09)) + bytes(range(0x0E, 0x20)) + b"\x7f"

#: Plain etree parser, not lxml.html's: that one looks up a Python element class for every
#: node, which doubled the cost on the hot path.
_PARSER = etree.HTMLParser(remove_comments=True, remove_pis=True, no_network=True)


def collapse_ws(text: str) -> str:
    """All runs of whitespace to one space, trimmed."""
    return _WS_RE.sub(" ", text).strip()


def inline_text(value: str | None) -> str | None:
    """A one-line plain-text form (titles, authors): tags removed, entities decoded.

    A regex suffices here: titles are short and rarely hold more than ``<b>`` or ``<sup>``.
    Only known inline HTML tags are removed, so ``x < y`` and ``<beta>`` survive.
    """
    if not value:
        return None
    text = value
    if "<" in text:
        text = _INLINE_TAG_RE.sub(" " if "<br" in text.lower() else "", text)
    if "&" in text:
        text = html.unescape(text)
    text = collapse_ws(text)
    return text or None


def html_to_text(markup: str | None) -> TidyText | None:
    """Readable plain text from an HTML fragment, one line per block, or None if empty."""
    if not markup:
        return None
    if not _MARKUP_HINT_RE.search(markup):
        text = html.unescape(markup) if "&" in markup else markup
        return _tidy(text)
    try:
        root = etree.fromstring(f"<div>{markup}</div>", _PARSER)
    except (etree.ParserError, ValueError) as exc:
        logger.debug("HTML fragment did not parse (%s); falling back to tag stripping", exc)
        return _stripped(markup)
    if root is None:
        return None
    for element in list(root.iter(*_DROP_TAGS)):
        _drop(element)
    try:
        _break_blocks(root)
    except ValueError:
        # lxml parses control characters into a text but refuses them when a text is set
        # back: parse the fragment again without them (rare; it raised before).
        if _CONTROL_RE.search(markup):
            return html_to_text(_CONTROL_RE.sub("", markup))
        return _stripped(markup)
    return _tidy("".join(root.itertext()))


def _stripped(markup: str) -> TidyText | None:
    """The text of a fragment lxml cannot handle: tags removed, entities decoded."""
    return _tidy(html.unescape(_TAG_RE.sub(" ", markup)))


def _break_blocks(root: etree._Element) -> None:
    """Newlines around block elements: paragraph breaks once whitespace is tidied."""
    for element in root.iter(*BLOCK_TAGS):
        element.tail = "\n" + element.tail if element.tail else "\n"
        element.text = "\n" + element.text if element.text else "\n"


def _drop(element: etree._Element) -> None:
    """Remove an element and its content but keep the text that follows it."""
    parent = element.getparent()
    if parent is None:
        return
    tail = element.tail
    previous = element.getprevious()
    if tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(element)


def plain_text(text: str | None) -> TidyText | None:
    """Declared plain text: only whitespace is tidied, ``<`` and ``&`` are content."""
    return _tidy(text) if text else None


def _tidy(text: str) -> TidyText | None:
    """Collapse whitespace within lines, drop empty lines, one newline between blocks,
    drop control characters, replace lone surrogates (harvester/surrogates.py): text the
    validate pipeline can trust (:class:`TidyText`).

    ``str.split`` rather than a regex: a whitespace regex matches at every space and was
    the single largest cost of HTML→text on the corpus. The control characters are looked
    for in the bytes (≈ 1.5 µs for 2 KB; a regex search took 8, and validate's full check
    of a text 9-15), and the encoding itself finds a lone surrogate.
    """
    lines = (" ".join(line.split()) for line in text.split("\n"))
    tidy = "\n".join(line for line in lines if line)
    if not tidy:
        return None
    try:
        data = tidy.encode("utf-8")
    except UnicodeEncodeError:
        return _tidy(surrogates.replace(tidy))  # rare: JSON sources replace them first
    if len(data.translate(None, _CONTROL_BYTES)) != len(data):
        return _tidy(_CONTROL_RE.sub("", tidy))  # rare; dropping them may leave spaces
    return TidyText(tidy)
