"""The per-item ``INSERT`` + commit pipeline most Scrapy projects start with: the baseline
the batched store is measured against. Benchmark use only."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from scrapy.crawler import Crawler

from harvester.config import get_config
from harvester.items import Signal
from harvester.services import database

INSERT = """
INSERT INTO signals (key, source, kind, url, canonical_url, external_id, title, text, author,
                     published_at, updated_at, fetched_at, language, tags, engagement, score,
                     score_breakdown)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (key) DO UPDATE SET seen_count = signals.seen_count + 1, last_seen = now()
"""


class NaiveInsertPipeline:
    def __init__(self, crawler: Crawler) -> None:
        self.crawler = crawler
        self.conn: psycopg.Connection[Any] | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> NaiveInsertPipeline:
        return cls(crawler)

    def open_spider(self) -> None:
        self.conn = psycopg.connect(database.resolve_url(get_config()))

    def close_spider(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def process_item(self, item: Any) -> Any:
        if not isinstance(item, Signal):
            return item
        assert self.conn is not None
        self.conn.execute(INSERT, (
            item.key, item.source, item.kind, item.url, item.canonical_url, item.external_id,
            item.title, item.text, item.author, item.published_at, item.updated_at,
            item.fetched_at, item.language, item.tags, json.dumps(item.engagement), item.score,
            json.dumps(item.score_breakdown),
        ))
        self.conn.commit()
        return item


class DiscardRowsPipeline:
    """Builds the store rows and throws them away: run (d) of the benchmark, which shows
    what the pipeline costs without the database write."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    async def process_item(self, item: Any) -> Any:
        from harvester.pipelines.store import signal_row

        if isinstance(item, Signal):
            self.rows.append(signal_row(item, "00000000-0000-0000-0000-000000000000"))
            if len(self.rows) >= 500:
                self.rows = []
        return item
