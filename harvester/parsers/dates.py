"""Date texts that feeds (and pages) send outside the RFC 822 / RFC 3339 they should use.

Two kinds matter in practice:

- RFC 822 dates with the day and month names of the feed's language
  (``Seg, 24 Set 2018 19:42:40 -0300`` from a Brazilian portal, ``mar., 24 nov. 2026``):
  the numbers are all there, only the names are not English. ``localized_rfc822`` reads
  them for Portuguese, Spanish, French, German, Italian and Dutch month names.
- Phrases relative to the moment of reading (``yesterday``, ``2 hours ago``, ``now``): a
  general date parser turns them into a time near the crawl, different on every crawl, so
  they are not dates of the entry. ``is_relative`` recognises them, and words without any
  digit, so that the parsers report them as dropped instead of taking a guess.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from email.utils import parsedate_to_datetime

_ENGLISH = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: The first three letters (four where three are ambiguous: French juin/juillet) of the
#: month names and abbreviations of the languages above, accents removed → month number.
_MONTHS = {
    # 1
    "jan": 1, "ene": 1, "gen": 1,
    # 2
    "feb": 2, "fev": 2,
    # 3
    "mar": 3, "maa": 3, "mrt": 3,
    # 4
    "apr": 4, "abr": 4, "avr": 4,
    # 5
    "may": 5, "mai": 5, "mag": 5, "mei": 5,
    # 6
    "jun": 6, "juin": 6, "giu": 6,
    # 7
    "jul": 7, "juil": 7, "lug": 7,
    # 8
    "aug": 8, "ago": 8, "aou": 8,
    # 9
    "sep": 9, "set": 9,
    # 10
    "oct": 10, "okt": 10, "out": 10, "ott": 10,
    # 11
    "nov": 11,
    # 12
    "dec": 12, "dez": 12, "dic": 12,
}

# [weekday,] day month year hh:mm[:ss] [zone]: the weekday is any word (it is redundant).
_LOCALIZED = re.compile(
    r"\s*(?:[^\W\d_]+\.?,?\s+)?(\d{1,2})\.?\s+([^\W\d_]{3,12})\.?,?\s+(\d{2,4})"
    r"(?:\s+(\d{1,2}:\d{2}(?::\d{2})?)(?:\s+([+-]\d{4}|UTC?|GMT|Z|[ECMP][SD]T))?)?\s*",
    re.IGNORECASE)

_RELATIVE = re.compile(
    r"\b(?:ago|now|today|yesterday|tomorrow|last|next|this|hours?|minutes?|days?|weeks?)\b",
    re.IGNORECASE)


def _month(name: str) -> int | None:
    plain = unicodedata.normalize("NFKD", name.lower())
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return _MONTHS.get(plain[:4] if plain.startswith("jui") else plain[:3])


def localized_rfc822(value: str) -> datetime | None:
    """An RFC 822 date whose day and month names are not English, or None.

    No zone reads as UTC, as RFC 822 parsers do; a zone name RFC 822 does not define
    (``CET``) is not guessed. ``parsedate_to_datetime`` checks the numbers (a 31 November
    is not a date).
    """
    match = _LOCALIZED.fullmatch(value)
    if match is None:
        return None
    day, name, year, clock, zone = match.groups()
    month = _month(name)
    if month is None:
        return None
    clock = clock or "00:00"
    if clock.count(":") == 1:
        clock += ":00"
    english = f"{day} {_ENGLISH[month - 1]} {year} {clock} {zone or '+0000'}"
    try:
        return parsedate_to_datetime(english)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def is_relative(value: str) -> bool:
    """Whether a date text is relative to when it is read, or has no number at all."""
    return not any(c.isdigit() for c in value) or _RELATIVE.search(value) is not None
