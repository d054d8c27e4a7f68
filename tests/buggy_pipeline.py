"""An item pipeline with a bug: it raises on the item titled "bug story 1" (for
tests/test_crawl.py). Stands for any exception a pipeline raises on an item."""

from __future__ import annotations

from typing import Any

from harvester.items import Signal


class BuggyPipeline:
    def process_item(self, item: Any) -> Any:
        if isinstance(item, Signal) and item.title == "bug story 1":
            raise KeyError("a field nobody expected")
        return item
