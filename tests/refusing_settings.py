"""harvester's Scrapy settings with one a component refuses (for tests/test_crawl.py): a
value given with ``-s`` is refused before the crawl, one in a settings module only when
the crawl starts."""

from __future__ import annotations

from harvester.settings import *  # noqa: F403

HARVEST_CLUSTER_DISTANCE = 99
