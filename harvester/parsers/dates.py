"""Date texts that feeds (and pages) send outside the RFC 822 / RFC 3339 they should use.

Four kinds matter in practice:

- RFC 822 dates with the day and month names of the feed's language
  (``Seg, 24 Set 2018 19:42:40 -0300`` from a Brazilian portal, ``mar., 24 nov. 2026``):
  the numbers are all there, only the names are not English. ``localized_rfc822`` reads
  them for Portuguese, Spanish, French, German, Italian and Dutch month names.
- Dates that general parsers misread without a word: a dotted ``01.05.2024`` is the 1st of
  May wherever dots are written (dateutil reads January 5th), a zone abbreviation they
  do not know (``CEST``) is taken as UTC, hours off, and so is an RFC 822 date whose
  offset is written the ISO way or after ``GMT`` (``+02:00``, ``GMT+2``; ``+02`` is even
  read as two minutes). ``reread`` reads those three forms.
- Phrases relative to the moment of reading (``yesterday``, ``2 hours ago``, ``now``, a
  time of day alone): a general date parser turns them into a time near the crawl,
  different on every crawl, so they are not dates of the entry. ``is_relative``
  recognises them, and words without any digit, so that the parsers report them as
  dropped instead of taking a guess.
- Dates that leave a part out (``Dec 28``, ``March 2024``, ``2024``): dateutil fills the
  part from the current date. ``read_partial`` reads them without today's help.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from dateutil import parser as dateparser
from dateutil.parser import UnknownTimezoneWarning

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
#: The zone abbreviations read right here: ``_ZONES`` and email.utils's own (it reads
#: ``CST`` as RFC 822's US Central, ``AST``/``ADT`` as Atlantic). Not AM/PM: email.utils
#: takes "10:00 PM" for 10:00 UTC.
_KNOWN_ZONES = frozenset(_ZONES) | {"AST", "ADT", "CST"}
# Anything ending in a time and a word where a zone goes: "28 Nov 2026 10:00 IST".
_TRAILING_WORD = re.compile(r".*\d{1,2}:\d{2}(?::\d{2})?\s*([A-Za-z]{1,5})\s*")

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

# Anything ending in a time and an offset written other than RFC 822's "+0200": "+02:00",
# "+02", "+2", "GMT+2", "UTC+02:00", "GMT+0200" (an ISO 8601 date has no space before it).
_OFFSET_ZONE = re.compile(
    r"(.*\d{1,2}:\d{2}(?::\d{2})?)\s+(?:(?:GMT|UTC|UT)\s*([+-])(\d{1,2})(?::?(\d{2}))?"
    r"|([+-])(\d{1,2})(?::(\d{2}))?)\s*", re.IGNORECASE)

# "10:30", "10:30:00 PM", "22:15 CEST", "10:30+02:00": a time without a date.
_CLOCK_ONLY = re.compile(
    r"\s*T?\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?\s*(?:[ap]\.?m\.?)?\s*"
    r"(?:Z|[+-]\d{2}:?\d{2}|[A-Za-z]{1,5})?\s*", re.IGNORECASE)

# A four-digit year below 100 ("0001"): RFC 822 readers and dateutil take it for 2001.
# (Not a zone offset, "+0000", nor the fraction of a second in "10:00:00.0012".)
_ZERO_CENTURY = re.compile(r"(?<![\d:+-])(?<!:\d\d\.)00\d\d(?![\d:])")

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
    if zero_century(year):
        return None
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
    it has none of its forms: a dotted day-first date, a date ending in a time and a zone
    abbreviation of ``_ZONES`` beyond RFC 822's own, or one ending in a time and an offset
    written ``+02:00``, ``+02`` or ``GMT+2``."""
    dotted = _DOTTED.fullmatch(value)
    if dotted is not None:
        day, month, year, clock, zone = dotted.groups()
        return _rfc822(day, int(month), year, clock, zone) if 1 <= int(month) <= 12 else None
    offset = _OFFSET_ZONE.fullmatch(value)
    if offset is not None:
        head, *zone = offset.groups()
        sign, hours, minutes = zone[:3] if zone[0] else zone[3:]
        return _offset_zone(head, sign, hours, minutes)
    named = _NAMED_ZONE.fullmatch(value)
    if named is None or named[2].upper() not in _ZONES.keys() - _RFC822_ZONES:
        return None
    try:  # "10 Jun 2003 04:00 CEST"; a non-English month goes to localized_rfc822
        return parsedate_to_datetime(f"{named[1]} {_ZONES[named[2].upper()]}")
    except (ValueError, TypeError, IndexError, OverflowError):
        return localized_rfc822(value)


def _offset_zone(head: str, sign: str, hours: str, minutes: str | None) -> datetime | None:
    """``head`` (an RFC 822 date and time) at the offset ``sign hours:minutes``; None when
    the head is no RFC 822 date (an ISO 8601 one is read right by every parser) or the
    offset is none (``+2:75``, ``+15``)."""
    if int(hours) > 14 or int(minutes or 0) > 59 or zero_century(head) or head[:4].isdigit():
        return None
    try:
        return parsedate_to_datetime(f"{head} {sign}{int(hours):02d}{minutes or '00'}")
    except (ValueError, TypeError, IndexError, OverflowError):
        return None


def unknown_zone(value: str) -> bool:
    """Whether ``value`` ends in a time and a zone abbreviation no reader here knows
    (``IST``: India, Ireland or Israel), which email.utils reads as UTC and fastfeedparser,
    in RFC 822's full layout, as India's: a guess either way, so no date."""
    match = _TRAILING_WORD.fullmatch(value)
    return match is not None and match[1].upper() not in _KNOWN_ZONES


def zero_century(value: str) -> bool:
    """Whether ``value`` writes a year below 100 with four digits (.NET's
    ``DateTime.MinValue``, ``0001``), which RFC 822 readers and dateutil read as 20xx."""
    return _ZERO_CENTURY.search(value) is not None


def is_relative(value: str) -> bool:
    """Whether a date text is relative to when it is read (a time of day alone is
    today's), or has no number at all."""
    return (not any(c.isdigit() for c in value) or _RELATIVE.search(value) is not None
            or _CLOCK_ONLY.fullmatch(value) is not None)


#: Two defaults for dateutil that differ in every date field (leap years both, so that a
#: ``Feb 29`` without a year is read): a field whose value changes with the default was
#: not in the text.
_DEFAULTS = (datetime(2004, 1, 1), datetime(2008, 2, 2))

#: How far ahead of the clock a date without a year may fall and still be this year's:
#: the page's zone may be ahead of UTC.
_AHEAD = timedelta(days=1)


def read_partial(text: str, now: datetime | None = None) -> datetime | None:
    """dateutil's reading of ``text``, with what it leaves out decided here, not from today.

    dateutil fills missing fields from the current date: ``Dec 28`` becomes this December,
    weeks ahead; ``March 2024`` the 29th of March when read on a 29th; ``10:30`` today.
    Here a text without a month is no date (a lone day, year or time); a month without a
    day is its 1st; a day and month without a year are their latest occurrence up to a
    day ahead of ``now`` (listing pages write ``Nov 28`` for this year's entries). None
    for what dateutil cannot read, and for a zone it does not know (``IST``: India,
    Ireland or Israel), which it would read as UTC.
    """
    if zero_century(text):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnknownTimezoneWarning)
            first, second = (dateparser.parse(text, default=d) for d in _DEFAULTS)
    except (ValueError, OverflowError, UnknownTimezoneWarning):
        return None
    if first.month != second.month or not _real_offset(first):
        return None
    if first.year == second.year:
        return first  # a missing day is the 1st (the first default's day)
    now = now or datetime.now(UTC)
    for year in range(now.year, now.year - 9, -1):  # Feb 29 waits for a leap year
        try:
            candidate = first.replace(year=year)
        except ValueError:
            continue
        zoned = candidate if candidate.tzinfo else candidate.replace(tzinfo=UTC)
        if zoned <= now + _AHEAD:
            return candidate
    return None


def _real_offset(value: datetime) -> bool:
    """Whether the offset dateutil read is one a zone can have (``+2500`` is not: its
    datetime raises as soon as the offset is asked for)."""
    try:
        value.utcoffset()
    except ValueError:
        return False
    return True


def reported(read: Callable[[Any], datetime | None], value: Any, name: str,
             dropped: dict[str, str]) -> datetime | None:
    """``read(value)`` for an API's date field; a value that is there (not ``None`` or
    ``""``) but cannot be read goes into ``dropped`` as ``name``: a date sent as text, out
    of range or malformed was left out without a word."""
    parsed = read(value)
    if parsed is None and value not in (None, ""):
        shown = value[:80] if isinstance(value, str) else value
        dropped[name] = f"{shown!r} is not a date"
    return parsed
