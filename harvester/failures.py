"""Download failures as one short phrase an operator understands."""

from __future__ import annotations

import gzip
import importlib
import json
import re
import zlib
from typing import Any
from urllib.parse import urlsplit

from scrapy import exceptions as scrapy_errors
from scrapy.spidermiddlewares.httperror import HttpError
from twisted.internet import error
from twisted.python.failure import Failure

from harvester.exceptions import BadRedirect, RateLimited
from harvester.parsers.encoding import byte_size


def _decoder_errors() -> tuple[type[BaseException], ...]:
    """What the decoders Scrapy uses raise on bytes that are not what Content-Encoding
    says: gzip, deflate, and brotli and zstd when installed ("brotli: decoder failed")."""
    found: list[type[BaseException]] = [gzip.BadGzipFile, zlib.error]
    for module, name in (("brotli", "error"), ("brotlicffi", "error"),
                         ("compression.zstd", "ZstdError"), ("backports.zstd", "ZstdError")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_MESSAGES: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((scrapy_errors.CannotResolveHostError, error.DNSLookupError),
     "host name not found (DNS lookup failed; offline?)"),
    ((scrapy_errors.DownloadConnectionRefusedError, error.ConnectionRefusedError),
     "connection refused (nothing listens there: is the server down, or the port wrong?)"),
    ((scrapy_errors.DownloadTimeoutError, error.TimeoutError, error.TCPTimedOutError),
     "timed out (no whole answer within DOWNLOAD_TIMEOUT: the server is down, or sends too "
     "slowly, or less than it announced; -s DOWNLOAD_TIMEOUT=SECONDS waits longer)"),
    ((scrapy_errors.ResponseDataLossError, error.ConnectionLost),
     "connection lost before the response was complete"),
    ((scrapy_errors.UnsupportedURLSchemeError,), "unsupported URL scheme"),
    ((scrapy_errors.DownloadFailedError,), "download failed"),
    (_decoder_errors(),
     "the answer does not decode as its Content-Encoding says (it is not compressed, or "
     "compressed another way); the server is misconfigured"),
)
# What an operator does about an HTTP status (by code, else by class).
_STATUS_HINTS = {
    404: " (not found: has the URL moved? fix it in the sources file)",
    410: " (gone: remove or replace the URL in the sources file)",
    401: " (the server wants credentials)",
    403: " (forbidden: the server refuses this client)",
    429: " (rate limited)",
    5: " (the server's own error, after retries)",
}


# Scrapy's words for an answer past DOWNLOAD_MAXSIZE, on the wire ("… larger than download
# max size (52428800) in request …") and while inflating ("… exceeded DOWNLOAD_MAXSIZE
# (52428800 B) during decompression").
_MAXSIZE_RE = re.compile(r"download max size \((\d+)\)|DOWNLOAD_MAXSIZE \((\d+) B\)")

# The same for a URL found on the way (a sitemap named in robots.txt, an article link).
_FOUND_HINTS = {
    404: " (not found: what linked to it is out of date)",
    410: " (gone: what linked to it is out of date)",
}


def describe_failure(failure: Failure, *, listed: bool = True) -> str:
    """One line for a failed request. ``listed``: the URL is one the sources file lists,
    so a 404 or 410 is the operator's to fix there; a URL found on the way (a sitemap named
    in robots.txt, an article) is not."""
    exc: Any = failure.value
    if isinstance(exc, HttpError):
        status = exc.response.status
        hint = ((None if listed else _FOUND_HINTS.get(status)) or _STATUS_HINTS.get(status)
                or _STATUS_HINTS.get(status // 100, ""))
        said = _api_message(exc.response.body) if 400 <= status < 500 else None
        return f"HTTP {status}{hint}" + (f"; the server says {said!r}" if said else "")
    if isinstance(exc, RateLimited | BadRedirect):
        return str(exc)
    if "download max size" in str(exc) or "DOWNLOAD_MAXSIZE" in str(exc):
        # Scrapy's own words ("Expected to receive 62487774 bytes which is larger than …")
        # named no fix; a compressed answer that inflates past it says the same. The limit
        # is the one the crawl ran with (it said 50 MB under -s DOWNLOAD_MAXSIZE=2000).
        limit = _MAXSIZE_RE.search(str(exc))
        size = f"{byte_size(int(limit.group(1) or limit.group(2)))}; " if limit else ""
        return (f"the answer is larger than DOWNLOAD_MAXSIZE ({size}compressed answers "
                "count as inflated): a document that big is unusual; -s DOWNLOAD_MAXSIZE=BYTES "
                "takes it")
    if isinstance(exc, scrapy_errors.IgnoreRequest) and "max redirections" in str(exc):
        return ("too many redirects (a redirect loop? the URL to put in the sources file is "
                "where it should end)")
    if isinstance(exc, scrapy_errors.DownloadFailedError) and _connection_dropped(exc):
        return ("the server closed the connection without a whole answer (it dropped or "
                "reset it; a proxy or firewall in between?)")
    for kinds, message in _MESSAGES:
        if isinstance(exc, kinds):
            return message
    text = str(exc).strip().splitlines()
    name = type(exc).__name__
    return f"{name}: {text[0]}" if text else name


#: Where the JSON APIs put why they refused a request: Algolia and Reddit ``message``, X
#: ``detail``, OAuth ``error_description``, others a string ``error``.
_API_REASONS = ("message", "detail", "error_description", "error")


def _api_message(body: bytes) -> str | None:
    """The reason a JSON API's 4xx answer gives (Algolia's 400 "invalid tags" was only
    "HTTP 400"), on one line and short; None for any other answer."""
    if len(body) > 65536 or body.lstrip()[:1] != b"{":
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    said = next((v for k in _API_REASONS if isinstance(v := data.get(k), str) and v.strip()),
                None)
    if said is None:
        return None
    said = " ".join(said.split())
    return said if len(said) <= 160 else said[:159] + "…"


def _connection_dropped(exc: BaseException) -> bool:
    """Whether Scrapy's "download failed" (it wraps Twisted's ResponseFailed) was the
    connection ending before the answer did: a server that closed or reset it."""
    reasons = getattr(exc.__cause__, "reasons", None) or []
    return any(isinstance(r, Failure) and r.check(error.ConnectionLost, error.ConnectionDone)
               for r in reasons)


def safe_proxy(proxy: str) -> str:
    """A proxy's URL without its user:password (Scrapy keeps them in the URL's place)."""
    parts = urlsplit(proxy)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
