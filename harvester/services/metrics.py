"""The ``harvest_*`` Prometheus metrics of crawl processes, in multiprocess mode.

Every crawl process (a Scrapyd job, ``harvest crawl``) writes its counters to files in
``PROMETHEUS_MULTIPROC_DIR`` (default ``$HARVEST_HOME/metrics``); ``harvest serve`` merges
them at scrape time, so jobs need no port of their own and their counts add up.

prometheus-client decides on multiprocess mode when it is first imported, so this module
sets the directory *before* importing it: import it (or call :func:`crawl_metrics`) before
anything else imports prometheus_client.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from harvester.config import get_config


def prepare_directory() -> Path:
    """Point prometheus-client at the shared directory (created if needed)."""
    path = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or get_config().metrics_dir)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path


LABELS = ("source", "spider")
# Seconds: a feed fetch takes a second, a large site crawl an hour.
DURATION_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


@dataclass(frozen=True, slots=True)
class CrawlMetrics:
    scraped: Any
    stored: Any
    reseen: Any
    duplicates: Any
    rejected: Any
    fields_dropped: Any
    spooled: Any
    lost: Any
    responses: Any
    retries: Any
    waits: Any
    wait_seconds: Any
    errors: Any
    runs: Any
    duration: Any


@lru_cache(maxsize=1)
def crawl_metrics() -> CrawlMetrics:
    prepare_directory()
    # Imported here, once the directory is set: see the module docstring.
    from prometheus_client import Counter, Histogram

    def counter(name: str, doc: str, *extra: str) -> Any:
        return Counter(name, doc, (*LABELS, *extra))

    return CrawlMetrics(
        scraped=counter("harvest_items_scraped", "Items that reached the store step"),
        stored=counter("harvest_items_stored", "New signals stored"),
        reseen=counter("harvest_items_reseen", "Signals seen again in a later run"),
        duplicates=counter("harvest_items_duplicates", "Repeats dropped within a run"),
        rejected=counter("harvest_items_rejected", "Rejections stored, by reason", "reason"),
        fields_dropped=counter("harvest_fields_dropped",
                               "Fields left out of kept items, unusable as sent", "field"),
        spooled=counter("harvest_items_spooled", "Signals spooled while the DB was away"),
        lost=counter("harvest_items_lost",
                     "Signals and rejections neither stored nor spooled (no spool to write)"),
        responses=counter("harvest_http_responses", "HTTP responses, by status", "status"),
        retries=counter("harvest_retries", "Responses to retried requests"),
        waits=counter("harvest_rate_limit_waits", "Pauses asked for by rate-limiting servers"),
        wait_seconds=counter("harvest_rate_limit_wait_seconds",
                             "Seconds paused for rate-limiting servers"),
        errors=counter("harvest_crawl_errors", "Failed requests and API errors"),
        runs=counter("harvest_runs", "Finished runs per source, by outcome", "outcome"),
        duration=Histogram("harvest_run_duration_seconds", "Crawl run duration", LABELS,
                           buckets=DURATION_BUCKETS),
    )
