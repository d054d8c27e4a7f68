"""Lone surrogates: broken characters that JSON can carry and nothing after it can.

JSON may escape one half of a UTF-16 surrogate pair on its own (``"\\ud800"``), and
``json.loads`` turns that into a lone surrogate code point. Such a ``str`` cannot be encoded
as UTF-8: psycopg refuses it (and with it the whole batch), a UTF-8 file cannot take it
(the spool writes it with ``surrogatepass``), and lxml silently ends a fragment's text at
it. A source that sends one has broken a character,
so it becomes U+FFFD, the replacement character, as undecodable bytes do.

Every JSON document from a source is decoded with :func:`json_loads`; validate and the
store replace what other paths bring (:func:`replace`, :func:`replace_in`).
"""

from __future__ import annotations

import json
import re
from typing import Any

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def replace(value: str) -> str:
    """``value`` with each lone surrogate replaced by U+FFFD.

    ASCII text is answered at once (``isascii`` reads a flag); other text is encoded
    once, 1–3 µs for 2 KB, where a regex search took 16.
    """
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(REPLACEMENT, value)
    return value


def replace_in(value: Any) -> Any:
    """:func:`replace` through the strings, keys included, of nested dicts and lists."""
    if isinstance(value, str):
        return replace(value)
    if isinstance(value, dict):
        return {replace_in(k): replace_in(v) for k, v in value.items()}
    if isinstance(value, list):
        return [replace_in(v) for v in value]
    return value


def may_hold(document: str | bytes) -> bool:
    """Whether a JSON text can decode to a lone surrogate: it has a ``\\ud…`` escape (a
    pair decodes to one character, so one of these is only a hint), or it is bytes in
    UTF-16 or UTF-32, which the byte test cannot read."""
    if isinstance(document, str):
        return "\\ud" in document or "\\uD" in document
    return b"\\ud" in document or b"\\uD" in document or b"\x00" in document[:4]


#: Digits beyond which a JSON integer stays a string (Python's own limit is 4,300).
MAX_INT_DIGITS = 4000


def _int_or_digits(digits: str) -> int | str:
    """A JSON integer; one too long to convert stays its digits (a string where a number
    was due: the field is dropped as of the wrong type). Python refuses to convert it, and
    one such id lost a whole JSON Feed ("Exceeds the limit (4300 digits) …")."""
    return int(digits) if len(digits) <= MAX_INT_DIGITS else digits


def json_loads(document: str | bytes, **kwargs: Any) -> Any:
    """``json.loads``, with lone surrogates replaced; it raises what ``json.loads`` raises,
    except that a document nested too deeply for it (``[`` × 100,000) is a ``ValueError``
    like any other broken JSON, not a ``RecursionError``, and an integer of more than
    ``MAX_INT_DIGITS`` digits is a string. Only documents with a surrogate escape are
    walked."""
    kwargs.setdefault("parse_int", _int_or_digits)
    try:
        data = json.loads(document, **kwargs)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None
    return replace_in(data) if may_hold(document) else data
