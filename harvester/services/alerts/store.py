"""SQL of the ``notifications`` table: record, claim (``FOR UPDATE SKIP LOCKED``), mark."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

NO_CHANNEL = "none"  # the channel of alerts recorded while nothing was configured

# One alert a story on each channel: of a story's copies (a cluster: one per source that
# carried it) the best one above the threshold stands for it, and none is picked on a
# channel that has had any copy of the story (ten feeds carrying one story made ten
# alerts), whether that copy is still stored or was archived since (notifications keep
# the cluster and URL they announced), nor a URL announced before that its source lists
# anew (stored again after an archive, it is a new signal of a new cluster). A signal
# stored before clustering (cluster_id NULL) is a story of its own. Four EXISTS, not one
# with an OR: each finds its rows through an index (the OR read every notification for
# every signal above the threshold, a minute a run at 30,000 alerts).
_ANNOUNCED = """(
    EXISTS (SELECT 1 FROM notifications n WHERE n.kind = 'signal'
            AND n.channel = {channel} AND n.signal_id = s.id)
    OR EXISTS (SELECT 1 FROM notifications n WHERE n.kind = 'signal'
               AND n.channel = {channel} AND n.cluster_id = s.cluster_id)
    OR EXISTS (SELECT 1 FROM signals m JOIN notifications n ON n.signal_id = m.id
               WHERE m.cluster_id = s.cluster_id AND n.kind = 'signal'
                 AND n.channel = {channel})
    OR EXISTS (SELECT 1 FROM notifications n WHERE n.kind = 'signal'
               AND n.channel = {channel} AND n.signal_url = s.url))"""

_CANDIDATES = f"""
SELECT s.id, s.title, s.source, s.url, s.link_url, s.score, s.score_breakdown,
       s.published_at, s.first_seen,
       ARRAY(SELECT DISTINCT m.source FROM signals m
             WHERE m.cluster_id = s.cluster_id AND m.source <> s.source
             ORDER BY m.source) AS also_from
FROM signals s
WHERE s.score >= %(threshold)s::real
  AND NOT EXISTS (SELECT 1 FROM signals b
                  WHERE b.cluster_id = s.cluster_id AND b.id <> s.id
                    AND b.score >= %(threshold)s::real
                    AND (b.score, coalesce(b.published_at, b.first_seen), b.id)
                        > (s.score, coalesce(s.published_at, s.first_seen), s.id))
  AND EXISTS (SELECT 1 FROM unnest(%(channels)s::text[]) AS c(name)
              WHERE NOT {_ANNOUNCED.format(channel="c.name")})
ORDER BY s.score DESC, coalesce(s.published_at, s.first_seen) DESC, s.id DESC
LIMIT %(limit)s
"""

# On a channel that has had a copy of the story, nothing is recorded.
_RECORD_SIGNAL = f"""
INSERT INTO notifications (kind, signal_id, cluster_id, signal_url, channel, status,
                           payload)
SELECT 'signal', s.id, s.cluster_id, s.url, %(channel)s, %(status)s, %(payload)s
FROM signals s
WHERE s.id = %(signal_id)s AND NOT {_ANNOUNCED.format(channel="%(channel)s")}
ON CONFLICT (signal_id, channel) WHERE kind = 'signal' DO NOTHING
"""

# Two `harvest notify` at once each picked a different copy of one story: the picking and
# recording of signal alerts is one run at a time (the lock ends with the transaction).
_RECORDING_LOCK = "SELECT pg_advisory_xact_lock(hashtext('harvest notify: signal alerts'))"

_RECORD_OPS = """
INSERT INTO notifications (kind, alert_id, alert_key, event, channel, status, payload)
VALUES ('ops', %(alert_id)s, %(key)s, %(event)s, %(channel)s, %(status)s, %(payload)s)
ON CONFLICT (alert_id, event, channel) WHERE kind = 'ops' DO NOTHING
"""

# A channel that failed in this run is sent only the message it failed (see delivery).
_SENDABLE = """status IN ('pending', 'failed') AND channel = ANY(%(channels)s)
  AND (channel <> ALL(%(failing)s::text[]) OR id = ANY(%(retrying)s::bigint[]))"""

# Oldest due first; a row another `harvest notify` is sending is skipped, not waited for.
_CLAIM = f"""
SELECT id, kind, channel, attempts, payload FROM notifications
WHERE {_SENDABLE} AND next_attempt_at <= clock_timestamp()
ORDER BY next_attempt_at, id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""

_DUE_IN = f"""
SELECT channel, extract(epoch FROM min(next_attempt_at) - clock_timestamp())::float8
FROM notifications
WHERE {_SENDABLE}
GROUP BY channel
"""


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    kind: str
    channel: str
    attempts: int
    payload: dict[str, Any]


def candidates(conn: psycopg.Connection[Any], threshold: float, limit: int,
               channels: Sequence[str]) -> list[dict[str, Any]]:
    """Signals at or above ``threshold`` whose story is missing on at least one channel,
    highest first (call inside the recording transaction)."""
    conn.execute(_RECORDING_LOCK)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_CANDIDATES, {"threshold": threshold, "limit": limit,
                                  "channels": list(channels)})
        return cur.fetchall()


def record_signal(conn: psycopg.Connection[Any], signal_id: int, payload: dict[str, Any],
                  channels: Sequence[str], status: str) -> int:
    """One row per channel its story is missing on; returns how many were new."""
    made = 0
    for channel in channels:
        cur = conn.execute(_RECORD_SIGNAL, {"signal_id": signal_id, "channel": channel,
                                            "status": status, "payload": Jsonb(payload)})
        made += cur.rowcount
    return made


def record_ops(conn: psycopg.Connection[Any], alert_id: int, key: str, event: str,
               payload: dict[str, Any], channels: Sequence[str], status: str) -> int:
    made = 0
    for channel in channels:
        cur = conn.execute(_RECORD_OPS, {"alert_id": alert_id, "key": key, "event": event,
                                         "channel": channel, "status": status,
                                         "payload": Jsonb(payload)})
        made += cur.rowcount
    return made


def _sendable(channels: Sequence[str], failing: Mapping[str, int] | None) -> dict[str, Any]:
    failing = failing or {}
    return {"channels": list(channels), "failing": list(failing),
            "retrying": list(failing.values())}


def claim(conn: psycopg.Connection[Any], channels: Sequence[str],
          failing: Mapping[str, int] | None = None) -> Claimed | None:
    """Lock one due row (call inside a transaction; the lock lasts until it ends); of a
    channel in ``failing`` (channel -> notification id) only that row."""
    row = conn.execute(_CLAIM, _sendable(channels, failing)).fetchone()
    return Claimed(*row) if row else None


def mark_sent(conn: psycopg.Connection[Any], notification_id: int) -> None:
    # clock_timestamp(), not now(): the transaction began before the post, which may have
    # waited out a timeout (a backoff of 1 s after a 10 s timeout was already due).
    conn.execute("UPDATE notifications SET status = 'sent', sent_at = clock_timestamp(), "
                 "attempts = attempts + 1, last_error = NULL WHERE id = %s",
                 (notification_id,))


def mark_failed(conn: psycopg.Connection[Any], notification_id: int, error: str,
                retry_in: float | None) -> None:
    """``retry_in`` None = given up."""
    if retry_in is None:
        conn.execute("UPDATE notifications SET status = 'given_up', attempts = attempts + 1, "
                     "last_error = %s WHERE id = %s", (error, notification_id))
        return
    conn.execute("UPDATE notifications SET status = 'failed', attempts = attempts + 1, "
                 "last_error = %s, "
                 "next_attempt_at = clock_timestamp() + make_interval(secs => %s) "
                 "WHERE id = %s", (error, retry_in, notification_id))


def hold_channel(conn: psycopg.Connection[Any], channel: str, seconds: float) -> None:
    """Hold every undelivered row of ``channel`` for ``seconds`` (a 429's Retry-After), in
    the database: held only in one run's memory, the wait was lost with the run, and the
    next `harvest notify` posted to the channel at once, using up another row's attempt."""
    conn.execute("UPDATE notifications SET next_attempt_at = greatest(next_attempt_at, "
                 "clock_timestamp() + make_interval(secs => %s)) "
                 "WHERE channel = %s AND status IN ('pending', 'failed')", (seconds, channel))


def due_in(conn: psycopg.Connection[Any], channels: Sequence[str],
           failing: Mapping[str, int] | None = None) -> dict[str, float]:
    """Per channel with undelivered rows: seconds until the earliest is due (≤ 0: now);
    ``failing`` as for :func:`claim`."""
    rows = conn.execute(_DUE_IN, _sendable(channels, failing)).fetchall()
    return {ch: float(s) for ch, s in rows}


def held_back(conn: psycopg.Connection[Any], failing: Mapping[str, int]) -> dict[str, int]:
    """Per channel in ``failing``: its undelivered rows other than the one it failed."""
    rows = conn.execute("SELECT channel, count(*) FROM notifications "
                        "WHERE status IN ('pending', 'failed') AND channel = ANY(%s) "
                        "AND id <> ALL(%s::bigint[]) GROUP BY channel",
                        (list(failing), list(failing.values()))).fetchall()
    return {channel: int(n) for channel, n in rows}


# A message given up counts until its channel delivers a later one: then the channel works
# again, and /health and the alert rule (which counted every given-up row ever) recover.
_COUNTS = """
SELECT status, channel, count(*) FROM notifications n
WHERE status <> 'sent'
  AND (status <> 'given_up' OR NOT EXISTS (
      SELECT 1 FROM notifications s
      WHERE s.channel = n.channel AND s.status = 'sent' AND s.created_at > n.created_at))
GROUP BY status, channel
"""


def waiting_elsewhere(conn: psycopg.Connection[Any], channels: Sequence[str]) -> dict[str, int]:
    """Per channel not in ``channels`` (nor "none"): messages still waiting for it, which
    no `harvest notify` sends while it is not configured."""
    rows = conn.execute("SELECT channel, count(*) FROM notifications "
                        "WHERE status IN ('pending', 'failed') AND channel <> ALL(%s) "
                        "GROUP BY channel ORDER BY channel",
                        ([*channels, NO_CHANNEL],)).fetchall()
    return {channel: int(n) for channel, n in rows}


def counts(conn: psycopg.Connection[Any]) -> dict[str, dict[str, int]]:
    """``{status: {channel: n}}`` for the statuses that need attention or explain a gap
    (``given_up``: those not followed by a later message the channel delivered)."""
    out: dict[str, dict[str, int]] = {"pending": {}, "failed": {}, "given_up": {},
                                      "recorded": {}}
    rows = conn.execute(_COUNTS).fetchall()
    for status, channel, n in rows:
        out[status][channel] = int(n)
    return out
