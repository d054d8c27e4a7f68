"""Replay spooled batches into the database, each exactly once."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from harvester.messages import first_line
from harvester.services import clusters, spool
from harvester.services.store import write_batch

logger = logging.getLogger(__name__)

#: The database refused the rows themselves (a value, a constraint): the batch, not the
#: database, is at fault.
ROWS_REFUSED = (psycopg.DataError, psycopg.IntegrityError)


@dataclass(slots=True)
class ReplayReport:
    batches: int = 0
    signals: int = 0
    new: int = 0
    rejects: int = 0
    already_applied: int = 0
    unreadable: int = 0
    #: "file name: why", for each file set aside as ``.refused``
    refused: list[str] = field(default_factory=list)


async def replay_pending(conn: psycopg.AsyncConnection[Any], spool_dir: Path,
                         cluster_distance: int = clusters.DEFAULT_DISTANCE) -> ReplayReport:
    """Write every pending spool file, oldest first, deleting each once it is committed.

    A file whose batch id is already recorded was applied before (the delete was lost):
    it is deleted without writing anything. Stops when the database is away or fails as
    a whole (connection errors, lock timeouts, a schema behind the code: the
    ``psycopg.Error`` propagates); files not yet replayed stay for the next attempt. A
    batch whose rows the database refuses (``DataError``, ``IntegrityError``), or that
    fails for a reason of ours, is renamed ``.refused`` and the replay goes on: one such
    file must not hold back every batch spooled after it (``harvest replay
    --retry-refused`` tries them again once the cause is fixed).
    """
    report = ReplayReport(unreadable=spool.settle_partial(spool_dir))
    for path, batch in spool.iter_pending(spool_dir):
        if batch is None:
            report.unreadable += 1
            continue
        try:
            result = await write_batch(conn, batch, cluster_distance)
        except psycopg.Error as exc:
            if not isinstance(exc, ROWS_REFUSED):
                raise
            _set_aside(path, exc, report)
            continue
        except Exception as exc:  # ours, with these rows (the worker's "failed")
            _set_aside(path, exc, report)
            continue
        path.unlink(missing_ok=True)
        report.batches += 1
        if result.already_applied:
            report.already_applied += 1
            continue
        report.signals += len(batch.signals)
        report.new += result.total_new
        report.rejects += len(batch.rejects)
    return report


def _set_aside(path: Path, exc: Exception, report: ReplayReport) -> None:
    why = f"{type(exc).__name__}: {first_line(exc)}"
    logger.error("spool file %s was refused (%s); renamed to .refused", path, why)
    # Another crawl replaying at the same moment may have set it aside first.
    with contextlib.suppress(FileNotFoundError):
        path.rename(path.with_suffix(".refused"))
    report.refused.append(f"{path.name}: {why}")


def put_back_refused(spool_dir: Path) -> int:
    """Put the files set aside as ``.refused`` back in the queue; how many there were."""
    refused = sorted(spool_dir.glob("*.refused")) if spool_dir.is_dir() else []
    for path in refused:
        path.rename(path.with_suffix(".jsonl"))
    return len(refused)
