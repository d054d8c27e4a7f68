"""The FastAPI application behind ``harvest serve``.

``/health`` and ``/metrics`` are always open and never rate limited (load balancers and
Prometheus poll them; bind to loopback or firewall the port to keep ``/metrics`` private).
Everything else is in ``routes_signals`` and ``routes_ops``: reads behind ``X-API-Key``
when HARVEST_API_KEYS is set, writes behind a bearer token, all rate limited per client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio
import psycopg
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.routing import Match, Router
from starlette.types import Scope

from harvester import __version__
from harvester.api import checks, limits, prom, routes_ops, routes_signals
from harvester.api.deps import no_nul
from harvester.api.ratelimit import RateLimitMiddleware, TokenBuckets
from harvester.api.security import client_identity
from harvester.api.settings import ApiSettings, get_api_settings
from harvester.config import get_config
from harvester.messages import first_line
from harvester.services import alerts, database
from harvester.sources import SourcesError, SourcesFile, load_sources

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Connections shared by the request threads; more requests wait (up to POOL_TIMEOUT_S).
POOL_SIZE = 8
POOL_TIMEOUT_S = 5.0


def notification_counts(conn: psycopg.Connection[Any]) -> dict[str, dict[str, int]]:
    """Per channel: alerts waiting to be sent (new or due for a retry) and given up."""
    status = alerts.status(conn)
    channels = set(status["pending"]) | set(status["given_up"]) | set(status["channels"])
    return {ch: {"pending": status["pending"].get(ch, 0),
                 "failed": status["given_up"].get(ch, 0)} for ch in sorted(channels)}


def create_app(database_url: str, sources_path: Path | None = None,
               settings: ApiSettings | None = None) -> FastAPI:
    """The app for one database (resolved once, at start-up) and sources file (re-read on
    each request, so edits show without a restart)."""
    sources_file = sources_path or get_config().sources
    settings = settings or get_api_settings()
    # reconnect_timeout: the pool retries a lost connection with a doubling delay until it
    # gives up; by default for 5 minutes, so after an outage of a minute the next try came
    # up to a minute after the database was back (reads 503, /health 200). Giving up after
    # 10 s lets the next request start a new try at once.
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        database_url, min_size=1, max_size=POOL_SIZE, timeout=POOL_TIMEOUT_S, open=False,
        kwargs={"autocommit": True, "connect_timeout": 3},
        check=ConnectionPool.check_connection, name="api",
        reconnect_timeout=2 * POOL_TIMEOUT_S)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)  # a database that is down now must not stop the server
        try:
            yield
        finally:
            pool.close()

    # No slash redirects: they answered before authentication, with a Location built from
    # the request's Host header. No /redoc: /docs is the documented one.
    app = FastAPI(title="harvester", version=__version__, lifespan=lifespan,
                  dependencies=[Depends(no_nul)], redirect_slashes=False, redoc_url=None,
                  summary="Signals harvested by harvester, its health and metrics.")
    app.state.pool = pool
    app.state.database_url = database_url
    app.state.sources_file = sources_file
    app.state.api_settings = settings
    _install(app, settings)

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(database_url, connect_timeout=3, autocommit=True)

    def sources() -> SourcesFile | None:
        try:
            return load_sources(sources_file)
        except SourcesError:
            return None

    collector = prom.DatabaseCollector(connect, sources, notification_counts)
    shared_metrics = _one_at_a_time(lambda: prom.render(collector))

    # HEAD too: load balancers and uptime monitors probe with it (405 read as "down").
    @app.api_route("/metrics", methods=["GET", "HEAD"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(await shared_metrics(), media_type=prom.CONTENT_TYPE)

    def _health() -> tuple[dict[str, Any], int]:
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
                    report["sources"] = checks.freshness(conn, parsed,
                                                         settings.stale_factor)
                report["alerts"] = _alerts(conn)
        status = checks.overall(report)
        body = {"status": status, "version": __version__,
                "checks": {name: check.as_json() for name, check in report.items()}}
        return body, 503 if status == "unhealthy" else 200

    shared_health = _one_at_a_time(_health)

    # One route a method: a route with both gave both the one operationId in the schema
    # (FastAPI names it after the route's first method) and warned of the duplicate.
    summary = "Health of the database, Scrapyd, sources and alerts"

    @app.get("/health", summary=summary)
    @app.head("/health", summary=summary)
    async def health() -> JSONResponse:
        body, code = await shared_health()
        return JSONResponse(body, status_code=code)

    return app


def _one_at_a_time(compute: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    """``compute`` for an open, unlimited endpoint (/health, /metrics): one computation at
    a time, in one worker thread, its answer shared by the requests that arrived while it
    ran. A flood of either, with a Scrapyd node that does not answer, held every worker
    thread (each scrape also opened a connection), and authenticated reads waited
    seconds behind it."""
    running: dict[str, asyncio.Future[T] | None] = {"task": None}

    async def shared() -> T:
        task = running["task"]
        if task is None or task.done():
            task = running["task"] = asyncio.ensure_future(anyio.to_thread.run_sync(compute))
        return await asyncio.shield(task)

    return shared


def _install(app: FastAPI, settings: ApiSettings) -> None:
    routers = (routes_signals.reads_router, routes_signals.writes_router,
               routes_ops.reads_router, routes_ops.writes_router)
    for router in routers:
        app.include_router(router)
    app.add_exception_handler(405, _method_not_allowed((*routers, app.router)))
    app.add_exception_handler(psycopg.OperationalError, _database_down)
    app.add_exception_handler(PoolTimeout, _no_connection)
    app.add_exception_handler(RequestValidationError, limits.invalid_request)
    app.add_middleware(limits.BodyLimitMiddleware)
    if (rate := settings.rate_limit) is not None:
        def identify(scope: Scope) -> str:
            headers: dict[bytes, bytes] = {}
            for name, value in scope["headers"]:  # the first of a repeated header, as the
                headers.setdefault(name, value)   # key check reads it (dict() kept the last)
            key, auth = headers.get(b"x-api-key"), headers.get(b"authorization")
            peer = scope["client"][0] if scope.get("client") else "unknown"
            return client_identity(settings, key.decode("latin-1") if key else None,
                                   auth.decode("latin-1") if auth else None, peer)

        app.add_middleware(RateLimitMiddleware, buckets=TokenBuckets(rate), identify=identify)
    if settings.origins:  # outermost: 429s and 401s carry CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=settings.origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"],
                           expose_headers=["Retry-After"], max_age=600)


def _method_not_allowed(routers: tuple[Router, ...]) -> Callable[[Request, Exception],
                                                                 Awaitable[JSONResponse]]:
    """405 with every method the path takes: the first route whose path matched answered
    alone, so ``PUT /signals`` said ``Allow: GET`` and hid the ``POST`` a client looks for.
    The routers' own routes are read (an included router is one opaque route of the app's),
    at the request: the app's own (/health, /metrics) are added after this is installed."""
    async def answer(request: Request, exc: Exception) -> JSONResponse:
        methods: set[str] = set()
        for route in (route for router in routers for route in router.routes):
            if route.matches(request.scope)[0] != Match.NONE:
                methods |= getattr(route, "methods", None) or set()
        allow = ", ".join(sorted(methods))
        return JSONResponse({"detail": f"{request.method} is not allowed here; use {allow}"},
                            status_code=405, headers={"Allow": allow})

    return answer


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    logger.error("Database unavailable for %s: %s", request.url.path,
                 first_line(exc))
    return JSONResponse({"detail": "the database is unavailable; try again later"},
                        status_code=503)


async def _no_connection(request: Request, exc: Exception) -> JSONResponse:
    """No pooled connection within ``POOL_TIMEOUT_S``: with every one of them open and in
    use, the server is busy, not the database down (50 readers at once got "the database
    is unavailable" while /health said healthy)."""
    pool = request.app.state.pool
    if pool.get_stats().get("pool_size", 0) >= pool.max_size:
        logger.warning("All %d database connections were busy for %ss; %s answered 503",
                       pool.max_size, POOL_TIMEOUT_S, request.url.path)
        return JSONResponse({"detail": "the server is busy; try again shortly"},
                            status_code=503, headers={"Retry-After": "1"})
    return await _database_down(request, exc)


def _alerts(conn: psycopg.Connection[Any]) -> checks.Check:
    status = alerts.status(conn)
    data = {"channels": status["channels"], "pending": status["pending"],
            "given_up": status["given_up"], "unconfigured": status["unconfigured"],
            "open_alerts": status["open_alerts"]}
    if status["config_error"]:
        return checks.Check(False, status["config_error"], data)
    if any(status["given_up"].values()):
        listed = ", ".join(f"{ch}: {n}" for ch, n in status["given_up"].items() if n)
        return checks.Check(False, f"alerts given up after retries ({listed}); see "
                                   "docs/alerts.md and run `harvest notify`", data)
    waiting = _unconfigured(status["unconfigured"])
    if not status["channels"]:
        return checks.Check(True, "no alert channel configured: alerts are recorded, not "
                                  f"sent{waiting}", data)
    return checks.Check(True, f"{', '.join(status['channels'])}: no failed deliveries"
                              f"{waiting}", data)


def _unconfigured(waiting: dict[str, int]) -> str:
    if not waiting:
        return ""
    listed = ", ".join(f"{n} for {ch}" for ch, n in waiting.items())
    return (f"; alerts wait for channels no longer configured ({listed}): they are sent "
            "if the channel is configured again")


def build() -> FastAPI:
    """For ``uvicorn harvester.api.app:build --factory``: the database from the environment."""
    return create_app(database.resolve_url(get_config()))
