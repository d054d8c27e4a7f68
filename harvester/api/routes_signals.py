"""``/signals``: search and page through signals, the top list, one signal, curator input."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from harvester.api import curate, reads
from harvester.api.deps import connection, invalid, parse_since, sources_file
from harvester.api.models import CreatedSignal, NewSignal, SignalDetail, SignalPage, TopList
from harvester.api.pagination import Cursor, CursorError
from harvester.api.security import require_read, require_write
from harvester.exceptions import InvalidSignal
from harvester.sources import SourcesError

reads_router = APIRouter(tags=["signals"], dependencies=[Depends(require_read)])
writes_router = APIRouter(tags=["curation"], dependencies=[Depends(require_write)])

Conn = Annotated[psycopg.Connection[Any], Depends(connection)]
Since = Annotated[str | None, Query(max_length=40, description=(
    "only signals dated (published, else first seen) at or after this: ISO 8601 "
    "(`2026-11-20`, `2026-11-20T08:00:00Z`) or an age (`30m`, `24h`, `7d`)"))]
Sources = Annotated[list[Annotated[str, Query(max_length=100)]], Query(
    max_length=50, description="source name; repeat for several")]
Topic = Annotated[str | None, Query(max_length=100, description="a [topics.NAME] it matched")]
MinScore = Annotated[float | None, Query(ge=0, le=100, allow_inf_nan=False)]


@reads_router.get("/signals", response_model=SignalPage,
                  summary="Signals, filtered and searched, newest or best first")
def list_signals(
    conn: Conn,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description=(
        "full-text search in titles: words (all must match), \"a phrase\", or, -word"))] = None,
    source: Sources = [],  # noqa: B006 - FastAPI copies defaults per request
    topic: Topic = None,
    since: Since = None,
    min_score: MinScore = None,
    cluster: Annotated[int | None, Query(ge=1, lt=2**63, description=(
        "only the signals of this story cluster"))] = None,
    sort: Annotated[Literal["recent", "score"], Query(description=(
        "recent: by date (published, else first seen); score: best first"))] = "recent",
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=300, description=(
        "next_cursor of the previous page"))] = None,
) -> dict[str, Any]:
    after = None
    if cursor is not None:
        try:
            after = Cursor.decode(cursor, sort)
        except CursorError as exc:
            raise invalid("query", "cursor", str(exc), cursor) from None
    flt = reads.SignalFilter(q=q, sources=tuple(source), topic=topic, since=parse_since(since),
                             min_score=min_score, cluster=cluster)
    rows, next_cursor = reads.list_signals(conn, flt, sort, limit, after)
    return {"items": rows, "next_cursor": next_cursor.encode() if next_cursor else None,
            "limit": limit}


@reads_router.get("/signals/top", response_model=TopList,
                  summary="The best story clusters, one signal each (like `harvest top`)")
def top_signals(
    conn: Conn,
    source: Sources = [],  # noqa: B006
    topic: Topic = None,
    since: Since = None,
    min_score: MinScore = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> dict[str, Any]:
    flt = reads.SignalFilter(sources=tuple(source), topic=topic, since=parse_since(since),
                             min_score=min_score)
    return {"items": reads.top_clusters(conn, flt, limit)}


@reads_router.get("/signals/{signal_id}", response_model=SignalDetail,
                  responses={404: {"description": "no such signal"}},
                  summary="One signal: text, score breakdown and its cluster's other signals")
def get_signal(conn: Conn,
               signal_id: Annotated[int, PathParam(ge=1, lt=2**63)]) -> dict[str, Any]:
    row = reads.signal(conn, signal_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no signal {signal_id}")
    return row


@writes_router.post(
    "/signals", response_model=CreatedSignal, status_code=status.HTTP_201_CREATED,
    summary="Add a signal by hand (bearer token)",
    responses={200: {"model": CreatedSignal, "description": "already stored: its id"},
               422: {"description": "rejected by validation: field and reason in `detail`"},
               503: {"description": "the sources file cannot be read, so nothing is scored"}})
async def post_signal(body: NewSignal, request: Request, response: Response,
                      sources: Annotated[Path, Depends(sources_file)]) -> Any:
    url: str = request.app.state.database_url
    try:
        item = await curate.prepare(body, sources)
    except SourcesError as exc:
        # Scored against no topics, it was stored with a score of 0 and a 201.
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            f"signals cannot be scored: {exc}") from None
    except InvalidSignal as exc:
        await curate.keep_rejection(url, body, exc)
        return JSONResponse({"detail": [{"loc": ["body", exc.field], "msg": exc.reason,
                                         "type": "invalid_signal"}]},
                            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)
    outcome = await curate.store(url, item)
    if not outcome.created:
        response.status_code = status.HTTP_200_OK
    return {"id": outcome.id, "created": outcome.created, "key": outcome.key,
            "score": outcome.score}

