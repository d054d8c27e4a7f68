"""A small threaded HTTP server for a directory of static files.

Used by ``make demo`` (to serve the bundled demo feeds offline), by the tests
and by the benchmark. It binds loopback only, speaks HTTP/1.1 with keep-alive,
sends strong ETags and Last-Modified, answers conditional requests with 304,
gzips larger files on request, and lets tests inject failures and delays per
path (``set_status``, ``set_delay``) and count requests (``hits``).

Standard library only, on purpose: it must run anywhere the harvester runs.

Manual use::

    python -m harvester.services.localsite ROOT [--port N]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import http.server
import ipaddress
import json
import logging
import mimetypes
import os
import re
import socket
import stat
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import ClassVar
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

# Below this size gzip costs more than it saves (headers, CPU), so send as is.
GZIP_MIN_BYTES = 1024
# How long an idle keep-alive connection may sit before its thread gives up;
# without it a forgotten client would pin a thread forever.
IDLE_TIMEOUT_S = 30.0

_FIXED_TYPES = {
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
# Prolog noise that may precede the root element of an XML document.
_XML_PROLOG = re.compile(rb"^(?:\s+|<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>)*", re.DOTALL)
_XML_ROOT = re.compile(rb"<([A-Za-z_][\w.:-]*)")
_JSON_FEED_VERSION = "https://jsonfeed.org/version/"


@dataclass(frozen=True, slots=True)
class _CachedFile:
    """One file's bytes and everything derived from them, valid for one mtime."""

    mtime_ns: int
    size: int
    body: bytes
    gzipped: bytes | None
    etag: str
    gzip_etag: str
    content_type: str
    last_modified: str
    mtime_s: int

    def matches(self, info: os.stat_result) -> bool:
        """Whether this entry still describes the file on disk."""
        return self.mtime_ns == info.st_mtime_ns and self.size == info.st_size


@dataclass(slots=True)
class _Override:
    """A forced answer for one path, optionally for a limited number of requests."""

    status: int
    headers: dict[str, str]
    remaining: int | None


def _root_element(body: bytes) -> str:
    """Local name of the XML root element (``feed``, ``rss``, ``RDF``), or ``""``."""
    head = body[:4096].lstrip(b"\xef\xbb\xbf")
    prolog = _XML_PROLOG.match(head)
    match = _XML_ROOT.match(head, prolog.end() if prolog else 0)
    if not match:
        return ""
    return match.group(1).decode("ascii", "replace").rpartition(":")[2]


def _is_json_feed(body: bytes) -> bool:
    """True when the bytes are a JSON object whose ``version`` names JSON Feed."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and str(data.get("version", "")).startswith(_JSON_FEED_VERSION)


def content_type_for(path: Path, body: bytes) -> str:
    """The Content-Type to send for ``path``, sniffing content where the suffix is ambiguous."""
    suffix = path.suffix.lower()
    if suffix == ".xml":
        # Many sites serve Atom as .xml; feed readers care about the difference.
        if _root_element(body) == "feed":
            return "application/atom+xml"
        return "application/rss+xml"
    if suffix == ".json":
        return "application/feed+json" if _is_json_feed(body) else "application/json"
    if suffix in _FIXED_TYPES:
        return _FIXED_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def _load(path: Path, info: os.stat_result) -> _CachedFile:
    """Read a file and derive its cached representations."""
    body = path.read_bytes()
    digest = hashlib.blake2b(body, digest_size=16).hexdigest()
    # mtime=0 keeps the gzip bytes (and so their ETag) stable across reloads.
    gzipped = gzip.compress(body, compresslevel=6, mtime=0) if len(body) > GZIP_MIN_BYTES else None
    return _CachedFile(
        mtime_ns=info.st_mtime_ns,
        size=info.st_size,
        body=body,
        gzipped=gzipped,
        etag=f'"{digest}"',
        # A strong ETag names one representation, so the gzip variant gets its own.
        gzip_etag=f'"{digest}-gz"',
        content_type=content_type_for(path, body),
        last_modified=formatdate(info.st_mtime, usegmt=True),
        mtime_s=int(info.st_mtime),
    )


def _accepts_gzip(header: str | None) -> bool:
    """Whether an Accept-Encoding value allows gzip (honouring ``q=0``)."""
    if not header:
        return False
    for part in header.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() not in ("gzip", "x-gzip", "*"):
            continue
        match = re.search(r"q\s*=\s*([0-9.]+)", params)
        try:
            if match is None or float(match.group(1)) > 0:
                return True
        except ValueError:
            continue
    return False


def _etag_matches(header: str, etags: tuple[str, ...]) -> bool:
    """If-None-Match uses weak comparison: ``W/`` prefixes are ignored."""
    candidates = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in candidates or any(tag in candidates for tag in etags)


def _not_modified_since(header: str, mtime_s: int) -> bool:
    """True when the file has not changed since the If-Modified-Since date."""
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False
    if since.tzinfo is None:  # "-0000" parses naive; HTTP dates are always UTC
        since = since.replace(tzinfo=UTC)
    return mtime_s <= since.timestamp()


def _normalise(path: str) -> str:
    """The key under which a request path is counted and overridden."""
    path = unquote(urlsplit(path).path) or "/"
    return path if path.startswith("/") else "/" + path


def _check_loopback(host: str) -> None:
    """Refuse anything but IPv4 loopback: this server is for tests and demos only."""
    if host == "localhost":
        return
    try:
        address = ipaddress.ip_address(host)
        if address.version == 4 and address.is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"LocalSite binds IPv4 loopback only, not {host!r}")


class _Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer that knows its LocalSite and its open connections."""

    daemon_threads = True
    # Benchmarks open many connections at once; the default backlog of 5 drops some.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], site: LocalSite) -> None:
        self.site = site
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: socket.socket, client_address: object) -> None:  # type: ignore[override]
        with self._conn_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        with self._conn_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: object, client_address: object) -> None:  # type: ignore[override]
        """Clients hanging up mid-response are normal here; keep stderr quiet."""
        logger.debug("error serving %s", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Cut idle keep-alive connections so nothing is served after ``stop``."""
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves GET and HEAD from the site root; everything else gets 501 from the base class."""

    protocol_version = "HTTP/1.1"
    server_version = "LocalSite/1.0"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    # Headers and body go out in two writes; without this, Nagle plus delayed
    # ACKs add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server: _Server
    _reasons: ClassVar[dict[int, str]] = {s.value: s.phrase for s in HTTPStatus}

    def log_message(self, format: str, *args: object) -> None:
        """Quiet by default: one debug line instead of a stderr line per request."""
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, head: bool) -> None:
        site = self.server.site
        key = _normalise(self.path)
        delay, override = site._on_request(key, count=not head)
        if delay > 0:
            time.sleep(delay)
        if override is not None:
            self._send_override(override, head)
            return
        cached = site._file(key)
        if cached is None:
            self._send_text(HTTPStatus.NOT_FOUND, "404 Not Found\n", head)
            return
        self._send_file(cached, head)

    def _send_file(self, cached: _CachedFile, head: bool) -> None:
        use_gzip = cached.gzipped is not None and _accepts_gzip(self.headers.get("Accept-Encoding"))
        etag = cached.gzip_etag if use_gzip else cached.etag
        if self._is_not_modified(cached):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self._validators(cached, etag)
            self.end_headers()
            return
        body = cached.gzipped if use_gzip and cached.gzipped is not None else cached.body
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", cached.content_type)
        self.send_header("Content-Length", str(len(body)))
        if use_gzip:
            self.send_header("Content-Encoding", "gzip")
        self._validators(cached, etag)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _is_not_modified(self, cached: _CachedFile) -> bool:
        # RFC 9110: when If-None-Match is present, If-Modified-Since is ignored.
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            return _etag_matches(if_none_match, (cached.etag, cached.gzip_etag))
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since is not None:
            return _not_modified_since(if_modified_since, cached.mtime_s)
        return False

    def _validators(self, cached: _CachedFile, etag: str) -> None:
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", cached.last_modified)
        self.send_header("Vary", "Accept-Encoding")
        self.send_header("Cache-Control", "no-cache")

    def _send_override(self, override: _Override, head: bool) -> None:
        reason = self._reasons.get(override.status, "")
        self._send_text(override.status, f"{override.status} {reason}\n", head, override.headers)

    def _send_text(
        self, status: int, text: str, head: bool, headers: dict[str, str] | None = None
    ) -> None:
        bodyless = status in (204, 304)
        body = b"" if bodyless else text.encode("utf-8")
        self.send_response(status)
        extra = headers or {}
        if not bodyless:
            if "content-type" not in {name.lower() for name in extra}:
                self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        if body and not head:
            self.wfile.write(body)


class LocalSite:
    """Serve ``root`` over HTTP on loopback in a daemon thread.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. The test
    controls (``set_status``, ``set_delay``, ``hits``, ``clear_overrides``) are
    thread-safe and take request paths such as ``"/feeds/tech.xml"``; the query
    string is ignored when matching and counting.
    """

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        _check_loopback(host)
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise NotADirectoryError(f"LocalSite root {self.root} is not a directory")
        self.host = host
        self.port = port
        self._lock = threading.Lock()
        self._overrides: dict[str, _Override] = {}
        self._delays: dict[str, float] = {}
        self._hits: Counter[str] = Counter()
        self._cache: dict[str, _CachedFile] = {}
        self._root_str = str(self.root)
        self._root_prefix = os.path.join(self._root_str, "")
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> LocalSite:
        """Bind and serve in a daemon thread; with port 0 the OS picks a free port."""
        if self._server is not None:
            raise RuntimeError("LocalSite is already running")
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"localsite-{self.port}",
            daemon=True,
        )
        self._thread.start()
        logger.info("serving %s at %s", self.root, self.url)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:43121``."""
        if self._server is None and self.port == 0:
            raise RuntimeError("LocalSite has no port yet; call start() first")
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> LocalSite:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- test controls -------------------------------------------------------

    def set_status(
        self,
        path: str,
        status: int,
        headers: dict[str, str] | None = None,
        times: int | None = None,
    ) -> None:
        """Make GET/HEAD ``path`` answer ``status`` (with ``headers``) ``times`` times, then
        serve normally again; ``times=None`` keeps the override until cleared."""
        # 1xx cannot be a final response, so it could only confuse the client.
        if not 200 <= status <= 599:
            raise ValueError(f"{status} is not a final HTTP status code (200-599)")
        if times is not None and times < 1:
            raise ValueError("times must be at least 1, or None for 'until cleared'")
        with self._lock:
            self._overrides[_normalise(path)] = _Override(status, dict(headers or {}), times)

    def set_delay(self, path: str, seconds: float) -> None:
        """Sleep ``seconds`` before answering ``path``; 0 removes the delay."""
        with self._lock:
            if seconds > 0:
                self._delays[_normalise(path)] = seconds
            else:
                self._delays.pop(_normalise(path), None)

    def hits(self, path: str) -> int:
        """How many GET requests ``path`` has received (overridden answers included)."""
        with self._lock:
            return self._hits[_normalise(path)]

    def clear_overrides(self) -> None:
        """Drop every status override and delay; hit counts are kept."""
        with self._lock:
            self._overrides.clear()
            self._delays.clear()

    # -- used by the handler -------------------------------------------------

    def _on_request(self, key: str, count: bool) -> tuple[float, _Override | None]:
        """Record a request and return its delay and any override it consumes."""
        with self._lock:
            if count:
                self._hits[key] += 1
            delay = self._delays.get(key, 0.0)
            override = self._overrides.get(key)
            if override is None:
                return delay, None
            if override.remaining is not None:
                override.remaining -= 1
                if override.remaining <= 0:
                    del self._overrides[key]
            return delay, _Override(override.status, override.headers, None)

    def _file(self, key: str) -> _CachedFile | None:
        """The cached file for a request path, or None if it is not a servable file."""
        # Plain string paths and a single stat: this runs on every request.
        try:
            full = os.path.realpath(os.path.join(self._root_str, key.lstrip("/")))
            info = os.stat(full)
        except (OSError, ValueError):  # ValueError: NUL byte in the path
            return None
        # realpath() folds ".." and symlinks, so this keeps requests inside root.
        if not full.startswith(self._root_prefix) or not stat.S_ISREG(info.st_mode):
            return None  # outside root, or a directory (never listed)
        with self._lock:
            cached = self._cache.get(full)
        if cached is not None and cached.matches(info):
            return cached
        try:
            cached = _load(Path(full), info)
        except OSError:
            return None
        with self._lock:
            self._cache[full] = cached
        return cached


def main(argv: list[str] | None = None) -> int:
    """CLI: serve a directory until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m harvester.services.localsite",
        description="Serve a directory of static files on 127.0.0.1.",
    )
    parser.add_argument("root", type=Path, help="directory to serve")
    parser.add_argument("--port", type=int, default=8000, help="port (0 = any free port)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        site = LocalSite(args.root, port=args.port).start()
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    print(f"Serving {site.root} at {site.url}/ (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        site.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
