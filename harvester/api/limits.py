"""What the API takes in and echoes back: a cap on request bodies, and 422 answers that
stay small and encodable.

Without a cap, a token holder could post a body of any size and hold it in memory; a 422
for a 50 MB ``text`` echoed the whole text back (FastAPI puts the rejected ``input`` in
each error). A lone surrogate in a JSON body (``"a\\ud800b"``) made that echo fail to
encode: a 500 where a 422 belongs.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from harvester import surrogates
from harvester.api import security

#: The largest request body taken (a curated signal is a few KB; text is capped at 20,000).
MAX_BODY_BYTES = 1_000_000
#: How much of a rejected value a 422 shows.
SHOWN_CHARS = 200


class _TooLarge(BaseException):
    """Raised from ``receive``: not an ``Exception``, which FastAPI turns into "400: There
    was an error parsing the body" while it reads a body."""


class BodyLimitMiddleware:
    """Answers 413 to a request whose body is over ``max_bytes``, by its Content-Length or
    as it arrives (a chunked body has none)."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"the request body is over {self.max_bytes:,} bytes"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body.encode()})


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, with each error's ``input`` shown short and encodable; to a write
    request without a valid token, the refusal instead (its body is parsed before auth)."""
    assert isinstance(exc, RequestValidationError)
    if request.method == "POST" and (refusal := security.write_refusal(request)):
        return JSONResponse({"detail": refusal.detail}, status_code=refusal.status_code,
                            headers=refusal.headers)
    errors = [{**error, "input": _shown(error.get("input"))} for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def _shown(value: Any) -> Any:
    value = surrogates.replace_in(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # NaN, Infinity: no JSON for them, and the 422 itself was a 500
    if isinstance(value, str):
        return value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS] + "…"
    if isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False, default=str)  # NaN written as NaN
        if "NaN" in text or "Infinity" in text:
            return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"
        return value if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"
    return value
