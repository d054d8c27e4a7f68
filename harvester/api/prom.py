"""``/metrics``: the crawl processes' counters merged (multiprocess mode) plus gauges read
from PostgreSQL at scrape time (signals, freshness, spool, notifications, nodes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg

from harvester.services.metrics import prepare_directory

prepare_directory()  # before prometheus_client is imported: see harvester.services.metrics

from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.core import GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

from harvester.config import get_config  # noqa: E402
from harvester.services import scrapyd, spool  # noqa: E402
from harvester.sources import SourcesFile  # noqa: E402

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class DatabaseCollector(Collector):
    """Gauges computed from PostgreSQL (and the spool directory) on every scrape."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]],
                 sources: Callable[[], SourcesFile | None],
                 notifications: Callable[[psycopg.Connection[Any]], dict[str, dict[str, int]]]
                 ) -> None:
        self.connect = connect
        self.sources = sources
        self.notifications = notifications

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("harvest_database_up", "Whether PostgreSQL answered the scrape")
        yield from self._spool()
        yield from self._nodes()
        parsed = self.sources()
        # Read without the database: they went with it, and HarvestSourcesFileUnreadable
        # could not fire during an outage.
        yield from self._from_file(parsed)
        try:
            with self.connect() as conn:
                families = list(self._from_db(conn, parsed))
        except psycopg.Error:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _from_file(self, parsed: SourcesFile | None) -> Iterator[Metric]:
        # Without it the intervals are gone, and every stale alert with them, silently.
        readable = GaugeMetricFamily("harvest_sources_file_readable",
                                     "1 when harvest serve can read the sources file")
        readable.add_metric([], 0 if parsed is None else 1)
        yield readable
        if parsed is not None:
            interval = GaugeMetricFamily(
                "harvest_source_interval_seconds",
                "Each crawled source's interval (with cron, the gap between its next two due "
                "times)", labels=["source"])
            now = datetime.now(UTC)
            for source in get_config().crawled(parsed.sources):
                interval.add_metric([source.name], source.period(now).total_seconds())
            yield interval

    def _from_db(self, conn: psycopg.Connection[Any],
                 parsed: SourcesFile | None) -> Iterator[Metric]:
        signals = GaugeMetricFamily("harvest_signals", "Signals stored", labels=["source"])
        for source, count in conn.execute(
                "SELECT source, count(*) FROM signals GROUP BY source").fetchall():
            signals.add_metric([source], count)
        yield signals
        last = GaugeMetricFamily("harvest_source_last_success_timestamp_seconds",
                                 "When each source last crawled successfully",
                                 labels=["source"])
        disabled = GaugeMetricFamily("harvest_source_disabled",
                                     "1 when a source was disabled after failing",
                                     labels=["source"])
        # Disabled only of sources still crawled: one switched off or taken out of the
        # file kept HarvestSourceDisabled firing for good (/health and notify had let it go).
        crawled = (None if parsed is None
                   else {s.name for s in get_config().crawled(parsed.sources)})
        for source, success, off in conn.execute(
                "SELECT source, last_success, disabled FROM sources_state").fetchall():
            if success is not None:
                last.add_metric([source], success.timestamp())
            if crawled is None or source in crawled:
                disabled.add_metric([source], 1 if off else 0)
        yield last
        yield disabled
        pending = GaugeMetricFamily("harvest_notifications_pending",
                                    "Alerts waiting to be sent", labels=["channel"])
        failed = GaugeMetricFamily(
            "harvest_notifications_failed",
            "Alerts given up that the channel has delivered no later one since",
            labels=["channel"])
        for channel, counts in self.notifications(conn).items():
            pending.add_metric([channel], counts.get("pending", 0))
            failed.add_metric([channel], counts.get("failed", 0))
        yield pending
        yield failed

    def _spool(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily("harvest_spool_pending_batches",
                                  "Batches spooled while the database was away, not replayed")
        gauge.add_metric([], spool.backlog(get_config().spool_dir))
        yield gauge
        aside = GaugeMetricFamily("harvest_spool_set_aside_files",
                                  "Spool files no replay takes until an operator acts",
                                  labels=["reason"])
        for reason, count in spool.set_aside(get_config().spool_dir).items():
            aside.add_metric([reason], count)
        yield aside

    def _nodes(self) -> Iterator[Metric]:
        if not get_config().scrapyd_configured:
            return
        try:
            configured = scrapyd.nodes()
        except scrapyd.ScrapydError:
            return  # HARVEST_SCRAPYD_URLS itself is wrong: /health says so
        gauge = GaugeMetricFamily("harvest_scrapyd_node_up", "Whether a Scrapyd node answers",
                                  labels=["node"])
        for url, status in scrapyd.statuses(configured).items():
            gauge.add_metric([url], 0 if isinstance(status, scrapyd.ScrapydError) else 1)
        yield gauge


def render(collector: DatabaseCollector) -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(collector)
    return generate_latest(registry)
