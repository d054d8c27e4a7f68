"""Harvest counters: kept globally (``harvest/<event>``) and per source
(``harvest/source/<name>/<event>``) so the CLI can show a summary per source."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from scrapy.statscollectors import StatsCollector

logger = logging.getLogger(__name__)

COUNTERS = ("fetched", "not_modified", "entries", "scraped", "new", "reseen", "duplicates",
            "rejected", "errors", "spooled", "lost", "missing", "waits", "unfetched",
            "partial_errors", "unchanged", "filtered", "over_limit", "listed_late",
            "robots_forbidden",
            "dropped_fields", "spool_stored", "bugs", "run_spooled")


def inc(stats: StatsCollector, source: str, event: str, count: int = 1) -> None:
    if count:
        stats.inc_value(f"harvest/{event}", count)
        stats.inc_value(f"harvest/source/{source}/{event}", count)


def drop_fields(stats: StatsCollector, source: str, fields: Mapping[str, str],
                item: str | None, spider: object = None) -> None:
    """Fields the source sent in a form that cannot be used (a score of ``"lots"``, a date
    no parser reads): the item is kept without them, each is counted under
    ``harvest/source/<name>/dropped_field/<field>``, and the first of each field in a crawl
    is logged with what was wrong (``fields`` maps a field to that), naming ``spider``
    for its crawler's ``log_count``."""
    for name, why in fields.items():
        key = f"harvest/source/{source}/dropped_field/{name}"
        if not stats.get_value(key):
            logger.warning("Source %s: %s kept without its %s: %s (any more are only "
                           "counted)", source, item or "an item", name, why,
                           extra={"spider": spider})
        stats.inc_value(key)
        inc(stats, source, "dropped_fields")


def moved(stats: StatsCollector, source: str, old: str, new: str) -> bool:
    """A listed URL of ``source`` redirects permanently to ``new``; True the first time in
    this crawl (``harvest/source/<name>/moved``: old URL → new)."""
    key = f"harvest/source/{source}/moved"
    seen: dict[str, str] = stats.get_value(key) or {}
    first = old not in seen
    stats.set_value(key, {**seen, old: new})
    return first


def set_last_error(stats: StatsCollector, source: str, message: str) -> None:
    stats.set_value(f"harvest/source/{source}/last_error", message)


def set_skipped(stats: StatsCollector, source: str, reason: str,
                disabled: bool = False) -> None:
    """The source was not crawled at all (switched off, disabled, no credentials);
    ``disabled`` after failing: not reached, so the crawl's exit status says so."""
    stats.set_value(f"harvest/source/{source}/skipped", reason)
    if disabled:
        stats.set_value(f"harvest/source/{source}/disabled", True)


def succeeded(row: dict[str, Any]) -> bool:
    """A source's run succeeded when it reached something (fetched, or not modified) and,
    if some of its fetches failed, the others still gave entries or were unchanged: a feed
    source with one dead URL of three, an API whose second page failed, is "partly failed"
    and no failed run (it was disabled after HARVEST_DISABLE_AFTER of them). A run with
    errors and nothing usable (a listing whose selectors match nothing any more, a
    malformed sitemap) failed, and so did one where our own code failed (``bugs``: a
    spider callback or a pipeline raised)."""
    if row.get("bugs") or (row["fetched"] + row["not_modified"]) == 0:
        return False
    return row["errors"] == 0 or row["entries"] > 0 or row["not_modified"] > 0


def complete(row: dict[str, Any]) -> bool:
    """It succeeded and nothing failed: only then is a resume point (``since_id``) kept, or
    what the failed pages held would be skipped for good. Items neither stored nor spooled
    (``lost``: the database down and the spool unwritable) make a run incomplete too."""
    return succeeded(row) and row["errors"] == 0 and not row.get("lost")


def per_source(stats: dict[str, Any], sources: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{source: {counter: n, ..., "last_error": str | None}}`` from a stats dict."""
    table: dict[str, dict[str, Any]] = {}
    for name in sources:
        prefix = f"harvest/source/{name}/"
        row: dict[str, Any] = {c: int(stats.get(prefix + c, 0)) for c in COUNTERS}
        row["last_error"] = stats.get(prefix + "last_error")
        if row["dropped_fields"]:
            start = len(prefix + "dropped_field/")
            row["dropped"] = {k[start:]: int(v) for k, v in stats.items()
                              if k.startswith(prefix + "dropped_field/")}
        row["skipped"] = stats.get(prefix + "skipped")
        row["disabled"] = bool(stats.get(prefix + "disabled"))
        if moved := stats.get(prefix + "moved"):
            row["moved"] = dict(moved)
        table[name] = row
    return table
