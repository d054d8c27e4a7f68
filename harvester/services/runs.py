"""The ``crawl_runs`` record of one crawl, built from its stats."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from harvester.stats import complete, per_source, succeeded


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def run_record(
    *,
    run_id: str,
    spider: str,
    sources: Sequence[str],
    job_id: str | None,
    started_at: datetime,
    reason: str,
    stats: dict[str, Any],
    validators: dict[str, dict[str, dict[str, str]]],
    cursors: dict[str, dict[str, Any]] | None = None,
    disable_after: int = 0,
    unchanged: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """A row for ``crawl_runs`` plus ``source_states`` for ``sources_state``.

    A source succeeded when something usable was fetched (or not modified), even if some
    of its URLs failed (``stats.succeeded``). A skipped source (switched off, disabled, no
    credentials) was not attempted: its state is left alone. ``cursors`` (resume points such
    as ``since_id``) are kept only when nothing failed (``stats.complete``). ``unchanged``:
    per source, the URLs that answered 304 (their items' ``last_seen`` moves on).
    """
    def total(name: str) -> int:
        return int(stats.get(f"harvest/{name}", 0))

    table = per_source(stats, sources)
    cursors = cursors or {}
    states = {
        name: {
            "attempted_at": started_at,
            "success": succeeded(row),
            # A run that lost items keeps no ETag/Last-Modified, and forgets those of its
            # URLs: the next run got 304s and the lost items were never fetched again.
            "validators": ({url: {} for url in validators.get(name, {})} if row.get("lost")
                           else validators.get(name, {})),
            # Resume points, and "since" (this run's start: the reference point of the
            # sitemap, Hacker News search and Reddit kinds), only from a run that ran to
            # its end and in which nothing failed: a partly failed run moved the reference
            # point past what it missed, and a stopped one (Ctrl-C, a CLOSESPIDER_ limit)
            # past what it never asked for.
            "cursor": ({**cursors.get(name, {}), "since": started_at.isoformat()}
                       if complete(row) and reason == "finished" else {}),
            "last_error": row["last_error"],
            "disable_after": disable_after,
        }
        for name, row in table.items()
        if not row["skipped"]
    }
    return {
        "id": run_id,
        "spider": spider,
        "sources": list(sources),
        "job_id": job_id,
        "started_at": started_at,
        "finished_at": datetime.now(UTC),
        "finish_reason": reason,
        "scraped": int(stats.get("item_scraped_count", 0)),
        "stored": total("new"),
        "reseen": total("reseen"),
        "duplicates": total("duplicates"),
        "rejected": total("rejected"),
        "errors": total("errors"),
        "not_modified": total("not_modified"),
        "stats": _jsonable({**stats, "harvest/by_source": table}),
        "source_states": _jsonable(states),
        # Per source, the URLs that answered 304: their items were seen again unchanged.
        "unchanged": {name: sorted(set(urls)) for name, urls in (unchanged or {}).items()},
    }
