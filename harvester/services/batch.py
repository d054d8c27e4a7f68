"""A unit of storage: signals, rejections and optionally a run record, written atomically.

A batch has an id so it lands exactly once: the database records every applied id, and a
spooled batch replayed twice (or a commit whose acknowledgement was lost) is recognised.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SIGNAL_COLUMNS: tuple[str, ...] = (
    "key",
    "source",
    "kind",
    "url",
    "canonical_url",
    "feed_url",
    "link_url",
    "simhash",
    "external_id",
    "title",
    "text",
    "author",
    "published_at",
    "updated_at",
    "fetched_at",
    "language",
    "tags",
    "engagement",
    "score",
    "score_breakdown",
    "run_id",
)
REJECT_COLUMNS: tuple[str, ...] = (
    "run_id", "source", "reason", "field", "url", "raw", "created_at",
)
DATETIME_COLUMNS = frozenset({"published_at", "updated_at", "fetched_at", "created_at",
                              "started_at", "finished_at", "attempted_at"})


@dataclass(slots=True)
class Batch:
    """Rows ready for the database; ``run`` is a crawl_runs record (set by the final batch)."""

    signals: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] | None = None
    batch_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def __len__(self) -> int:
        return len(self.signals) + len(self.rejects) + (1 if self.run else 0)

    def take(self, limit: int) -> Batch:
        """Move up to ``limit`` rows (rejections first) into a new batch of its own id."""
        rejects, self.rejects = self.rejects[:limit], self.rejects[limit:]
        room = limit - len(rejects)
        signals, self.signals = self.signals[:room], self.signals[room:]
        return Batch(signals=signals, rejects=rejects)


@dataclass(slots=True)
class BatchResult:
    """What a stored batch did, per source."""

    new: dict[str, int] = field(default_factory=dict)
    reseen: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    already_applied: bool = False

    @property
    def total_new(self) -> int:
        return sum(self.new.values())


def to_jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def from_jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (datetime.fromisoformat(v) if k in DATETIME_COLUMNS and isinstance(v, str) else v)
        for k, v in row.items()
    }
