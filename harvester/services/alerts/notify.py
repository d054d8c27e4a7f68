"""One ``harvest notify``: pick signals and ops changes, record them, send what is due."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from harvester.services.alerts import messages, ops, store
from harvester.services.alerts.channels import Channel
from harvester.services.alerts.config import AlertsConfig
from harvester.services.alerts.delivery import Deliverer, DeliveryReport
from harvester.sources import Source


@dataclass(slots=True)
class NotifyResult:
    channels: list[str]
    signals: list[dict[str, Any]] = field(default_factory=list)  # payloads picked this run
    changes: list[ops.Change] = field(default_factory=list)
    #: open alerts' "opened" messages, for a channel that has not had them (not printed)
    ongoing: list[ops.Change] = field(default_factory=list)
    recorded: int = 0  # notification rows written
    delivery: DeliveryReport | None = None
    #: messages waiting for a channel configured once and not now, per channel
    unconfigured: dict[str, int] = field(default_factory=dict)


def _record(conn: psycopg.Connection[Any], names: Sequence[str], status: str,
            result: NotifyResult) -> None:
    for payload in result.signals:
        result.recorded += store.record_signal(conn, payload["signal"]["id"], payload, names,
                                               status)
    for change in result.changes + result.ongoing:
        result.recorded += store.record_ops(conn, change.alert_id, change.key, change.event,
                                            change.payload, names, status)


def notify(conn: psycopg.Connection[Any], cfg: AlertsConfig, channels: dict[str, Channel], *,
           threshold: float, limit: int, sources: Sequence[Source] | None, with_ops: bool,
           dry_run: bool) -> NotifyResult:
    """Record new alerts (one transaction), then deliver every due one. ``sources`` None
    means the sources file could not be read: staleness is then not judged."""
    names = list(channels) or [store.NO_CHANNEL]
    result = NotifyResult(list(channels))
    with conn.transaction():
        rows = store.candidates(conn, threshold, limit, names)
        result.signals = [messages.signal_payload(r) for r in rows]
        if with_ops:
            judged = ops.KINDS if sources is not None else ops.RUN_KINDS
            conditions = ops.evaluate(conn, sources, cfg.stale_factor,
                                      cfg.reject_spike_percent)
            crawled = None if sources is None else {s.name for s in sources}
            result.changes = ops.apply(conn, conditions, judged, dry_run=dry_run,
                                       crawled=crawled)
            if not dry_run and channels:
                result.ongoing = ops.ongoing(conn, conditions)
        if not dry_run:
            _record(conn, names, "pending" if channels else "recorded", result)
    if channels and not dry_run:
        result.delivery = Deliverer(conn, channels, max_attempts=cfg.notify_max_attempts,
                                    backoff_max=cfg.notify_backoff_max,
                                    max_wait=cfg.notify_max_wait).run()
    if not dry_run:
        result.unconfigured = store.waiting_elsewhere(conn, list(channels))
    return result
