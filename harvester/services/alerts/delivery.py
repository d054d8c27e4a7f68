"""Send due notifications: one claimed row at a time, marked in the claiming transaction.

A row is locked (``FOR UPDATE SKIP LOCKED``), posted, and marked sent — or failed with its
next attempt time — before the transaction commits: two ``harvest notify`` never send the same
row, and a sent row is never sent again (a crash between the 2xx and the commit is the one
window where a message can go out twice: delivery is at-least-once).

Pacing: Slack and Telegram take about one message per second; a 429 holds its whole channel
for ``Retry-After``. Retries back off 1, 10, 100 … s (capped), so they spread over runs.

Within one run a channel that fails is sent nothing else: only the message it failed is tried
again, when it falls due, and the channel resumes if that succeeds. Waiting for such a retry,
and the retry's own request, count against ``max_wait`` seconds a run. A timeout after the
request went out is not retried in the run at all (the receiver is slow, and may have the
message already). A dead channel costs a run one or two requests, not every queued message's
every attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg

from harvester.services.alerts import store
from harvester.services.alerts.channels import Channel, SendResult

logger = logging.getLogger(__name__)

BUSY_PAUSE = 0.2
#: Each pause between attempts is this many times the one before (1, 10, 100, 1,000 s, then
#: ``backoff_max``): with the default six attempts a message is tried for about 50 minutes,
#: so a channel down for minutes still gets it. 1, 2, 4, 8 s gave everything up in one run.
BACKOFF_FACTOR = 10.0
#: For ``store.claim``: no row has this id (a channel sent nothing more this run).
NO_RETRY = 0
#: A channel asking to wait longer than this (Retry-After of a day and more, or a date in
#: year 9999) is given up on: the alert would be stale, and the wait overflowed
#: PostgreSQL's interval and stopped every later `harvest notify`.
LONGEST_RETRY_AFTER = 86_400.0


def _bounded(result: SendResult) -> SendResult:
    """``result``, given up on when it asks to wait more than ``LONGEST_RETRY_AFTER``."""
    if result.retry_after is None or result.retry_after <= LONGEST_RETRY_AFTER:
        return result
    return replace(result, retry_after=None, permanent=True,
                   error=f"{result.error}; the channel asked to wait "
                         f"{result.retry_after:.0f} s, more than a day")


@dataclass(frozen=True, slots=True)
class Outcome:
    notification_id: int
    channel: str
    summary: str
    attempts: int
    error: str | None = None


@dataclass(slots=True)
class DeliveryReport:
    sent: list[Outcome] = field(default_factory=list)
    given_up: list[Outcome] = field(default_factory=list)
    failures: int = 0  # failed attempts that will be retried
    deferred: dict[str, float] = field(default_factory=dict)  # channel -> seconds until due
    #: channels that failed this run -> their other messages, not tried this run
    held_back: dict[str, int] = field(default_factory=dict)


def summary(payload: dict[str, Any]) -> str:
    """One line naming the message (for the terminal)."""
    if payload.get("type") == "ops":
        return f"ops {payload['event']} {payload['alert']['key']}"
    sig = payload["signal"]
    return f"signal {sig['id']} '{sig['title'][:80]}' ({sig['source']}, {payload['score']:g})"


class _Pacer:
    """Per channel: the earliest moment (monotonic) the next message may go."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._ready: dict[str, float] = {}
        self._held: dict[str, float] = {}

    def sent(self, channel: Channel, retry_after: float | None) -> None:
        now = self._clock()
        self._ready[channel.name] = now + channel.min_interval
        if retry_after:
            self._held[channel.name] = now + retry_after

    def pace_wait(self, name: str) -> float:
        return max(0.0, self._ready.get(name, 0.0) - self._clock())

    def hold_wait(self, name: str) -> float:
        return max(0.0, self._held.get(name, 0.0) - self._clock())


class Deliverer:
    """Delivers the due notifications of the configured channels."""

    def __init__(self, conn: psycopg.Connection[Any], channels: dict[str, Channel], *,
                 max_attempts: int, backoff_max: float, max_wait: float,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.conn = conn
        self.channels = channels
        self.max_attempts = max_attempts
        self.backoff_max = backoff_max
        self.max_wait = max_wait
        self._clock = clock
        self._sleep = sleep
        self._pacer = _Pacer(clock)
        #: channel that failed this run -> the notification it failed, the one it may be
        #: sent again this run, unless the channel is in ``_done``
        self._failing: dict[str, int] = {}
        self._done: set[str] = set()
        self._spent = 0.0  # seconds of this run spent on retries, against max_wait

    def backoff(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: 1, 10, 100 … capped."""
        return min(self.backoff_max, BACKOFF_FACTOR ** max(0, attempts - 1))

    def run(self) -> DeliveryReport:
        report = DeliveryReport()
        while True:
            ready = [n for n in self.channels
                     if self._pacer.pace_wait(n) == 0 and self._pacer.hold_wait(n) == 0]
            if ready and self._send_one(ready, report):
                continue
            wait, charged = self._next_wait()
            if wait is None:
                break
            if wait <= 0:
                # Due but not claimable: another `harvest notify` holds it. Look again soon,
                # and count the pause so this cannot spin for ever.
                wait = charged = BUSY_PAUSE
            if self._spent + charged > self.max_wait:
                break
            self._sleep(wait)
            self._spent += charged
        channels = list(self.channels)
        report.deferred = {ch: max(0.0, s) for ch, s in store.due_in(self.conn, channels).items()}
        if self._failing:
            report.held_back = store.held_back(self.conn, self._failing)
        return report

    def _held(self) -> dict[str, int]:
        """For ``store.claim``: per failing channel, the one row it may be sent."""
        return {ch: NO_RETRY if ch in self._done else row
                for ch, row in self._failing.items()}

    def _next_wait(self) -> tuple[float | None, float]:
        """(seconds until some channel can send a due row, of which retry waits)."""
        best: tuple[float, float] | None = None
        for name, due in store.due_in(self.conn, list(self.channels), self._held()).items():
            retry = max(0.0, due, self._pacer.hold_wait(name))
            wait = max(retry, self._pacer.pace_wait(name))
            if best is None or wait < best[0]:
                best = (wait, retry)
        return (None, 0.0) if best is None else best

    def _send_one(self, ready: list[str], report: DeliveryReport) -> bool:
        with self.conn.transaction():
            row = store.claim(self.conn, ready, self._held())
            if row is None:
                return False
            channel = self.channels[row.channel]
            started = self._clock()
            result = _bounded(channel.send(row.payload, row.id))
            if self._failing.get(row.channel) == row.id:
                self._spent += self._clock() - started
            self._pacer.sent(channel, result.retry_after)
            self._mark(row, result, report)
        return True

    def _mark(self, row: store.Claimed, result: SendResult, report: DeliveryReport) -> None:
        attempts = row.attempts + 1
        line = summary(row.payload)
        if result.ok:
            store.mark_sent(self.conn, row.id)
            report.sent.append(Outcome(row.id, row.channel, line, attempts))
            self._failing.pop(row.channel, None)  # it works (again)
            self._done.discard(row.channel)
            return
        error = result.error or "unknown error"
        if not result.permanent:
            # The channel fails, not this message (a 4xx is about the message): it is sent
            # nothing else this run, and at most this message again.
            self._failing[row.channel] = row.id
            if result.maybe_delivered:
                self._done.add(row.channel)
        if result.permanent or attempts >= self.max_attempts:
            store.mark_failed(self.conn, row.id, error, None)
            report.given_up.append(Outcome(row.id, row.channel, line, attempts, error))
            # INFO: the report carries it to the caller (`harvest notify` prints one line).
            logger.info("Gave up on notification %s to %s after %s attempts: %s", row.id,
                        row.channel, attempts, error)
            return
        retry_in = result.retry_after if result.retry_after is not None else (
            self.backoff(attempts))
        store.mark_failed(self.conn, row.id, error, retry_in)
        if result.retry_after is not None:  # the server holds the whole channel
            store.hold_channel(self.conn, row.channel, result.retry_after)
        report.failures += 1
        logger.info("Notification %s to %s failed (%s); retrying in %.1f s", row.id,
                    row.channel, error, retry_in)
