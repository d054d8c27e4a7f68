"""Numeric ``HARVEST_*`` Scrapy settings, read with their bounds.

Scrapy's ``getint``/``getfloat`` take ``nan``, ``inf`` and any sign: a half-life of NaN
stored NaN scores (and ``harvest notify`` failed on each later run), a title limit of -1
cut every title's last character, a future tolerance of ``inf`` stopped the crawl with an
OverflowError. Each value is checked when the component is built (and, given with ``-s``,
before the crawl starts: setting_values.py), and a wrong one is one sentence naming the
setting.
"""

from __future__ import annotations

import math
from typing import Any

from scrapy.settings import BaseSettings


def number(settings: BaseSettings, name: str, default: float, kind: type[int] | type[float] = int,
           *, low: float | None = None, high: float | None = None,
           above: float | None = None) -> Any:
    """``name`` as ``kind``, at least ``low`` (or more than ``above``) and at most ``high``;
    NaN is never a value, infinity only when no ``high`` is given."""
    try:
        value = (settings.getint if kind is int else settings.getfloat)(name, default)
    except (ValueError, OverflowError):  # OverflowError: getint("inf")
        value = None
    # A whole number past 64 bits is no count anything takes (and math.isnan raised an
    # OverflowError on it: a traceback where a sentence belonged).
    if value is None or (math.isnan(value) if isinstance(value, float) else
                         abs(value) > _LARGEST) or (
            low is not None and value < low) or (above is not None and value <= above) or (
            high is not None and not value <= high):
        given = str(settings.get(name))
        raise ValueError(f"{name} must be {_wanted(kind, low, high, above)}, not "
                         f"{given if len(given) <= 40 else given[:39] + '…'!r}")
    return value


_LARGEST = 2**63 - 1


def _wanted(kind: type[int] | type[float], low: float | None, high: float | None,
            above: float | None) -> str:
    what = "a whole number" if kind is int else "a number"
    if above is not None:
        what += f" above {above:g}"
    elif low is not None:
        what += f" of at least {low:g}"
    if high is not None:
        what += f"{',' if above is not None or low is not None else ''} at most {high:g}"
    return what


def switch(settings: BaseSettings, name: str, default: bool) -> bool:
    """``name`` as True or False; Scrapy's own error for ``-s NAME=maybe`` named no setting."""
    try:
        return settings.getbool(name, default)
    except ValueError:
        raise ValueError(f"{name} must be True or False (or 1 or 0), not "
                         f"{settings.get(name)!r}") from None
