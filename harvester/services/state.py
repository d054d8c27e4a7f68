"""Per-source health and resume points (``sources_state``), read before a crawl and changed
by operators (``harvest sources enable``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from harvester.config import get_config
from harvester.messages import first_line
from harvester.services import database

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class SourceState:
    """What earlier runs left for one source; a source never crawled has the defaults."""

    last_attempt: datetime | None = None
    last_success: datetime | None = None
    consecutive_failures: int = 0
    disabled: bool = False
    last_error: str | None = None
    cursor: dict[str, Any] = field(default_factory=dict)


_SELECT = """
SELECT source, last_attempt, last_success, consecutive_failures, disabled, last_error, cursor
FROM sources_state WHERE source = ANY(%s)
"""


async def load_states(conn: psycopg.AsyncConnection[Any],
                      sources: Sequence[str]) -> dict[str, SourceState]:
    cur = await conn.execute(_SELECT, (list(sources),))
    return {row[0]: SourceState(*row[1:6], cursor=row[6] or {}) for row in await cur.fetchall()}


def enable(conn: psycopg.Connection[Any], source: str) -> bool:
    """Re-enable a disabled source and forget its failure streak; False when it was not
    disabled."""
    cur = conn.execute(
        "UPDATE sources_state SET disabled = false, disabled_at = NULL, consecutive_failures = 0"
        " WHERE source = %s AND disabled",
        (source,),
    )
    return cur.rowcount > 0


async def fetch_states(sources: Sequence[str]) -> dict[str, SourceState] | None:
    """The states of these sources, or None when the database cannot be reached (the crawl
    then goes on as if every source were new: more fetched, nothing lost)."""
    try:
        url = await asyncio.to_thread(database.resolve_url, get_config())
        await asyncio.to_thread(database.ensure_schema, url)
        async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
            return await load_states(conn, sources)
    except (database.DatabaseUnavailable, psycopg.Error) as exc:
        logger.warning("Source state not loaded (%s); crawling as if every source were new",
                       first_line(exc))
        return None
