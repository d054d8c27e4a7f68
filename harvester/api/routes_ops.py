"""``/sources``, ``/runs``, ``/rejects``, ``/briefs`` (reads) and ``POST /crawl`` (a write)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from harvester.api import checks, reads
from harvester.api.deps import connection, invalid, sources_file
from harvester.api.models import (
    Brief,
    CrawlAccepted,
    CrawlRequest,
    RejectList,
    RunList,
    SourceList,
)
from harvester.api.security import require_read, require_write
from harvester.runner import SPIDERS
from harvester.services import queries, scheduler, scrapyd
from harvester.services.brief import IsoWeek, WeekError
from harvester.sources import SourcesError, SourcesFile, load_sources

reads_router = APIRouter(dependencies=[Depends(require_read)])
writes_router = APIRouter(tags=["operations"], dependencies=[Depends(require_write)])

Conn = Annotated[psycopg.Connection[Any], Depends(connection)]
SourcesPath = Annotated[Path, Depends(sources_file)]
_STATE = ("last_attempt", "last_success", "consecutive_failures", "last_error", "disabled")
_SCHEDULE = ("next_due", "paused", "job_id", "last_outcome")


def _sources(path: Path) -> SourcesFile:
    try:
        return load_sources(path)
    except SourcesError:
        # The operator's message names the file's path: not for API clients.
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "the sources file cannot be read; see /health") from None


@reads_router.get("/sources", response_model=SourceList, tags=["operations"],
                  summary="Every configured source: state, freshness, counts, schedule")
def list_sources(request: Request, conn: Conn, path: SourcesPath) -> dict[str, Any]:
    parsed = _sources(path)
    stale_factor = request.app.state.api_settings.stale_factor
    fresh = checks.freshness(conn, parsed, stale_factor).data["sources"]
    state = reads.source_rows(conn, "sources_state", _STATE)
    plan = reads.source_rows(conn, "schedules", _SCHEDULE)
    counts = reads.source_counts(conn)
    moved = queries.moved_urls(conn, {s.name: s.urls for s in parsed.sources})
    items = []
    for source in parsed.sources:
        st, sched = state.get(source.name, {}), plan.get(source.name, {})
        count, last_signal = counts.get(source.name, (0, None))
        f = fresh.get(source.name, {"state": "off"})
        items.append({
            "name": source.name, "kind": source.kind, "enabled": source.enabled,
            "interval": source.interval, "cron": source.cron, "weight": source.weight,
            "state": f["state"], "age_s": f.get("age_s"), "allowed_s": f.get("allowed_s"),
            "last_success": st.get("last_success"), "last_attempt": st.get("last_attempt"),
            "consecutive_failures": st.get("consecutive_failures") or 0,
            "last_error": st.get("last_error"), "signals": count,
            "last_signal_at": last_signal, "next_due": sched.get("next_due"),
            "paused": bool(sched.get("paused")), "last_job": sched.get("job_id"),
            "last_outcome": sched.get("last_outcome"),
            "moved": moved.get(source.name, (None, {}))[1]})
    return {"items": items}


@reads_router.get("/runs", response_model=RunList, tags=["operations"],
                  summary="Recent crawl runs, newest first")
def list_runs(conn: Conn,
              source: Annotated[str | None, Query(max_length=100)] = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 20) -> dict[str, Any]:
    return {"items": reads.runs(conn, source, limit)}


@reads_router.get("/rejects", response_model=RejectList, tags=["operations"],
                  summary="Recent rejections (input that could not become a signal), newest "
                          "first")
def list_rejects(conn: Conn,
                 source: Annotated[str | None, Query(max_length=100)] = None,
                 reason: Annotated[str | None, Query(max_length=100)] = None,
                 limit: Annotated[int, Query(ge=1, le=500)] = 20) -> dict[str, Any]:
    flt = queries.RejectFilter(limit=limit, sources=(source,) if source else (),
                               reasons=(reason,) if reason else ())
    return {"items": queries.rejects(conn, flt)}


BriefFormat = Annotated[Literal["json", "markdown", "html"], Query(
    description="json (default), or the brief itself as Markdown or HTML")]


def _brief(row: dict[str, Any], fmt: str) -> Response:
    if fmt == "markdown":
        return PlainTextResponse(row["markdown"], media_type="text/markdown; charset=utf-8")
    if fmt == "html":
        return HTMLResponse(row["html"])
    return JSONResponse(Brief.model_validate(row).model_dump(mode="json"))


@reads_router.get("/briefs/current", tags=["briefs"], response_model=Brief,
                  responses={204: {"description": "no brief for the current ISO week yet"}},
                  summary="This ISO week's brief (UTC), or 204")
def current_brief(conn: Conn, format: BriefFormat = "json") -> Response:
    row = reads.brief(conn, str(IsoWeek.of(datetime.now(UTC))))
    if row is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return _brief(row, format)


@reads_router.get("/briefs/{week}", tags=["briefs"], response_model=Brief,
                  responses={404: {"description": "no brief for that week"}},
                  summary="The brief of one ISO week, e.g. 2026-W47")
def week_brief(conn: Conn, week: str, format: BriefFormat = "json") -> Response:
    try:
        parsed = IsoWeek.parse(week)
    except WeekError as exc:
        raise invalid("path", "week", str(exc), week[:40]) from None
    row = reads.brief(conn, str(parsed))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no brief for {parsed}")
    return _brief(row, format)


@writes_router.post(
    "/crawl", response_model=CrawlAccepted, status_code=status.HTTP_202_ACCEPTED,
    summary="Crawl a source now on the least loaded Scrapyd node (bearer token)",
    responses={404: {"description": "no such source"},
               409: {"description": "its previous job is still pending or running, or "
                                    "it is disabled after failing"},
               503: {"description": "no Scrapyd node accepted the job"}})
def crawl(body: CrawlRequest, request: Request, path: SourcesPath) -> dict[str, Any]:
    try:
        source = _sources(path).get(body.source)
    except SourcesError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no source {body.source!r}") from None
    try:
        cluster = scheduler.Cluster(scrapyd.nodes())
    except scrapyd.ScrapydError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    # A connection of its own, not the pool's: Scrapyd may take seconds a node to answer,
    # and a few such requests held every pooled connection (reads answered "the database
    # is unavailable").
    with psycopg.connect(request.app.state.database_url, connect_timeout=5,
                         autocommit=True) as conn:
        sched = scheduler.Scheduler(conn, cluster, spider_for=lambda s: SPIDERS[s.kind])
        try:
            job_id, node = sched.run_now(source)
        except scheduler.SourceDisabled as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
        except scheduler.SchedulerError as exc:
            raise HTTPException(_why_not(conn, cluster, source.name), str(exc)) from None
    return {"source": source.name, "job_id": job_id, "node": node}


def _why_not(conn: psycopg.Connection[Any], cluster: scheduler.Cluster, name: str) -> int:
    """409 when the source's last job is still active on a node, else 503 (no node took
    the job)."""
    row = scheduler.load_rows(conn).get(name) or {}
    found = cluster.find(row["job_id"]) if row.get("job_id") else None
    if row.get("job_state") == "submitted" and found and found[1] in scheduler.ACTIVE:
        return status.HTTP_409_CONFLICT
    return status.HTTP_503_SERVICE_UNAVAILABLE
