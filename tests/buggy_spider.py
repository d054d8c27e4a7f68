"""A feed spider with a bug: it raises after its first two items (for ``scrapy runspider``
in tests/test_crawl.py). Stands for any exception that escapes a callback; with
``-a raises=close`` it raises Scrapy's ``CloseSpider`` instead, which is not a bug."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scrapy.exceptions import CloseSpider
from scrapy.http import Response

from harvester.items import Rejection, Signal
from harvester.spiders.feed import FeedSpider


class BuggyFeedSpider(FeedSpider):
    name = "buggy_feed"

    def __init__(self, raises: str = "bug", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.raises = raises

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Signal | Rejection]:
        for n, output in enumerate(super().parse(response, **kwargs)):
            if n == 2:
                if self.raises == "close":
                    raise CloseSpider("enough_for_today")
                raise ValueError("an entry nobody expected")
            yield output
