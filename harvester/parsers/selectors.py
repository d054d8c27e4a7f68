"""Values out of HTML by the selectors written in a source entry.

A selector is XPath when it starts with ``/``, ``(`` or ``./`` and CSS otherwise (with
parsel's ``::text`` and ``::attr(name)``). A selector that lands on an element rather than
on text or an attribute gives the element's text — or, for links, its ``href``.
"""

from __future__ import annotations

import re

from cssselect import SelectorError
from lxml.etree import XPathError
from parsel import Selector, SelectorList

from harvester.parsers.html import collapse_ws

_XPATH_STARTS = ("/", "(", "./")

_LINK_TEXT = re.compile(r"^(?:https?://|/)\S+$")


def is_xpath(selector: str) -> bool:
    return selector.lstrip().startswith(_XPATH_STARTS)


def selector_error(selector: str) -> str | None:
    """Why a selector cannot be used (bad CSS or XPath syntax), or None."""
    if not selector.strip():
        return "it is empty"
    probe = Selector(text="<html></html>")
    try:
        _select(probe, selector)
    except (SelectorError, XPathError, ValueError) as exc:
        kind = "XPath" if is_xpath(selector) else "CSS"
        return f"it is not valid {kind} ({exc})"
    return None


def select(node: Selector, selector: str) -> SelectorList[Selector]:
    """The nodes a selector matches, relative to ``node``."""
    return _select(node, selector)


def _select(node: Selector, selector: str) -> SelectorList[Selector]:
    selector = selector.strip()
    return node.xpath(selector) if is_xpath(selector) else node.css(selector)


def values(node: Selector, selector: str, *, link: bool = False) -> list[str]:
    """Every non-empty value a selector gives, whitespace collapsed.

    An element becomes its text content; with ``link``, an element with an ``href`` (or
    ``src``) becomes that attribute instead, so ``h2 a`` works as a URL field.
    """
    out: list[str] = []
    for match in _select(node, selector):
        value = _value(match, link)
        if value:
            out.append(value)
    return out


def first(node: Selector, selector: str, *, link: bool = False) -> str | None:
    found = values(node, selector, link=link)
    return found[0] if found else None


def joined(node: Selector, selector: str, separator: str = " ") -> str | None:
    """All values of a selector as one string (a title or body split over elements)."""
    return separator.join(values(node, selector)) or None


def _value(match: Selector, link: bool) -> str | None:
    root = match.root
    if isinstance(root, str):
        return collapse_ws(root) or None
    if not hasattr(root, "iter"):  # a number or boolean from an XPath function
        return collapse_ws(str(root)) or None
    text = collapse_ws(" ".join(match.xpath(".//text()").getall())) or None
    if link:
        for attribute in ("href", "src"):
            target = match.attrib.get(attribute)
            if target and target.strip():
                return target.strip()
        # Text stands in for a link only when it is one; "ABC-123" is not a URL to resolve.
        return text if text and _LINK_TEXT.match(text) else None
    return text
