"""A small client for Scrapyd's JSON API, one node at a time, and the list of nodes.

Nodes come from ``HARVEST_SCRAPYD_URLS`` (comma-separated, default
``http://127.0.0.1:6800``); credentials from each URL's user-info or else
``SCRAPYD_USERNAME``/``SCRAPYD_PASSWORD`` (the same variables Scrapyd itself reads). Node
URLs shown to people never carry the password.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from harvester.config import get_config, get_scrapyd_env
from harvester.services.urls import split_error

PROJECT = "harvester"
TIMEOUT_S = 10.0
#: For probes made while someone waits (/metrics, /health): well inside a scrape's 10 s.
PROBE_TIMEOUT_S = 3.0


class ScrapydError(RuntimeError):
    """A node that is down, refuses us, or answers with an error; one sentence."""


class ScrapydRefused(ScrapydError):
    """The node answered and said no (``"status": "error"``): nothing was done there."""


@dataclass(frozen=True, slots=True)
class Node:
    url: str  # without credentials: safe to print
    username: str | None = None
    password: str | None = None
    credentials_in_url: bool = False  # user:password in HARVEST_SCRAPYD_URLS itself

    @classmethod
    def parse(cls, value: str) -> Node:
        # A port that is not a number fails split_error; urlsplit alone would not.
        parts = urlsplit(value.strip()) if split_error(value.strip()) is None else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ScrapydError(f"{_shown(value)!r} is not a Scrapyd URL like "
                               "http://127.0.0.1:6800 (check HARVEST_SCRAPYD_URLS)")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname  # IPv6
        netloc = host + (f":{parts.port}" if parts.port else "")
        url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        env = get_scrapyd_env()
        secret = env.password
        # Percent-encoded in the URL (a password with ":" "@" "#"), as ScrapydWeb reads it.
        username = unquote(parts.username or "") or env.username or None
        password = unquote(parts.password or "") or (
            secret.get_secret_value() if secret else None)
        return cls(url, username, password, bool(parts.username or parts.password))

    def _call(self, method: str, endpoint: str, timeout: float = TIMEOUT_S,
              **params: Any) -> dict[str, Any]:
        auth = (self.username, self.password or "") if self.username else None
        try:
            if method == "GET":
                response = requests.get(f"{self.url}/{endpoint}", params=params, auth=auth,
                                        timeout=timeout)
            else:
                response = requests.post(f"{self.url}/{endpoint}", data=params, auth=auth,
                                         timeout=timeout)
        except requests.RequestException as exc:
            raise ScrapydError(f"Scrapyd at {self.url} is not reachable "
                               f"({type(exc).__name__}); is it running?") from None
        self._check_credentials(response)
        try:
            data = response.json()
        except ValueError:
            raise ScrapydError(f"Scrapyd at {self.url} answered HTTP {response.status_code} "
                               "with something that is not JSON") from None
        if data.get("status") != "ok":
            message = str(data.get("message", data))
            if message.startswith("project ") and message.endswith("not found"):
                # A fresh node: it has no egg until one is deployed.
                raise ScrapydRefused(f"Scrapyd at {self.url} has no {message[8:-10]} "
                                     "project yet; deploy it with `harvest scrapyd deploy`")
            raise ScrapydRefused(f"Scrapyd at {self.url}: {endpoint} failed: {message}")
        return data

    def status(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """``daemonstatus.json``: running, pending, finished counts."""
        return self._call("GET", "daemonstatus.json", timeout)

    def load(self) -> int:
        data = self.status()
        return int(data.get("running", 0)) + int(data.get("pending", 0))

    def schedule(self, spider: str, *, jobid: str, **args: str) -> str:
        data = self._call("POST", "schedule.json", project=PROJECT, spider=spider,
                          jobid=jobid, **args)
        return str(data["jobid"])

    def jobs(self) -> dict[str, list[dict[str, Any]]]:
        """``listjobs.json``: ``pending``, ``running``, ``finished`` lists."""
        return self._call("GET", "listjobs.json", project=PROJECT)

    def cancel(self, jobid: str) -> None:
        self._call("POST", "cancel.json", project=PROJECT, job=jobid)

    def _check_credentials(self, response: requests.Response) -> None:
        if response.status_code != 401:
            return
        if self.credentials_in_url:  # the variables would not be used: the URL's win
            raise ScrapydError(f"Scrapyd at {self.url} refused our credentials (401); fix "
                               "the user:password of its URL in HARVEST_SCRAPYD_URLS")
        if not self.username:
            raise ScrapydError(f"Scrapyd at {self.url} asks for credentials (401); set "
                               "SCRAPYD_USERNAME and SCRAPYD_PASSWORD to its account")
        raise ScrapydError(f"Scrapyd at {self.url} refused our credentials (401); set "
                           "SCRAPYD_USERNAME and SCRAPYD_PASSWORD to its account")

    def add_version(self, version: str, egg: bytes) -> int:
        """Upload a project egg (what ``scrapyd-deploy`` does); returns the spider count."""
        auth = (self.username, self.password or "") if self.username else None
        try:
            response = requests.post(f"{self.url}/addversion.json",
                                     data={"project": PROJECT, "version": version},
                                     files={"egg": ("harvester.egg", egg)}, auth=auth,
                                     timeout=60)
            self._check_credentials(response)  # it answered HTML: "(JSONDecodeError)"
            data = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ScrapydError(f"could not deploy to Scrapyd at {self.url} "
                               f"({type(exc).__name__})") from None
        if data.get("status") != "ok":
            raise ScrapydError(f"Scrapyd at {self.url} refused the egg: "
                               f"{data.get('message', data)}")
        return int(data.get("spiders", 0))


def local_url() -> str:
    """Where ``harvest scrapyd start`` makes Scrapyd listen (``SCRAPYD_BIND_ADDRESS``,
    ``SCRAPYD_HTTP_PORT``), as a URL to reach it."""
    env = get_scrapyd_env()
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(env.bind_address,
                                                                      env.bind_address)
    return f"http://{f'[{host}]' if ':' in host else host}:{env.http_port}"


def nodes() -> list[Node]:
    """The configured Scrapyd nodes (``HARVEST_SCRAPYD_URLS``; unset, the local one that
    ``harvest scrapyd start`` runs, so that ``SCRAPYD_HTTP_PORT`` moves both)."""
    cfg = get_config()
    if not cfg.scrapyd_configured:
        return [Node.parse(local_url())]
    found = [Node.parse(v) for v in cfg.scrapyd_urls.split(",") if v.strip()]
    if not found:
        # Empty, every command that asks the nodes said nothing and exited 0.
        raise ScrapydError("HARVEST_SCRAPYD_URLS names no Scrapyd node; set it to one or more "
                           "URLs like http://127.0.0.1:6800, or unset it for that default")
    urls = [node.url for node in found]
    if twice := next((url for url in urls if urls.count(url) > 1), None):
        # Each answer is reported under its URL: the second overwrote the first.
        raise ScrapydError(f"HARVEST_SCRAPYD_URLS lists the node {twice} more than once; "
                           "list each node once")
    return found


def statuses(configured: list[Node], timeout: float = PROBE_TIMEOUT_S
             ) -> dict[str, dict[str, Any] | ScrapydError]:
    """Each node's ``daemonstatus.json`` or why it has none, all asked at once with a short
    timeout: one node that accepts and never answers held a Prometheus scrape (and
    ``/health``) for 10 s a node, past the scrape's own timeout."""

    def ask(node: Node) -> dict[str, Any] | ScrapydError:
        try:
            return node.status(timeout)
        except ScrapydError as exc:
            return exc

    if not configured:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(configured))) as pool:
        return dict(zip([n.url for n in configured], pool.map(ask, configured), strict=True))


def _shown(value: str) -> str:
    """The URL as given, its password (if any) masked: it ends up in an error message
    (and in the open /health)."""
    # Everything before the last "@", after a well-formed "scheme://": a password holding
    # "#" or "@" unencoded was cut at the wrong place, and a URL without its "http://"
    # ("ops:pw@host:6800", "http//…") was shown whole, password and all. A path's "@"
    # masks more than needed, never less.
    value = value.strip()
    if "@" not in value:
        return value
    match = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", value)
    head = match.group(0) if match else ""
    return f"{head}***@{value.rsplit('@', 1)[1]}"
