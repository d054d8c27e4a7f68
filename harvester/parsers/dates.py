"""Date texts that feeds (and pages) send outside the RFC 822 / RFC 3339 they should use.

Three kinds matter in practice:

- RFC 822 dates with the day and month names of the feed's language
  (``Seg, 24 Set 2018 19:42:40 -0300`` from a Brazilian portal, ``mar., 24 nov. 2026``):
  the numbers are all there, only the names are not English. ``localized_rfc822`` reads
  them for Portuguese, Spanish, French, German, Italian and Dutch month names.
- Dates that general parsers misread without a word: a dotted ``01.05.2024`` is the 1st of
  May wherever dots are written (dateutil reads January 5th), and a zone abbreviation they
  do not know (``CEST``) is taken as UTC, hours off. ``reread`` reads those two forms.
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

#: Zone abbreviations → UTC offset: RFC 822's own, and the common ones it lacks that
#: feeds write. Ambiguous ones (IST: India, Ireland or Israel; CST: US or China) are left
#: out, and so not guessed.
_ZONES = {
    "UT": "+0000", "UTC": "+0000", "GMT": "+0000", "Z": "+0000",
    "EST": "-0500", "EDT": "-0400", "CDT": "-0500", "MST": "-0700", "MDT": "-0600",
    "PST": "-0800", "PDT": "-0700",
    "WET": "+0000", "WEST": "+0100", "BST": "+0100", "CET": "+0100", "CEST": "+0200",
    "MET": "+0100", "MEST": "+0200", "EET": "+0200", "EEST": "+0300", "MSK": "+0300",
    "JST": "+0900", "KST": "+0900", "HKT": "+0800", "SGT": "+0800", "AWST": "+0800",
    "ACST": "+0930", "AEST": "+1000", "AEDT": "+1100", "NZST": "+1200", "NZDT": "+1300",
    "BRT": "-0300", "ART": "-0300",
}
_RFC822_ZONES = frozenset(("UT", "UTC", "GMT", "Z", "EST", "EDT", "CDT", "MST", "MDT", "PST",
                           "PDT"))
_ZONE = r"([+-]\d{4}|[A-Za-z]{1,4})"

# [weekday,] day month year hh:mm[:ss] [zone]: the weekday is any word (it is redundant).
_LOCALIZED = re.compile(
    r"\s*(?:[^\W\d_]+\.?,?\s+)?(\d{1,2})\.?\s+([^\W\d_]{3,12})\.?,?\s+(\d{2,4})"
    r"(?:\s+(\d{1,2}:\d{2}(?::\d{2})?)(?:\s+" + _ZONE + r")?)?\s*", re.IGNORECASE)
# day.month.year [hh:mm[:ss]] [zone]
_DOTTED = re.compile(
    r"\s*(\d{1,2})\.(\d{1,2})\.(\d{4}),?(?:[ T]+(\d{1,2}:\d{2}(?::\d{2})?)(?:\s*" + _ZONE
    + r")?)?\s*")
# Anything ending in a time and a zone abbreviation: "10 Jun 2003 04:00 CEST".
_NAMED_ZONE = re.compile(r"(.*\d{1,2}:\d{2}(?::\d{2})?)\s+([A-Za-z]{3,4})\s*")

_RELATIVE = re.compile(
    r"\b(?:ago|now|today|yesterday|tomorrow|last|next|this|hours?|minutes?|days?|weeks?)\b",
    re.IGNORECASE)


def _month(name: str) -> int | None:
    plain = unicodedata.normalize("NFKD", name.lower())
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return _MONTHS.get(plain[:4] if plain.startswith("jui") else plain[:3])


def localized_rfc822(value: str) -> datetime | None:
    """An RFC 822 date whose day and month names are not English, or None.

    No zone reads as UTC, as RFC 822 parsers do; a zone abbreviation is read through
    ``_ZONES`` and one it lacks (``IST``) is not guessed. ``parsedate_to_datetime`` checks
    the numbers (a 31 November is not a date).
    """
    match = _LOCALIZED.fullmatch(value)
    if match is None:
        return None
    day, name, year, clock, zone = match.groups()
    month = _month(name)
    if month is None:
        return None
    return _rfc822(day, month, year, clock, zone)


def _rfc822(day: str, month: int, year: str, clock: str | None,
            zone: str | None) -> datetime | None:
    offset = _ZONES.get(zone.upper()) if zone and zone[0] not in "+-" else zone or "+0000"
    if offset is None:
        return None
    clock = clock or "00:00"
    if clock.count(":") == 1:
        clock += ":00"
    try:
        return parsedate_to_datetime(f"{day} {_ENGLISH[month - 1]} {year} {clock} {offset}")
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def reread(value: str) -> datetime | None:
    """Our reading of a date text general parsers misread (see the module), or None when
    it has neither form: a dotted day-first date, or a date ending in a time and a zone
    abbreviation of ``_ZONES`` beyond RFC 822's own."""
    dotted = _DOTTED.fullmatch(value)
    if dotted is not None:
        day, month, year, clock, zone = dotted.groups()
        return _rfc822(day, int(month), year, clock, zone) if 1 <= int(month) <= 12 else None
    named = _NAMED_ZONE.fullmatch(value)
    if named is None or named[2].upper() not in _ZONES.keys() - _RFC822_ZONES:
        return None
    try:  # "10 Jun 2003 04:00 CEST"; a non-English month goes to localized_rfc822
        return parsedate_to_datetime(f"{named[1]} {_ZONES[named[2].upper()]}")
    except (ValueError, TypeError, IndexError, OverflowError):
        return localized_rfc822(value)


def is_relative(value: str) -> bool:
    """Whether a date text is relative to when it is read, or has no number at all."""
    return not any(c.isdigit() for c in value) or _RELATIVE.search(value) is not None
