"""Health checks: each says ok or what is wrong, in words an operator can act on."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import psycopg

from harvester.config import get_config
from harvester.messages import first_line
from harvester.migrations import HEAD, schema_advice
from harvester.services import scrapyd, spool
from harvester.services.database import revision_of
from harvester.sources import SourcesFile

Status = Literal["healthy", "degraded", "unhealthy"]

logger = logging.getLogger(__name__)
# libpq names where it tried ('connection to server on socket "/path/.s.PGSQL.5432" failed:',
# 'at "10.0.0.5", port 5432 failed:'): /health is open, so it says why, not where.
_WHERE = re.compile(r'^(?:connection (?:is bad|failed): )?connection to server '
                    r'(?:on socket "[^"]*"|at "[^"]*", port \d+) failed: ')


@dataclass(slots=True)
class Check:
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, **self.data}


def database(url: str) -> tuple[Check, psycopg.Connection[Any] | None]:
    started = time.monotonic()
    conn: psycopg.Connection[Any] | None = None
    try:
        conn = psycopg.connect(url, connect_timeout=3, autocommit=True)
        revision = revision_of(conn)
    except psycopg.Error as exc:
        if conn is not None:
            conn.close()
        logger.warning("Health check: the database is unreachable: %s", first_line(exc))
        return Check(False, f"unreachable: {_WHERE.sub('', first_line(exc))}; start it "
                            "(`harvest db start` for the embedded server) or check "
                            "HARVEST_DATABASE_URL"), None
    ms = round((time.monotonic() - started) * 1000, 1)
    if revision != HEAD:
        # The server may have come back after `harvest serve` started without it: every
        # read would fail on a missing or older table.
        conn.close()
        return Check(False, schema_advice(revision), {"latency_ms": ms}), None
    return Check(True, "reachable", {"latency_ms": ms}), conn


def scrapyd_nodes() -> Check | None:
    """None when no Scrapyd is configured (HARVEST_SCRAPYD_URLS unset): nothing to check."""
    if not get_config().scrapyd_configured:
        return None
    nodes: dict[str, Any] = {}
    try:
        configured = scrapyd.nodes()
    except scrapyd.ScrapydError as exc:  # HARVEST_SCRAPYD_URLS itself is wrong
        return Check(False, str(exc), {"nodes": nodes})
    for url, status in scrapyd.statuses(configured).items():
        if isinstance(status, scrapyd.ScrapydError):
            nodes[url] = {"up": False, "error": str(status)}
        else:
            nodes[url] = {"up": True, "running": status.get("running", 0),
                          "pending": status.get("pending", 0)}
    down = [url for url, n in nodes.items() if not n["up"]]
    detail = (f"{len(down)} of {len(nodes)} nodes down: {', '.join(down)}; start Scrapyd "
              "there (`harvest scrapyd start` on that machine)") if down else (
        f"{len(nodes)} nodes up")
    return Check(not down, detail, {"nodes": nodes})


def freshness(conn: psycopg.Connection[Any], sources: SourcesFile,
              stale_factor: float) -> Check:
    """Every enabled source has succeeded within ``stale_factor`` (HARVEST_STALE_FACTOR, the
    app's settings) × its interval."""
    config = get_config()
    rows = {r[0]: r[1:] for r in conn.execute(
        "SELECT source, last_success, last_attempt, disabled FROM sources_state").fetchall()}
    now = datetime.now(UTC)
    report: dict[str, Any] = {}
    problems: list[str] = []
    for source in config.crawled(sources.sources):
        last_success, last_attempt, disabled = rows.get(source.name, (None, None, False))
        allowed = source.period(now).total_seconds() * stale_factor
        age = (now - last_success).total_seconds() if last_success else None
        if disabled:
            state = "disabled"
        elif age is not None and age <= allowed:
            state = "fresh"
        elif age is None and last_attempt is None:
            state = "never run"  # just added: not a problem until it has been tried
        elif age is None:
            state = "never succeeded"  # tried, and nothing usable came back yet
        else:
            state = "stale"
        if state in ("disabled", "stale", "never succeeded"):
            problems.append(f"{source.name} {state}")
        report[source.name] = {
            "state": state, "last_success": last_success.isoformat() if last_success else None,
            "age_s": round(age) if age is not None else None, "allowed_s": round(allowed)}
    if problems:
        detail = "; ".join(problems) + ("; `harvest sources` shows each one's last error "
                                        "and `harvest jobs list` what is scheduled")
        if any(p.endswith("disabled") for p in problems):
            detail += ", and `harvest sources enable NAME` takes a fixed one back"
    else:
        detail = f"{len(report)} sources fresh or new"
    return Check(not problems, detail, {"sources": report})


def spool_backlog() -> Check:
    spool_dir = get_config().spool_dir
    pending = spool.backlog(spool_dir)
    aside = spool.set_aside(spool_dir)
    data = {"batches": pending, **aside}
    if pending:
        return Check(False, f"{pending} spooled batches wait; run `harvest replay`", data)
    if aside["refused"] or aside["unreadable"]:
        return Check(False, f"spool files set aside: {aside['refused']} refused, "
                     f"{aside['unreadable']} unreadable; run `harvest verify`", data)
    return Check(True, "empty", data)


def overall(checks: dict[str, Check]) -> Status:
    if not checks["database"].ok:
        return "unhealthy"
    return "healthy" if all(c.ok for c in checks.values()) else "degraded"
