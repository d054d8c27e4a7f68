"""Download failures as one sentence an operator understands."""

from __future__ import annotations

from typing import Any

from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet import error
from twisted.python.failure import Failure

_MESSAGES: tuple[tuple[type[BaseException], str], ...] = (
    (error.DNSLookupError, "host name not found (DNS lookup failed; offline?)"),
    (error.ConnectionRefusedError, "connection refused"),
    (error.TimeoutError, "timed out"),
    (error.TCPTimedOutError, "timed out"),
    (error.ConnectionLost, "connection lost"),
)


def describe_failure(failure: Failure) -> str:
    exc: Any = failure.value
    if isinstance(exc, HttpError):
        return f"HTTP {exc.response.status}"
    for kind, message in _MESSAGES:
        if isinstance(exc, kind):
            return message
    name = type(exc).__name__
    if name == "ResponseNeverReceived" or name == "_ResponseFailed":
        return "connection failed before a response was received"
    text = str(exc).strip().splitlines()
    return f"{name}: {text[0]}" if text else name
