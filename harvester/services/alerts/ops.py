"""Ops alerts: conditions read from ``crawl_runs`` and ``sources_state``, kept as episodes in
``alerts`` — opened when a condition appears, resolved when it clears.

Conditions, per source (key ``<kind>:<source>``):
- ``run_failed``: its latest finished run (where it was not skipped) failed: the run did not
  finish normally, or the source had errors and fetched nothing;
- ``stale``: its last success is older than ``stale_factor`` × its interval (its cron period
  when it has one); a source that never succeeded is left to ``run_failed``;
- ``reject_spike``: more than ``reject_spike_percent`` % of its items were rejected in its
  latest run with items (a 304 or an empty feed leaves it as it was);
- ``moved``: its latest run found a URL of the sources file redirecting permanently (the
  crawl followed it; the file should say the new address). It clears once a run no longer
  sees it, i.e. after the file is edited.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from harvester.services.alerts import messages
from harvester.sources import Source

KINDS = ("run_failed", "stale", "reject_spike", "moved")
#: The kinds judged from runs alone (without the sources file's intervals).
RUN_KINDS = ("run_failed", "reject_spike", "moved")

# Latest finished run per source in which that source was not skipped ({items}: and in
# which it had items, see _LATEST_RUNS_WITH_ITEMS).
_LATEST = """
SELECT DISTINCT ON (src) src AS source, r.id, r.finish_reason, r.errors, r.scraped,
       r.rejected, r.started_at, r.stats -> 'harvest/by_source' -> src AS row
FROM crawl_runs r, unnest(r.sources) AS src
WHERE r.finished_at IS NOT NULL
  AND (r.stats -> 'harvest/by_source' -> src ->> 'skipped') IS NULL
  {items}
ORDER BY src, r.started_at DESC
"""
_LATEST_RUNS = _LATEST.format(items="")
# What a reject spike is judged on: the latest run in which the source had items (new,
# re-seen, duplicate, spooled or rejected). A run with none (a 304, an empty feed)
# rejected 0 % of nothing, and resolved the alert until the feed next changed.
_LATEST_RUNS_WITH_ITEMS = _LATEST.format(items="""AND CASE
      WHEN r.stats -> 'harvest/by_source' -> src IS NULL THEN r.scraped + r.rejected > 0
      ELSE (SELECT coalesce(sum((r.stats -> 'harvest/by_source' -> src ->> k)::bigint), 0)
            FROM unnest(ARRAY['new', 'reseen', 'duplicates', 'spooled', 'rejected']) k) > 0
      END""")


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    text: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    alert_id: int  # 0 in a dry run for an alert not opened yet
    key: str
    event: str  # opened | resolved
    payload: dict[str, Any]


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours = minutes / 60
    value, unit = (hours, "h") if hours < 48 else (hours / 24, "d")
    return f"{value:.1f}".removesuffix(".0") + f" {unit}"


def _run_conditions(run: dict[str, Any]) -> list[Condition]:
    source, row = run["source"], run["row"] or {}
    out = []
    errors = int(row.get("errors", run["errors"]))
    # Old runs without per-source counters: judge by the run's own totals.
    fetched = (int(row.get("fetched", 0)) + int(row.get("not_modified", 0)) if row
               else int(run["scraped"]))
    if run["finish_reason"] != "finished" or (errors > 0 and fetched == 0):
        why = f"finish reason {run['finish_reason']}, {errors} errors"
        if not fetched:
            why += ", nothing fetched"
        if row.get("last_error"):
            why += f"; last error: {str(row['last_error'])[:200]}"
        out.append(Condition(f"run_failed:{source}", f"crawl of '{source}' failed ({why})",
                             {"run_id": str(run["id"]), "finish_reason": run["finish_reason"],
                              "errors": errors, "last_error": row.get("last_error")}))
    if moved := row.get("moved"):
        where = "; ".join(f"{old} → {new}" for old, new in sorted(moved.items()))
        out.append(Condition(
            f"moved:{source}",
            f"'{source}': a URL of the sources file redirects permanently ({where}); put the "
            "new URL in the sources file",
            {"run_id": str(run["id"]), "moved": moved}))
    return out


def _spike(run: dict[str, Any], spike_percent: float) -> list[Condition]:
    source, row = run["source"], run["row"] or {}
    if row:
        rejected = int(row.get("rejected", 0))
        # Spooled items are items too (the database was away): without them one rejection
        # in an outage read as 100 %.
        total = rejected + sum(int(row.get(k, 0))
                               for k in ("new", "reseen", "duplicates", "spooled"))
    else:
        rejected, total = int(run["rejected"]), int(run["rejected"]) + int(run["scraped"])
    if not total or rejected * 100.0 / total <= spike_percent:
        return []
    rate = rejected * 100.0 / total
    return [Condition(
        f"reject_spike:{source}",
        f"'{source}': {rate:.0f} % of its items were rejected in its last run with items "
        f"({rejected} of {total}; limit {spike_percent:g} %)",
        {"run_id": str(run["id"]), "rejected": rejected, "items": total})]


def _stale(conn: psycopg.Connection[Any], sources: Sequence[Source], factor: float,
           now: datetime) -> list[Condition]:
    rows = dict(conn.execute("SELECT source, last_success FROM sources_state "
                             "WHERE source = ANY(%s) AND last_success IS NOT NULL",
                             ([s.name for s in sources],)).fetchall())
    out = []
    for source in sources:
        last = rows.get(source.name)
        limit = source.period(now) * factor
        if last is not None and now - last > limit:
            out.append(Condition(
                f"stale:{source.name}",
                f"'{source.name}' has not been crawled successfully for "
                f"{_duration(now - last)} (limit {factor:g} × {_duration(source.period(now))})",
                {"last_success": last.isoformat(), "limit_seconds": limit.total_seconds()}))
    return out


def evaluate(conn: psycopg.Connection[Any], sources: Sequence[Source] | None,
             stale_factor: float, spike_percent: float) -> dict[str, Condition]:
    """Conditions true now. Without a sources file (None) every source that ran is judged
    and staleness cannot be (intervals live in the file)."""
    now = datetime.now(UTC)
    names = None if sources is None else {s.name for s in sources}
    with conn.cursor(row_factory=dict_row) as cur:
        runs = cur.execute(_LATEST_RUNS).fetchall()
        with_items = cur.execute(_LATEST_RUNS_WITH_ITEMS).fetchall()
    found: list[Condition] = []
    for run in runs:
        if names is None or run["source"] in names:
            found += _run_conditions(run)
    for run in with_items:
        if names is None or run["source"] in names:
            found += _spike(run, spike_percent)
    if sources is not None:
        found += _stale(conn, sources, stale_factor, now)
    return {c.key: c for c in found}


def _resolved_text(key: str, opened_at: datetime, crawled: bool = True) -> str:
    kind, _, source = key.partition(":")
    if not crawled:
        # Not judged any more: "succeed again" told on-call it had recovered.
        what = (f"'{source}' is no longer crawled (not in the sources file, or switched "
                "off); the alert is closed unresolved")
        return f"{what} (alert open for {_duration(datetime.now(UTC) - opened_at)})"
    what = {"run_failed": f"crawls of '{source}' succeed again",
            "stale": f"'{source}' is fresh again",
            "reject_spike": f"'{source}': rejections back under the limit",
            "moved": f"'{source}': its URLs answer without a permanent redirect"}.get(kind, key)
    return f"{what} (alert open for {_duration(datetime.now(UTC) - opened_at)})"


def ongoing(conn: psycopg.Connection[Any], conditions: dict[str, Condition]) -> list[Change]:
    """The "opened" message of every alert open now whose condition holds, for recording
    on the channels that lack it: a channel configured while an alert was open never heard
    of it, then got its "RESOLVED" (the other channels have it already: not sent again)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("SELECT id, key, opened_at, details FROM alerts "
                           "WHERE resolved_at IS NULL").fetchall()
    return [Change(row["id"], row["key"], "opened", messages.ops_payload(
                row["key"], "opened", conditions[row["key"]].text, row["details"] or {},
                row["opened_at"], None))
            for row in rows if row["key"] in conditions]


def apply(conn: psycopg.Connection[Any], conditions: dict[str, Condition],
          judged: Sequence[str], *, dry_run: bool = False,
          crawled: Collection[str] | None = None) -> list[Change]:
    """Open an alert per new condition, resolve open alerts whose condition cleared (only of
    the kinds in ``judged``); one of a source not in ``crawled`` (when given) is closed as
    no longer crawled. Call inside a transaction; nothing is written in a dry run."""
    with conn.cursor(row_factory=dict_row) as cur:
        open_rows = cur.execute("SELECT id, key, opened_at FROM alerts "
                                "WHERE resolved_at IS NULL FOR UPDATE").fetchall()
    open_keys = {r["key"] for r in open_rows}
    changes: list[Change] = []
    for key, cond in sorted(conditions.items()):
        if key in open_keys:
            continue
        alert_id, opened_at = 0, datetime.now(UTC)
        if not dry_run:
            row = conn.execute(
                "INSERT INTO alerts (key, details) VALUES (%s, %s) "
                "ON CONFLICT (key) WHERE resolved_at IS NULL DO NOTHING "
                "RETURNING id, opened_at", (key, Jsonb(cond.details))).fetchone()
            if row is None:
                continue  # another `harvest notify` opened it a moment ago
            alert_id, opened_at = row
        payload = messages.ops_payload(key, "opened", cond.text, cond.details, opened_at, None)
        changes.append(Change(alert_id, key, "opened", payload))
    for row in open_rows:
        if row["key"] in conditions or row["key"].partition(":")[0] not in judged:
            continue
        resolved_at = datetime.now(UTC)
        if not dry_run:
            done = conn.execute("UPDATE alerts SET resolved_at = now() WHERE id = %s "
                                "RETURNING resolved_at", (row["id"],)).fetchone()
            resolved_at = done[0] if done else resolved_at
        still = crawled is None or row["key"].partition(":")[2] in crawled
        payload = messages.ops_payload(row["key"], "resolved",
                                       _resolved_text(row["key"], row["opened_at"], still), {},
                                       row["opened_at"], resolved_at)
        changes.append(Change(row["id"], row["key"], "resolved", payload))
    return changes
