"""``harvest stats``: the totals it always showed plus per-source detail, database size and
the age of the data (what retention and archive decisions are made from)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from harvester.services import queries, spool

_PER_SOURCE = """
WITH names AS (
    SELECT source FROM signals UNION SELECT source FROM rejects
    UNION SELECT source FROM sources_state UNION SELECT unnest(sources) FROM crawl_runs
),
sig AS (SELECT source, count(*) AS n, min(first_seen) AS oldest, max(first_seen) AS newest
        FROM signals GROUP BY source),
rej AS (SELECT source, count(*) AS n FROM rejects GROUP BY source),
run AS (SELECT DISTINCT ON (src) src, started_at, finished_at, finish_reason,
               stats -> 'harvest/by_source' -> src AS counters,
               stats -> 'harvest/by_source' -> src -> 'dropped' AS dropped,
               stats -> 'harvest/by_source' -> src -> 'moved' AS moved
        FROM crawl_runs, unnest(sources) AS src ORDER BY src, started_at DESC),
judged AS (SELECT src, {outcome} AS outcome
    FROM run)
SELECT names.source, coalesce(sig.n, 0) AS signals, coalesce(rej.n, 0) AS rejects,
       sig.oldest, sig.newest, run.started_at AS last_run_started_at,
       run.finished_at AS last_run_finished_at, run.finish_reason AS last_run_finish_reason,
       judged.outcome AS last_run_outcome,
       coalesce(run.dropped, '{}'::jsonb) AS last_run_dropped_fields,
       coalesce(run.moved, '{}'::jsonb) AS last_run_moved,
       st.last_success, coalesce(st.disabled, false) AS disabled
FROM names
LEFT JOIN sig ON sig.source = names.source
LEFT JOIN rej ON rej.source = names.source
LEFT JOIN run ON run.src = names.source
LEFT JOIN judged ON judged.src = names.source
LEFT JOIN sources_state st ON st.source = names.source
ORDER BY names.source
""".replace("{outcome}", queries.RUN_OUTCOME)


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def per_source(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_PER_SOURCE).fetchall()
    return {row.pop("source"): {k: _iso(v) for k, v in row.items()} for row in rows}


def collect(conn: psycopg.Connection[Any], spool_dir: Path) -> dict[str, Any]:
    """The ``stats --json`` object: the earlier keys unchanged, new ones added."""
    data = queries.stats(conn)
    data["spooled_batches"] = spool.backlog(spool_dir)
    data["spool_set_aside"] = spool.set_aside(spool_dir)
    data["sources"] = per_source(conn)
    row = conn.execute(
        "SELECT pg_database_size(current_database()), min(first_seen), max(first_seen), "
        "min(last_seen) FROM signals").fetchone()
    assert row is not None
    data["database_size_bytes"] = row[0]
    data["oldest_signal"] = _iso(row[1])
    data["newest_signal"] = _iso(row[2])
    data["oldest_last_seen"] = _iso(row[3])
    return data
