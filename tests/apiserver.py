"""A stand-in HTTP API on 127.0.0.1 for tests: routes are plain functions, every request is
recorded (time, path, query, headers) so tests can assert what a spider asked and when.

    api = ApiServer()
    @api.route("/r/python/hot.json")
    def hot(req: ApiRequest) -> Reply:
        return Reply.json({"data": {...}}, headers={"X-Ratelimit-Remaining": "59"})
    with api:
        ... api.url ...

Unknown paths answer 404 with a JSON body, like most real APIs. ``robots.txt`` answers
"allow everything" unless a route for it is registered.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    at: float  # time.monotonic() when it arrived

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass(slots=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(status, json.dumps(data).encode(),
                   {"Content-Type": "application/json; charset=utf-8", **(headers or {})})

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8",
             headers: dict[str, str] | None = None) -> Reply:
        return cls(status, text.encode(), {"Content-Type": content_type, **(headers or {})})


Handler = Callable[[ApiRequest], Reply]


class ApiServer:
    def __init__(self) -> None:
        self._routes: dict[str, Handler] = {}
        self.requests: list[ApiRequest] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, path: str) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self._routes[path] = handler
            return handler
        return register

    def add(self, path: str, handler: Handler) -> None:
        self._routes[path] = handler

    def hits(self, path: str) -> list[ApiRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _dispatch(self, request: ApiRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
        handler = self._routes.get(request.path)
        if handler is None:
            if request.path == "/robots.txt":
                return Reply.text("User-agent: *\nAllow: /\n")
            return Reply.json({"error": "not found"}, status=404)
        return handler(request)

    def start(self) -> ApiServer:
        owner = self

        class _Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                request = ApiRequest(
                    method=self.command, path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"", at=time.monotonic(),
                )
                try:
                    reply = owner._dispatch(request)
                except Exception as exc:  # a broken test route must show, not hang the spider
                    reply = Reply.text(f"route failed: {exc!r}", status=500)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_HEAD = _serve

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
