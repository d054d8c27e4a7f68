"""Why an item left the pipeline early: each class gets its own dropped-reasons stat."""

from __future__ import annotations

from scrapy.exceptions import DropItem


class InvalidSignal(DropItem):
    """The item failed validation; it is stored in ``rejects`` with ``field`` and ``reason``."""

    log_level = "INFO"

    def __init__(self, field: str, reason: str, detail: str = "") -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid {field}: {reason}" + (f" ({detail})" if detail else ""))


class DuplicateSignal(DropItem):
    """The item was already seen in this run (same canonical URL or source id)."""

    log_level = "DEBUG"
