"""ScorePipeline: 0–100 relevance with a stored breakdown (see services/scoring.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from scrapy.crawler import Crawler

from harvester.items import Signal
from harvester.services.scoring import Scorer
from harvester.sourcefile import sources_path
from harvester.sources import SourcesError, SourcesFile, load_sources


class ScorePipeline:
    """Scores each signal against ``[topics.*]``, recency and source weight.

    Settings: ``HARVEST_SCORE_HALF_LIFE_HOURS`` (24).
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        try:
            sources = load_sources(sources_path(crawler.settings))
        except SourcesError:
            # The spider reports the broken file and closes with "config_error" before
            # any item exists; failing here would only add a traceback.
            sources = SourcesFile()
        self._weights = {s.name: s.weight for s in sources.sources}
        self._scorer = Scorer(
            sources.topics, crawler.settings.getfloat("HARVEST_SCORE_HALF_LIFE_HOURS", 24.0)
        )

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ScorePipeline:
        return cls(crawler)

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, Signal):
            return item
        item.score, item.score_breakdown = self._scorer.score(
            title=item.title,
            text=item.text,
            published_at=item.published_at,
            source_weight=self._weights.get(item.source, 1.0),
            now=datetime.now(UTC),
        )
        return item
