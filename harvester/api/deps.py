"""Shared request plumbing: pooled connections, the sources file, 422s naming a parameter."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from psycopg_pool import ConnectionPool

from harvester.sources import ago


def connection(request: Request) -> Iterator[psycopg.Connection[Any]]:
    pool: ConnectionPool[psycopg.Connection[Any]] = request.app.state.pool
    with pool.connection() as conn:
        yield conn


def sources_file(request: Request) -> Path:
    path: Path = request.app.state.sources_file
    return path


def invalid(location: str, name: str, message: str, value: Any = None) -> RequestValidationError:
    """A 422 in FastAPI's own shape, naming the parameter (``loc``)."""
    return RequestValidationError([{"loc": (location, name), "msg": message,
                                    "type": "value_error", "input": value}])


def parse_since(value: str | None) -> datetime | None:
    """An ISO 8601 date or time (UTC when no offset is given) or an age like ``24h``."""
    if value is None:
        return None
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            return ago(text)
        except ValueError:
            raise invalid("query", "since", "expected an ISO 8601 date or time "
                          "(2026-11-20T08:00:00Z) or an age like 30m, 24h, 7d", value) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def no_nul(request: Request) -> None:
    """PostgreSQL text cannot hold NUL: such a parameter is a 422 naming it, not a 500."""
    for location, params in (("query", request.query_params.multi_items()),
                             ("path", list(request.path_params.items()))):
        for name, value in params:
            if isinstance(value, str) and "\x00" in value:
                raise invalid(location, name, "must not contain NUL characters", None)
