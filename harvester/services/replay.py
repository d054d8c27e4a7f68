"""Replay spooled batches into the database, each exactly once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from harvester.services import clusters, spool
from harvester.services.store import write_batch

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ReplayReport:
    batches: int = 0
    signals: int = 0
    new: int = 0
    rejects: int = 0
    already_applied: int = 0
    unreadable: int = 0


async def replay_pending(conn: psycopg.AsyncConnection[Any], spool_dir: Path,
                         cluster_distance: int = clusters.DEFAULT_DISTANCE) -> ReplayReport:
    """Write every pending spool file, oldest first, deleting each once it is committed.

    A file whose batch id is already recorded was applied before (the delete was lost):
    it is deleted without writing anything. Stops at the first database error, which
    propagates; files not yet replayed stay for the next attempt.
    """
    report = ReplayReport()
    for path, batch in spool.iter_pending(spool_dir):
        if batch is None:
            report.unreadable += 1
            continue
        result = await write_batch(conn, batch, cluster_distance)
        path.unlink(missing_ok=True)
        report.batches += 1
        if result.already_applied:
            report.already_applied += 1
            continue
        report.signals += len(batch.signals)
        report.new += result.total_new
        report.rejects += len(batch.rejects)
    return report
