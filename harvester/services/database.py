"""Which database to use: ``HARVEST_DATABASE_URL`` or the embedded server, and migrations."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from harvester.config import HarvestConfig, get_config
from harvester.messages import first_line
from harvester.migrations import HEAD, schema_advice, schema_newer
from harvester.services import embedded

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
# Several crawlers in one process resolve the URL at once: start the server only once.
_start_lock = threading.Lock()


def _process_started() -> float:
    """When this process started, by the wall clock, to 10 ms (psutil counts from a boot
    time rounded to the second: a command started just after a stop seemed to predate
    it); the time of this import where /proc is not there."""
    try:
        fields = Path("/proc/self/stat").read_text().rpartition(")")[2].split()
        since_boot = time.clock_gettime(time.CLOCK_BOOTTIME) - (
            int(fields[19]) / os.sysconf("SC_CLK_TCK"))
        return time.time() - since_boot
    except (OSError, ValueError, IndexError, AttributeError):
        return time.time()


# A server stopped on purpose after this process started is not started again by it.
_PROCESS_STARTED = _process_started()
# Alembic is not thread-safe (module-level state; env.py runs while being imported): the
# store pipelines of a `harvest crawl` of several sources open in threads of one process,
# and when each found the schema behind they migrated at once, deadlocked on each other
# and the migration's advisory lock (the crawl hung for good, holding it), or failed with
# KeyError: 'config'. One migration at a time per process; the others see it done.
_migrate_lock = threading.RLock()


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached; the message is one sentence with the fix."""


class SchemaUnknown(DatabaseUnavailable):
    """The database is at a schema revision this code does not know (a newer harvest's)."""


def resolve_url(config: HarvestConfig, *, start: bool = True) -> str:
    """The URL to connect to, starting the embedded server on demand."""
    if config.database_url:
        return config.database_url
    if not start:
        state = embedded.status(config.pg_dir)
        if not state.running or state.uri is None:
            raise DatabaseUnavailable(
                f"the embedded PostgreSQL in {config.pg_dir} is not running; "
                "start it with `harvest db start`"
            )
        return state.uri
    try:
        with _start_lock:
            return embedded.start(config.pg_dir, config.pg_shared_buffers,
                                  began=_PROCESS_STARTED)
    except embedded.EmbeddedError as exc:
        raise DatabaseUnavailable(str(exc)) from exc


def describe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable database URL>"
    host = info.get("host") or "localhost"
    user, dbname = quote(info.get("user", ""), safe=""), quote(info.get("dbname", ""), safe="")
    if host.startswith("/"):
        # A socket directory (the embedded server): written as a host, psql read the path
        # as the database name. The query form is a URL psql and psycopg take as it is.
        port = f"&port={info['port']}" if info.get("port") else ""
        return f"postgresql://{user}@/{dbname}?host={quote(host, safe='/')}{port}"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}@{host}{port}/{dbname}"


def _alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["conninfo"] = url  # a URL or key=value string, as psycopg takes it
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """``alembic upgrade head`` against ``url``."""
    with _migrate_lock:
        current = current_revision(url)
        if schema_newer(current):
            raise SchemaUnknown(f"{describe_url(url)}: {schema_advice(current)}")
        _upgrade(url, revision)


def _upgrade(url: str, revision: str) -> None:
    from alembic import command
    from sqlalchemy.exc import (
        OperationalError,  # alembic reports driver errors through it
        ProgrammingError,
    )

    try:
        command.upgrade(_alembic_config(url), revision)
    except OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot reach the database at {describe_url(url)} to migrate it; "
            f"{unreachable_hint()}"
        ) from exc
    except ProgrammingError as exc:  # permission denied for schema public, no such schema
        raise DatabaseUnavailable(
            f"the database at {describe_url(url)} refused the migration "
            f"({first_line(exc.orig or exc)}); its role needs to own its schema (or CREATE "
            "on it), or run `harvest migrate` once as its owner") from exc


def unreachable_hint() -> str:
    """What to do about an unreachable database: ``harvest db start`` is no help when
    ``HARVEST_DATABASE_URL`` names another server (it is not used then)."""
    if get_config().database_url:
        return "check HARVEST_DATABASE_URL and that its server runs"
    return "run `harvest db start`"


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config("postgresql://"))
    head = script.get_current_head()
    assert head is not None
    return head


def current_revision(url: str) -> str | None:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            return revision_of(conn)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot reach the database at {describe_url(url)} ({first_line(exc)}); "
            f"{unreachable_hint()}") from exc


def revision_of(conn: psycopg.Connection[Any]) -> str | None:
    """The schema revision the database is at; None before the first migration."""
    exists = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None


def ensure_schema(url: str) -> bool:
    """Migrate when the schema is behind; return True when a migration ran."""
    if current_revision(url) == HEAD:
        return False
    with _migrate_lock:
        return _ensure_schema(url)


def _ensure_schema(url: str) -> bool:
    current = current_revision(url)  # again: another thread may have migrated meanwhile
    if current == HEAD:
        return False
    if schema_newer(current):
        raise SchemaUnknown(f"{describe_url(url)}: {schema_advice(current)}")
    if not MIGRATIONS.is_dir():
        # Running from a zipped egg (a Scrapyd job): Alembic needs its scripts on disk.
        raise DatabaseUnavailable(
            f"the database {describe_url(url)} is at schema {current or 'none'} but this code "
            f"needs {HEAD}; run `harvest migrate` (or `harvest scrapyd start`, which does it)"
        )
    logger.info("Migrating database %s to %s", describe_url(url), HEAD)
    migrate(url)
    return True
