"""Why an item left the pipeline early (each class gets its own dropped-reasons stat), and
why a request was not sent."""

from __future__ import annotations

from scrapy.exceptions import DropItem, IgnoreRequest


class RateLimited(IgnoreRequest):
    """The source asked us to stay away longer than this run is willing to wait."""


class NotSent(IgnoreRequest):
    """The crawl was stopping (Ctrl-C, SIGTERM, Scrapyd's cancel) while the request waited
    for its source's pause or budget: it is dropped, not sent."""


class BadRedirect(IgnoreRequest):
    """A redirect to something that is not a web address (``javascript:``, ``mailto:``),
    which Scrapy could only fail on with its own error."""


class InvalidSignal(DropItem):
    """The item failed validation; it is stored in ``rejects`` with ``field`` and ``reason``."""

    def __init__(self, field: str, reason: str, detail: str = "") -> None:
        self.field = field
        self.reason = reason
        super().__init__(
            f"invalid {field}: {reason}" + (f" ({detail})" if detail else ""), log_level="WARNING"
        )


class DuplicateSignal(DropItem):
    """The item was already seen in this run (same canonical URL or source id)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, log_level="DEBUG")


class StoredRejection(DropItem):
    """A :class:`~harvester.items.Rejection` reached the store: kept in ``rejects``, not
    counted as a scraped item."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason, log_level="WARNING")
