"""Harvest counters: kept globally (``harvest/<event>``) and per source
(``harvest/source/<name>/<event>``) so the CLI can show a summary per source."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scrapy.statscollectors import StatsCollector

COUNTERS = ("fetched", "not_modified", "entries", "scraped", "new", "reseen", "duplicates",
            "rejected", "errors", "spooled", "lost", "missing", "waits", "unfetched",
            "partial_errors", "unchanged", "filtered", "over_limit", "robots_forbidden")


def inc(stats: StatsCollector, source: str, event: str, count: int = 1) -> None:
    if count:
        stats.inc_value(f"harvest/{event}", count)
        stats.inc_value(f"harvest/source/{source}/{event}", count)


def set_last_error(stats: StatsCollector, source: str, message: str) -> None:
    stats.set_value(f"harvest/source/{source}/last_error", message)


def set_skipped(stats: StatsCollector, source: str, reason: str) -> None:
    """The source was not crawled at all (switched off, disabled, no credentials)."""
    stats.set_value(f"harvest/source/{source}/skipped", reason)


def succeeded(row: dict[str, Any]) -> bool:
    """A source's run succeeded when something was fetched (or not modified) and nothing
    failed."""
    return (row["fetched"] + row["not_modified"]) > 0 and row["errors"] == 0


def per_source(stats: dict[str, Any], sources: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{source: {counter: n, ..., "last_error": str | None}}`` from a stats dict."""
    table: dict[str, dict[str, Any]] = {}
    for name in sources:
        prefix = f"harvest/source/{name}/"
        row: dict[str, Any] = {c: int(stats.get(prefix + c, 0)) for c in COUNTERS}
        row["last_error"] = stats.get(prefix + "last_error")
        row["skipped"] = stats.get(prefix + "skipped")
        table[name] = row
    return table
