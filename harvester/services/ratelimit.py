"""What a server says about how long to wait: ``Retry-After`` and the rate-limit headers of
the APIs we crawl, turned into seconds. Pure functions; the politeness middleware acts."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # ASCII digits only: not "²"

# Header lookups take a lower-cased name and return the value or None.
HeaderGetter = Callable[[str], str | None]


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date (RFC 9110 10.2.3).
    None when absent or unreadable, and when it asks for no wait at all (``0``, a date
    already past: a clock a little behind ours): taken at its word, every retry would go
    within a fraction of a second, so the caller backs off as without the header."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if _SECONDS.fullmatch(value):
        # Whole seconds per RFC 9110; a fraction ("1.5", which some APIs send) is taken too.
        return _positive(float(value))
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # An HTTP date is GMT by definition; asctime's layout ("Sun Nov  6 08:49:37 1994"),
        # which RFC 9110 has recipients accept, does not say so.
        when = when.replace(tzinfo=UTC)
    return _positive(when.timestamp() - (time.time() if now is None else now))


def _positive(seconds: float | None) -> float | None:
    return seconds if seconds is not None and seconds > 0 else None


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None  # "1e400", "nan": no wait anyone meant


def reset_seconds(header: HeaderGetter, now: float | None = None) -> float | None:
    """Seconds until the API's rate-limit window resets, from the headers that say so:
    X API v2 ``x-rate-limit-reset`` (epoch seconds) and Reddit ``X-Ratelimit-Reset``
    (seconds from now). None, as for ``Retry-After``, when the reset is now or past."""
    epoch = _number(header("x-rate-limit-reset"))
    if epoch is not None:
        return _positive(epoch - (time.time() if now is None else now))
    return _positive(_number(header("x-ratelimit-reset")))


def exhausted(header: HeaderGetter) -> bool:
    """Whether the response says no requests are left in the current window."""
    for name in ("x-rate-limit-remaining", "x-ratelimit-remaining"):
        remaining = _number(header(name))
        if remaining is not None and remaining < 1:
            return True
    return False


def wait_for(status: int, header: HeaderGetter, now: float | None = None) -> float | None:
    """How long a 429/503 asks us to wait before trying again: ``Retry-After`` first, then
    the API's reset header; None when the server does not say."""
    if status not in (429, 503):
        return None
    delay = retry_after_seconds(header("retry-after"), now)
    if delay is None and status == 429:
        delay = reset_seconds(header, now)
    return delay
