"""ScorePipeline: 0–100 relevance with a stored breakdown (see services/scoring.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scrapy.crawler import Crawler
from scrapy.settings import BaseSettings

from harvester.items import Signal
from harvester.pipelines.numbers import number, switch
from harvester.services import engagement
from harvester.services.scoring import DEFAULT_HALF_LIFE_HOURS, HALF_LIFE_MAX, Scorer
from harvester.sourcefile import sources_path
from harvester.sources import SourcesError, SourcesFile, load_sources


@dataclass(frozen=True, slots=True)
class ScoreConfig:
    half_life_hours: float
    engagement_enabled: bool
    engagement_window: int
    engagement_days: float

    @classmethod
    def from_settings(cls, settings: BaseSettings) -> ScoreConfig:
        # NaN stored NaN scores, which sort above all (and JSON has no NaN or Infinity).
        return cls(
            half_life_hours=number(settings, "HARVEST_SCORE_HALF_LIFE_HOURS",
                                   DEFAULT_HALF_LIFE_HOURS, float, above=0,
                                   high=HALF_LIFE_MAX),
            engagement_enabled=switch(settings, "HARVEST_SCORE_ENGAGEMENT_ENABLED", True),
            engagement_window=number(settings, "HARVEST_SCORE_ENGAGEMENT_WINDOW",
                                     engagement.DEFAULT_WINDOW, low=1),
            engagement_days=number(settings, "HARVEST_SCORE_ENGAGEMENT_DAYS",
                                   engagement.DEFAULT_DAYS, float, above=0, high=36600),
        )


class ScorePipeline:
    """Scores each signal against ``[topics.*]`` (keywords, phrases, negative terms, source
    filters), its engagement percentile within its source, recency and source weight.
    Corroboration across sources is added when clusters are stored (services/rescore.py).

    The engagement history of the crawl's sources is read once, when the spider opens
    (one query); with the database unreachable, or no history yet, engagement is neutral.
    Settings: ``HARVEST_SCORE_HALF_LIFE_HOURS`` (24), ``HARVEST_SCORE_ENGAGEMENT_ENABLED``
    (True), ``HARVEST_SCORE_ENGAGEMENT_WINDOW`` (500 signals per source),
    ``HARVEST_SCORE_ENGAGEMENT_DAYS`` (30).
    Stats: ``harvest/score/engagement_history`` (reference values loaded).
    """

    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.config = ScoreConfig.from_settings(crawler.settings)
        try:
            sources = load_sources(sources_path(crawler.settings))
        except SourcesError:
            # The spider reports the broken file and closes with "config_error" before
            # any item exists; failing here would only add a traceback.
            sources = SourcesFile()
        self._weights = {s.name: s.weight for s in sources.sources}
        self._scorer = Scorer(sources.topics, self.config.half_life_hours)
        self._references = engagement.References()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ScorePipeline:
        return cls(crawler)

    async def open_spider(self) -> None:
        if not self.config.engagement_enabled:
            return
        names: list[str] = list(getattr(self.crawler.spider, "source_names", []))
        self._references = await engagement.fetch_references(
            names, self.config.engagement_window, self.config.engagement_days)
        self.crawler.stats.set_value("harvest/score/engagement_history", len(self._references))

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, Signal):
            return item
        item.score, item.score_breakdown = self._scorer.score(
            title=item.title,
            text=item.text,
            published_at=item.published_at,
            source=item.source,
            source_weight=self._weights.get(item.source, 1.0),
            # As of the fetch, so `harvest rescore` (which ages from last_seen) agrees.
            now=item.fetched_at or datetime.now(UTC),
            engagement=self._references.measure(item.source, item.kind, item.engagement),
        )
        return item
