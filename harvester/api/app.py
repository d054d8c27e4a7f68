"""The FastAPI application behind ``harvest serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from harvester import __version__
from harvester.api import checks, prom
from harvester.config import get_config
from harvester.services import alerts, database
from harvester.sources import SourcesError, SourcesFile, load_sources


def notification_counts(conn: psycopg.Connection[Any]) -> dict[str, dict[str, int]]:
    """Per channel: alerts waiting to be sent (new or due for a retry) and given up."""
    status = alerts.status(conn)
    channels = set(status["pending"]) | set(status["given_up"]) | set(status["channels"])
    return {ch: {"pending": status["pending"].get(ch, 0),
                 "failed": status["given_up"].get(ch, 0)} for ch in sorted(channels)}


def create_app(database_url: str, sources_path: Path | None = None) -> FastAPI:
    """The app for one database (resolved once, at start-up) and sources file (re-read on
    each request, so edits show without a restart)."""
    sources_file = sources_path or get_config().sources
    app = FastAPI(title="harvester", version=__version__,
                  summary="Signals harvested by harvester, its health and metrics.")

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(database_url, connect_timeout=3, autocommit=True)

    def sources() -> SourcesFile | None:
        try:
            return load_sources(sources_file)
        except SourcesError:
            return None

    collector = prom.DatabaseCollector(connect, sources, notification_counts)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(prom.render(collector), media_type=prom.CONTENT_TYPE)

    @app.get("/health", summary="Health of the database, Scrapyd, sources and alerts")
    def health() -> JSONResponse:
        db_check, conn = checks.database(database_url)
        report: dict[str, checks.Check] = {"database": db_check}
        if (node_check := checks.scrapyd_nodes()) is not None:
            report["scrapyd"] = node_check
        report["spool"] = checks.spool_backlog()
        parsed = sources()
        if parsed is None:
            report["sources"] = checks.Check(False, "the sources file cannot be read; run "
                                                    "`harvest sources check`")
        if conn is not None:
            with conn:
                if parsed is not None:
                    report["sources"] = checks.freshness(conn, parsed)
                report["alerts"] = _alerts(conn)
        status = checks.overall(report)
        body = {"status": status, "version": __version__,
                "checks": {name: check.as_json() for name, check in report.items()}}
        return JSONResponse(body, status_code=503 if status == "unhealthy" else 200)

    return app


def _alerts(conn: psycopg.Connection[Any]) -> checks.Check:
    status = alerts.status(conn)
    data = {"channels": status["channels"], "pending": status["pending"],
            "given_up": status["given_up"], "open_alerts": status["open_alerts"]}
    if status["config_error"]:
        return checks.Check(False, status["config_error"], data)
    if any(status["given_up"].values()):
        listed = ", ".join(f"{ch}: {n}" for ch, n in status["given_up"].items() if n)
        return checks.Check(False, f"alerts given up after retries ({listed}); see "
                                   "docs/alerts.md and run `harvest notify`", data)
    if not status["channels"]:
        return checks.Check(True, "no alert channel configured: alerts are recorded, not "
                                  "sent", data)
    return checks.Check(True, f"{', '.join(status['channels'])}: no failed deliveries", data)


def build() -> FastAPI:
    """For ``uvicorn harvester.api.app:build --factory``: the database from the environment."""
    return create_app(database.resolve_url(get_config()))
