"""Engagement counts from an API answer: numbers kept, anything else reported.

Shared by the Reddit, Hacker News and X parsers. A count the API did not give (absent or
``null``) is simply not there; a count given in a form that is not a number (``"lots"``,
``true``, ``NaN``, an object) is left out of the item and reported as a dropped field,
so that a changed or broken API shows in the crawl's stats instead of silently zeroing
a score input. A whole number sent as a string (``"42"``) is taken as the number; a
negative one is reported too, except for a score (``SIGNED``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_WHOLE = re.compile(r"-?[0-9]{1,18}")
#: Counts past 18 digits (as a string may have) are no counts: 10**400 failed the item in
#: the score step (OverflowError), and two near 1e308 summed to infinity, which made every
#: later run's engagement query overflow in PostgreSQL.
_LARGEST = 10**18 - 1
#: Counts that may be below zero: a score (Reddit's, of a downvoted post). Everything
#: else counts things (comments, likes, views), and -3 of them is a broken answer.
SIGNED = frozenset({"score"})


def engagement(values: Mapping[str, Any], dropped: dict[str, str], *,
               fractions: bool = False) -> dict[str, int | float]:
    """The usable counts of ``values``; what was wrong with each other one goes into
    ``dropped`` as ``engagement.<name>``. ``fractions`` allows finite floats (Reddit's
    ``upvote_ratio``)."""
    out: dict[str, int | float] = {}
    for name, value in values.items():
        if value is None:
            continue
        number = _number(value, fractions)
        if number is None:
            dropped[f"engagement.{name}"] = f"{_show(value)} is not a number"
        elif abs(number) > _LARGEST:
            dropped[f"engagement.{name}"] = f"{_show(value)} is too large to be a count"
        elif number < 0 and name not in SIGNED:
            dropped[f"engagement.{name}"] = f"{_show(value)} is negative: not a count"
        else:
            out[name] = number
    return out


def _number(value: Any, fractions: bool) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        # NaN or an infinity would poison the percentile and the score.
        return value if fractions and math.isfinite(value) else None
    if isinstance(value, str) and _WHOLE.fullmatch(value.strip()):
        return int(value)
    return None


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"
