"""Download failures as one short phrase an operator understands."""

from __future__ import annotations

from typing import Any

from scrapy import exceptions as scrapy_errors
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet import error
from twisted.python.failure import Failure

from harvester.exceptions import RateLimited

_MESSAGES: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((scrapy_errors.CannotResolveHostError, error.DNSLookupError),
     "host name not found (DNS lookup failed; offline?)"),
    ((scrapy_errors.DownloadConnectionRefusedError, error.ConnectionRefusedError),
     "connection refused"),
    ((scrapy_errors.DownloadTimeoutError, error.TimeoutError, error.TCPTimedOutError),
     "timed out"),
    ((scrapy_errors.ResponseDataLossError, error.ConnectionLost),
     "connection lost before the response was complete"),
    ((scrapy_errors.UnsupportedURLSchemeError,), "unsupported URL scheme"),
    ((scrapy_errors.DownloadFailedError,), "download failed"),
)


def describe_failure(failure: Failure) -> str:
    exc: Any = failure.value
    if isinstance(exc, HttpError):
        return f"HTTP {exc.response.status}"
    if isinstance(exc, RateLimited):
        return str(exc)
    for kinds, message in _MESSAGES:
        if isinstance(exc, kinds):
            return message
    text = str(exc).strip().splitlines()
    name = type(exc).__name__
    return f"{name}: {text[0]}" if text else name
