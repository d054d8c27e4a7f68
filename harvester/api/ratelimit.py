"""Per-client rate limiting: a token bucket per API key (else per address), in process.

A request takes one token; a bucket holds at most ``burst`` and refills at ``per_second``.
An empty bucket answers 429 with ``Retry-After`` (whole seconds, at least 1) before the
request reaches a route or the database. ``/health`` and ``/metrics`` are never limited:
load balancers and Prometheus poll them.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from harvester.api.settings import Rate

EXEMPT = frozenset({"/health", "/metrics"})
# Buckets kept before idle (full) ones are forgotten: bounds memory under many addresses.
MAX_BUCKETS = 10_000


class TokenBuckets:
    """``take(client)`` → 0 when allowed, else the seconds until a token is back."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client → (tokens, at)

    def take(self, client: str) -> float:
        now = self.clock()
        tokens, at = self._buckets.get(client, (float(self.rate.burst), now))
        tokens = min(float(self.rate.burst), tokens + (now - at) * self.rate.per_second)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_BUCKETS:
                self._forget_idle(now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) / self.rate.per_second

    def _forget_idle(self, now: float) -> None:
        full = self.rate.burst / self.rate.per_second  # seconds to refill from empty
        self._buckets = {c: v for c, v in self._buckets.items() if now - v[1] < full}


class RateLimitMiddleware:
    """ASGI middleware; runs on the event loop, so the buckets need no lock."""

    def __init__(self, app: ASGIApp, buckets: TokenBuckets,
                 identify: Callable[[Scope], str]) -> None:
        self.app = app
        self.buckets = buckets
        self.identify = identify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        wait = self.buckets.take(self.identify(scope))
        if not wait:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        body = json.dumps({"detail": f"rate limit exceeded; retry after {retry_after} s"})
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(retry_after).encode()),
        ]})
        await send({"type": "http.response.body", "body": body.encode()})
