"""Alerts: signal alerts (score at or above a threshold) and ops alerts (failed runs, stale
sources, rejection spikes) sent to Slack, Telegram and a generic webhook.

Modules: ``config`` (environment), ``channels`` (HTTP), ``messages`` (what is said),
``store`` (the ``notifications`` table), ``ops`` (the ``alerts`` table), ``delivery``
(claim, send, retry), ``notify`` (one ``harvest notify``). See docs/alerts.md.
"""

from __future__ import annotations

from typing import Any

import psycopg

from harvester.services.alerts import store
from harvester.services.alerts.channels import configured_names
from harvester.services.alerts.config import AlertsConfig, AlertsConfigError, load_alerts_config


def status(conn: psycopg.Connection[Any], cfg: AlertsConfig | None = None) -> dict[str, Any]:
    """For /health and /metrics: configured channel names (never their URLs or tokens), and
    per configured channel the notifications waiting (``pending``: not yet tried or failed
    and due for a retry), ``retrying`` (the failed part of ``pending``), ``given_up``;
    ``unconfigured``: messages waiting for a channel no longer configured; and open ops
    alerts by key.
    """
    error = None
    if cfg is None:
        try:
            cfg = load_alerts_config()
        except AlertsConfigError as exc:
            error = str(exc)
    counts = store.counts(conn)
    unconfigured: dict[str, int] = {}
    if cfg is not None:
        # A channel taken out of the configuration: its waiting messages are not a
        # backlog to alert on forever (nothing sends them until it is configured again),
        # and its given-up ones no longer say a configured channel fails.
        kept = {*configured_names(cfg), store.NO_CHANNEL}
        for state, per_channel in counts.items():
            for channel in [ch for ch in per_channel if ch not in kept]:
                n = per_channel.pop(channel)
                if state in ("pending", "failed"):
                    unconfigured[channel] = unconfigured.get(channel, 0) + n
    pending = dict(counts["pending"])
    for channel, n in counts["failed"].items():
        pending[channel] = pending.get(channel, 0) + n
    open_alerts = [key for (key,) in conn.execute(
        "SELECT key FROM alerts WHERE resolved_at IS NULL ORDER BY key").fetchall()]
    return {
        "channels": configured_names(cfg) if cfg is not None else [],
        "config_error": error,
        "pending": pending,
        "retrying": counts["failed"],
        "given_up": counts["given_up"],
        "recorded": counts["recorded"],
        "unconfigured": dict(sorted(unconfigured.items())),
        "open_alerts": open_alerts,
    }


__all__ = ["AlertsConfig", "AlertsConfigError", "load_alerts_config", "status"]
